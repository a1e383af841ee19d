"""Time guard for a run with a deadline (the Kaggle kernel's 9 hours): per-scene settings that fit.

A scene of n images and P pairs is costed as

    n * per_image + P * (per_pair + per_pair_match * (max_keypoints / keypoints) ** exponent)

per_image: global descriptors, features and reconstruction; per_pair: the pair work that does not
depend on the keypoint budget (the orientation stage's low-resolution matching); per_pair_match:
LightGlue at `keypoints` keypoints, whose attention grows with their square on CPU (exponent 2)
and about linearly on a GPU. The rates start from per-device defaults and are refitted from the
stage times of the scenes already run (`measured_costs`).

`plan` starts every scene at the best setting of a ladder (`ladder`: fewer pairs first, then
halved keypoints) and, while the total exceeds the time left, moves the scene whose next cheaper
setting saves the most. When even the cheapest settings do not fit, it skips the largest scenes
(their rows get placeholder poses): a few scenes without poses score better than a kernel killed
at the limit, which scores nothing. Everything here is arithmetic on numbers; nothing is run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PAIR_METHODS = ("exhaustive", "dinov2", "vlad")  # dinov2 and vlad: retrieval, `MIN_PAIRS` per image
# Mirrors pairs.confs["dinov2"] (tests check they agree); kept here so this module stays pure.
EXHAUSTIVE_IF_LESS = 20
MIN_PAIRS = 20
# Mirrors pairs.confs["vlad"]: a larger scene's photos keep a share of its photos as neighbours (pairs.neighbours).
VLAD_MIN_PAIRS_SHARE = 1 / 12
VLAD_MAX_PAIRS = 30
# Below this many seconds a stage is taken as reused from an earlier run, not as measured.
MIN_MEASURED_S = 0.5


@dataclass(frozen=True)
class Setting:
    """The knobs the guard turns for one scene (passed on to pipeline.run)."""

    max_keypoints: int
    pairs: str = "dinov2"

    def __post_init__(self):
        if self.pairs not in PAIR_METHODS:
            raise ValueError(f"pairs must be one of {PAIR_METHODS}, not {self.pairs!r}")
        if self.max_keypoints <= 0:
            raise ValueError(f"max_keypoints must be positive, not {self.max_keypoints}")

    def __str__(self) -> str:
        return f"{self.max_keypoints} keypoints, {self.pairs} pairs"


@dataclass(frozen=True)
class Costs:
    """Seconds per image and per pair; `per_pair_match` is at `keypoints` keypoints per image."""

    per_image: float
    per_pair: float
    per_pair_match: float
    keypoints: int = 4096
    exponent: float = 1.0

    def __str__(self) -> str:
        return (
            f"{self.per_image:.3g} s/image, {self.per_pair:.3g} + {self.per_pair_match:.3g} s/pair "
            f"at {self.keypoints} keypoints"
        )


# CPU: 2 shared cores, herzjesu-p8 at 1024 keypoints (4.6 s/image, 1.8 s/pair orientation, 0.9 s/pair
# LightGlue). CUDA: conservative guesses for Kaggle's T4/P100 (fp16), until the first scene is measured.
DEFAULT_COSTS = {
    "cpu": Costs(per_image=5.0, per_pair=2.0, per_pair_match=15.0, keypoints=4096, exponent=2.0),
    "cuda": Costs(per_image=2.0, per_pair=0.05, per_pair_match=0.2, keypoints=4096, exponent=1.0),
}


def default_costs(device) -> Costs:
    """The default rates for a device ("cuda", "cuda:0", torch.device, or anything else: CPU)."""
    return DEFAULT_COSTS["cuda" if str(device).startswith("cuda") else "cpu"]


def estimated_pairs(
    n_images: int, method: str, exhaustive_if_less: int = EXHAUSTIVE_IF_LESS, min_pairs: int = MIN_PAIRS
) -> int:
    """Pairs the pairs stage will keep: all of them, or for retrieval on a large enough scene at most
    `min_pairs` per image (VLAD: more in larger scenes, as pairs.neighbours); an upper bound on the
    nearest-neighbour part; the distance threshold may add some, which the measured rates absorb."""
    everything = n_images * (n_images - 1) // 2
    if method == "exhaustive" or n_images < exhaustive_if_less:
        return everything
    if method == "vlad":
        min_pairs = max(min_pairs, min(round(VLAD_MIN_PAIRS_SHARE * n_images), VLAD_MAX_PAIRS))
    if method in PAIR_METHODS:
        return min(everything, n_images * min_pairs)
    raise ValueError(f"pairs method must be one of {PAIR_METHODS}, not {method!r}")


def scene_seconds(n_images: int, setting: Setting, costs: Costs, n_pairs: int | None = None) -> float:
    """Estimated seconds for one scene at `setting` (pairs estimated unless `n_pairs` is given)."""
    if n_pairs is None:
        n_pairs = estimated_pairs(n_images, setting.pairs)
    per_pair = costs.per_pair + costs.per_pair_match * (setting.max_keypoints / costs.keypoints) ** costs.exponent
    return n_images * costs.per_image + n_pairs * per_pair


def ladder(
    max_keypoints: int = 4096, pairs: str = "dinov2", min_keypoints: int = 1024, retrieval: bool | str = True
) -> list[Setting]:
    """Settings from best to cheapest: exhaustive pairs (if asked for) give way to retrieval first,
    then keypoints halve from `max_keypoints` down to no fewer than `min_keypoints`.

    `retrieval`: the retrieval method the cheaper settings use (True: dinov2); False: every setting
    uses exhaustive pairs.
    """
    if pairs not in PAIR_METHODS:
        raise ValueError(f"pairs must be one of {PAIR_METHODS}, not {pairs!r}")
    fewer = ("dinov2" if retrieval is True else retrieval) if retrieval else "exhaustive"
    out = [Setting(max_keypoints, pairs if retrieval else "exhaustive")]
    if out[0].pairs != fewer:
        out.append(Setting(max_keypoints, fewer))
    kp = max_keypoints // 2
    while kp >= min_keypoints:
        out.append(Setting(kp, fewer))
        kp //= 2
    return out


def plan(
    image_counts: Mapping[str, int], seconds_left: float, costs: Costs, settings: Sequence[Setting], safety: float = 1.0
) -> dict[str, Setting | None]:
    """The setting for each scene (None: skip it) so that the estimated total fits `seconds_left`.

    `image_counts`: scene -> images, for the scenes still to run; `settings`: best first (`ladder`);
    `safety` multiplies every estimate. Deterministic: ties go to the scene listed first.
    """
    if not settings:
        raise ValueError("settings must hold at least one Setting")
    scenes = list(image_counts)
    table = {s: [safety * scene_seconds(image_counts[s], st, costs) for st in settings] for s in scenes}

    active, skipped = list(scenes), set()
    while active and sum(min(table[s]) for s in active) > seconds_left:
        largest = max(active, key=lambda s: min(table[s]))
        active.remove(largest)
        skipped.add(largest)

    level = {s: 0 for s in active}
    total = sum(table[s][0] for s in active)
    while total > seconds_left:
        best = None  # (saving, scene, next level)
        for s in active:
            cost = table[s][level[s]]
            nxt = next((j for j in range(level[s] + 1, len(settings)) if table[s][j] < cost), None)
            if nxt is not None and (best is None or cost - table[s][nxt] > best[0]):
                best = (cost - table[s][nxt], s, nxt)
        if best is None:  # every scene at its cheapest; unreachable, as the skip step made those fit
            break
        saving, s, nxt = best
        level[s] = nxt
        total -= saving
    return {s: (None if s in skipped else settings[level[s]]) for s in scenes}


def measured_costs(runs: Iterable[Mapping], prior: Costs) -> Costs:
    """Rates refitted from finished scenes, each {"images", "setting", "times"} (+ "pairs", default
    `estimated_pairs`), with `times` the scene's stage seconds from pipeline.run.

    per_image from pairs + features + reconstruction, per_pair from orientation (0 when no scene ran
    that stage), per_pair_match from matching scaled to `prior.keypoints` with `prior.exponent`. A rate
    whose stages took under MIN_MEASURED_S in total (files reused from an earlier run) keeps the
    prior's value. Fitting on estimated pair counts is deliberate: `plan` predicts from the same
    estimate, so its bias cancels out.
    """
    runs = list(runs)
    if not runs:
        return prior
    image_s = image_n = orient_s = orient_n = match_s = match_n = 0.0
    orientation_ran = False
    for run in runs:
        times, n, setting = run["times"], run["images"], run["setting"]
        p = run.get("pairs", estimated_pairs(n, setting.pairs))
        image_s += sum(times.get(k, 0.0) for k in ("pairs", "features", "reconstruction"))
        image_n += n
        if "orientation" in times:
            orientation_ran = True
            orient_s += times["orientation"]
            orient_n += p
        match_s += times.get("matching", 0.0)
        match_n += p * (setting.max_keypoints / prior.keypoints) ** prior.exponent

    def rate(seconds, count, default):
        return seconds / count if seconds >= MIN_MEASURED_S and count > 0 else default

    return Costs(
        per_image=rate(image_s, image_n, prior.per_image),
        per_pair=rate(orient_s, orient_n, prior.per_pair) if orientation_ran else 0.0,
        per_pair_match=rate(match_s, match_n, prior.per_pair_match),
        keypoints=prior.keypoints,
        exponent=prior.exponent,
    )


class OutOfTime(RuntimeError):
    """The run's deadline passed inside a scene; the scene's rows get placeholder poses."""


def check(deadline: float | None, what: str) -> None:
    """Raise OutOfTime when `deadline` (time.monotonic seconds) has passed; `what` names the work cut short."""
    if deadline is not None and time.monotonic() > deadline:
        raise OutOfTime(f"time limit reached during {what}")


class Guard:
    """A run's deadline: before each scene, the setting that lets the scenes left fit (`plan`), from
    rates refitted on the scenes already run; `deadline` is what the stages check between batches."""

    def __init__(self, seconds: float, settings: Sequence[Setting], prior: Costs, reserve: float = 0.0):
        self.deadline = time.monotonic() + seconds - reserve
        self.settings, self.prior, self.costs, self.runs = list(settings), prior, prior, []

    def setting(self, image_counts: Mapping[str, int], scene: str) -> Setting | None:
        """The setting for `scene` (None: skip it), given the images of the scenes left, itself included."""
        left = self.deadline - time.monotonic()
        chosen = plan(image_counts, left, self.costs, self.settings)[scene]
        if chosen is None:
            logger.warning(
                "time guard: skipping %s (%d images): %.0f s left cannot hold the %d scene(s) left even "
                "at %s; its rows get placeholder poses",
                scene,
                image_counts[scene],
                left,
                len(image_counts),
                self.settings[-1],
            )
        elif chosen != self.settings[0]:
            logger.warning(
                "time guard: %s (%d images) runs at %s (%.0f s left for %d scene(s))",
                scene,
                image_counts[scene],
                chosen,
                left,
                len(image_counts),
            )
        return chosen

    def record(self, images: int, setting: Setting, times: Mapping[str, float]) -> None:
        """A finished scene's stage times: the rates for the next plans."""
        self.runs.append({"images": images, "setting": setting, "times": times})
        self.costs = measured_costs(self.runs, self.prior)
