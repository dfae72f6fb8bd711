"""Atomic file writes: a reader never sees half a file, and a failed write leaves the old one.

Every file derive writes (generated modules, LaTeX, predictions, checkpoints, pictures) goes
through :func:`atomic_writer`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def file_mode(path: Path) -> int:
    """The mode a file written to ``path`` should get: that of the file it replaces, else 0666
    less the process umask (what ``open(path, "w")`` gives; mkstemp alone would give 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        pass
    try:
        with open("/proc/self/status", encoding="ascii") as fh:  # the umask, without changing it
            umask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = 0o022
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_writer(path: Path, sync: bool = False) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` only when the block succeeds: it is
    written to a temporary file in the same folder (with :func:`file_mode`), then ``os.replace``d.
    On any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` through :func:`atomic_writer`."""
    with atomic_writer(path) as fh:
        fh.write(text.encode("utf-8"))
