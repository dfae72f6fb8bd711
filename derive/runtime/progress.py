"""Progress of a training run on a terminal: a bar that redraws itself, or plain lines in a log."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .fit import Progress


class TerminalLine:
    """One status line on ``stream``, redrawn in place (on a terminal) at most 10 times a second:
    what :class:`TerminalProgress` and the sweep's progress share. ``tty`` None: ask the stream."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, width: int = 24):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self._shown = False
        self._last = 0.0

    def bar(self, done: int, total: int) -> str:
        """``[######..................]``: ``done`` of ``total`` in ``width`` characters."""
        filled = round(self.width * done / total)
        return f"[{'#' * filled}{'.' * (self.width - filled)}]"

    def due(self, now: float, last: bool) -> bool:
        """Whether to redraw at ``now`` (``time.perf_counter()``): 0.1 s after the last redraw, or
        at the ``last`` update."""
        if now - self._last < 0.1 and not last:
            return False
        self._last = now
        return True

    def redraw(self, text: str) -> None:
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Wipe the line drawn (if any), leaving the cursor at its start; no flush."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = False

    def finish(self) -> None:
        if self._shown:
            self.clear()
            self.stream.flush()


class TerminalProgress(TerminalLine, Progress):
    """On a terminal (``tty``), one line redrawn in place at most 10 times a second::

        epoch  120/200 [##############..........]  loss 0.1234  val 0.1500  1.2 s

    Otherwise (a pipe, a log file, CI) nothing but the lines :func:`fit` asks for (every
    ``--log-every`` epochs and the last)."""

    def start(self, total: int, first: int) -> None:
        self.total, self.first, self.t0 = total, first, time.perf_counter()

    def update(self, epoch: int, loss: float, val_loss: float | None) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        done = epoch - self.first
        if not self.due(now, done >= self.total):
            return
        last = self.first + self.total
        self.redraw(f"epoch {epoch:>{len(str(last))}}/{last} {self.bar(done, self.total)}"
                    f"  loss {loss:.4g}" + (f"  val {val_loss:.4g}" if val_loss is not None else "")
                    + f"  {now - self.t0:.1f} s")

    def line(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
