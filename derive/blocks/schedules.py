r"""Learning-rate schedules as symbolic functions of a counter :math:`e`.

:math:`e` counts completed epochs (``per = "epoch"``) or completed steps (``per = "step"``, so
:math:`e = t - 1`), as PyTorch's ``lr_scheduler`` does with ``scheduler.step()`` after each
epoch or step: the first update uses :math:`\eta_0`.

| name | :math:`\eta_e` | PyTorch |
|---|---|---|
| constant | :math:`\eta_0` | — |
| step(step_size, gamma) | :math:`\eta_0 \gamma^{\lfloor e/s \rfloor}` (halving every epoch: step_size 1, gamma 0.5) | StepLR |
| multistep(milestones, gamma) | :math:`\eta_0 \gamma^{\#\{m_i \le e\}}` | MultiStepLR |
| exponential(gamma) | :math:`\eta_0 \gamma^{e}` | ExponentialLR |
| inverse_time(decay) | :math:`\eta_0 / (1 + k e)` | LambdaLR(1/(1+ke)) |
| cosine(T_max, eta_min) | :math:`\eta_{min} + \tfrac12(\eta_0-\eta_{min})(1+\cos(\pi \min(e,T)/T))` | CosineAnnealingLR up to T (clamped after T, as optax) |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import sympy as sp

from ..errors import SpecError, suggest
from .optimizers import INF, H, Hyper, lr

#: The schedule counter: completed epochs or completed steps.
e = sp.Symbol("e", nonnegative=True, integer=True)


@dataclass(frozen=True)
class ScheduleRule:
    name: str
    hyper: Mapping[str, Hyper]
    make: Callable[[tuple[float, ...]], sp.Expr]  # milestones -> eta_e in lr, e, hyper symbols
    doc: str = ""


REGISTRY: dict[str, ScheduleRule] = {}
GAMMA = Hyper(0.5, 0.0, 1.0, high_open=False, doc="factor in (0, 1]")


def _reg(rule: ScheduleRule) -> None:
    REGISTRY[rule.name] = rule


_reg(ScheduleRule("constant", {}, lambda ms: lr, "constant learning rate"))
_reg(ScheduleRule("step", {"step_size": Hyper(1.0, 0.0, INF, doc="counter units per decay"), "gamma": GAMMA},
                  lambda ms: lr * H("gamma") ** sp.floor(e / H("step_size")), "step decay"))
_reg(ScheduleRule("multistep", {"gamma": GAMMA},
                  lambda ms: lr * H("gamma") ** sp.Add(*[sp.Piecewise((1, e >= m), (0, True)) for m in ms]),
                  "decay by gamma at each milestone"))
_reg(ScheduleRule("exponential", {"gamma": Hyper(0.95, 0.0, 1.0, high_open=False)},
                  lambda ms: lr * H("gamma") ** e, "exponential decay"))
_reg(ScheduleRule("inverse_time", {"decay": Hyper(0.01, 0.0, INF, low_open=False)},
                  lambda ms: lr / (1 + H("decay") * e), "inverse-time decay"))
_reg(ScheduleRule("cosine", {"T_max": Hyper(100.0, 0.0, INF), "eta_min": Hyper(0.0, 0.0, INF, low_open=False)},
                  lambda ms: H("eta_min") + (lr - H("eta_min")) * (1 + sp.cos(sp.pi * sp.Min(e, H("T_max"))
                                                                             / H("T_max"))) / 2,
                  "cosine annealing"))


def get(name: str, where: str) -> ScheduleRule:
    rule = REGISTRY.get(name)
    if rule is None:
        raise SpecError(f"unknown schedule {name!r}{suggest(name, REGISTRY)}", where)
    return rule


def check_milestones(value: object, where: str) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise SpecError("milestones must be a non-empty list of increasing counts", where)
    ms = []
    for m in value:
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise SpecError(f"milestones must be positive integers, got {m!r}", where)
        ms.append(float(m))
    if ms != sorted(set(ms)):
        raise SpecError(f"milestones must increase strictly, got {list(value)}", where)
    return tuple(ms)
