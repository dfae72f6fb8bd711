"""Errors that reach users: each says what was wrong, where, and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeriveError(Exception):
    """Base class of every error `derive` raises on purpose."""


class SpecError(DeriveError, ValueError):
    """A model specification (TOML file, Python API call, expression) is invalid.

    ``where`` names the place: a file and line, a model, a layer, a field.
    """

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class BuildError(DeriveError):
    """Code generation failed; nothing was written."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """'; did you mean X? Valid names: ...' (the closest valid name, then all of them)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f"; did you mean {close[0]!r}? Valid names" if close else "; valid names"
    return f"{hint}: {', '.join(valid)}."
