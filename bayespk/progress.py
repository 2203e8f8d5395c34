"""Progress of long steps (compilation, sampling, simulations, report sections), for terminals and for logs.

On a terminal a live display shows it (for sampling, nutpie's or PyMC's own
progress bar; elsewhere one line rewritten in place). When the output is not a
terminal (a batch job, a CI log, ``bayespk fit ... | cat``), plain lines are
printed instead, at most every ``BAYESPK_PROGRESS_SECONDS`` seconds (default
10), plus one when the step ends::

    sampling: 1200/8000 draws (15%), 0 divergences, 14 s elapsed, ETA 80 s

This module imports nothing heavy: the commands that need no model use it too.

Examples
--------
>>> lines = []
>>> p = Progress("simulate", total=4, unit="chunks", say=lines.append, live=False, every=0)
>>> p.update(1)
>>> lines[0].startswith("simulate: 1/4 chunks (25%)")
True
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["DEFAULT_SECONDS", "ENV_SECONDS", "Progress", "interval", "is_terminal", "printer", "step"]

ENV_SECONDS = "BAYESPK_PROGRESS_SECONDS"
DEFAULT_SECONDS = 10.0


def interval() -> float:
    """Seconds between two plain progress lines: ``$BAYESPK_PROGRESS_SECONDS``, else 10."""
    text = os.environ.get(ENV_SECONDS, "").strip()
    try:
        value = float(text) if text else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS
    return value if value >= 0 else DEFAULT_SECONDS


def is_terminal() -> bool:
    """Whether stdout and stderr are both a terminal (a live display is seen; otherwise print plain lines)."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def printer(stream=None) -> Callable[[str], None]:
    """A ``say`` function: print a line to ``stream`` (default: stdout at the time of the call), flushed."""
    return lambda msg: print(msg, file=stream or sys.stdout, flush=True)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 600 else f"{s / 60:.0f} min"


class Progress:
    """Progress of one step with a known amount of work.

    Parameters
    ----------
    what : str
        Name of the step, the start of every line (``"sampling"``).
    total : int
        Work units of the whole step.
    unit : str
        Name of the units (``"draws"``).
    say : callable, optional
        Takes each plain line (default: print to stdout).
    live : bool, optional
        Rewrite one line in place on stderr instead of printing lines (default: :func:`is_terminal`).
    every : float, optional
        Seconds between plain lines (default: :func:`interval`).
    enabled : bool
        False: print nothing (``--quiet``).
    """

    def __init__(self, what: str, total: int, *, unit: str = "", say: Callable[[str], None] | None = None,
                 live: bool | None = None, every: float | None = None, enabled: bool = True):
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.say = say or printer()
        self.live = is_terminal() if live is None else live
        self.every = interval() if every is None else every
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = self.t0  # the first plain line comes after one interval
        self.done_units = 0
        self._drawn = False

    def start(self) -> None:
        """Start the clock again (when the work itself begins, after a preparation)."""
        self.t0 = self.last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def line(self, done: int, detail: str = "") -> str:
        """``what: done/total unit (pct%), detail, N s elapsed, ETA M s``."""
        elapsed = self.elapsed
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {_seconds(elapsed * (self.total - done) / done)}" if 0 < done < self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        return (f"{self.what}: {done}/{self.total}{unit}{pct}{', ' + detail if detail else ''}, "
                f"{_seconds(elapsed)} elapsed{eta}")

    def update(self, done: int, detail: str = "", *, force: bool = False) -> None:
        """Record ``done`` units; print a line when one is due (live: redraw)."""
        self.done_units = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.live:
            if force or now - self.last >= 0.2:
                sys.stderr.write("\r" + self.line(done, detail)[:150].ljust(80))
                sys.stderr.flush()
                self.last, self._drawn = now, True
        elif force or now - self.last >= self.every:
            self.say(self.line(done, detail))
            self.last = now

    def finish(self, detail: str = "", *, summary: bool = True) -> None:
        """End the step: the live line is closed; a plain line says how long the whole step took
        (``summary=False``: the caller says it)."""
        if not self.enabled:
            return
        if self.live:
            if self._drawn:
                sys.stderr.write("\n")
                sys.stderr.flush()
            return
        if not summary:
            return
        unit = f" {self.unit}" if self.unit else ""
        self.say(f"{self.what}: {self.done_units}/{self.total}{unit}{', ' + detail if detail else ''}, "
                 f"done in {self.elapsed:.1f} s")


@contextmanager
def step(what: str, say: Callable[[str], None] | None = None, enabled: bool = True) -> Iterator[None]:
    """Announce a long step before it starts (``what ...``) and its duration after it (``what: 3.2 s``)."""
    say = say or printer()
    t0 = time.perf_counter()
    if enabled:
        say(f"{what} ...")
    yield
    if enabled:
        say(f"{what}: done in {time.perf_counter() - t0:.1f} s")
