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


@functools.cache
def output_delta_forms(act_name: str, loss_name: str) -> tuple[sp.Expr, ...]:
    """(∂ℓ/∂ŷ, ∂ŷ/∂z, their product, the simplified joint form) in the element symbols a, y, z.

    The joint form is SymPy's derivative of ℓ(f(z), y) with respect to z, rewritten in the
    output ``a`` where possible; it must equal the product at sample points.
    """
    f = activations.forms(act_name).f
    fprime = activations.forms(act_name).derivative
    ell = losses.REGISTRY[loss_name].expr
    dl_dyhat = sp.simplify(sp.diff(ell, losses.yhat)).subs(losses.yhat, a)
    product = dl_dyhat * fprime
    f_plain = f.rewrite(sp.log) if f.has(sp.Function) else f
    joint_raw = sp.diff(ell.subs(losses.yhat, f_plain), z)
    joint = output_form(joint_raw, f_plain)
    candidates = [product] if joint is None else [sp.factor_terms(sp.simplify(joint)), product]
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
    return ell.subs(losses.yhat, a), False


__all__ = ["loss_element", "output_delta_forms"]
