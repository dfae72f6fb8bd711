r"""Optimizers declared as state variables, hyperparameters and update equations in SymPy.

An optimizer acts on every parameter element :math:`\theta` with gradient :math:`g` (the
derivative of the loss, after regularisation and clipping). It owns per-element state
variables (initial values given), scalar hyperparameters (kernel arguments with defaults, so
they change without a rebuild) and an ordered list of update equations; the step counter
:math:`t` counts from 1 at the first step. The same equations are shown in the derivation and
printed into the generated ``step`` kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy as sp

from ..errors import SpecError, suggest

#: Symbols every update equation may use.
theta, g, t = sp.symbols("theta g t", real=True)


@dataclass(frozen=True)
class Hyper:
    """A scalar hyperparameter with its default and its valid interval."""

    default: float
    low: float = float("-inf")
    high: float = float("inf")
    low_open: bool = True
    high_open: bool = True
    doc: str = ""

    def describe(self) -> str:
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def check(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"must be a number, got {value!r}", where)
        v = float(value)
        ok_lo = v > self.low if self.low_open else v >= self.low
        ok_hi = v < self.high if self.high_open else v <= self.high
        if not (ok_lo and ok_hi) or v != v:
            raise SpecError(f"must lie in {self.describe()}, got {value!r}", where)
        return v


@dataclass(frozen=True)
class OptimizerRule:
    """State, hyperparameters and ordered update equations of one optimizer."""

    name: str
    hyper: Mapping[str, Hyper]
    updates: tuple[tuple[str, sp.Expr], ...]  # (target, rhs); target "theta" or a state name
    state: Mapping[str, sp.Expr] = field(default_factory=dict)  # name -> initial value
    doc: str = ""

    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

    def check_hyper(self, given: Mapping[str, object], where: str) -> dict[str, float]:
        unknown = sorted(set(given) - set(self.hyper))
        if unknown:
            raise SpecError(f"optimizer {self.name!r} has no hyperparameter {unknown[0]!r}"
                            f"{suggest(unknown[0], self.hyper)}", where)
        return {k: h.check(given.get(k, h.default), f"{where}: {k}") for k, h in self.hyper.items()}


def _h(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


REGISTRY: dict[str, OptimizerRule] = {}


def register(rule: OptimizerRule) -> OptimizerRule:
    """Add an optimizer (built-in or user-declared) to the registry."""
    REGISTRY[rule.name] = rule
    return rule


register(OptimizerRule(
    "sgd",
    hyper={"lr": Hyper(0.01, 0.0, float("inf"), doc="learning rate η")},
    updates=(("theta", theta - _h("lr") * g),),
    doc="Gradient descent θ ← θ − η g. Full-batch, mini-batch and stochastic gradient descent "
        "are the same rule with different batch sizes.",
))


def get(name: str, where: str) -> OptimizerRule:
    rule = REGISTRY.get(name)
    if rule is None:
        raise SpecError(f"unknown optimizer {name!r}{suggest(name, REGISTRY)}", where)
    return rule
