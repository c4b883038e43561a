"""How a batch command (``clean``, ``predict``, ``automask``) shows its progress on stderr.

On a terminal: one line rewritten in place (``\\r``) with loops done, rate and time left; messages that
must stay (errors, quarantined loops) are printed above it. Elsewhere (a log file, a pipe, a child
process of Slicer): one line per loop, as before, so logs read the same. ``quiet``: neither; messages
still print.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_CLEAR = "\r\x1b[K"  # back to the line's start and erase it (every terminal since the VT100)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_progress(done: int, total: int, elapsed: float) -> str:
    """``7/20 loops (35%), 1.40 loops/s, 0:09 left``; the rate and time left once a loop is done."""
    share = f" ({done / total:.0%})" if total else ""
    if done <= 0 or elapsed <= 0:
        return f"{done}/{total} loops{share}"
    rate = done / elapsed
    return f"{done}/{total} loops{share}, {rate:.2f} loops/s, {format_duration((total - done) / rate)} left"


class Progress:
    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.total, self.done, self.enabled, self.clock = total, 0, enabled, clock
        self.live = enabled and _is_terminal(self.stream)
        self.start = clock()
        self._line = ""  # the progress line on screen ("" when none)

    def loop_done(self, line: str | None = None) -> None:
        """One loop finished: ``line`` says how (printed as is off a terminal; None: its message said it)."""
        self.done += 1
        if not self.enabled:
            return
        if self.live:
            self._draw()
        elif line is not None:
            print(line, file=self.stream)

    def message(self, text: str) -> None:
        """A line that stays (an error, a quarantined loop), whatever ``quiet`` says."""
        if self._line:
            self.stream.write(_CLEAR)
        print(text, file=self.stream)
        if self._line:  # the same line again below it
            self.stream.write(self._line)
            self.stream.flush()

    def close(self) -> None:
        """Leave the last progress line on screen and end it, so the summary starts a new line."""
        if self._line:
            self.stream.write("\n")
            self.stream.flush()
            self._line = ""

    def _draw(self) -> None:
        self._line = _CLEAR + format_progress(self.done, self.total, self.clock() - self.start)
        self.stream.write(self._line)
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False
