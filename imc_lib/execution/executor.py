"""Where a run's work happens, apart from what it is: `pipeline.run` hands its scenes to an executor,
and a large scene hands its photo and pair shards (imc_lib/shards.py) to the executor's pool.

- `LocalExecutor` (the default): this process, one scene after another, in the order given; no shards.
- `ray_executor.RayExecutor` (`pip install imc_lib[ray]`, imported only by `make("ray")`): scenes as Ray
  tasks, a large scene's extraction and matching in shards on actors.

A scene task carries paths, names and confs, never tensors or open files; every shard writes its own
file and one merge makes the stage's usual file, so files, resume and fingerprints do not depend on
the executor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from .shards import SHARDING


class LocalExecutor:
    """Everything in this process, scenes in the order given: today's run. `sharding` (a partial
    shards.SHARDING) shards large scenes here too, one shard after another (for tests); default: never."""

    parallel = False  # scenes run one at a time, so the time guard can plan each from the last

    def __init__(self, sharding: dict | None = None):
        self.sharding = {**SHARDING, **sharding} if sharding is not None else None

    def check(self, data_dir, work_dir) -> None:
        """Nothing to check: this process reads the folders itself."""

    def scenes(self, task: Callable, jobs: Iterable, nets) -> Iterator[tuple]:
        """(job, task(job, nets, self)) for each job, one after another: a job is drawn from `jobs`
        only once the previous one is done (the time guard plans it from the last scene's times)."""
        for job in jobs:
            yield job, task(job, nets, self)

    def shards(self, photos: int) -> bool:
        """Whether a scene of `photos` photos is extracted and matched in shards."""
        return self.sharding is not None and photos >= self.sharding["min_photos"]

    def pool(self, nets) -> contextlib.AbstractContextManager:
        """Where a large scene's shards run: `pool.map(fn, jobs)` -> [fn(nets, *job) for job in jobs]."""
        return contextlib.nullcontext(LocalPool(nets))

    def close(self) -> None:
        """Nothing to release."""


class LocalPool:
    """Shards run here, in order, on the scene's own networks."""

    def __init__(self, nets):
        self.nets = nets

    def map(self, fn: Callable, jobs: list[tuple]) -> list:
        return [fn(self.nets, *job) for job in jobs]


def make(name: str = "local", address: str | None = None, sharding: dict | None = None):
    """The executor named `name` ("local" or "ray"); `address` the Ray cluster's (default $RAY_ADDRESS,
    else a local cluster started for the run)."""
    if name == "local":
        if address:
            raise ValueError("--address names a Ray cluster; pass --executor ray with it")
        return LocalExecutor(sharding)
    if name != "ray":
        raise ValueError(f"unknown executor {name!r}; known: local, ray")
    try:
        from .ray_executor import RayExecutor
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ValueError("--executor ray needs Ray on every node: pip install 'imc_lib[ray]'") from None
    return RayExecutor(address, sharding)
