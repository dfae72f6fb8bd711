r"""LaTeX and Markdown documents of a derivation: the training equations a person reads.

One document per model: the model and the shape of every quantity, the forward pass, the loss,
the output-layer delta derived step by step, the backward recursion with every activation
derivative (SymPy's raw derivative and the form that is computed), the parameter gradients, a
derived bound for vanishing gradients, and the optimizer with its state, hyperparameters,
schedule, clipping, regularisation and update equations, with short explanations.

Single source: every equation displayed is printed from the SymPy object stored in the
:class:`~derive.derivation.Derivation` (``d.eq(key).rhs``), the object the code generator prints
into the kernels; printing changes notation and term order only (:class:`DerivationPrinter`).
Each displayed row records the equation it came from (:attr:`Row.source`), which the tests use.

Documents are rendered by Jinja templates (``templates/derivation.tex.j2``,
``templates/derivation.md.j2``) from one structure (:func:`document`). Importing this module
also lets a :class:`~derive.derivation.Derivation` display itself in Jupyter
(``_repr_markdown_``, ``_repr_latex_``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import sympy as sp
from sympy.printing.latex import LatexPrinter

from .blocks import activations, losses, optimizers
from .derivation import Derivation, Equation, derive_model, dropout_rate, layer_symbols, loss_option
from .errors import DeriveError
from .spec import ModelSpec
from .text import OVERWRITES, ReadingOrder, width

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
TEX_TEMPLATE = "derivation.tex.j2"
MD_TEMPLATE = "derivation.md.j2"
#: Display rows wider than this many columns of the Unicode picture are broken across lines
#: (calibrated on A4 with 2.2 cm margins at 11 pt; the tests compile every catalogue model and
#: fail on any overfull line).
MAX_WIDTH = 64
#: A table column whose text wraps (the explanations in the optimizer's tables).
WRAPPED = r">{\raggedright\arraybackslash}p{0.4\linewidth}"

# ----------------------------------------------------------------------------- notation

#: Symbol name -> LaTeX. Names not listed print as SymPy prints them (``z_1`` as z_{1},
#: ``Delta_2`` as \Delta_{2}, ``gbar`` as \bar{g}, ``yhat_ij`` as \hat{y}_{ij}).
SYMBOL_NAMES = {
    "lr": r"\eta", "lr_t": r"\eta_{t}", "beta1": r"\beta_{1}", "beta2": r"\beta_{2}", "theta": r"\theta",
    "eps": r"\varepsilon", "momentum": r"\mu", "dampening": r"\tau", "rho": r"\rho", "alpha": r"\alpha",
    "l1": r"\lambda_{1}", "l2": r"\lambda_{2}", "mu_product": r"\Pi", "momentum_decay": r"\psi",
    "vmax": r"v_{\max}", "delta": r"\Delta", "ell": r"\ell", "lr_decay": "k",
    "grad_norm": r"\lVert g \rVert", "clip_coef": r"\kappa", "clip_norm": r"c_{\mathrm{norm}}",
    "clip_value": r"c_{\mathrm{value}}", "weight_decay": r"\lambda", "decoupled_weight_decay": r"\lambda_{\mathrm{wd}}",
    "epoch": r"\mathrm{epoch}", "step_size": "s", "decay": "k", "T_max": "T", "eta_min": r"\eta_{\min}",
    "initial_accumulator_value": "G_{0}", "gamma": r"\gamma", "yhat_ij": r"\hat{y}_{ij}", "g_k": "g_{k}",
}

#: What each hyperparameter and state variable is, for the tables of the document.
MEANING = {
    "lr": "learning rate", "momentum": "momentum coefficient", "dampening": "dampening of the new gradient",
    "beta1": "decay of the first-moment average $m$", "beta2": "decay of the second-moment average $v$",
    "eps": "added to the denominator for numerical stability", "alpha": "decay of the average $v$ of $g^2$",
    "rho": "decay of the averages $v$ and $u$", "lr_decay": "inverse-time decay of $\\eta$ per step",
    "initial_accumulator_value": "initial value of $G$", "weight_decay": "decoupled weight decay",
    "momentum_decay": "momentum schedule decay", "step_size": "counter units between decays",
    "gamma": "decay factor", "decay": "inverse-time decay per counter unit", "T_max": "annealing period",
    "eta_min": "final learning rate", "l1": "L1 penalty weight", "l2": "L2 penalty weight",
    "decoupled_weight_decay": "decoupled weight decay", "clip_norm": "maximal global gradient norm",
    "clip_value": "maximal absolute gradient element",
    # state
    "b": "momentum buffer (velocity)", "G": "sum of squared gradients", "v": "moving average of $g^2$",
    "u": "moving average of squared updates $\\Delta^2$", "gbar": "moving average of $g$",
    "m": "moving average of $g$ (first moment)", "vmax": "running maximum of $v$",
    "mu_product": "product $\\mu_1 \\mu_2 \\cdots \\mu_t$ of the momentum schedule",
}


#: The optimizers whose names the explanations and MEANING describe.
BUILTIN_OPTIMIZERS = frozenset({"sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw",
                                "nadam"})


def _hyper_symbol(name: str) -> sp.Symbol:
    return optimizers.H(name)


class DerivationPrinter(ReadingOrder, LatexPrinter):
    """:class:`sympy.printing.latex.LatexPrinter` with the reading notation of the documents.

    ``symbol_names`` (by name, so that symbols with different assumptions print alike), term and
    factor order (:class:`~derive.text.ReadingOrder`), ``\\mathbf{1}`` for the column of ones,
    ``^\\top``, nested sums with the mean's factor in front, ``10^{-6}`` for floats, and
    ``\\text{if}`` in case distinctions. ``pivot``: the updated symbol, printed first in sums.
    """

    def __init__(self, pivot: sp.Symbol | None = None, inline: bool = False):
        super().__init__({"order": "none", "fold_short_frac": inline})
        self.pivot = pivot

    def _print_Symbol(self, expr, style="plain"):
        name = SYMBOL_NAMES.get(expr.name)
        if name is not None:
            return name
        if expr.name.startswith("lse_"):
            return r"\operatorname{lse}_{%s}" % expr.name[4:]
        if expr.name.startswith("dL/d"):
            return r"\partial L / \partial %s" % self._deal_with_super_sub(expr.name[4:])
        return super()._print_Symbol(expr, style)

    def _print_Mul(self, expr):
        if expr.could_extract_minus_sign():
            neg = -expr
            body = self._print(neg)
            return "- " + (r"\left(%s\right)" % body if neg.is_Add else body)
        numer, denom = sp.fraction(expr)
        if denom != 1 and numer.has(sp.Sum):  # a mean: the factor in front of the sums
            return r"\frac{1}{%s} %s" % (self._print(denom), self._print(numer))
        return super()._print_Mul(self._reading_mul(expr))

    def _print_Float(self, expr):
        text = f"{float(expr):g}"
        if "e" not in text:
            return text
        mantissa, exponent = text.split("e")
        power = r"10^{%d}" % int(exponent)
        return power if mantissa == "1" else rf"{mantissa} \cdot {power}"

    def _print_Indexed(self, expr):
        """An element of a row (softmax): z_2[j] as z_{2,j}, t[j] as t_{j}."""
        head, _, layer = str(expr.base.label).partition("_")
        index = ",".join(self._print(i) for i in expr.indices)
        return "%s_{%s}" % (self._print(sp.Symbol(head)), f"{layer},{index}" if layer else index)

    def _print_OneMatrix(self, expr):
        return r"\mathbf{1}^{\top}" if expr.shape[0] == 1 else r"\mathbf{1}"

    def _print_Transpose(self, expr):
        arg = self._print(expr.arg)
        return r"%s^{\top}" % (arg if isinstance(expr.arg, sp.MatrixSymbol) else r"\left(%s\right)" % arg)

    def _print_Sum(self, expr):
        sums = "".join(r"\sum_{%s=%s}^{%s} " % (self._print(i), self._print(lo), self._print(hi))
                       for i, lo, hi in reversed(expr.limits))
        return sums + self._print(expr.function)

    def _print_Piecewise(self, expr):
        rows = []
        for value, cond in expr.args:
            where = r"\text{otherwise}" if cond == sp.true else r"\text{if } %s" % self._print(cond)
            rows.append(r"%s & %s" % (self._print(value), where))
        return r"\begin{cases} %s \end{cases}" % r" \\ ".join(rows)

    def _print_floor(self, expr, exp=None):  # in an exponent: epoch / s, not a tiny fraction
        folded, self._settings["fold_short_frac"] = self._settings["fold_short_frac"], True
        try:
            return super()._print_floor(expr, exp)
        finally:
            self._settings["fold_short_frac"] = folded

    def _print_Function(self, expr, exp=None):
        if expr.func.__name__ == "ell":
            return r"\ell\left(%s\right)" % ", ".join(self._print(a) for a in expr.args)
        return super()._print_Function(expr, exp)


def tex(expr: sp.Basic, pivot: sp.Symbol | None = None, inline: bool = False) -> str:
    """``expr`` in LaTeX, in the reading notation (``inline``: short fractions as ``a / b``)."""
    return DerivationPrinter(pivot, inline).doprint(expr)


# ----------------------------------------------------------------------------- document structure


@dataclass
class Row:
    """One line of a display: ``lhs rel rhs``; ``lines`` is the right side broken for width.

    ``source`` is the equation whose SymPy object was printed (``part`` names which one:
    ``rhs`` or ``steps[k]``), None for a row of explanation (a bound, a definition).
    """

    lhs: str
    rel: str
    lines: list[str]
    tag: str = ""
    source: Equation | None = None
    part: str = ""


@dataclass
class Block:
    """A paragraph (``text``: prose with ``$...$`` math), a display (``rows``) or a table."""

    kind: str
    text: str = ""
    rows: list[Row] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    body: list[list[str]] = field(default_factory=list)
    columns: str = ""  # LaTeX column specification of a table


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text=text))

    def display(self, *rows: Row) -> None:
        if rows:
            self.blocks.append(Block("display", rows=list(rows)))

    def table(self, header: list[str], body: list[list[str]], wrap_last: bool = False) -> None:
        columns = "l" * (len(header) - 1) + (WRAPPED if wrap_last else "l")
        self.blocks.append(Block("table", header=header, body=body, columns=columns))


def _split(expr: sp.Basic, pivot: sp.Symbol | None, limit: int) -> list[str]:
    """The right side ``expr`` printed, broken between top-level terms where it is too wide."""
    printer = DerivationPrinter(pivot)
    if not expr.is_Add or width(expr) <= limit:
        return [printer.doprint(expr)]
    lines, current, used = [], "", 0
    for k, term in enumerate(printer._as_ordered_terms(expr)):
        negative = k > 0 and term.could_extract_minus_sign()
        body = -term if negative else term
        text = printer.doprint(body)
        if body.is_Add:
            text = r"\left(%s\right)" % text
        piece = (" - " if negative else " + " if k else "") + text
        w = width(body) + 3
        if current and used + w > limit:
            lines.append(current)
            current, used = piece.strip(), w
        else:
            current, used = current + piece, used + w
    lines.append(current)
    return lines


def row(eq: Equation, lhs: str | None = None, part: str = "rhs", rel: str | None = None,
        limit: int = MAX_WIDTH, tag: bool = True) -> Row:
    """The display row of ``eq`` (or of one of its steps): the stored SymPy object, printed."""
    expr = eq.rhs if part == "rhs" else eq.steps[int(part[6:-1])]
    pivot = eq.lhs if isinstance(eq.lhs, sp.Symbol) else None
    if rel is None:
        rel = r"\leftarrow" if eq.kind in OVERWRITES else "="
    return Row(tex(eq.lhs) if lhs is None else lhs, rel, _split(expr, pivot, limit),
               eq.key if tag and part == "rhs" else "", eq, part)


def expr_row(lhs: str, expr: sp.Basic, rel: str = "=", tag: str = "") -> Row:
    """A row for an expression that is not stored in the derivation (a bound, a definition)."""
    return Row(lhs, rel, [tex(expr)], tag)


def _num(v: float) -> str:
    return DerivationPrinter()._print_Float(sp.Float(v))


# ----------------------------------------------------------------------------- sections


def _model_section(d: Derivation) -> Section:
    m = d.model
    L = m.depth
    s = Section("The model")
    widths = [m.inputs] + [layer.units for layer in m.layers]
    intro = (f"A dense network with {L} layer{'s' if L > 1 else ''}, trained on a batch of $N$ samples: "
             f"inputs $X = A_0$ of shape $N \\times n_0$ with $n_0 = {m.inputs}$ features, targets $Y$ of "
             f"shape $N \\times n_{L}$ with $n_{L} = {m.outputs}$. Layer $l$ has width $n_l$, weights $W_l$ "
             "($n_{l-1} \\times n_l$) and biases $b_l$ (a row of $n_l$). Widths and $N$ are read from the "
             "arrays at run time; the depth, activations, loss and optimizer are fixed in the code.")
    s.text(intro)
    body = []
    for l, layer in enumerate(m.layers, start=1):
        act = f"`{layer.activation}`"
        if layer.params:
            sym = activations.REGISTRY[layer.activation].symbols()
            act += ", " + ", ".join(f"${tex(sp.Symbol(f'{sym[k].name}_{l}'))} = {_num(v)}$" for k, v in layer.params)
        body.append([f"${l}$", f"$n_{{{l}}} = {widths[l]}$", act, f"$n_{{{l - 1}}} \\times n_{{{l}}}$",
                     f"$1 \\times n_{{{l}}}$", f"$N \\times n_{{{l}}}$"])
    s.table(["layer $l$", "width", "activation", "$W_l$", "$b_l$", "$Z_l, A_l, \\Delta_l$"], body)
    s.text("Upper-case letters are matrices and lower-case letters their elements: $z_l$ is any element "
           "of $Z_l$, $a_l$ of $A_l$, $e_l$ of $E_l$, $\\delta_l$ of $\\Delta_l$, and $y$ of $Y$. An "
           "elementwise equation holds for every element $(i, j)$. $\\mathbf{1}$ is the column of $N$ ones, "
           "so $\\mathbf{1} b_l$ repeats the bias in every row.")
    return s


def _forward_section(d: Derivation) -> Section:
    s = Section("Forward pass")
    s.text("One affine map and one elementwise activation per layer:")
    rows = []
    for l in range(1, d.model.depth + 1):
        rows.append(row(d.eq(f"forward.z{l}")))
        if d.eq(f"forward.a{l}").kind != "softmax":  # (softmax: shown with its definition below)
            rows.append(row(d.eq(f"forward.a{l}")))
        if any(e.key == f"forward.h{l}" for e in d.equations):
            rows.append(row(d.eq(f"forward.h{l}")))
    s.display(*rows)
    for e in d.section("forward"):
        if e.key.startswith("forward.h"):  # e.note is plain text (derive show); here every symbol is math
            l, p = e.layer, _num(dropout_rate(d.model, e.layer))
            s.text(f"Layer {l}: inverted dropout while training: $m_{{{l}}} = 0$ with probability ${p}$, else "
                   f"$m_{{{l}}} = 1/(1 - {p})$, drawn per element and step; $m_{{{l}}} = 1$ at prediction; the "
                   f"next layer reads $H_{{{l}}}$, and the backward recursion multiplies by the same mask "
                   f"$m_{{{l}}}$.")
    L = d.model.depth
    a_eq = d.eq(f"forward.a{L}")
    if a_eq.kind == "softmax":
        s.text(f"The output layer is a softmax: a vector activation that turns each row of logits $Z_{L}$ into "
               f"class probabilities (positive, summing to 1). Its definition, and the form that is computed, "
               f"with the row's largest logit $m_{L} = \\max_k z_{{{L},k}}$ subtracted so that every exponent is "
               f"at most 0 and nothing overflows (the factor $e^{{-m_{L}}}$ cancels; SymPy checks both are equal):")
        s.display(row(a_eq, part="steps[0]"), Row("", "=", [tex(a_eq.rhs)], a_eq.key, a_eq, "rhs"))
    s.text("The prediction is $\\hat{Y} = A_{%d}$." % L)
    return s


def _softmax_loss_section(d: Derivation, s: Section) -> None:
    """The cross-entropy of a softmax output: the mean over rows, the targets, the stable form."""
    L = d.model.depth
    names = {e.key for e in d.equations}
    weighted = "loss.weight" in names
    s.text(f"Categorical cross-entropy: for each row, $-\\sum_j t_j \\log a_{{{L},j}}$ against the target row "
           "$t$ (one-hot or class probabilities), summed over the row's elements $\\ell$ and "
           + ("divided by the sum $\\Omega$ of the rows' class weights (PyTorch's weighted mean for "
              "class-index targets):" if weighted else
              f"averaged over the $N$ rows (PyTorch's `reduction='mean'`: divided by $N$, not by "
              f"$N n_{L}$):"))
    s.display(row(d.eq("loss")))
    if weighted:
        s.display(row(d.eq("loss.weight")))
    if "loss.target" in names:
        eps = loss_option(d.model, "label_smoothing", 0.0)
        parts = []
        if eps:
            parts.append(f"label smoothing $\\varepsilon = {_num(eps)}$ mixes each target row with the uniform "
                         f"distribution, $(1 - \\varepsilon) y + \\varepsilon / n_{L}$")
        if weighted:
            parts.append("each element is weighted by the class weight $w$ of its column")
        s.text("The targets: " + "; ".join(parts) + ":")
        s.display(row(d.eq("loss.target")))
    el = d.eq("loss.element")
    s.text(f"Each element's term as defined, and as computed: since $\\log a_{{{L},j}} = z_{{{L},j}} - "
           f"\\operatorname{{lse}}_{L}$ with the row's log-sum-exp below, the logarithm of a probability is "
           "never taken where it could underflow to $\\log 0$, and the loss is finite for every finite logit "
           "(at logits of $\\pm 10^4$ a probability of $e^{-20000}$ is 0 in floating point, but "
           "$\\operatorname{lse} - z$ is exact):")
    s.display(row(el, part="steps[0]"), Row("", "=", [tex(el.rhs)], el.key, el, "rhs"))
    lse = d.eq("loss.lse")
    s.text(f"The log-sum-exp is not computed again: at the row's largest logit the forward pass stored "
           f"$a = 1 / \\sum_k e^{{z_{{{L},k}} - m_{L}}} \\ge 1/n_{L}$, so "
           f"$\\operatorname{{lse}}_{L} = m_{L} - \\log a$ there, a logarithm of a number in $[1/n_{L}, 1]$:")
    s.display(row(lse))


def _softmax_delta_section(d: Derivation, s: Section) -> None:
    """The Jacobian of softmax and the joint simplification with cross-entropy."""
    L = d.model.depth
    eq = d.eq(f"delta{L}")
    dl, jac, chain, general, found = eq.steps
    s.text(f"Softmax mixes a row: each output $a_{{{L},j}}$ depends on every logit $z_{{{L},k}}$ of its row, so "
           "the chain rule goes through its Jacobian. SymPy differentiates the definition and rewrites the "
           "result in the outputs; as a matrix it is $\\operatorname{diag}(a) - a a^{\\top}$ "
           "($\\delta_{jk}$ is 1 when $j = k$, else 0):")
    da = r"\frac{\partial \ell}{\partial a_{%d,j}}" % L
    dz = r"\frac{\partial a_{%d,j}}{\partial z_{%d,k}}" % (L, L)
    dlz = r"\frac{\partial \ell}{\partial z_{%d,k}}" % L
    s.display(row(eq, da, "steps[0]"), row(eq, dz, "steps[1]"))
    s.text(f"The chain rule sums over the row; the $a_{{{L},j}}$ cancel, and with $\\tau = \\sum_j t_j$ the "
           "sum of the target row:")
    s.display(row(eq, r"%s = \sum_j %s %s" % (dlz, da, dz), "steps[2]"),
              Row("", "=", [tex(general)], "", eq, "steps[3]"))
    s.text(f"SymPy finds this form itself: differentiating the cross-entropy of an explicit row of three "
           f"logits by the first and rewriting it in the outputs gives ${tex(found)}$; the general form is "
           f"checked equal to SymPy's derivative at every $k$ for rows of 2 to 5 logits.")
    if "loss.weight" in {e.key for e in d.equations}:
        s.text("With class weights $\\tau$ differs from row to row and is computed per row; with the factor "
               "$1/\\Omega$ of the weighted mean, this is what the code computes:")
    else:
        s.text("Every target row sums to 1 (label smoothing keeps it so), so $\\tau = 1$ and the delta is the "
               "prediction minus the target, as for binary cross-entropy after a sigmoid; with the factor "
               "$1/N$ of the mean, this is what the code computes:")
    s.display(row(eq, r"\delta_{%d} = \frac{\partial L}{\partial z_{%d}}" % (L, L)))


def _loss_section(d: Derivation) -> Section:
    m = d.model
    L = m.depth
    s = Section("Loss")
    if d.eq(f"forward.a{L}").kind == "softmax":
        _softmax_loss_section(d, s)
        _penalty(d, s)
        return s
    rule = losses.REGISTRY[m.loss]
    values = "".join(f", ${tex(sym)} = {_num(v)}$" for sym, v in rule.values(m.loss_options).items())
    s.text(f"The mean over all $N n_{L}$ elements (PyTorch's `reduction='mean'`) of the per-element loss "
           f"$\\ell$ ({_loss_name(m.loss)}{values}):")
    s.display(row(d.eq("loss")))
    el = d.eq("loss.element")
    raw = el.steps[0] if el.steps else el.rhs
    if raw != el.rhs and rule.computed is not None and not d.loss_from_logits:
        s.text(f"With $\\hat{{y}} = a_{L}$ and $d = \\hat{{y}} - y$, the loss as defined and the form that is "
               f"computed: {rule.computed_doc}")
        s.display(row(el, part="steps[0]"), Row("", "=", [tex(el.rhs)], el.key, el, "rhs"))
    elif raw != el.rhs:
        s.text(f"With $\\hat{{y}} = a_{L}$, the loss as defined, and the form that is computed from the "
               f"logit $z_{L}$: the logarithms of the squashed output are rewritten through "
               "$\\operatorname{softplus}(x) = \\log(1 + e^{x})$, evaluated as "
               "$\\max(x, 0) + \\log(1 + e^{-|x|})$, which is finite for every finite $z$.")
        s.display(row(el, part="steps[0]"), Row("", "=", [tex(el.rhs)], el.key, el, "rhs"))
    else:
        s.text(f"With $\\hat{{y}} = a_{L}$, computed as written:")
        s.display(row(el))
    _penalty(d, s)
    return s


def _penalty(d: Derivation, s: Section) -> None:
    if any(e.key == "loss.penalty" for e in d.equations):
        s.text("The regulariser is added to $L$ for every parameter element $\\theta$, weights and biases "
               "alike; its gradient is derived by SymPy in the gradients below.")
        s.display(row(d.eq("loss.penalty")))


def _loss_name(name: str) -> str:
    return {"mse": "mean squared error", "bce": "binary cross-entropy", "mae": "mean absolute error",
            "huber": "Huber loss", "smooth_l1": "smooth L1 loss", "log_cosh": "log-cosh loss"}.get(name, name)


def _output_delta_section(d: Derivation) -> Section:
    L = d.model.depth
    out = d.model.layers[-1].activation
    eq = d.eq(f"delta{L}")
    s = Section("Output-layer delta")
    if d.eq(f"forward.a{L}").kind == "softmax":
        _softmax_delta_section(d, s)
        return s
    s.text(f"The chain rule through the output activation ({out}) and the loss, per element, with "
           f"$a_{L} = f_{L}(z_{L})$:")
    da = r"\frac{\partial \ell}{\partial a_{%d}}" % L
    dz = r"\frac{\partial a_{%d}}{\partial z_{%d}}" % (L, L)
    if len(eq.steps) == 3:
        s.display(row(eq, da, "steps[0]"), row(eq, dz, "steps[1]"),
                  row(eq, r"\frac{\partial \ell}{\partial z_{%d}} = %s %s" % (L, da, dz), "steps[2]"))
    s.text(f"Simplified jointly by SymPy (the derivative of $\\ell(f_{L}(z), y)$ with respect to $z$, "
           f"rewritten in the output $a_{L}$ and checked against the product above at sample points), "
           f"with the factor $1/(N n_{L})$ of the mean, this is what the code computes:")
    s.display(row(eq, r"\delta_{%d} = \frac{\partial L}{\partial z_{%d}}" % (L, L)))
    return s


def _backward_section(d: Derivation) -> Section:
    m = d.model
    L = m.depth
    s = Section("Backward recursion")
    if L == 1:
        s.text("A single layer has no hidden deltas: $\\Delta_1$ is the output delta.")
        return s
    s.text("For $l = L-1, \\dots, 1$ the error is sent back through $W_{l+1}$ and multiplied elementwise "
           "by the derivative of the activation. SymPy differentiates $f_l(z)$; where the derivative "
           "can be written in the layer output $a_l = f_l(z_l)$, that form is computed, so the backward "
           "pass reuses the forward result instead of evaluating transcendental functions again. Both "
           "forms are shown, and they are checked equal at sample points.")
    for l in range(L - 1, 0, -1):
        layer = m.layers[l - 1]
        eq = d.eq(f"delta{l}")
        forms = activations.forms(layer.activation)
        computed = forms.derivative.xreplace(layer_symbols(m, l))
        fl = r"f_{%d}'(z_{%d})" % (l, l)
        rows = [row(d.eq(f"backward.e{l}"))]
        if eq.steps and eq.steps[0] != computed:
            rows.append(row(eq, fl, "steps[0]"))
            rows.append(Row("", "=", [tex(computed)]))
        else:
            rows.append(Row(fl, "=", [tex(computed)]))
        rows.append(row(eq))
        form = ("in the output form" if forms.in_output_form else
                "in $z$ (no form in the output exists)")
        s.text(f"Layer {l} (`{layer.activation}`): the derivative as SymPy finds it, then {form}:")
        s.display(*rows)
    return s


def _gradients_section(d: Derivation) -> Section:
    s = Section("Parameter gradients")
    s.text("Each weight gradient sums the outer products of a layer's input and its delta over the batch; "
           "each bias gradient sums the delta over the batch:")
    rows = []
    for l in range(d.model.depth, 0, -1):
        rows += [row(d.eq(f"grad.W{l}")), row(d.eq(f"grad.b{l}"))]
    s.display(*rows)
    if any(e.key == "grad.penalty" for e in d.equations):
        s.text("The regulariser's gradient is added to every parameter element's gradient "
               "($\\operatorname{sign}$ is the derivative of $|\\theta|$; L2 is coupled weight decay):")
        s.display(row(d.eq("grad.penalty")))
    return s


def _vanishing_section(d: Derivation) -> Section | None:
    """A derived bound on how much the deltas can shrink through the hidden layers."""
    m = d.model
    hidden = list(enumerate(m.layers[:-1], start=1))
    known = [(l, layer, activations.forms(layer.activation).max_derivative) for l, layer in hidden]
    if not any(layer.activation in ("sigmoid", "tanh") for _, layer in hidden):
        return None
    s = Section("Vanishing gradients")
    s.text("Since $\\Delta_l = (\\Delta_{l+1} W_{l+1}^{\\top}) \\odot f_l'(Z_l)$ and every element obeys "
           "$|f_l'(z)| \\le c_l$ with $c_l = \\sup_z |f_l'(z)|$, the Frobenius norm of the deltas obeys")
    s.display(Row(r"\lVert \Delta_{l} \rVert_F", r"\le",
                  [r"c_{l} \, \lVert W_{l+1} \rVert_2 \, \lVert \Delta_{l+1} \rVert_F"]))
    body = []
    for l, layer, c in known:
        if c is None:
            body.append([f"${l}$", f"`{layer.activation}`", "none found symbolically (piecewise or parametric)"])
        else:
            body.append([f"${l}$", f"`{layer.activation}`", f"$c_{{{l}}} = {tex(c, inline=True)}$"])
    s.text("SymPy finds $c_l$ from $f_l''(z) = 0$ and the limits at $\\pm\\infty$ "
           "(for the sigmoid: $\\sigma'(0) = 1/4$), for this model's hidden layers:")
    s.table(["layer $l$", "activation", "$c_l = \\sup_z |f_l'(z)|$"], body)
    if any(c is None for _, _, c in known):
        s.text("A layer without a symbolic bound leaves the product through all hidden layers open; the "
               "inequality above still holds for each layer whose $c_l$ is known.")
        return s
    product = sp.Mul(*[c for _, _, c in known])
    hidden_n = len(known)
    chain = (r"\Bigl(\prod_{l=1}^{%d} c_{l}\Bigr) \prod_{l=2}^{%d} \lVert W_{l} \rVert_2 \, "
             r"\lVert \Delta_{%d} \rVert_F" % (hidden_n, m.depth, m.depth))
    s.text(f"Applied through all {hidden_n} hidden layers:" if hidden_n > 1 else "Applied through the hidden layer:")
    value = tex(product)
    bases = {c for _, _, c in known}
    if len(bases) == 1 and product != 1:
        (c,) = bases
        value += " = " + (r"%s^{-%d}" % (tex(1 / c), hidden_n) if (1 / c).is_Integer else
                          r"\left(%s\right)^{%d}" % (tex(c), hidden_n))
    bound = [Row(r"\lVert \Delta_{1} \rVert_F", r"\le", [chain])]
    if product != 1:
        bound.append(Row(r"\prod_{l=1}^{%d} c_{l}" % hidden_n, "=", [value]))
    s.display(*bound)
    if product < 1:
        s.text(f"So the error reaching the first layer, and with it $\\partial L / \\partial W_1 = A_0^{{\\top}} "
               f"\\Delta_1$, is at most ${tex(product, inline=True)}$ times the product of the weight norms times the "
               f"output delta: unless the weights grow to compensate, each sigmoid layer divides the signal "
               f"by up to 4, which is why deep sigmoid networks learn slowly in their first layers.")
    else:
        s.text("The derivative bound alone does not shrink the signal here ($c_l = 1$); it shrinks when "
               "units saturate: for tanh, $1 - a^2 \\to 0$ as $|a| \\to 1$.")
    return s


# ----------------------------------------------------------------------------- the optimizer


def _explanations(d: Derivation) -> list[str]:
    """Short textbook explanations for the optimizer in use (with its options)."""
    m = d.model
    name = m.optimizer.name
    opts = dict(m.optimizer.options)
    hyper = dict(m.optimizer.hyper)
    out = []
    momentum_text = (
        "Momentum: the buffer $b$ accumulates past gradients with weight $\\mu^{k}$ for a gradient $k$ steps "
        "old. Where the gradient keeps its direction the steps grow towards $\\eta g / (1 - \\mu)$, {times} the "
        "plain step, so the parameters keep moving through flat regions (plateaus, where $g$ is tiny) and "
        "can roll through shallow local minima instead of stopping in the first dip; across a ravine the "
        "alternating components of $g$ cancel in the sum, which damps the zig-zag.")
    mu = hyper.get("momentum")
    times = f"$1/(1-\\mu) = {_num(1 / (1 - mu))}$ times" if mu is not None and mu < 1 else "up to $1/(1-\\mu)$ times"
    scaling_text = (
        "Per-parameter scaling: dividing by the root of an average of $g^2$ gives every parameter element "
        "its own step size. Elements with large or frequent gradients (steep directions) take smaller "
        "steps, elements with small or rare gradients (flat directions, sparse features) larger ones, so "
        "one learning rate suits directions of very different curvature.")
    if name == "sgd":
        out.append("Gradient descent moves every parameter against its gradient, scaled by the learning rate "
                   "$\\eta$. Full-batch, mini-batch and stochastic gradient descent are this same rule with "
                   "different batch sizes $N$.")
    elif name == "momentum":
        out.append(momentum_text.replace("{times}", times))
        if opts.get("ema"):
            out.append("Here $b$ is the exponential moving average $b \\leftarrow \\mu b + (1 - \\mu) g$ from "
                       "$b_0 = 0$, which equals the reference form with learning rate $\\eta (1 - \\mu)$.")
        else:
            out.append("As in PyTorch, the first step uses $b_1 = g_1$ (no dampening at the first step).")
    elif name == "nesterov":
        out.append(momentum_text.replace("{times}", times))
        out.append("Nesterov's variant steps along $g + \\mu b$: the gradient plus the velocity about to be "
                   "added, a look-ahead that corrects earlier when the velocity overshoots. With $\\mu = 0$ it "
                   "is plain gradient descent.")
    elif name == "adagrad":
        out.append(scaling_text)
        out.append("Adagrad sums all past squared gradients in $G$, so each element's effective rate "
                   "$\\eta / (\\sqrt{G} + \\varepsilon)$ only decreases: good for sparse features, but the steps "
                   "eventually vanish, which RMSProp and Adadelta avoid with a moving average.")
    elif name == "rmsprop":
        out.append(scaling_text)
        out.append("RMSProp averages $g^2$ with decay $\\alpha$ (a memory of about $1/(1-\\alpha)$ steps), so "
                   "old gradients are forgotten and the steps do not vanish as in Adagrad; there is no bias "
                   "correction." + (" Centered: the denominator uses the variance estimate "
                                    "$v - \\bar{g}^2$." if opts.get("centered") else "")
                   + (" With $\\mu > 0$ the scaled gradient also feeds a momentum buffer $b$." if hyper.get("momentum")
                      else ""))
    elif name == "adadelta":
        out.append(scaling_text)
        out.append("Adadelta divides by the RMS of recent gradients ($v$, decay $\\rho$) and multiplies by "
                   "the RMS of recent updates ($u$), so the step has the units of $\\theta$ and needs no "
                   "learning rate ($\\eta = 1$ is the paper's form).")
    elif name in ("adam", "adamw", "nadam"):
        out.append("Adam combines both ideas: $m$ is momentum, a moving average of $g$ with decay $\\beta_1$, "
                   "and $v$ is RMSProp's moving average of $g^2$ with decay $\\beta_2$, which scales the step "
                   "of every parameter element separately. Momentum carries the parameters through flat "
                   "regions and shallow minima; the scaling evens out directions of different curvature.")
        if opts.get("bias_correction", True):
            out.append("Both averages start at 0 and are biased towards 0 early on; dividing by "
                       "$1 - \\beta_1^{t}$ and $1 - \\beta_2^{t}$ removes that bias, so the first step has size "
                       "about $\\eta$ in every element.")
        if opts.get("amsgrad"):
            out.append("AMSGrad divides by the running maximum $v_{\\max}$ of $v$ (of the raw $v$, as PyTorch), "
                       "so no element's step can grow because $v$ shrank.")
        if name == "adamw":
            out.append("AdamW decays the weights separately, $\\theta \\leftarrow (1 - \\eta\\lambda)\\theta$, "
                       "instead of adding $\\lambda\\theta$ to $g$, where Adam's scaling would weaken the decay "
                       "for parameters with large gradients.")
        if name == "nadam":
            out.append("NAdam uses Nesterov momentum: the step combines the current gradient, weighted "
                       "$1 - \\mu_t$, with the momentum one step ahead, weighted $\\mu_{t+1}$, where "
                       "$\\mu_t = \\beta_1 (1 - \\tfrac12 \\cdot 0.96^{t\\psi})$ and $\\Pi = \\mu_1 \\cdots \\mu_t$.")
    else:  # declared by the user: its equations speak for themselves
        out.append(f"`{name}` is declared in the spec file; its state, hyperparameters and update equations "
                   "below are derived and computed exactly as those of the built-in optimizers.")
    return out


def _update_group(eq: Equation) -> str:
    key = eq.key
    if key == "update.lr_t":
        return "schedule"
    if key in ("update.clip_value", "update.grad_norm", "update.clip_coef", "update.clip_norm"):
        return "clip"
    if key == "update.decay":
        return "decay"
    if eq.kind == "scalar_state":
        return "scalar"
    return "optimizer"


_GROUP_TEXT = {
    "schedule": "The learning rate $\\eta_t$ used by this step follows the {name} schedule; its counter is the "
                "number of completed {per}s, so the first update uses $\\eta$ itself:",
    "clip": "Gradient clipping{what}:",
    "decay": "Decoupled weight decay shrinks every parameter before the optimizer's step:",
    "scalar": "Once per step (one scalar for the whole model):",
    "optimizer": "Then, in this order, for every parameter element $\\theta$ of every $W_l$ and $b_l$ "
                 "with its gradient $g$ (an arrow $\\leftarrow$ overwrites the value on its left):",
}


def _optimizer_section(d: Derivation) -> Section:
    m = d.model
    spec_eqs = d.optimizer_equations
    s = Section(f"Optimizer: {m.optimizer.name}")
    own = set(spec_eqs.hyper) | set(spec_eqs.state) | set(spec_eqs.scalar_state)

    def meaning(name: str) -> str:  # a user-declared optimizer's names mean what its equations say
        builtin = m.optimizer.name in BUILTIN_OPTIMIZERS
        return MEANING.get(name, "") if builtin or name not in own or name == "lr" else ""

    for text in _explanations(d):
        s.text(text)
    options = [f"`{k}`" for k, v in m.optimizer.options if v]
    if options:
        s.text("Options: " + ", ".join(options) + ".")
    body = []
    for k, v in m.hyper().items():
        body.append([f"${tex(_hyper_symbol(k))}$", f"`{k}`", f"${_num(v)}$", meaning(k)])
    s.text("Hyperparameters are kernel arguments: `step(..., lr=0.05)` overrides the value below "
           "without a rebuild.")
    s.table(["symbol", "name", "value", "meaning"], body, wrap_last=True)
    state_rows = []
    for kept, state in (("per parameter element", spec_eqs.state), ("one scalar", spec_eqs.scalar_state)):
        for k, init in state.items():
            state_rows.append([f"${tex(optimizers.S(k))}$", kept, f"${tex(init, inline=True)}$", meaning(k)])
    if state_rows:
        s.text("State, kept between steps; $t$ counts steps from 1:")
        s.table(["state", "kept", "initially", "meaning"], state_rows, wrap_last=True)
    else:
        s.text("The optimizer keeps no state between steps; $t$ counts steps from 1.")
    groups: list[tuple[str, list[Equation]]] = []
    for eq in d.section("update"):
        g = _update_group(eq)
        if groups and groups[-1][0] == g:
            groups[-1][1].append(eq)
        else:
            groups.append((g, [eq]))
    clip = dict(m.clip)
    for g, eqs in groups:
        what = ""
        if g == "clip":
            parts = []
            if "value" in clip:
                parts.append("by value (each element to $[-c_{\\mathrm{value}}, c_{\\mathrm{value}}]$, first)")
            if "norm" in clip:
                parts.append("by the global norm over all $P$ gradient elements of all parameters, as "
                             "`torch.nn.utils.clip_grad_norm_`")
            what = " " + " and ".join(parts)
        s.text(_GROUP_TEXT[g].format(name=m.schedule.name, per=m.schedule.per, what=what))
        s.display(*[row(eq) for eq in eqs])
    return s


# ----------------------------------------------------------------------------- documents


def document(d: Derivation) -> dict:
    """The structure both templates render: title, summary and sections of blocks."""
    m = d.model
    sections = [_model_section(d), _forward_section(d), _loss_section(d), _output_delta_section(d),
                _backward_section(d), _gradients_section(d)]
    vanishing = _vanishing_section(d)
    if vanishing is not None:
        sections.append(vanishing)
    sections.append(_optimizer_section(d))
    return {"name": m.name, "summary": m.summary(), "description": m.description, "sections": sections,
            "source": m.source}


def rows(d: Derivation) -> list[Row]:
    """Every display row of the document of ``d``, in order (what the tests check)."""
    return [r for s in document(d)["sections"] for b in s.blocks for r in b.rows]


#: Unicode characters in prose -> LaTeX (prose is otherwise ASCII; others become "?").
_TEX_CHARS = {
    "—": "---", "–": "--", "’": "'", "“": "``", "”": "''", "←": r"$\leftarrow$", "→": r"$\to$", "−": "-",
    "·": r"$\cdot$", "×": r"$\times$", "≤": r"$\le$", "≥": r"$\ge$", "∘": r"$\circ$", "√": r"$\surd$",
    "∂": r"$\partial$", "ℓ": r"$\ell$", "ŷ": r"$\hat{y}$", "ḡ": r"$\bar{g}$", "½": r"$\frac12$", "²": r"$^2$",
    "ᵗ": r"$^t$", "θ": r"$\theta$", "η": r"$\eta$", "β": r"$\beta$", "μ": r"$\mu$", "τ": r"$\tau$",
    "ρ": r"$\rho$", "α": r"$\alpha$", "ε": r"$\varepsilon$", "λ": r"$\lambda$", "ψ": r"$\psi$", "Π": r"$\Pi$",
    "Δ": r"$\Delta$", "δ": r"$\delta$", "σ": r"$\sigma$", "γ": r"$\gamma$", "∈": r"$\in$", "‖": r"$\|$",
}
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$", "<": r"\textless{}",
                ">": r"\textgreater{}"}


def _tex_plain(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in _TEX_CHARS:
            out.append(_TEX_CHARS[ch])
        elif ord(ch) < 256:  # Latin-1: T1-encoded fonts have it
            out.append(ch)
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(base if base.isascii() and base else "?")
    return "".join(out)


def _prose(text: str, code, plain) -> str:
    """``$...$`` kept as math; ```code``` through code(chunk); the rest through plain(chunk)."""
    out = []
    for k, part in enumerate(text.split("$")):
        if k % 2:
            out.append(f"${part}$")
            continue
        for j, chunk in enumerate(part.split("`")):
            out.append(code(chunk) if j % 2 else plain(chunk))
    return "".join(out)


def tex_prose(text: str) -> str:
    """Prose for LaTeX: ``$...$`` kept as math, ```code``` as typewriter, the rest escaped."""
    return _prose(text, lambda chunk: r"\texttt{%s}" % _tex_plain(chunk), _tex_plain)


def tex_text(text: str) -> str:
    """Plain text (no math) for LaTeX: everything escaped (a model's name, its description)."""
    return _tex_plain(text)


def md_prose(text: str) -> str:
    """Prose for Markdown: ``$...$`` kept as math, the rest escaped where Markdown would act."""
    return _prose(text, lambda chunk: f"`{chunk}`", lambda chunk: re.sub(r"([\\*_\[\]<|])", r"\\\1", chunk))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
                             block_start_string="<%", block_end_string="%>", variable_start_string="<<",
                             variable_end_string=">>", comment_start_string="<#", comment_end_string="#>")
    env.filters.update(prose=tex_prose, text=tex_text, md=md_prose)
    return env


def to_latex(d: Derivation) -> str:
    """A standalone LaTeX document (amsmath) of the derivation of ``d``."""
    return _environment().get_template(TEX_TEMPLATE).render(doc=document(d))


def to_markdown(d: Derivation) -> str:
    """The derivation as Markdown with ``$...$`` and ``$$...$$`` math (code hosts, notebooks)."""
    return _environment().get_template(MD_TEMPLATE).render(doc=document(d))


def to_latex_math(d: Derivation) -> str:
    """Every equation in one ``aligned`` display, for a math-only renderer (Jupyter's text/latex)."""
    lines = []
    for r in rows(d):
        lines.append(f"{r.lhs} &{r.rel} {r.lines[0]}")
        lines += [r"&\qquad {} %s" % more for more in r.lines[1:]]
    return "$$\n\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}\n$$"


# ----------------------------------------------------------------------------- files and pdflatex


class LatexError(DeriveError):
    """A document could not be written or compiled."""


PDFLATEX_MISSING = ("pdflatex not found; install texlive-latex-base and texlive-latex-recommended "
                    "(Debian/Ubuntu: apt-get install texlive-latex-base texlive-latex-recommended), "
                    "or compile {tex} with any LaTeX installation")


def write_latex(model: ModelSpec | Derivation, path: str | Path) -> Path:
    """Write the standalone document of ``model`` to ``path``; a clear error when that fails."""
    d = model if isinstance(model, Derivation) else derive_model(model)
    path = Path(path)
    text = to_latex(d)
    if not path.parent.is_dir():
        raise LatexError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LatexError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def compile_pdf(tex_path: str | Path, timeout: float = 120.0) -> Path:
    """Compile ``tex_path`` with pdflatex into the PDF beside it; LatexError when pdflatex is
    missing or fails (with the first error of its log)."""
    tex_path = Path(tex_path)
    exe = shutil.which("pdflatex")
    if exe is None:
        raise LatexError(PDFLATEX_MISSING.format(tex=tex_path))
    pdf = tex_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory(prefix="derive-latex-") as work:
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
               f"-output-directory={work}", str(tex_path.resolve())]
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, timeout=timeout,
                                  env={**os.environ, "TEXINPUTS": f"{tex_path.resolve().parent}{os.pathsep}"})
        except subprocess.TimeoutExpired:
            raise LatexError(f"pdflatex did not finish {tex_path} within {timeout:g} s") from None
        log = Path(work, tex_path.stem + ".log")
        log_text = log.read_text(errors="replace") if log.exists() else proc.stdout.decode(errors="replace")
        built = Path(work, tex_path.stem + ".pdf")
        if proc.returncode != 0 or not built.exists():
            first = next((line for line in log_text.splitlines() if line.startswith("!")), "no error line in the log")
            raise LatexError(f"pdflatex failed on {tex_path}: {first}")
        try:
            shutil.copyfile(built, pdf)
            shutil.copyfile(log, tex_path.with_suffix(".log"))
        except OSError as exc:
            raise LatexError(f"cannot write {pdf}: {exc.strerror or exc}") from None
    return pdf


# ----------------------------------------------------------------------------- Jupyter


def _repr_markdown_(self: Derivation) -> str:
    return to_markdown(self)


def _repr_latex_(self: Derivation) -> str:
    return to_latex_math(self)


Derivation._repr_markdown_ = _repr_markdown_
Derivation._repr_latex_ = _repr_latex_

__all__ = ["DerivationPrinter", "LatexError", "Row", "compile_pdf", "document", "rows", "tex", "to_latex",
           "to_latex_math", "to_markdown", "write_latex"]
