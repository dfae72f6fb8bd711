"""Progress of a sweep on a terminal: a bar over runs that redraws itself, or plain lines in a log::

    runs  120/600 [#####...................]  running 64  diverged 3  best 0.1234  2.1 s, ~8.4 s left

Like :class:`derive.runtime.progress.TerminalProgress`: redrawn in place at most 10 times a second
on a terminal; otherwise (a pipe, a log file, CI) a line at every tenth of the runs.
"""

from __future__ import annotations

import time
from typing import TextIO

from ..runtime.progress import TerminalLine


class SweepProgress:
    """Receives a sweep's progress; this base class shows nothing (subclass it, or use
    :class:`TerminalSweepProgress`)."""

    def start(self, total: int, plan: str) -> None:
        """``total`` runs are planned; ``plan`` says what they are and where they run."""

    def skip(self, runs: int) -> None:
        """``runs`` runs were found in the journal (a resumed sweep): done, not run now."""

    def update(self, done: int, running: int, diverged: int, best: float | None) -> None: ...

    def finish(self) -> None: ...


class TerminalSweepProgress(TerminalLine, SweepProgress):
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, width: int = 24):
        super().__init__(stream, tty, width)
        self._logged = 0

    def start(self, total: int, plan: str) -> None:
        self.total, self.t0, self.skipped, self.done = max(total, 1), time.perf_counter(), 0, 0
        self.stream.write(f"running    {total} runs: {plan}\n")
        self.stream.flush()

    def skip(self, runs: int) -> None:
        self.skipped += runs
        self.done += runs
        self.stream.write(f"resuming   {self.done} of {self.total} runs are in the journal already\n")
        self.stream.flush()

    def text(self, done: int, running: int, diverged: int, best: float | None) -> str:
        now = time.perf_counter() - self.t0
        rate = (done - self.skipped) / now if now > 0 else 0.0
        left = f", ~{(self.total - done) / rate:.1f} s left" if rate > 0 and done < self.total else ""
        return (f"runs {done:>{len(str(self.total))}}/{self.total} {self.bar(done, self.total)}"
                f"  running {running}  diverged {diverged}"
                + (f"  best {best:.4g}" if best is not None else "") + f"  {now:.1f} s{left}")

    def update(self, done: int, running: int, diverged: int, best: float | None) -> None:
        self.done = done
        if self.tty:
            if self.due(time.perf_counter(), done >= self.total):
                self.redraw(self.text(done, running, diverged, best))
            return
        tenth = done * 10 // self.total
        if tenth <= self._logged and done < self.total:
            return
        self._logged = tenth
        self.stream.write(self.text(done, running, diverged, best) + "\n")
        self.stream.flush()
