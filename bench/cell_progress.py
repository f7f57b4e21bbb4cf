"""Progress inside one long cell (N = 10⁹ takes minutes): the share of a draw's samples done, shown beside the
sweep's progress bar. The sweep says where to show it (``shown_by``); a cell's draws ask for a ``tracker``.
Cells measured elsewhere (a Dask worker) have no bar to show it on and get none."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

QUIET_S = 3.0  # a draw shorter than this shows no progress of its own

_SHOW: ContextVar[tuple[Callable[[str], None], float] | None] = ContextVar("varbench_cell_progress", default=None)


@contextlib.contextmanager
def shown_by(show: Callable[[str], None], every_s: float) -> Iterator[None]:
    """Within the block, trackers report through ``show`` at most once per ``every_s`` seconds."""
    token = _SHOW.set((show, every_s))
    try:
        yield
    finally:
        _SHOW.reset(token)


def tracker(label: str, total_samples: int) -> Callable[[int], None] | None:
    """A callback for ``estimate(progress=…)`` counting samples done (from any thread); None where nothing shows."""
    shown = _SHOW.get()
    if shown is None:
        return None
    show, every_s = shown
    start = time.monotonic()
    state = {"done": 0, "last": -math.inf}
    lock = threading.Lock()

    def advance(samples: int) -> None:
        with lock:
            state["done"] += samples
            now = time.monotonic()
            if now - start < QUIET_S or now - state["last"] < every_s:
                return
            state["last"] = now
            done = state["done"]
        show(f"{label} {done / total_samples:.0%}")

    return advance
