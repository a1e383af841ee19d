"""The Ray executor (`pip install imc_lib[ray]`; imported only for `--executor ray`): every scene a Ray
task, a large scene's extraction and matching in shards on actors that load their network once.

Every node needs imc_lib (the same version) and sees the data and work folders at the same paths (a
shared file system); `check` proves the second before any scene starts. Resources: a scene task takes
one CPU, and a GPU where the cluster has them, unless it is large, when the GPUs go to its shard
actors and the task keeps a CPU for mapping. A task whose worker dies is run again (`retries`); past
that the scene is recorded as failed and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .shards import SHARDING

logger = logging.getLogger(__name__)

_NETWORKS: dict = {}  # each worker process's networks, loaded once however many scenes it runs


class RayExecutor:
    """Scenes as Ray tasks on the cluster at `address` (default $RAY_ADDRESS, else a local cluster
    started for the run and stopped by `close`); `sharding` a partial shards.SHARDING."""

    parallel = True

    def __init__(self, address: str | None = None, sharding: dict | None = None, retries: int = 3):
        self.address, self.retries = address, retries
        self.sharding = {**SHARDING, **(sharding or {})}
        self.started = False
        self.device, self.level = None, logging.INFO  # as the driver was asked; set in each scene task

    def __getstate__(self):  # a scene task carries the executor to shard on; whether it started Ray stays here
        return {**self.__dict__, "started": False}

    def connect(self) -> None:
        if not ray.is_initialized():
            ray.init(address=self.address or os.environ.get("RAY_ADDRESS") or "local", logging_level=logging.WARNING)
            self.started = True

    def close(self) -> None:
        if self.started:
            ray.shutdown()
            self.started = False

    def check(self, data_dir, work_dir) -> None:
        """Stop at once, naming the folder, unless every node sees `data_dir` and this run's `work_dir`
        (a file written here is read there: a node's own empty folder of the same name fails too)."""
        self.connect()
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        probe = work_dir / f".probe-{uuid.uuid4().hex}"
        probe.write_text(probe.name)
        try:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            on = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes]
            checks = [_sees.options(num_cpus=0, scheduling_strategy=s).remote(str(data_dir), str(probe)) for s in on]
            for node, missing in zip(nodes, ray.get(checks)):
                if missing:
                    where = f"Ray node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
                    raise FileNotFoundError(
                        f"{where} cannot see {', '.join(missing)}: "
                        "every node must see the data and work folders at the same paths (a shared file system)"
                    )
        finally:
            probe.unlink(missing_ok=True)

    def shards(self, photos: int) -> bool:
        return photos >= self.sharding["min_photos"]

    def scenes(self, task, jobs, nets):
        """(job, outcome) as each scene task ends; the outcome is the exception when the task was lost
        (its worker died every try). An exception the task raised is raised here."""
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.level = logging.getLogger().getEffectiveLevel()
        running = {}
        for job in jobs:
            large = self.shards(len(job.scene.image_names))
            options = {"num_cpus": 1, "num_gpus": 1 if gpus and not large else 0, "max_retries": self.retries}
            self.device = job.device
            ref = _scene.options(**options).remote(task, job, str(nets.weights or ""), self)
            running[ref] = job
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayTaskError:
                raise  # the scene's own error, raised by it on purpose (missing weights, a busy folder)
            except ray.exceptions.RayError as err:  # its worker or node lost, past every retry
                outcome = err
            yield job, outcome

    def pool(self, nets):
        return _Pool(str(nets.weights or ""), self)


@ray.remote
def _sees(data_dir: str, probe: str) -> list[str]:
    return [p for p, ok in ((data_dir, Path(data_dir).is_dir()), (str(Path(probe).parent), Path(probe).is_file()))
            if not ok]  # fmt: skip


def _networks(weights: str, device: str | None):
    from ..networks import Networks
    from ..utils import usable_device

    return Networks(weights or None, usable_device(device), _NETWORKS)


def _logging(level: int) -> None:
    """The driver's log level in this worker (Ray forwards its output to the driver); COLMAP's chatter off."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # a no-op where Ray set a handler
    logging.getLogger().setLevel(level)
    import pycolmap

    pycolmap.logging.minloglevel = 0 if level <= logging.DEBUG else 2


@ray.remote
def _scene(task, job, weights: str, executor: RayExecutor):
    _logging(executor.level)
    return task(job, _networks(weights, executor.device), executor)


@ray.remote
class _ShardWorker:
    """Runs shards of one large scene on networks it loads once."""

    def __init__(self, weights: str, device: str | None, level: int):
        _logging(level)
        self.nets = _networks(weights, device)

    def run(self, fn, *job):
        return fn(self.nets, *job)


class _Pool:
    """Shard actors, started at the first `map` and ended with the block that holds the pool."""

    def __init__(self, weights: str, executor: RayExecutor):
        self.weights, self.executor = weights, executor
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for worker in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(worker)

    def map(self, fn, jobs: list[tuple]) -> list:
        if not self.workers:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            ex = self.executor
            count = min(len(jobs), ex.sharding["actors"] or gpus or int(ray.cluster_resources().get("CPU", 1)))
            options = {"num_cpus": 1, "num_gpus": 1 if gpus else 0, "max_restarts": ex.retries,
                       "max_task_retries": ex.retries}  # fmt: skip
            self.workers = [_ShardWorker.options(**options).remote(self.weights, ex.device, ex.level)
                            for _ in range(count)]  # fmt: skip
        n = len(self.workers)
        return ray.get([self.workers[i % n].run.remote(fn, *job) for i, job in enumerate(jobs)])
