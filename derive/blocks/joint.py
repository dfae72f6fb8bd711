"""The output layer's activation and loss taken together, per element (cached by their names).

The loss element as it is computed (from the logit ``z`` where a stable form exists) and the
output delta ∂ℓ/∂z simplified jointly (BCE∘σ gives ``a - y``). Both depend only on the blocks,
so they live here, below the spec and the derivation: :mod:`derive.userblocks` checks a
user's blocks with them at load time, and :mod:`derive.derivation` (which re-exports them)
builds the model's equations from them.
"""

from __future__ import annotations

import functools

import sympy as sp

from ..errors import BuildError
from ..symbolic import a, numerically_equal, output_form, sample_points, stable_from_logits, y, z
from . import activations, losses


def _simplify(e: sp.Expr) -> sp.Expr:
    """sp.simplify, but sign(u) (the derivative of |u|) stays sign(u): simplify() would write it
    as u/|u|, a division and a Piecewise at u = 0."""
    keep = sp.Function("keep_sign")
    return sp.simplify(e.replace(sp.sign, keep)).replace(keep, sp.sign)


@functools.cache
def output_delta_forms(act_name: str, loss_name: str) -> tuple[sp.Expr, ...]:
    """(∂ℓ/∂ŷ, ∂ŷ/∂z, their product, the simplified joint form) in the element symbols a, y, z.

    The joint form is SymPy's derivative of ℓ(f(z), y) with respect to z, rewritten in the
    output ``a`` where possible; it must equal the product at sample points.
    """
    f = activations.forms(act_name).f
    fprime = activations.forms(act_name).derivative
    ell = losses.REGISTRY[loss_name].expr
    dl_dyhat = _simplify(sp.diff(ell, losses.yhat)).subs(losses.yhat, a)
    product = dl_dyhat * fprime
    f_plain = f.rewrite(sp.log) if f.has(sp.Function) else f
    joint_raw = sp.diff(ell.subs(losses.yhat, f_plain), z)
    joint = output_form(joint_raw, f_plain)
    candidates = [product] if joint is None else [sp.factor_terms(_simplify(joint)), product]
    joint = min(candidates, key=sp.count_ops)
    pts = [{**p, a: f_plain.subs(p)} for p in sample_points(joint_raw.free_symbols | {z, y})]
    if not numerically_equal(joint, product, pts):
        raise BuildError(f"joint output delta of {loss_name}∘{act_name} disagrees with the chain rule")
    return dl_dyhat, fprime, product, joint


@functools.cache
def loss_element(act_name: str, loss_name: str) -> tuple[sp.Expr, bool]:
    """The per-element loss as computed, and whether it is computed from the logit ``z``."""
    rule = losses.REGISTRY[loss_name]
    ell = rule.expr
    if rule.needs_range is not None:
        f = activations.forms(act_name).f
        stable = stable_from_logits(ell.subs(losses.yhat, f))
        if stable is not None:
            return stable, True
        if rule.log_floor is not None:  # as the reference libraries: clamp each log term
            floor = sp.Float(rule.log_floor)
            ell = ell.replace(sp.log, lambda u: sp.Max(sp.log(u), floor))
    elif rule.computed is not None:  # a form that cannot overflow (log-cosh), checked against the definition
        computed, defined = (e.subs(losses.yhat, z) for e in (rule.computed, ell))
        if not numerically_equal(computed, defined, sample_points(computed.free_symbols | {z, y})):
            raise BuildError(f"the computed form of loss {loss_name} disagrees with its definition")
        return rule.computed.subs(losses.yhat, a), False
    return ell.subs(losses.yhat, a), False


__all__ = ["loss_element", "output_delta_forms"]
