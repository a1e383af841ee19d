"""Progress of a stage's loop: tqdm in a terminal, or a caller's callback (the app's progress bars).

A stage writes `for x in progress.bar(items, desc=..., callback=progress):` where it used tqdm;
`callback(done, total, desc)` is called once at the start (done 0) and after each item. `total` is
None when the loop does not know its length in advance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tqdm import tqdm

Callback = Callable[[int, "int | None", str], None]


class _Reporter:
    """The part of tqdm's interface the stages use (iteration, `update`, `with`), reporting to a callback."""

    def __init__(self, iterable, total: int | None, desc: str, callback: Callback, disable: bool = False):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.callback, self.disable = iterable, total, desc, callback, disable
        self.n = 0
        if not disable:
            callback(0, total, desc)

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable:
            self.callback(self.n, self.total, self.desc)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def bar(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    callback: Callback | None = None,
    **tqdm_kwargs,
):
    """`tqdm(iterable, total=, desc=, **tqdm_kwargs)` without a callback, else the same loop
    reporting `callback(done, total, desc)`; `disable=True` silences either."""
    if callback is None:
        return tqdm(iterable, total=total, desc=desc, **tqdm_kwargs)
    return _Reporter(iterable, total, desc, callback, tqdm_kwargs.get("disable", False))


def report(callback: Callback | None, done: int, total: int | None, desc: str) -> None:
    """One report from a stage step that has no loop (a callback only; the CLI logs those steps)."""
    if callback is not None:
        callback(done, total, desc)
