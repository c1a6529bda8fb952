"""Progress of a run: a compile phase per group, then work counted in whole chain-generations.

``Progress`` shows, on stderr:

- while a group compiles: ``compiling 2/6 (replace n=316) ... 4.1 s`` (the elapsed time of the
  compile phase; compiling is not running, so it does not enter the rate);
- while chains run: ``replace n=316 gen 12/50 | 41,200/180,000 chain-generations (23%) |
  2,350/s | ETA 1:08``: the rate and the time left come from the device time of the finished
  chunks only, and are shown once a chunk has finished (before that, nothing is known).

On a terminal the line is redrawn in place; otherwise (a log, CI) a line is printed at most every
``LOG_SECONDS``. With a ``log`` path every event is also appended there with a time stamp (the
CLI's ``DIR/run.log``). A user's callable ``(label, done, total)`` receives the same events
(``done`` and ``total`` in chain-generations; ``label`` None at the end).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: Seconds between two progress lines when stderr is not a terminal.
LOG_SECONDS = 10.0


def _clock(seconds: float) -> str:
    """``1:08`` or ``2:03:04``.

    >>> _clock(68), _clock(7384)
    ('1:08', '2:03:04')
    """
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """What a run reports as it goes (see the module docstring).

    Args:
        total: chain-generations of the whole run.
        show: draw the progress line on stderr.
        log: a file every event is appended to (None: none).
        callback: a user's ``(label, done, total)`` called at every event.
    """

    def __init__(self, total: int, show: bool = False, log: str | Path | None = None,
                 callback: Callable[[str | None, float, int], None] | None = None):
        self.total, self.show, self.callback = total, show, callback
        self.log = Path(log) if log is not None else None
        self.tty = show and sys.stderr.isatty()
        self.done = 0
        self.work = 0  # chain-generations run since the clock started
        self.device_seconds = 0.0
        self._mark: float | None = None
        self._ticking: threading.Event | None = None
        self._last_print = 0.0

    def compiling(self, index: int, count: int, label: str) -> None:
        """Group ``index`` (0-based) of ``count`` starts compiling (on a terminal the line
        counts the seconds until ``compiled``)."""
        text = f"compiling {index + 1}/{count} ({label})"
        self._emit(text, force=True)
        if self.tty:
            start, self._ticking = time.perf_counter(), threading.Event()

            def tick(stop=self._ticking):
                while not stop.wait(1.0):
                    print(f"\r\033[K{text} ... {time.perf_counter() - start:.0f} s", end="",
                          file=sys.stderr, flush=True)

            threading.Thread(target=tick, daemon=True).start()

    def compiled(self, seconds: float) -> None:
        """The compile phase ended (``seconds`` long); the device clock starts now."""
        if self._ticking is not None:
            self._ticking.set()
            self._ticking = None
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} compiled in {seconds:.1f} s\n")
        self._mark = time.perf_counter()

    def chunk(self, label: str, done: int) -> None:
        """``done`` chain-generations are finished in all (a chunk just finished)."""
        now = time.perf_counter()
        if self._mark is not None:
            self.device_seconds += now - self._mark
            self.work += done - self.done
        self._mark = now
        self.done = done
        self._emit(label)

    def skip(self, done: int) -> None:
        """Work done before a resume point (counted, but not in the rate)."""
        self.done = done

    def close(self) -> None:
        self._emit(None, force=True)
        if self.tty:
            print(file=sys.stderr)

    def line(self, label: str | None) -> str:
        """The progress line for ``label`` (None: the end).

        >>> p = Progress(1000)
        >>> p.done, p.work, p.device_seconds = 250, 250, 5.0
        >>> p.line("replace gen 3/10")
        'replace gen 3/10 | 250/1,000 chain-generations (25%) | 50/s | ETA 0:15'
        """
        parts = [label or "done", f"{self.done:,}/{self.total:,} chain-generations "
                                  f"({100 * self.done / max(self.total, 1):.0f}%)"]
        if self.work and self.device_seconds > 0:
            rate = self.work / self.device_seconds
            parts.append(f"{rate:,.0f}/s")
            if label is not None:
                parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        return " | ".join(parts)

    def _emit(self, label: str | None, force: bool = False) -> None:
        if self.callback is not None:
            self.callback(label, self.done, self.total)
        now = time.perf_counter()
        compiling = label is not None and label.startswith("compiling")
        text = label if compiling else self.line(label)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        if not self.show:
            return
        if self.tty:
            print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)
        elif force or now - self._last_print >= LOG_SECONDS:
            print(text, file=sys.stderr, flush=True)
            self._last_print = now
