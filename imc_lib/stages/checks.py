"""A check without ground truth for every step that changes a model after the mapper.

The final refinement, joining, re-registering left-out photos and the held-distortion second mapping
each take a model and give back another. None of them can see the truth, and each has made real
scenes worse while raising ours (the 1.5 px refinement dropped 46-62% of two unseen scenes' points
and moved their focal lengths 7-21%). So each step's result is compared with what it started from
(`Stats` before and after) and kept only when `judge` finds nothing that says it got worse:

- photos registered: no fewer;
- intrinsics: no camera's focal length moved by more than `max_focal_change` (a share);
- 3D points and observations kept: at least `min_points_kept` of them (steps that only refine);
- the photos the step did not add: their mean reprojection error grew by at most
  `max_error_growth` (a factor) plus `error_slack` pixels.

The decision is logged with the numbers it used (`Verdict.line`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pycolmap

confs = {
    "check": {
        "max_focal_change": 0.05,
        "min_points_kept": 0.7,
        "max_error_growth": 1.25,
        "error_slack": 0.1,
    },
}


@dataclass(frozen=True)
class Stats:
    """What a model is, as far as a check can tell without the truth."""

    photos: int
    points: int
    observations: int
    focal: dict[int, float]  # camera id -> mean focal length (px)
    error: dict[int, float]  # image id -> mean reprojection error of its observations (px)

    def mean_error(self, ids) -> float:
        values = [self.error[i] for i in ids if i in self.error]
        return float(np.mean(values)) if values else 0.0


def stats(model: pycolmap.Reconstruction) -> Stats:
    """A model's `Stats` (each image's error: the mean of its 3D points' mean reprojection errors)."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for point in model.points3D.values():
        for element in point.track.elements:
            sums[element.image_id] = sums.get(element.image_id, 0.0) + point.error
            counts[element.image_id] = counts.get(element.image_id, 0) + 1
    cameras = {int(model.image(i).camera_id) for i in model.reg_image_ids()}
    return Stats(
        photos=model.num_reg_images(),
        points=model.num_points3D(),
        observations=model.compute_num_observations(),
        focal={c: float(model.camera(c).mean_focal_length()) for c in cameras},
        error={int(i): sums[i] / counts[i] for i in sums},
    )


@dataclass
class Verdict:
    step: str
    kept: bool
    numbers: dict[str, float | int | str]
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        said = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.numbers.items())
        return f"{self.step}: {'kept' if self.kept else 'refused (' + '; '.join(self.reasons) + ')'}; {said}"


def judge(step: str, before: Stats, after: Stats, conf: dict | None = None, refine_only: bool = False) -> Verdict:
    """Whether `after` (a step's result) is no worse than `before` by every sign in the module's list.
    `refine_only`: the step adds nothing (no photo, no match), so the points it keeps are judged too."""
    conf = {**confs["check"], **(conf or {})}
    shared = [c for c in before.focal if c in after.focal]
    focal = max((abs(after.focal[c] / before.focal[c] - 1) for c in shared), default=0.0)
    untouched = [i for i in before.error if i in after.error]
    error0, error1 = before.mean_error(untouched), after.mean_error(untouched)
    kept_points = after.points / max(before.points, 1)
    numbers = {"photos": f"{before.photos}->{after.photos}", "points kept": kept_points,
               "observations kept": after.observations / max(before.observations, 1), "focal moved": focal,
               "error px": f"{error0:.3f}->{error1:.3f}"}  # fmt: skip
    reasons = []
    if after.photos < before.photos:
        reasons.append("fewer photos")
    if focal > conf["max_focal_change"]:
        reasons.append(f"a focal length moved {focal:.1%} > {conf['max_focal_change']:.0%}")
    if refine_only and kept_points < conf["min_points_kept"]:
        reasons.append(f"{kept_points:.0%} of the points kept < {conf['min_points_kept']:.0%}")
    if error1 > error0 * conf["max_error_growth"] + conf["error_slack"]:
        reasons.append(f"the photos it did not add: {error0:.2f} -> {error1:.2f} px")
    return Verdict(step, not reasons, numbers, reasons)
