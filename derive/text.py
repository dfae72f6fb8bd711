"""Plain-text (Unicode) rendering of a derivation, for ``derive show``."""

from __future__ import annotations

import sympy as sp

from .derivation import SECTION_TITLES, SECTIONS, Derivation, Equation


def _pretty(lhs: sp.Basic, rhs: sp.Basic, arrow: bool = False) -> str:
    text = sp.pretty(sp.Eq(lhs, rhs, evaluate=False), use_unicode=True, wrap_line=False)
    if arrow:  # an update θ ← f(θ, g): the " = " right after the left side, which starts a line
        head = sp.pretty(lhs, use_unicode=True) + " = "
        lines = text.split("\n")
        k = next(k for k, line in enumerate(lines) if line.startswith(head))
        lines[k] = head[:-3] + " ← " + lines[k][len(head):]
        text = "\n".join(lines)
    return text


def _indent(block: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in block.split("\n"))


def _equation(d: Derivation, eq: Equation) -> str:
    parts = []
    if eq.note:
        parts.append(f"  {eq.key}: {eq.note}")
    else:
        parts.append(f"  {eq.key}")
    if eq.section == "output_delta" and len(eq.steps) == 3:
        dl, fp, product = eq.steps
        L = d.model.depth
        parts.append(_indent(_pretty(sp.Symbol("∂ℓ/∂a_%d" % L), dl)))
        parts.append(_indent(_pretty(sp.Symbol("∂a_%d/∂z_%d" % (L, L)), fp)))
        parts.append(_indent(_pretty(sp.Symbol("(∂ℓ/∂a)·(∂a/∂z)"), product)))
    elif eq.section == "backward" and eq.steps:
        l = eq.layer
        parts.append(_indent(_pretty(sp.Symbol(f"f_{l}'(z_{l})"), eq.steps[0])
                             + "   (as SymPy differentiates it)"))
    elif eq.steps:
        for step in eq.steps:
            parts.append(_indent(_pretty(eq.lhs, step)))
    parts.append(_indent(_pretty(eq.lhs, eq.rhs, arrow=eq.kind in ("update", "regularize"))))
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


def to_text(d: Derivation) -> str:
    """The whole derivation as readable Unicode text."""
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
            out.append("  hyperparameters: " + ", ".join(f"{k} = {v:g}" for k, v in m.optimizer.hyper))
        out += [_equation(d, eq) for eq in eqs]
    return "\n".join(out) + "\n"
