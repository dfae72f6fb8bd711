r"""Activation functions, each declared once as a SymPy expression of the pre-activation ``z``.

Only the forward expression is written by hand. The derivative is derived by SymPy
(:func:`sympy.diff`) and then rewritten in terms of the output ``a = f(z)`` where such a form
exists (:func:`derive.symbolic.output_form`), so the backward pass reuses the forward result.

| name | :math:`f(z)` | derived :math:`f'` (as computed) |
|---|---|---|
| identity | :math:`z` | :math:`1` |
| sigmoid | :math:`1/(1+e^{-z})` | :math:`a(1-a)` |
| tanh | :math:`\tanh z` | :math:`1-a^2` |
| relu | :math:`z` if :math:`z>0` else :math:`0` | :math:`1` if :math:`a>0` else :math:`0` |
| leaky_relu(slope) | :math:`z` if :math:`z>0` else :math:`\text{slope}\cdot z` | :math:`1` if :math:`a>0` else slope |
| softplus | :math:`\log(1+e^{z})` | :math:`1-e^{-a}` |
| elu(alpha) | :math:`z` if :math:`z>0` else :math:`\alpha(e^{z}-1)` | :math:`1` if :math:`a>0` else :math:`a+\alpha` |
| silu / swish | :math:`z\,\sigma(z)` | in :math:`z` (no output form exists) |

``softmax`` (output layer only, with ``cross_entropy``) is a vector activation, derived with its
Jacobian in :mod:`derive.blocks.softmax`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from ..errors import SpecError, suggest
from ..symbolic import a, numerically_equal, output_form, sample_points, sigmoid_form, stabilize, z


@dataclass(frozen=True)
class Param:
    """A numeric parameter of a block (e.g. the leaky-ReLU slope), fixed at build time."""

    default: float
    low: float = float("-inf")  # exclusive bounds unless *_inclusive
    high: float = float("inf")
    doc: str = ""

    def check(self, value, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"must be a number, got {value!r}", where)
        value = float(value)
        if not (self.low < value < self.high):
            raise SpecError(f"must lie in ({self.low}, {self.high}), got {value}", where)
        return value


@dataclass(frozen=True)
class ActivationRule:
    """An activation: its forward expression and the parameters it takes."""

    name: str
    build: Callable[..., sp.Expr]  # (z, **param_symbols) -> expression
    params: Mapping[str, Param] = field(default_factory=dict)
    doc: str = ""
    latex_name: str = ""
    #: Where a user-defined activation was declared ("spec.toml:12"); empty for built-ins.
    declared: str = ""
    #: A vector activation (softmax): each output reads its whole row, so it has a Jacobian and no
    #: elementwise derivative; derived in :mod:`derive.blocks.softmax`, output layer only.
    vector: bool = False

    def symbols(self) -> dict[str, sp.Symbol]:
        """Parameter name -> its (positive) symbol; the built-in leaky-ReLU slope reads ``s``."""
        return {p: sp.Symbol("s" if p == "slope" and not self.declared else p, positive=True) for p in self.params}

    def expr(self) -> sp.Expr:
        """:math:`f(z)` with symbolic parameters."""
        return self.build(z, **self.symbols())


@dataclass(frozen=True)
class ActivationForms:
    """What the derivation needs from an activation, all derived from :meth:`ActivationRule.expr`."""

    f: sp.Expr  # f(z)
    raw_derivative: sp.Expr  # d f / d z exactly as SymPy differentiates it
    derivative: sp.Expr  # the form that is computed: in `a` where possible, else in `z`
    in_output_form: bool
    max_derivative: sp.Expr | None  # sup of |f'| when SymPy finds it (sigmoid: 1/4)


def _pw(z_expr, neg_expr):
    return sp.Piecewise((z_expr, z > 0), (neg_expr, True)) if z_expr is not None else None


REGISTRY: dict[str, ActivationRule] = {}


def _register(rule: ActivationRule) -> None:
    REGISTRY[rule.name] = rule


def register(rule: ActivationRule) -> ActivationRule:
    """Add a user-defined activation (see :mod:`derive.userblocks`, which checks the name first)."""
    if not rule.declared:
        raise ValueError("register() is for user-defined activations (set `declared`)")
    REGISTRY[rule.name] = rule
    return rule


_register(ActivationRule("identity", lambda z: z, doc="f(z) = z (linear output)"))
_register(ActivationRule("sigmoid", lambda z: 1 / (1 + sp.exp(-z)), doc="logistic sigmoid",
                         latex_name=r"\sigma"))
_register(ActivationRule("tanh", lambda z: sp.tanh(z), doc="hyperbolic tangent", latex_name=r"\tanh"))
_register(ActivationRule("relu", lambda z: sp.Piecewise((z, z > 0), (0, True)),
                         doc="rectified linear unit", latex_name=r"\operatorname{relu}"))
_register(ActivationRule(
    "leaky_relu", lambda z, slope: sp.Piecewise((z, z > 0), (slope * z, True)),
    params={"slope": Param(0.01, 0.0, 1.0, "slope for z <= 0")},
    doc="leaky ReLU", latex_name=r"\operatorname{lrelu}"))
_register(ActivationRule("softplus", lambda z: sp.log(1 + sp.exp(z)), doc="softplus",
                         latex_name=r"\operatorname{softplus}"))
_register(ActivationRule(
    "elu", lambda z, alpha: sp.Piecewise((z, z > 0), (alpha * (sp.exp(z) - 1), True)),
    params={"alpha": Param(1.0, 0.0, float("inf"), "saturation value -alpha for z -> -inf")},
    doc="exponential linear unit", latex_name=r"\operatorname{elu}"))
_register(ActivationRule("silu", lambda z: z / (1 + sp.exp(-z)), doc="SiLU / swish: z·σ(z)",
                         latex_name=r"\operatorname{silu}"))
_register(ActivationRule(
    "softmax", lambda z: sp.exp(z), doc="softmax over each row: e^{z_j} / Σ_k e^{z_k} (output layer, with "
    "cross_entropy)", latex_name=r"\operatorname{softmax}", vector=True))
ALIASES = {"swish": "silu", "linear": "identity", "logistic": "sigmoid"}


def get(name: str, where: str) -> ActivationRule:
    """The rule called ``name`` (or an alias); a SpecError naming valid ones otherwise."""
    rule = REGISTRY.get(ALIASES.get(name, name))
    if rule is None:
        raise SpecError(f"unknown activation {name!r}{suggest(name, [*REGISTRY, *ALIASES])}", where)
    return rule


def check_params(rule: ActivationRule, given: Mapping[str, object], where: str) -> dict[str, float]:
    """Validated parameter values, defaults filled in, unknown keys refused."""
    unknown = sorted(set(given) - set(rule.params))
    if unknown:
        valid = ", ".join(rule.params) or "none"
        raise SpecError(f"activation {rule.name!r} takes no parameter {unknown[0]!r} "
                        f"(its parameters: {valid})", where)
    return {k: p.check(given.get(k, p.default), f"{where}: {k}") for k, p in rule.params.items()}


def _limit(f: sp.Expr, to: sp.Expr) -> sp.Expr:
    """lim f(z) for z -> ±oo; a Piecewise follows the branch that holds far out."""
    f = sp.piecewise_fold(f)
    if isinstance(f, sp.Piecewise):
        far = {z: 10**6 if to == sp.oo else -(10**6)}
        f = next(e for e, c in f.args if c.subs(far) == sp.true)
    return sp.limit(f, z, to)


def _range(f: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """Infimum and supremum of f over the reals, from its limits and a numeric scan."""
    f = f.subs({s: 1 for s in f.free_symbols - {z}})
    lo = _limit(f, -sp.oo)
    hi = _limit(f, sp.oo)
    pts = sample_points(f.free_symbols)
    values = [float(f.subs(p)) for p in pts]
    lo_v = min([*values, float(lo)]) if lo.is_finite else -sp.oo
    hi_v = max([*values, float(hi)]) if hi.is_finite else sp.oo
    return (lo if lo.is_finite and float(lo) <= lo_v else sp.Float(lo_v) if lo_v != -sp.oo else lo,
            hi if hi.is_finite and float(hi) >= hi_v else sp.Float(hi_v) if hi_v != sp.oo else hi)


def _max_derivative(d: sp.Expr) -> sp.Expr | None:
    """sup |f'(z)| found symbolically from f'' = 0 (sigmoid: 1/4 at z = 0), or None."""
    if d.has(sp.Piecewise) or d.free_symbols - {z}:
        return None
    try:
        crit = sp.solve(sp.diff(d, z), z)
    except (NotImplementedError, ValueError):
        return None
    cands = [sp.simplify(d.subs(z, c)) for c in crit if c.is_real]
    cands += [sp.limit(d, z, sp.oo), sp.limit(d, z, -sp.oo)]
    finite = [c for c in cands if c.is_finite and c.is_real]
    return max(finite, key=lambda c: float(abs(c))) if finite else None


def _printable(expr: sp.Expr) -> bool:
    """Whether the kernel printer can print ``expr`` (an output form may use e.g. ``erfinv``)."""
    from ..codegen.printer import KernelPrinter

    try:
        KernelPrinter().doprint(expr)
    except Exception:  # noqa: BLE001 (any printer failure means: not printable)
        return False
    return True


#: Extra points at which a user activation's output form must equal its derivative: a dense
#: grid, because the user's f need not be monotone between the sparse sample points.
DENSE_Z = tuple(round(-8 + 0.25 * k + 0.0137, 4) for k in range(65))


def _trusted_output_form(raw: sp.Expr, f: sp.Expr) -> sp.Expr | None:
    """For user activations: the output form only if it is printable and equals ``raw`` on a
    dense grid (``a`` computed from ``f``); None otherwise."""
    out = output_form(raw, f)
    if out is None or not _printable(out):
        return None
    f_plain = f.rewrite(sp.log) if f.has(sp.Function) else f
    points = [{**p, a: f_plain.subs(p)} for p in sample_points(raw.free_symbols | f.free_symbols, DENSE_Z)]
    return out if numerically_equal(out, raw, points) else None


@functools.cache
def forms(name: str) -> ActivationForms:
    """Derive everything the derivation and code generator need (cached: SymPy is slow).

    User-defined activations (``rule.declared``) take the same path with two extra guards: an
    output form must be printable and must match SymPy's derivative on a dense grid, and the
    symbolic bound of |f'| (informative only; ``sp.solve`` can be slow on arbitrary input) is
    not searched.
    """
    rule = REGISTRY[name]
    if rule.vector:
        raise ValueError(f"{name} is a vector activation: its forms are in derive.blocks.softmax")
    f = rule.expr()
    raw = sp.diff(f, z)
    out = _trusted_output_form(raw, f) if rule.declared else output_form(raw, f)
    derivative = out if out is not None else sigmoid_form(stabilize(raw))
    assert out is not None or numerically_equal(derivative, raw, sample_points(raw.free_symbols))
    max_derivative = None if rule.declared else _max_derivative(raw)
    return ActivationForms(stabilize(f), raw, derivative, out is not None, max_derivative)


def value_range(name: str, params: Mapping[str, float]) -> tuple[float, float]:
    """(inf, sup) of the activation's range for these parameter values."""
    return _value_range(name, tuple(sorted(params.items())))


@functools.cache
def _value_range(name: str, params: tuple[tuple[str, float], ...]) -> tuple[float, float]:
    rule = REGISTRY[name]
    f = rule.expr().subs({rule.symbols()[k]: v for k, v in params})
    lo, hi = _range(f)
    return float(lo), float(hi)
