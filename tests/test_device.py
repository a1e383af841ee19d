"""The CUDA smoke test at start-up (utils.usable_device): a GPU that reports CUDA but cannot run a
kernel (Kaggle's P100 under current torch) means the CPU and its settings, said once and loudly."""

from __future__ import annotations

import logging

import pytest
import torch

from imc_lib import plan, utils

KAGGLE_P100_ERROR = (
    "CUDA error: no kernel image is available for execution on the device\n"
    "CUDA kernel errors might be asynchronously reported at some other API call"
)


def fail_like_a_p100(device):
    """What the first CUDA op raises on Kaggle's P100 under a torch without sm_60 kernels."""
    raise RuntimeError(KAGGLE_P100_ERROR)


def loud_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("!!!")]


def test_cuda_that_cannot_run_kernels_gives_the_cpu_and_one_loud_line(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(utils, "cuda_smoke_test", fail_like_a_p100)
    with caplog.at_level(logging.INFO):
        device = utils.usable_device("auto")
    assert device == torch.device("cpu")
    (line,) = loud_lines(caplog)
    assert line.startswith("!!! CUDA is present but cannot run kernels on cuda")
    assert "no kernel image is available" in line and "running on the CPU with the CPU settings" in line
    assert "\n" not in line


def test_the_cpu_device_then_gets_the_cpu_settings(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(utils, "cuda_smoke_test", fail_like_a_p100)
    with caplog.at_level(logging.INFO):
        sconfs = plan.resolve(device=utils.usable_device("auto"), pairs="vlad")
    assert sconfs["features"]["resize_to"] == plan.AUTO_RESIZE  # CPU_DEFAULTS: "auto"
    assert sconfs["matching"]["model"]["name"] == "mnn"
    assert any("CPU speed settings" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that cannot run CUDA")
def test_real_cuda_failure_on_a_cpu_only_torch(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the op itself fails for real here
    with caplog.at_level(logging.INFO):
        assert utils.usable_device("auto") == torch.device("cpu")
    assert len(loud_lines(caplog)) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_working_cuda_is_kept(caplog):
    with caplog.at_level(logging.INFO):
        assert utils.usable_device("auto").type == "cuda"
    assert loud_lines(caplog) == []


def test_cpu_requested_runs_no_cuda_kernel(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(utils, "cuda_smoke_test", lambda device: pytest.fail("smoke test run for the CPU"))
    assert utils.usable_device("cpu") == torch.device("cpu")
