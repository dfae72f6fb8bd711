"""Text rendering of a derivation for ``derive show``: Unicode (default) or plain ASCII.

This module also holds the *reading notation* shared with :mod:`derive.latex`: which symbol
names print as which Greek letters (``lr`` as η, ``beta1`` as β₁), and the order in which terms
and factors are printed (``θ − η·g`` rather than SymPy's ``−g·lr + θ``). Printing never changes
an expression: the objects shown are the derivation's own, the ones the code generator prints.
"""

from __future__ import annotations

import unicodedata

import sympy as sp
from sympy.printing.pretty.pretty import PrettyPrinter
from sympy.printing.pretty.pretty_symbology import pretty_use_unicode
from sympy.printing.pretty.stringpict import prettyForm

from .derivation import SECTION_TITLES, SECTIONS, Derivation, Equation

# ----------------------------------------------------------------------------- notation

#: Symbol name -> how it reads in Unicode. Names not listed print as SymPy prints them
#: (``z_1`` as z₁, ``Delta_2`` as Δ₂, ``gbar`` as ḡ).
UNICODE_NAMES = {
    "lr": "η", "lr_t": "ηₜ", "beta1": "β₁", "beta2": "β₂", "eps": "ε", "momentum": "μ",
    "dampening": "τ", "l1": "λ₁", "l2": "λ₂", "mu_product": "Π", "momentum_decay": "ψ",
    "vmax": "v_max", "delta": "Δ", "ell": "ℓ", "lr_decay": "k", "grad_norm": "‖g‖", "clip_coef": "κ",
    "clip_norm": "c_norm", "clip_value": "c_value", "weight_decay": "λ", "decoupled_weight_decay": "λ_wd",
    "epoch": "epoch", "step_size": "s", "decay": "k", "T_max": "T", "eta_min": "η_min",
    "initial_accumulator_value": "G₀", "yhat_ij": "ŷ_ij", "delta_ell": "δ_ℓ", "beta_ell": "β_ℓ",
}

#: Scalars that are hyperparameters or counters: printed before state and element symbols in a
#: product (``β₁·m``, ``(1 − β₁)·g``, ``η·g``).
HYPER_NAMES = frozenset({
    "lr", "lr_t", "beta1", "beta2", "eps", "momentum", "dampening", "l1", "l2", "momentum_decay", "lr_decay",
    "weight_decay", "decoupled_weight_decay", "rho", "alpha", "gamma", "decay", "step_size", "T_max", "eta_min",
    "t", "epoch", "clip_norm", "clip_value", "clip_coef", "initial_accumulator_value", "N",
})


def _rank(factor: sp.Basic) -> tuple[int, int]:
    """Order of a factor in a printed product: numbers, hyperparameters (a symbol before a
    compound), errors e_l, the rest."""
    if factor.is_Number:
        return 0, 0
    names = {s.name for s in factor.free_symbols}
    if all(n in HYPER_NAMES or n.startswith("n_") for n in names):
        return 1, 0 if factor.is_Symbol else 1
    if factor.is_Symbol and factor.name.startswith("e_"):
        return 2, 0
    return 3, 0


def _has_factor(term: sp.Basic, pivot: sp.Symbol) -> bool:
    return term == pivot or (term.is_Mul and pivot in term.args) or (
        term.could_extract_minus_sign() and (-term == pivot or (-term).is_Mul and pivot in (-term).args))


class ReadingOrder:
    """Mixin for SymPy printers: the order in which a person reads sums and products.

    Sums: the updated quantity first (``θ − η·g``, ``ρ·v + (1 − ρ)·g²``), a positive term
    before negative ones (``softplus(z) − y·z``), a constant before a compound term
    (``1 + k·(t − 1)``), ε last (``√v + ε``). Products: numbers, then hyperparameters, then the
    rest (``(1 − β₁)·g``). Only the printed order changes, never the expression.
    """

    pivot: sp.Symbol | None = None

    def _as_ordered_terms(self, expr, order=None):
        terms = list(expr.as_ordered_terms())
        last = [t for t in terms if t.is_Symbol and t.name == "eps"]
        terms = [t for t in terms if t not in last]
        number = next((t for t in terms if t.is_Number and t > 0), None)
        if number is not None and any(not (t.is_Symbol or t.is_Number) for t in terms):
            terms.remove(number)
            terms.insert(0, number)
        if terms and terms[0].could_extract_minus_sign():
            k = next((i for i, t in enumerate(terms) if not t.could_extract_minus_sign()), None)
            if k is not None:
                terms.insert(0, terms.pop(k))
        if self.pivot is not None:
            first = [t for t in terms if _has_factor(t, self.pivot)]
            terms = first + [t for t in terms if t not in first]
        return terms + last

    def _reading_mul(self, expr: sp.Mul) -> sp.Mul:
        args = sorted(expr.as_ordered_factors(), key=_rank)
        return sp.Mul(*args, evaluate=False)


class UnicodePrinter(ReadingOrder, PrettyPrinter):
    """SymPy's pretty printer with the reading notation (``names=None``: SymPy's own names)."""

    def __init__(self, unicode: bool = True, pivot: sp.Symbol | None = None, names: dict | None = None):
        super().__init__({"use_unicode": unicode, "wrap_line": False, "order": "none"})
        self.pivot = pivot
        self.names = UNICODE_NAMES if names is None and unicode else (names or {})

    def _print_Symbol(self, e, bold_name=False):
        name = self.names.get(e.name)
        if name is not None:
            return prettyForm(name)
        return super()._print_Symbol(e, bold_name)

    def _print_Mul(self, product):
        ordered = self._reading_mul(product)
        if len(ordered.args) > 2 and ordered.args[0] == -1 and ordered.args[1].is_Number:  # -2⋅x, not -1⋅2⋅x
            ordered = sp.Mul(-ordered.args[1], *ordered.args[2:], evaluate=False)
        return super()._print_Mul(ordered)

    def _print_Min(self, e):
        return self._print_Function(e, func_name="min")

    def _print_Max(self, e):
        return self._print_Function(e, func_name="max")

    def _print_Softplus(self, e):
        return self._print_Function(e, func_name="softplus")

    def _print_Sigmoid(self, e):
        return self._print_Function(e, func_name="σ" if self._use_unicode else "sigmoid")


def pretty(expr: sp.Basic, unicode: bool = True, pivot: sp.Symbol | None = None) -> str:
    """``expr`` as a 2-D text picture in the reading notation."""
    before = pretty_use_unicode(unicode)  # SymPy's pictures (roots, brackets) follow a global flag
    try:
        return UnicodePrinter(unicode, pivot).doprint(expr)
    finally:
        pretty_use_unicode(before)


def width(expr: sp.Basic) -> int:
    """Columns of the Unicode picture of ``expr``: the display width a reader sees."""
    return max(len(line) for line in pretty(expr).split("\n"))


#: Equation kinds that overwrite their left side (θ ← θ − η·g, Π ← Π·μ_t): printed with an arrow.
OVERWRITES = ("update", "regularize", "scalar_state")

# ----------------------------------------------------------------------------- plain ASCII

_ASCII = {
    "←": "<-", "→": "->", "−": "-", "·": "*", "⋅": "*", "×": "x", "∘": "o", "∈": "in", "≤": "<=", "≥": ">=",
    "‖": "||", "√": "sqrt", "∂": "d", "ℓ": "l", "ŷ": "yhat", "ḡ": "gbar", "½": "1/2", "²": "^2", "ᵗ": "^t",
    "θ": "theta", "η": "eta", "β": "beta", "μ": "mu", "τ": "tau", "ρ": "rho", "α": "alpha", "ε": "eps",
    "λ": "lambda", "ψ": "psi", "Π": "Pi", "Δ": "Delta", "δ": "delta", "σ": "sigma", "γ": "gamma",
    "κ": "kappa", "ₜ": "_t", "—": "--", "–": "-", "’": "'", "“": '"', "”": '"', "𝟙": "1",
}


def to_ascii(text: str) -> str:
    """``text`` in plain ASCII: math symbols spelled out, subscripts flattened, nothing lost silently
    (a character with no spelling becomes ``?``)."""
    out = []
    for i, ch in enumerate(text):
        if ch in _ASCII:
            word = _ASCII[ch]
            following = text[i + 1:i + 2]
            spell = word.isalpha() and len(word) > 1 and following.isalpha()
            out.append(word + " " if spell else word)  # "ηb" -> "eta b", not "etab"
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(base if base.isascii() and base else "?")
    return "".join(out)


# ----------------------------------------------------------------------------- the derivation


def _pretty(lhs: sp.Basic, rhs: sp.Basic, arrow: bool = False, unicode: bool = True) -> str:
    pivot = lhs if isinstance(lhs, sp.Symbol) else None
    text = pretty(sp.Eq(lhs, rhs, evaluate=False), unicode, pivot)
    if arrow:  # an update θ ← f(θ, g): the " = " right after the left side, which starts a line
        head = pretty(lhs, unicode) + " = "
        lines = text.split("\n")
        k = next(k for k, line in enumerate(lines) if line.startswith(head))
        lines[k] = head[:-3] + (" ← " if unicode else " <- ") + lines[k][len(head):]
        text = "\n".join(lines)
    return text


def _indent(block: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in block.split("\n"))


def _equation(d: Derivation, eq: Equation, unicode: bool) -> str:
    parts = [f"  {eq.key}: {eq.note}" if eq.note else f"  {eq.key}"]

    def show(lhs, rhs, arrow=False):
        return _indent(_pretty(lhs, rhs, arrow, unicode))

    if eq.section == "output_delta" and len(eq.steps) == 3:
        dl, fp, product = eq.steps
        L = d.model.depth
        parts.append(show(sp.Symbol("∂ℓ/∂a_%d" % L), dl))
        parts.append(show(sp.Symbol("∂a_%d/∂z_%d" % (L, L)), fp))
        parts.append(show(sp.Symbol("(∂ℓ/∂a)·(∂a/∂z)"), product))
    elif eq.section == "output_delta" and len(eq.steps) == 5:  # cross-entropy after softmax
        dl, jac, chain, general, found = eq.steps
        L = d.model.depth
        parts.append(show(sp.Symbol("∂ℓ/∂a_%d,j" % L), dl))
        parts.append(show(sp.Symbol("∂a_%d,j/∂z_%d,k" % (L, L)), jac) + "   (the Jacobian diag(a) - a aᵀ)")
        parts.append(show(sp.Symbol("∂ℓ/∂z_%d,k" % L), chain))
        parts.append(show(sp.Symbol("∂ℓ/∂z_%d,k" % L), general) + "   (τ = Σ_j t_j)")
        parts.append(_indent("as SymPy finds it for n = 3, k = 1: " + sp.sstr(found)))
    elif eq.section == "backward" and eq.steps:
        l = eq.layer
        parts.append(show(sp.Symbol(f"f_{l}'(z_{l})"), eq.steps[0]) + "   (as SymPy differentiates it)")
    elif eq.steps:
        for step in eq.steps:
            if step != eq.rhs:
                parts.append(show(eq.lhs, step))
    parts.append(show(eq.lhs, eq.rhs, arrow=eq.kind in OVERWRITES))
    return "\n".join(parts)


def shapes(d: Derivation) -> list[str]:
    """One line per quantity: its shape in symbols (N = batch size, n_l = widths)."""
    m = d.model
    widths = [m.inputs] + [layer.units for layer in m.layers]
    lines = [f"  X = A_0: N × n_0 (n_0 = {m.inputs});  Y: N × n_{m.depth} (n_{m.depth} = {m.outputs})"]
    for l, layer in enumerate(m.layers, start=1):
        act = layer.activation + (f" {layer.param_dict}" if layer.params else "")
        lines.append(f"  layer {l}: W_{l}: n_{l - 1} × n_{l} ({widths[l - 1]} × {widths[l]}), b_{l}: n_{l}, "
                     f"Z_{l}, A_{l}, Δ_{l}: N × n_{l}; activation {act}")
    return lines


def _symbols_line(d: Derivation) -> str | None:
    shown = [f"{UNICODE_NAMES[k]} = {k}" for k in d.model.hyper() if UNICODE_NAMES.get(k, k) != k]
    return "  symbols: " + ", ".join(shown) if shown else None


def to_text(d: Derivation, unicode: bool = True) -> str:
    """The whole derivation as readable text: Unicode with Greek symbols (default), or plain
    ASCII with SymPy's own names (``unicode=False``, for logs and old terminals)."""
    m = d.model
    out = [f"Model {m.name}: {m.summary()}"]
    if m.description:
        out.append(m.description)
    out += ["", "Shapes", *shapes(d)]
    for section in SECTIONS:
        eqs = d.section(section)
        if not eqs:
            continue
        out += ["", SECTION_TITLES[section]]
        if section == "update":
            rule = d.optimizer
            out.append(f"  {rule.name}: {rule.doc}")
            out.append("  hyperparameters: " + ", ".join(f"{k} = {v:g}" for k, v in m.hyper().items()))
            line = _symbols_line(d) if unicode else None
            if line:
                out.append(line)
        out += [_equation(d, eq, unicode) for eq in eqs]
    text = "\n".join(out) + "\n"
    return text if unicode else to_ascii(text)
