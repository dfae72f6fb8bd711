r"""Per-element losses :math:`\ell(\hat y, y)`, reduced by the mean over all elements.

The reduction is the reference libraries' ``'mean'``: divide by the number of elements
:math:`N \cdot n_L`, not by the batch size. Each loss is one SymPy expression; its gradient is
derived jointly with the output activation (see :mod:`derive.derivation`).

A loss may take build-time options (``loss = { name = "huber", delta = 2.0 }``), each an
:class:`Option`: validated when the spec is read, recorded in it, and substituted into the kernels
as a constant, like an activation parameter. With :math:`d = \hat y - y`:

* ``mse`` (``l2``): :math:`d^2` (PyTorch's ``MSELoss``);
* ``mae`` (``l1``): :math:`\lvert d\rvert`, gradient 0 at :math:`d = 0` (``L1Loss``);
* ``huber`` (``delta`` = 1): :math:`d^2/2` if :math:`\lvert d\rvert < \delta`, else
  :math:`\delta(\lvert d\rvert - \delta/2)` (``HuberLoss``);
* ``smooth_l1`` (``beta`` = 1): :math:`d^2/(2\beta)` if :math:`\lvert d\rvert < \beta`, else
  :math:`\lvert d\rvert - \beta/2` (``SmoothL1Loss``; Huber = β·SmoothL1 when δ = β);
* ``log_cosh``: :math:`\log\cosh d`, computed as :math:`\lvert d\rvert + \log(1 + e^{-2\lvert d\rvert}) - \log 2`;
* ``bce``: :math:`-(y \log \hat y + (1 - y)\log(1 - \hat y))` (``BCELoss``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy as sp
from sympy.codegen.cfunctions import log1p

from ..errors import SpecError, suggest
from ..symbolic import y

#: The prediction symbol used in loss expressions.
yhat = sp.Symbol("yhat", real=True)
INF = float("inf")


@dataclass(frozen=True)
class Option:
    """A build-time option of a loss (Huber's ``delta``), checked when the spec is read.

    This class is a number in an interval (each end open or closed). An option of another kind,
    say one weight per output unit, subclasses it and overrides :meth:`check` (which is given the
    model's output width and may call this one per element), :meth:`symbol`, :meth:`plain` and
    :meth:`format`. A ``default`` of None means the option is left out of the spec unless given.
    """

    default: object = None
    low: float = -INF
    high: float = INF
    low_open: bool = True
    high_open: bool = True
    doc: str = ""
    #: The name of the option's symbol in the loss expression (``delta_ell`` reads δ_ℓ); its value
    #: replaces it in the kernels. Empty: the value does not enter the expression as one scalar.
    symbol_name: str = ""

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, value: object, where: str, outputs: int) -> object:
        """The validated value; ``outputs`` is the model's output width (unused by a number)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"must be a number, got {value!r}", where)
        v = float(value)
        ok_lo = v > self.low if self.low_open else v >= self.low
        ok_hi = v < self.high if self.high_open else v <= self.high
        if v != v or not (ok_lo and ok_hi):
            raise SpecError(f"must lie in {self.describe()}, got {value!r}", where)
        return v

    def symbol(self) -> sp.Symbol | None:
        """The symbol standing for the value in the loss expression (None without ``symbol_name``)."""
        if not self.symbol_name:
            return None
        sign = {"positive": True} if self.low >= 0 and self.low_open else {"nonnegative": True} if self.low >= 0 else {}
        return sp.Symbol(self.symbol_name, real=True, **sign)

    def plain(self, value: object) -> object:
        """The value as written in a spec (``to_dict``): a tuple becomes a list."""
        return list(value) if isinstance(value, tuple) else value

    def format(self, value: object) -> str:
        """The value in a one-line summary (``huber(delta=2)``)."""
        return f"{value:g}"


@dataclass(frozen=True)
class ClassWeights(Option):
    """One positive, finite weight per output unit (``class_weights = [1.0, 2.0, 0.5]``)."""

    def check(self, value: object, where: str, outputs: int) -> object:
        if not isinstance(value, (list, tuple)) or isinstance(value, str):
            raise SpecError(f"must be a list of {outputs} positive numbers (one per class), got {value!r}", where)
        if len(value) != outputs:
            raise SpecError(f"must have one weight per class: the output layer has {outputs} units, got "
                            f"{len(value)} weights", where)
        out = []
        for k, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < float(v) < INF):
                raise SpecError(f"weight {k} must be a positive finite number, got {v!r}", where)
            out.append(float(v))
        return tuple(out)

    def describe(self) -> str:
        return "one positive number per class"

    def format(self, value: object) -> str:
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"


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
    #: A loss over whole rows that needs this vector output activation (cross_entropy: softmax);
    #: ``expr`` is then one element's term, and the derivation is in :mod:`derive.blocks.softmax`.
    vector: str | None = None
    #: Build-time options, name -> Option (Huber's delta); ``expr`` reads their symbols.
    options: Mapping[str, Option] = field(default_factory=dict)
    #: The form of ℓ the kernels compute where ``expr`` itself would overflow (log-cosh), equal to
    #: it (checked at sample points in :func:`derive.blocks.joint.loss_element`); the gradient is
    #: still derived from ``expr``.
    computed: sp.Expr | None = None
    #: Why ``computed`` is used, for the derivation documents (Markdown with ``$...$`` math).
    computed_doc: str = ""

    def symbols(self) -> dict[str, sp.Symbol]:
        """Option name -> its symbol in ``expr``, for the options that have one."""
        return {k: s for k, o in self.options.items() if (s := o.symbol()) is not None}

    def values(self, options: tuple[tuple[str, object], ...]) -> dict[sp.Symbol, object]:
        """Symbol -> value of the given options (a spec's ``loss_options``), for substitution."""
        syms = self.symbols()
        return {syms[k]: v for k, v in options if k in syms}

    def check_options(self, given: Mapping[str, object], where: str, outputs: int) -> tuple[tuple[str, object], ...]:
        """Validated options in the rule's order, defaults filled in, unknown names refused;
        ``outputs`` is the model's output width."""
        unknown = [k for k in given if k not in self.options]
        if unknown:
            if not self.options:
                raise SpecError(f"loss {self.name!r} takes no options, got {unknown[0]!r}", where)
            raise SpecError(f"loss {self.name!r} has no option {unknown[0]!r}{suggest(unknown[0], self.options)}",
                            where)
        out = []
        for k, opt in self.options.items():
            if k in given or opt.default is not None:
                out.append((k, opt.check(given[k] if k in given else opt.default, f"{where}: {k}", outputs)))
        return tuple(out)


REGISTRY: dict[str, LossRule] = {
    "mse": LossRule("mse", (yhat - y) ** 2, "mean squared error"),
    "bce": LossRule(
        "bce", -(y * sp.log(yhat) + (1 - y) * sp.log(1 - yhat)),
        "binary cross-entropy (targets in [0, 1])", needs_range=(0.0, 1.0), log_floor=-100.0),
    "cross_entropy": LossRule(
        "cross_entropy", -y * sp.log(yhat),
        "categorical cross-entropy after a softmax output (targets: one-hot or probability rows, or class "
        "labels), mean over the rows", vector="softmax",
        options={"label_smoothing": Option(
                     None, 0.0, 1.0, low_open=False, high_open=True,
                     doc="ε: targets become (1 - ε) y + ε / n_classes (PyTorch's label_smoothing)"),
                 "class_weights": ClassWeights(
                     doc="one positive weight per class (output unit); the mean is divided by the sum of the "
                         "rows' weights, as PyTorch's weight=")}),
}

# Regression losses beyond MSE, as PyTorch defines them (d = yhat - y). Only ℓ is written here;
# SymPy derives every gradient. d/dd |d| is sign(d), which the kernels compute as 0 at d = 0
# (PyTorch's L1Loss gradient there).
_d = yhat - y
_DELTA = Option(1.0, 0.0, INF, doc="Huber's δ > 0: quadratic for |d| < δ, linear (slope δ) beyond",
                symbol_name="delta_ell")
_BETA = Option(1.0, 0.0, INF, doc="β > 0: quadratic for |d| < β, linear (slope 1) beyond",
               symbol_name="beta_ell")
_delta, _beta = _DELTA.symbol(), _BETA.symbol()
REGISTRY.update({
    "mae": LossRule("mae", sp.Abs(_d), "mean absolute error (L1; gradient 0 at yhat = y)"),
    "huber": LossRule(
        "huber", sp.Piecewise((_d**2 / 2, sp.Abs(_d) < _delta), (_delta * (sp.Abs(_d) - _delta / 2), True)),
        "Huber loss (PyTorch HuberLoss): quadratic within delta, linear beyond", options={"delta": _DELTA}),
    "smooth_l1": LossRule(
        "smooth_l1", sp.Piecewise((_d**2 / (2 * _beta), sp.Abs(_d) < _beta), (sp.Abs(_d) - _beta / 2, True)),
        "smooth L1 loss (PyTorch SmoothL1Loss): huber / beta with delta = beta", options={"beta": _BETA}),
    "log_cosh": LossRule(
        "log_cosh", sp.log(sp.cosh(_d)), "log-cosh loss: d²/2 near 0, |d| - log 2 far out; gradient tanh(d)",
        computed=sp.Abs(_d) + log1p(sp.exp(-2 * sp.Abs(_d))) - sp.log(2),
        computed_doc=r"$\cosh d$ overflows for $|d| \gtrsim 710$ in float64 ($89$ in float32), so the same "
                     r"function is computed as $|d| + \log(1 + e^{-2|d|}) - \log 2$, finite for every finite $d$; "
                     r"its gradient $\tanh d$ is derived from the definition."),
})
ALIASES = {"binary_crossentropy": "bce", "categorical_crossentropy": "cross_entropy", "l2": "mse", "l1": "mae"}


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
