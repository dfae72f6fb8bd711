r"""Per-element losses :math:`\ell(\hat y, y)`, reduced by the mean over all elements.

The reduction is the reference libraries' ``'mean'``: divide by the number of elements
:math:`N \cdot n_L`, not by the batch size. Each loss is one SymPy expression; its gradient is
derived jointly with the output activation (see :mod:`derive.derivation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import SpecError, suggest
from ..symbolic import y

#: The prediction symbol used in loss expressions.
yhat = sp.Symbol("yhat", real=True)


@dataclass(frozen=True)
class LossRule:
    name: str
    expr: sp.Expr  # ℓ(yhat, y)
    doc: str
    # The open interval the prediction must lie in (None: unbounded), e.g. (0, 1) for BCE.
    needs_range: tuple[float, float] | None = None
    # Value of each log term's floor when computed from probabilities (torch clamps at -100).
    log_floor: float | None = None
    #: Where a user-defined loss was declared ("spec.toml:12"); empty for built-ins.
    declared: str = ""


REGISTRY: dict[str, LossRule] = {
    "mse": LossRule("mse", (yhat - y) ** 2, "mean squared error"),
    "bce": LossRule(
        "bce", -(y * sp.log(yhat) + (1 - y) * sp.log(1 - yhat)),
        "binary cross-entropy (targets in [0, 1])", needs_range=(0.0, 1.0), log_floor=-100.0),
}
ALIASES = {"binary_crossentropy": "bce", "cross_entropy": "bce", "l2": "mse"}


def register(rule: LossRule) -> LossRule:
    """Add a user-defined loss (see :mod:`derive.userblocks`, which checks the name first)."""
    if not rule.declared:
        raise ValueError("register() is for user-defined losses (set `declared`)")
    REGISTRY[rule.name] = rule
    return rule


def get(name: str, where: str) -> LossRule:
    rule = REGISTRY.get(ALIASES.get(name, name))
    if rule is None:
        raise SpecError(f"unknown loss {name!r}{suggest(name, [*REGISTRY, *ALIASES])}", where)
    return rule
