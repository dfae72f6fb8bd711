r"""Optimizers declared as state variables, hyperparameters and update equations in SymPy.

An optimizer acts on every parameter element :math:`\theta` with gradient :math:`g` (after
regularisation and clipping). It owns per-element state variables (with initial values),
scalar state updated once per step (NAdam's :math:`\Pi`), scalar hyperparameters (kernel
arguments with defaults: they change without a rebuild) and an ordered list of update
equations, executed in order; a target that is neither ``theta`` nor a state variable is a
temporary. The step counter :math:`t` is 1 at the first step. Boolean options (``nesterov``,
``centered``, ``amsgrad``, ...) choose the equations at build time.

Defaults and conventions follow PyTorch 2.x (``torch.optim``): the first momentum buffer is
the raw gradient, ε is outside the square root (``eps_inside_sqrt = true`` gives optax's
form), Adam uses Algorithm 1 of Kingma & Ba with bias correction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from ..errors import SpecError, suggest
from ..names import check_name

#: Symbols every update equation may use: parameter, gradient, step counter (from 1).
theta, g, t = sp.symbols("theta g t", real=True)
lr = sp.Symbol("lr", positive=True)
INF = float("inf")


def H(name: str) -> sp.Symbol:  # noqa: N802
    """The symbol of hyperparameter ``name``."""
    return lr if name == "lr" else sp.Symbol(name, real=True)


def S(name: str) -> sp.Symbol:  # noqa: N802
    """The symbol of a state variable or temporary ``name``."""
    return sp.Symbol(name, real=True)


@dataclass(frozen=True)
class Hyper:
    """A scalar hyperparameter with its default and its valid interval."""

    default: float
    low: float = -INF
    high: float = INF
    low_open: bool = True
    high_open: bool = True
    doc: str = ""

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"must be a number, got {value!r}", where)
        v = float(value)
        ok_lo = v > self.low if self.low_open else v >= self.low
        ok_hi = v < self.high if self.high_open else v <= self.high
        if v != v or not (ok_lo and ok_hi):
            raise SpecError(f"must lie in {self.describe()}, got {value!r}", where)
        return v


LR = Hyper(0.01, 0.0, INF, doc="learning rate η")
UNIT = Hyper(0.9, 0.0, 1.0, low_open=False, doc="decay in [0, 1)")
EPS = Hyper(1e-8, 0.0, INF, low_open=False, doc="ε ≥ 0, added for numerical stability")


@dataclass(frozen=True)
class Equations:
    """What an optimizer computes for one choice of options."""

    hyper: Mapping[str, Hyper]
    updates: tuple[tuple[str, sp.Expr], ...]
    state: Mapping[str, sp.Expr] = field(default_factory=dict)  # per element: name -> initial value
    scalar_state: Mapping[str, sp.Expr] = field(default_factory=dict)  # per step: name -> initial value
    scalar_updates: tuple[tuple[str, sp.Expr], ...] = ()


@dataclass(frozen=True)
class OptimizerRule:
    """An optimizer: boolean options and a function from options to its equations."""

    name: str
    make: Callable[..., Equations]
    options: Mapping[str, bool] = field(default_factory=dict)
    doc: str = ""
    #: Where a user-defined optimizer was declared ("spec.toml:12"); empty for built-ins and
    #: for optimizers declared with :func:`custom`.
    declared: str = ""

    def equations(self, options: Mapping[str, bool] | None = None) -> Equations:
        return self.make(**{**self.options, **(options or {})})

    @property
    def hyper(self) -> Mapping[str, Hyper]:
        return self.equations().hyper

    def check(self, given: Mapping[str, object], where: str) -> tuple[dict[str, bool], dict[str, float]]:
        """Split ``given`` into validated options and hyperparameters (defaults filled in)."""
        options = {}
        for k, default in self.options.items():
            v = given.get(k, default)
            if not isinstance(v, bool):
                raise SpecError(f"option {k!r} must be true or false, got {v!r}", where)
            options[k] = v
        hyper = self.equations(options).hyper
        unknown = sorted(set(given) - set(hyper) - set(self.options))
        if unknown:
            raise SpecError(f"optimizer {self.name!r} has no hyperparameter or option {unknown[0]!r}"
                            f"{suggest(unknown[0], [*hyper, *self.options])}", where)
        values = {k: h.check(given.get(k, h.default), f"{where}: {k}") for k, h in hyper.items()}
        return options, values


REGISTRY: dict[str, OptimizerRule] = {}


def register(rule: OptimizerRule) -> OptimizerRule:
    """Add an optimizer (built-in or user-declared) to the registry."""
    REGISTRY[rule.name] = rule
    return rule


def custom(name: str, hyper: Mapping[str, Hyper | float], updates: list[tuple[str, sp.Expr]],
           state: Mapping[str, sp.Expr | float] | None = None, doc: str = "") -> OptimizerRule:
    """Declare an optimizer from SymPy equations (Python API); it is registered and goes
    through the same derivation, code generation and tests as the built-ins.

    >>> from derive.blocks.optimizers import custom, theta, g, H, S, Hyper
    >>> sign_sgd = custom("sign_sgd", {"lr": Hyper(0.01, 0.0)}, [("theta", theta - H("lr") * sp.sign(g))])
    """
    check_name(name, f"optimizer {name!r}", "optimizer")
    if name in BUILTIN or (name in REGISTRY and REGISTRY[name].declared):
        raise SpecError(f"optimizer {name!r} already exists (built in or declared in "
                        f"{REGISTRY[name].declared or 'derive'}); choose another name", f"optimizer {name!r}")
    hyper = {k: v if isinstance(v, Hyper) else Hyper(float(v)) for k, v in hyper.items()}
    state = {k: sp.sympify(v) for k, v in (state or {}).items()}
    allowed = {theta, g, t, *(H(k) for k in hyper), *(S(k) for k in state)}
    for target, rhs in updates:
        rhs = sp.sympify(rhs)
        extra = rhs.free_symbols - allowed - {S(tg) for tg, _ in updates}
        if extra:
            names = ", ".join(sorted(s.name for s in extra))
            raise SpecError(f"update of {target!r} uses unknown symbols {names}; declare them as "
                            "hyperparameters or state", f"optimizer {name!r}")
    if "theta" not in [tg for tg, _ in updates]:
        raise SpecError("no equation updates 'theta'", f"optimizer {name!r}")
    eqs = Equations(hyper, tuple((tg, sp.sympify(rhs)) for tg, rhs in updates), state)
    return register(OptimizerRule(name, lambda: eqs, {}, doc or f"user-declared optimizer {name}"))


# ----------------------------------------------------------------------------- built-ins

def _sgd() -> Equations:
    return Equations({"lr": LR}, (("theta", theta - lr * g),))


def _momentum(ema: bool) -> Equations:
    mu, tau, b = H("momentum"), H("dampening"), S("b")
    if ema:
        return Equations({"lr": LR, "momentum": UNIT},
                         (("b", mu * b + (1 - mu) * g), ("theta", theta - lr * b)), {"b": sp.S.Zero})
    return Equations(
        {"lr": LR, "momentum": UNIT, "dampening": Hyper(0.0, 0.0, 1.0, False, False, "dampening τ")},
        (("b", sp.Piecewise((g, sp.Eq(t, 1)), (mu * b + (1 - tau) * g, True))), ("theta", theta - lr * b)),
        {"b": sp.S.Zero})


def _nesterov() -> Equations:
    mu, b = H("momentum"), S("b")
    return Equations({"lr": LR, "momentum": UNIT},
                     (("b", sp.Piecewise((g, sp.Eq(t, 1)), (mu * b + g, True))),
                      ("theta", theta - lr * (g + mu * b))), {"b": sp.S.Zero})


def _root(x: sp.Expr, eps: sp.Expr, inside: bool) -> sp.Expr:
    return sp.sqrt(x + eps) if inside else sp.sqrt(x) + eps


def _adagrad(eps_inside_sqrt: bool) -> Equations:
    G, decay, eps = S("G"), H("lr_decay"), H("eps")
    return Equations(
        {"lr": LR, "lr_decay": Hyper(0.0, 0.0, INF, low_open=False, doc="inverse-time decay per step"),
         "initial_accumulator_value": Hyper(0.0, 0.0, INF, low_open=False), "eps": Hyper(1e-10, 0.0, INF, False)},
        (("G", G + g**2), ("theta", theta - lr / (1 + (t - 1) * decay) * g / _root(G, eps, eps_inside_sqrt))),
        {"G": H("initial_accumulator_value")})


def _adadelta() -> Equations:
    rho, eps, v, u, d = H("rho"), H("eps"), S("v"), S("u"), S("delta")
    return Equations(
        {"lr": Hyper(1.0, 0.0, INF), "rho": UNIT, "eps": Hyper(1e-6, 0.0, INF, False)},
        (("v", rho * v + (1 - rho) * g**2), ("delta", sp.sqrt(u + eps) / sp.sqrt(v + eps) * g),
         ("u", rho * u + (1 - rho) * d**2), ("theta", theta - lr * d)),
        {"v": sp.S.Zero, "u": sp.S.Zero})


def _rmsprop(centered: bool, eps_inside_sqrt: bool) -> Equations:
    alpha, eps, mu, v, gbar, b = H("alpha"), H("eps"), H("momentum"), S("v"), S("gbar"), S("b")
    hyper = {"lr": LR, "alpha": Hyper(0.99, 0.0, 1.0, False), "eps": EPS,
             "momentum": Hyper(0.0, 0.0, 1.0, False, doc="momentum μ (0: none)")}
    ups = [("v", alpha * v + (1 - alpha) * g**2)]
    state = {"v": sp.S.Zero, "b": sp.S.Zero}
    if centered:
        ups.append(("gbar", gbar + (1 - alpha) * (g - gbar)))
        state["gbar"] = sp.S.Zero
        den = _root(v - gbar**2, eps, eps_inside_sqrt)
    else:
        den = _root(v, eps, eps_inside_sqrt)
    ups += [("b", mu * b + g / den), ("theta", theta - lr * b)]
    return Equations(hyper, tuple(ups), state)


ADAM_HYPER = {"lr": Hyper(1e-3, 0.0, INF), "beta1": UNIT, "beta2": Hyper(0.999, 0.0, 1.0, False), "eps": EPS}


def _adam(amsgrad: bool, bias_correction: bool = True, decoupled: float | None = None) -> Equations:
    b1, b2, eps, m, v, vmax = H("beta1"), H("beta2"), H("eps"), S("m"), S("v"), S("vmax")
    hyper = dict(ADAM_HYPER)
    ups = []
    if decoupled is not None:
        hyper["weight_decay"] = Hyper(decoupled, 0.0, INF, low_open=False, doc="decoupled weight decay λ")
        ups.append(("theta", theta * (1 - lr * H("weight_decay"))))
    ups += [("m", b1 * m + (1 - b1) * g), ("v", b2 * v + (1 - b2) * g**2)]
    state = {"m": sp.S.Zero, "v": sp.S.Zero}
    second = v
    if amsgrad:
        ups.append(("vmax", sp.Max(vmax, v)))
        state["vmax"] = sp.S.Zero
        second = vmax
    bc1, bc2 = (1 - b1**t, 1 - b2**t) if bias_correction else (sp.S.One, sp.S.One)
    ups.append(("theta", theta - (lr / bc1) * m / (sp.sqrt(second) / sp.sqrt(bc2) + eps)))
    return Equations(hyper, tuple(ups), state)


def _nadam() -> Equations:
    b1, b2, eps, psi, m, v, Pi = H("beta1"), H("beta2"), H("eps"), H("momentum_decay"), S("m"), S("v"), S("mu_product")
    mu_t = b1 * (1 - sp.Rational(1, 2) * sp.Float("0.96") ** (t * psi))
    mu_next = b1 * (1 - sp.Rational(1, 2) * sp.Float("0.96") ** ((t + 1) * psi))
    den = sp.sqrt(v / (1 - b2**t)) + eps
    return Equations(
        {**ADAM_HYPER, "lr": Hyper(2e-3, 0.0, INF), "momentum_decay": Hyper(4e-3, 0.0, INF, False)},
        (("m", b1 * m + (1 - b1) * g), ("v", b2 * v + (1 - b2) * g**2),
         ("theta", theta - lr * (1 - mu_t) / (1 - Pi) * g / den - lr * mu_next / (1 - Pi * mu_next) * m / den)),
        {"m": sp.S.Zero, "v": sp.S.Zero}, {"mu_product": sp.S.One}, (("mu_product", Pi * mu_t),))


register(OptimizerRule("sgd", _sgd, doc=(
    "Gradient descent θ ← θ − η g. Full-batch, mini-batch and stochastic gradient descent are the "
    "same rule with different batch sizes.")))
register(OptimizerRule("momentum", _momentum, {"ema": False}, doc=(
    "Heavy-ball momentum in PyTorch's convention: b₁ = g₁ (no dampening at the first step), then "
    "b ← μb + (1−τ)g, θ ← θ − ηb. Option ema = true: b ← βb + (1−β)g from b₀ = 0 (the exponential "
    "moving average), which equals the reference form with learning rate η(1−β). Momentum keeps "
    "velocity through flat regions and shallow local minima and damps oscillation across ravines.")))
register(OptimizerRule("nesterov", _nesterov, doc=(
    "Nesterov accelerated gradient, PyTorch's form: b as in momentum (τ = 0), θ ← θ − η(g + μb): the "
    "step looks ahead along the velocity. With μ = 0 it is plain gradient descent.")))
register(OptimizerRule("adagrad", _adagrad, {"eps_inside_sqrt": False}, doc=(
    "Adagrad (PyTorch): G ← G + g², θ ← θ − η/(1+(t−1)·lr_decay) · g/(√G + ε); G₀ = "
    "initial_accumulator_value. eps_inside_sqrt = true gives optax's g/√(G+ε). Each parameter gets "
    "its own step size, shrinking where gradients have been large.")))
register(OptimizerRule("adadelta", _adadelta, doc=(
    "Adadelta (Zeiler 2012, PyTorch defaults): v ← ρv+(1−ρ)g², Δ = √(u+ε)/√(v+ε)·g, "
    "u ← ρu+(1−ρ)Δ², θ ← θ − ηΔ with η = 1 by default (the paper's form).")))
register(OptimizerRule("rmsprop", _rmsprop, {"centered": False, "eps_inside_sqrt": False}, doc=(
    "RMSProp (PyTorch): v ← αv+(1−α)g²; centered: ḡ ← ḡ+(1−α)(g−ḡ) and the denominator uses "
    "v−ḡ²; b ← μb + g/(√v + ε), θ ← θ − ηb (μ = 0: no momentum). No bias correction. Divides each "
    "parameter's step by a running RMS of its gradients.")))
register(OptimizerRule("adam", _adam, {"amsgrad": False, "bias_correction": True}, doc=(
    "Adam (Kingma & Ba, Algorithm 1, as PyTorch): m ← β₁m+(1−β₁)g, v ← β₂v+(1−β₂)g², "
    "θ ← θ − (η/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + ε). Momentum on the numerator, RMSProp's per-parameter "
    "scaling on the denominator, both bias-corrected. amsgrad = true uses max(v_max, v) (raw v, "
    "as PyTorch) instead of v. bias_correction = false drops both corrections (then β₁ = 0 is "
    "RMSProp with ε outside the root).")))
register(OptimizerRule("adamw", lambda amsgrad: _adam(amsgrad, decoupled=1e-2), {"amsgrad": False}, doc=(
    "AdamW (PyTorch): decoupled weight decay θ ← θ(1 − ηλ) (default λ = 0.01), then the Adam step.")))
register(OptimizerRule("nadam", _nadam, doc=(
    "NAdam (PyTorch): Adam with Nesterov momentum and the momentum schedule "
    "μ_t = β₁(1 − ½·0.96^(tψ)), Π ← Π·μ_t; θ ← θ − η(1−μ_t)/(1−Π)·g/den − ημ_{t+1}/(1−Πμ_{t+1})·m/den "
    "with den = √(v/(1−β₂ᵗ)) + ε.")))


#: The optimizers that ship with derive: never replaced by custom() or spec files.
BUILTIN = frozenset(REGISTRY)


def get(name: str, where: str) -> OptimizerRule:
    rule = REGISTRY.get(name)
    if rule is None:
        raise SpecError(f"unknown optimizer {name!r}{suggest(name, REGISTRY)}", where)
    return rule
