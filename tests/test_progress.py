"""imc_lib.progress: one loop, shown by tqdm or reported to a callback."""

from __future__ import annotations

from tqdm import tqdm

from imc_lib import progress


def test_bar_reports_to_a_callback_or_drives_tqdm():
    heard = []
    items = list(progress.bar(["a", "b", "c"], desc="features", callback=lambda *e: heard.append(e), unit="img"))
    assert items == ["a", "b", "c"]
    assert heard == [(0, 3, "features"), (1, 3, "features"), (2, 3, "features"), (3, 3, "features")]

    heard.clear()
    with progress.bar(desc="turned", callback=lambda *e: heard.append(e)) as bar:  # no length known
        bar.update()
        bar.update()
    assert heard == [(0, None, "turned"), (1, None, "turned"), (2, None, "turned")]

    heard.clear()
    with progress.bar(desc="off", callback=lambda *e: heard.append(e), disable=True) as bar:
        bar.update()
    assert heard == []

    shown = progress.bar(range(2), desc="cli", disable=True)
    assert isinstance(shown, tqdm) and list(shown) == [0, 1]
    progress.report(None, 1, 1, "nobody listens")  # no callback: nothing to call
    progress.report(lambda *e: heard.append(e), 1, 1, "pairs")
    assert heard == [(1, 1, "pairs")]
