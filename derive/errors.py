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
    """'; did you mean X?' for the closest valid name, plus the list of valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} Valid names: {', '.join(valid)}."
