"""Hidden widths: the spec's, the parameters', and the check of widths given (``--widths``,
``fit(widths=...)``, a checkpoint's). Shared by :mod:`derive.runtime` and :mod:`derive.sweep`;
it imports nothing else of derive's but the errors, so that any module can use it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import DeriveError


def spec_widths(module) -> tuple[int, ...]:
    """The hidden widths the module's spec declares (width1 ... width<L-1>)."""
    return tuple(int(layer[0]) for layer in module.SPEC["layers"][:-1])


def param_widths(params: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    """The hidden widths of parameters ``W1 ... WL``: the output width of every layer but the last."""
    L = sum(1 for k in params if k.startswith("W"))
    return tuple(int(params[f"W{l}"].shape[1]) for l in range(1, L))


def check_widths(module, widths: object, option: str = "widths") -> tuple[int, ...] | None:
    """``widths`` as a tuple of one whole number >= 1 per hidden layer of ``module`` (None stays
    None: the spec's widths); anything else is a :class:`DeriveError` naming ``option``."""
    if widths is None:
        return None
    hidden = spec_widths(module)
    name = module.SPEC["name"]
    try:
        values = list(widths)
    except TypeError:
        values = None
    if values is None or isinstance(widths, (str, bytes)):
        raise DeriveError(f"{option} must be a sequence of whole numbers (one per hidden layer), got {widths!r}")
    if not hidden and values:
        raise DeriveError(f"invalid value for {option}: model {name!r} has no hidden layer, so there is no width "
                          "to set")
    layers = f"{len(hidden)} hidden layer{'s' if len(hidden) > 1 else ''} ({', '.join(map(str, hidden))})"
    bad = [w for w in values if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1]
    if bad or len(values) != len(hidden):
        what = (f"{bad[0]!r} is not a whole number >= 1" if bad else
                f"{len(values)} width{'s' if len(values) != 1 else ''} given")
        raise DeriveError(f"invalid value for {option}: {what}; model {name!r} has {layers}: give "
                          f"{len(hidden)} whole number{'s' if len(hidden) > 1 else ''} >= 1"
                          + (f", e.g. {option} {','.join(map(str, hidden))}" if option.startswith("--") else ""))
    return tuple(int(w) for w in values)
