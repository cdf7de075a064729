"""Progress lines that are never silent for long: a line on stderr redrawn in place by its
owner's updates and, between them, every ``TICK`` seconds with the elapsed time, so that a
long step (one factorisation of the build, a slow block) still shows that the job runs.

No Dask here: the build's line (``StepLine``) is drawn by the jobs and by the estimator
around a build on the driver; the passes' lines (``graph.compute``) tick with ``Ticker``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["TICK", "StepLine", "Ticker", "clock", "step_line"]

#: Seconds between two redraws of a line that its owner has not updated.
TICK = 1.0


def clock(seconds: float) -> str:
    """Elapsed time as m:ss, or h:mm:ss from an hour.

    >>> clock(7.4), clock(3725)
    ('0:07', '1:02:05')
    """
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


class Ticker:
    """Calls ``redraw()`` every ``every`` seconds from a daemon thread while entered.

    The owner's own redraws and the ticker's go through ``lock``: one line, one writer at a
    time. LAPACK and BLAS release the GIL, so the ticker runs during a long factorisation.
    """

    def __init__(self, redraw: Callable[[], None], every: float = TICK) -> None:
        self.redraw, self.every = redraw, every
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with self.lock:
                self.redraw()

    def __enter__(self) -> Ticker:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ddrp-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class StepLine:
    """A line ``label: step, 0:07 elapsed`` on ``stream`` (default stderr), redrawn when
    the step changes and every ``TICK`` seconds; ended by a newline on exit (also when
    interrupted). Call the line itself with a step's text: it is the ``progress`` callback
    of ``maths.build.build``.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with StepLine("build", stream=out) as line:
    ...     line("allocation")
    >>> out.getvalue().split("\\r")[-1]
    'build: allocation, 0:00 elapsed\\n'
    """

    def __init__(self, label: str, stream: TextIO | None = None, every: float = TICK) -> None:
        self.label, self.stream = label, stream
        self.step = "starting"
        self.start = time.monotonic()
        self._ticker = Ticker(self._draw, every)
        self._width = 0

    def _draw(self) -> None:
        text = f"{self.label}: {self.step}, {clock(time.monotonic() - self.start)} elapsed"
        pad = " " * max(0, self._width - len(text))  # a shorter text erases the longer one
        self._width = len(text)
        out = self.stream or sys.stderr
        out.write("\r" + text + pad)
        out.flush()

    def __call__(self, step: str) -> None:
        with self._ticker.lock:
            self.step = step
            self._draw()

    def __enter__(self) -> StepLine:
        self.start = time.monotonic()
        with self._ticker.lock:
            self._draw()
        self._ticker.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticker.__exit__(*exc)
        out = self.stream or sys.stderr
        out.write("\n")
        out.flush()


@contextlib.contextmanager
def step_line(show: bool, label: str) -> Iterator[Callable[[str], None] | None]:
    """A ``StepLine`` of ``label`` while the block runs, if ``show``; else None (no line)."""
    if not show:
        yield None
        return
    with StepLine(label) as line:
        yield line
