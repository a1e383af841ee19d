"""Progress of a stage's loop: a bar or log lines, or a caller's callback (the app's progress bars).

A stage writes `for x in progress.bar(items, desc=..., callback=progress):` where it used tqdm;
`callback(done, total, desc)` is called once at the start (done 0) and after each item. `total` is
None when the loop does not know its length in advance.

Without a callback, what shows the loop depends on where stderr goes, as with the tools users know:
a terminal gets tqdm's bar; a Jupyter kernel (the Kaggle notebook) one tqdm widget per loop; a file
or a pipe (CI, nohup, a Kaggle log) no bar, but a log line when the loop ends and one every
LOG_EVERY_S while it runs, instead of every refresh of a bar.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Callable, Iterable

from tqdm import tqdm

logger = logging.getLogger(__name__)

Callback = Callable[[int, "int | None", str], None]

# Seconds between the log lines of a loop that is still running, where stderr is not a terminal.
LOG_EVERY_S = 60.0


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

    def close(self) -> None:
        """The loop is over (iterated to its end, or its `with` block left without an error)."""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.close()


class _LogLines(_Reporter):
    """A loop's progress as log lines: one when it ends (what it did, in how long), and one every
    LOG_EVERY_S while it runs; nothing for a loop that had nothing to do."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str = "it", disable: bool = False):
        self.unit, self.start, self.closed = unit, time.monotonic(), False
        self.last = self.start
        super().__init__(iterable, total, desc, self._line, disable)

    def _line(self, done: int, total: int | None, desc: str) -> None:
        now = time.monotonic()
        if done and now - self.last >= LOG_EVERY_S and done != total:
            self.last = now
            seconds = now - self.start
            eta = f", about {seconds / done * (total - done):.0f} s to go" if total else ""
            count = f"{done}/{total}" if total else str(done)
            logger.info("%s: %s %s so far, %.0f s%s", desc, count, _plural(self.unit, done), seconds, eta)

    def close(self) -> None:
        if self.closed or self.disable or not self.n:
            return
        self.closed = True
        seconds = time.monotonic() - self.start
        logger.info("%s: %d %s in %.1f s (%.2f s/%s)", self.desc, self.n, _plural(self.unit, self.n), seconds,
                    seconds / self.n, self.unit)  # fmt: skip


def _plural(unit: str, n: int) -> str:
    """ "photo" -> "photos" unless one ("img" and other short units as they are)."""
    return unit + "s" if n != 1 and unit in ("photo", "pair", "image") else unit


def shown_on() -> str:
    """Where a loop without a callback shows: "terminal" (stderr is one), "notebook" (a Jupyter
    kernel with ipywidgets, as on Kaggle) or "log" (anything else: a file, a pipe)."""
    if getattr(sys.stderr, "isatty", lambda: False)():
        return "terminal"
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and "IPKernelApp" in getattr(shell, "config", {}) and importlib.util.find_spec("ipywidgets"):
        return "notebook"
    return "log"


def bar(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    callback: Callback | None = None,
    **tqdm_kwargs,
):
    """The loop over `iterable` reporting `callback(done, total, desc)`; without a callback, tqdm's
    bar (`tqdm_kwargs` go to it) on a terminal or in a notebook, else log lines (`shown_on`).
    `disable=True` silences each."""
    disable = tqdm_kwargs.get("disable", False)
    if callback is not None:
        return _Reporter(iterable, total, desc, callback, disable)
    where = shown_on()
    if where == "terminal":
        return tqdm(iterable, total=total, desc=desc, **tqdm_kwargs)
    if where == "notebook":
        from tqdm.notebook import tqdm as notebook_tqdm

        try:
            return notebook_tqdm(iterable, total=total, desc=desc, **tqdm_kwargs)
        except ImportError:  # ipywidgets there but unusable ("IProgress not found"): log lines
            pass
    return _LogLines(iterable, total, desc, tqdm_kwargs.get("unit", "it"), disable)


def report(callback: Callback | None, done: int, total: int | None, desc: str) -> None:
    """One report from a stage step that has no loop (a callback only; the CLI logs those steps)."""
    if callback is not None:
        callback(done, total, desc)
