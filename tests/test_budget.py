"""The time guard's arithmetic, on hand-computed answers."""

import pytest
import torch

from imc_lib.execution import budget
from imc_lib.execution.budget import Costs, Setting
from imc_lib.stages import pairs

# 1 s per image, no keypoint-independent pair work, 1 s per pair at 4096 keypoints, linear in keypoints.
UNIT = Costs(per_image=1.0, per_pair=0.0, per_pair_match=1.0, keypoints=4096, exponent=1.0)
LADDER = budget.ladder(4096, "dinov2", 1024)
# a: 10 images, 45 pairs (under 20 images: all pairs) -> 55, 32.5, 21.25 s at 4096, 2048, 1024 keypoints
# b: 50 images, 1000 retrieval pairs (20 per image)   -> 1050, 550, 300 s
COUNTS = {"a": 10, "b": 50}


def settings(**kps):
    return {scene: None if kp is None else Setting(kp, "dinov2") for scene, kp in kps.items()}


def test_ladder_halves_keypoints_and_drops_exhaustive_pairs_first():
    assert LADDER == [Setting(4096), Setting(2048), Setting(1024)]
    assert budget.ladder(4096, "exhaustive", 2048) == [
        Setting(4096, "exhaustive"),
        Setting(4096, "dinov2"),
        Setting(2048, "dinov2"),
    ]
    assert budget.ladder(1024, "dinov2", 1024) == [Setting(1024)]
    # No DINOv2 at hand: the guard can only cut keypoints.
    assert budget.ladder(4096, "dinov2", 2048, retrieval=False) == [
        Setting(4096, "exhaustive"),
        Setting(2048, "exhaustive"),
    ]
    with pytest.raises(ValueError, match="pairs"):
        budget.ladder(4096, "sift")


@pytest.mark.parametrize(
    "n, method, expected",
    [
        (1, "dinov2", 0),
        (10, "dinov2", 45),
        (19, "dinov2", 171),
        (20, "dinov2", 190),
        (50, "dinov2", 1000),
        (100, "dinov2", 2000),
        (100, "exhaustive", 4950),
    ],
)
def test_estimated_pairs(n, method, expected):
    assert budget.estimated_pairs(n, method) == expected


def test_retrieval_constants_mirror_the_pairs_stage():
    assert budget.EXHAUSTIVE_IF_LESS == pairs.confs["dinov2"]["exhaustive_if_less"]
    assert budget.MIN_PAIRS == pairs.confs["dinov2"]["min_pairs"]
    for n in (119, 363, 600, 5000):
        assert budget.estimated_pairs(n, "vlad") == n * pairs.neighbours(pairs.confs["vlad"], n)


def test_scene_seconds():
    assert budget.scene_seconds(10, Setting(4096), UNIT) == 55
    assert budget.scene_seconds(50, Setting(1024), UNIT) == 300
    quadratic = Costs(per_image=0.0, per_pair=0.5, per_pair_match=1.0, keypoints=4096, exponent=2.0)
    assert budget.scene_seconds(10, Setting(2048), quadratic) == 45 * (0.5 + 0.25)
    assert budget.scene_seconds(10, Setting(2048), quadratic, n_pairs=4) == 3.0


@pytest.mark.parametrize(
    "seconds_left, expected",
    [
        (2000, settings(a=4096, b=4096)),  # 1105 s fits
        (700, settings(a=4096, b=2048)),  # b saves 500 s by halving: 605 s
        (400, settings(a=4096, b=1024)),  # b again (250 s) rather than a (22.5 s): 355 s
        (340, settings(a=2048, b=1024)),  # b is at its cheapest, so a gives: 332.5 s
        (300, settings(a=4096, b=None)),  # cheapest total 321.25 s > 300: skip the largest, a fits again
        (10, settings(a=None, b=None)),  # not even a's 21.25 s
        (0, settings(a=None, b=None)),
        (-5, settings(a=None, b=None)),
    ],
)
def test_plan_known_answers(seconds_left, expected):
    assert budget.plan(COUNTS, seconds_left, UNIT, LADDER) == expected


def test_plan_safety_scales_every_estimate():
    assert budget.plan(COUNTS, 1400, UNIT, LADDER, safety=2.0) == settings(a=4096, b=2048)


def test_plan_drops_exhaustive_pairs_before_keypoints_and_only_where_it_saves():
    steps = budget.ladder(4096, "exhaustive", 2048)
    # b: 1275 s exhaustive, 1050 s retrieval; a: 55 s either way (under 20 images retrieval is exhaustive)
    assert budget.plan(COUNTS, 1200, UNIT, steps) == {"a": Setting(4096, "exhaustive"), "b": Setting(4096, "dinov2")}
    assert budget.plan(COUNTS, 2000, UNIT, steps) == {
        "a": Setting(4096, "exhaustive"),
        "b": Setting(4096, "exhaustive"),
    }


def test_plan_breaks_ties_by_listing_order_and_keeps_it():
    assert list(budget.plan({"y": 10, "x": 10}, 100, UNIT, LADDER).items()) == [
        ("y", Setting(2048)),
        ("x", Setting(4096)),
    ]


def test_plan_needs_settings():
    with pytest.raises(ValueError, match="at least one"):
        budget.plan(COUNTS, 100, UNIT, [])


def test_measured_costs_refit_each_rate():
    prior = Costs(per_image=9, per_pair=9, per_pair_match=9, keypoints=4096, exponent=2.0)
    run = {
        "images": 10,
        "setting": Setting(2048),
        "times": {"pairs": 1.0, "orientation": 9.0, "features": 15.0, "matching": 22.5, "reconstruction": 4.0},
    }
    assert budget.measured_costs([run], prior) == Costs(
        per_image=2.0, per_pair=0.2, per_pair_match=2.0, keypoints=4096, exponent=2.0
    )


def test_measured_costs_keep_the_prior_for_reused_stages_and_zero_a_stage_that_never_ran():
    prior = Costs(per_image=9, per_pair=9, per_pair_match=9)
    reused = {
        "images": 10,
        "setting": Setting(4096),
        "times": {"pairs": 0.01, "orientation": 0.02, "features": 0.01, "matching": 0.01, "reconstruction": 0.1},
    }
    assert budget.measured_costs([reused], prior) == prior
    upright = {"images": 10, "setting": Setting(4096), "times": {"features": 20.0, "matching": 45.0}}
    assert budget.measured_costs([upright], prior) == Costs(per_image=2.0, per_pair=0.0, per_pair_match=1.0)
    counted = {**upright, "pairs": 9}  # the real count from the pairs file, when the caller has it
    assert budget.measured_costs([counted], prior).per_pair_match == 5.0
    assert budget.measured_costs([], prior) == prior


def test_default_costs_per_device():
    assert budget.default_costs("cuda:0") is budget.DEFAULT_COSTS["cuda"]
    assert budget.default_costs(torch.device("cpu")) is budget.DEFAULT_COSTS["cpu"]
    # A GPU is faster per pair than 2 CPU cores at every keypoint budget the ladder uses.
    for kp in (4096, 2048, 1024):
        assert budget.scene_seconds(100, Setting(kp), budget.DEFAULT_COSTS["cuda"]) < budget.scene_seconds(
            100, Setting(kp), budget.DEFAULT_COSTS["cpu"]
        )
