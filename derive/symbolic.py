"""Symbolic helpers shared by every block: output forms, stable forms, numeric checks.

Two rewritings matter for the generated kernels:

* :func:`output_form` rewrites a derivative ``d(z)`` of an activation ``a = f(z)`` in terms of the
  output ``a`` where that is possible (``σ' = a(1-a)``, ``tanh' = 1-a^2``), so the backward pass
  reuses the forward result instead of recomputing transcendental functions.
* :func:`stable_from_logits` rewrites a loss of a squashed output, ``ℓ(f(z), y)``, into a form
  computed from the logit ``z`` that stays finite for every finite ``z`` (BCE∘σ becomes
  ``softplus(z) - y z``, with ``softplus`` evaluated as ``max(z, 0) + log1p(exp(-|z|))``).

Every rewriting is verified numerically against the expression it replaces before it is used;
a rewriting that fails the check is discarded, never trusted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import sympy as sp

#: Canonical element symbols used by the blocks: pre-activation, activation, target.
z, a, y = sp.symbols("z a y", real=True)
#: Sample points used to verify every rewriting (chosen to avoid 0 and symmetric points).
Z_SAMPLES = (-6.3, -2.7, -1.1, -0.37, 0.23, 0.81, 1.9, 3.4, 7.2)
Y_SAMPLES = (0.0, 0.31, 1.0)
PARAM_SAMPLES = (0.37, 1.3)


class Softplus(sp.Function):
    r"""``softplus(x) = log(1 + e^x)``, printed in the overflow-free form
    ``max(x, 0) + log1p(exp(-|x|))``. Its derivative is the logistic sigmoid."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (1 + sp.exp(-self.args[0]))

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer, exp=None):
        s = r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])
        return s if exp is None else r"%s^{%s}" % (s, exp)


class Sigmoid(sp.Function):
    r"""The logistic function ``1/(1 + e^{-x})`` as one symbol, used to rewrite derivatives that
    cannot be written in the layer output (SiLU): ``e^{-x}/(1+e^{-x})^2`` overflows to inf/inf
    for large ``|x|`` while ``σ(x)(1-σ(x))`` stays finite."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer, exp=None):
        s = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return s if exp is None else r"\sigma^{%s}\left(%s\right)" % (exp, printer._print(self.args[0]))


def _plain(expr: sp.Expr) -> sp.Expr:
    """The expression without Softplus/Sigmoid symbols, for numeric checks."""
    if expr.has(Softplus):
        expr = expr.rewrite(sp.log)
    if expr.has(Sigmoid):
        expr = expr.rewrite(sp.exp)
    return expr


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Replace every ``log(1 + e^w)`` by ``softplus(w)``, which is printed overflow-free."""
    w = sp.Wild("w")
    return expr.replace(sp.log(1 + sp.exp(w)), Softplus(w))


def sigmoid_form(d: sp.Expr) -> sp.Expr:
    """Rewrite ``e^{±v}`` in ``d`` through ``s = σ(v)`` (``e^{-v} = (1-s)/s``) when that removes
    every exponential and leaves a rational function of ``s`` (a ``log(1 - s)`` would be NaN once
    ``s`` rounds to 1; functions of ``z`` alone, such as ``softplus(z)``, may remain), so no
    intermediate overflows; ``d`` unchanged otherwise. ``v`` is the argument of the exponentials
    (``z``, or ``βz`` for a user's swish), all ± one expression. Write ``log(1 + e^v)`` as
    ``softplus(v)`` first (:func:`stabilize`), or its ``e^v`` blocks the rewrite."""
    exps = {e.args[0] for e in d.atoms(sp.exp) if z in e.args[0].free_symbols}
    if not exps:
        return d
    v = min(exps, key=lambda w: (w.could_extract_minus_sign(), sp.count_ops(w), sp.srepr(w)))
    v = -v if v.could_extract_minus_sign() else v
    if not all(w in (v, -v) for w in exps):
        return d
    s = sp.Dummy("s", positive=True)
    g = sp.simplify(d.subs({sp.exp(-v): (1 - s) / s, sp.exp(v): s / (1 - s)}))
    if any(s in f.free_symbols for f in g.atoms(sp.Function)):  # g must be rational in s: a log(1 - s)
        return d  # would be NaN once s rounds to 1 (functions of z alone, softplus(z), are fine)
    g = sp.collect(sp.expand(g), z).subs(s, Sigmoid(v))
    points = sample_points(d.free_symbols)
    return g if numerically_equal(g, d, points) else d


def numerically_equal(
    e1: sp.Expr,
    e2: sp.Expr,
    points: Iterable[Mapping[sp.Symbol, float]],
    rtol: float = 1e-9,
) -> bool:
    """True when ``e1`` and ``e2`` agree at every point (both non-finite counts as agreement)."""
    f1, f2 = _plain(e1), _plain(e2)
    for point in points:
        try:
            v1 = complex(f1.subs(point).evalf(30))
            v2 = complex(f2.subs(point).evalf(30))
        except (TypeError, ValueError, ZeroDivisionError):
            return False
        if v1.imag or v2.imag:
            return False
        r1, r2 = v1.real, v2.real
        if not (math.isfinite(r1) and math.isfinite(r2)):
            if math.isfinite(r1) or math.isfinite(r2):
                return False
            continue
        if abs(r1 - r2) > rtol * max(1.0, abs(r1), abs(r2)):
            return False
    return True


def sample_points(symbols: Iterable[sp.Symbol], z_values=Z_SAMPLES) -> list[dict]:
    """Points over ``z`` (and ``y`` and any parameters among ``symbols``) for numeric checks."""
    others = sorted((s for s in symbols if s not in (z, a)), key=lambda s: s.name)
    points = []
    for i, zv in enumerate(z_values):
        point = {z: zv}
        for k, s in enumerate(others):
            pool = Y_SAMPLES if s == y else PARAM_SAMPLES
            point[s] = pool[(i + k) % len(pool)]
        points.append(point)
    return points


def _candidates(f: sp.Expr) -> list[sp.Expr]:
    """Sub-expressions of ``f`` that depend on ``z`` and could be solved for: ``f`` itself,
    then its proper sub-expressions simplest first, then ``z`` (a full inverse) last."""
    found = set()
    for node in sp.preorder_traversal(f):
        if isinstance(node, sp.Expr) and z in node.free_symbols and not node.is_Symbol:
            found.add(node)
    found.discard(f)
    return [f, *sorted(found, key=lambda e: (sp.count_ops(e), sp.srepr(e))), z]


def _smooth_output_form(d: sp.Expr, f: sp.Expr) -> sp.Expr | None:
    """The simplest verified rewriting of ``d`` in ``a`` over all solvable sub-expressions."""
    u_sym = sp.Dummy("u")
    points = sample_points(d.free_symbols | f.free_symbols)
    check = [{**p, a: f.subs(p)} for p in points]
    found: list[sp.Expr] = []
    for u in _candidates(f):
        if u == f:  # d already written in f itself, e.g. tanh' = 1 - tanh(z)**2
            g = sp.expand(d.subs(f, a))
            if z not in g.free_symbols and numerically_equal(g, d, check):
                return g
            continue
        fu = f.subs(u, u_sym)
        du = d.subs(u, u_sym)
        if z in fu.free_symbols or z in du.free_symbols:
            continue
        try:
            solutions = sp.solve(sp.Eq(a, fu), u_sym)
        except (NotImplementedError, ValueError, TypeError):
            continue
        for sol in solutions:
            g = sp.simplify(du.subs(u_sym, sol))
            if z in g.free_symbols or g.has(sp.LambertW):
                continue
            if numerically_equal(g, d, check):
                found.append(g)
    if not found:
        return None
    return min(found, key=lambda e: (sp.count_ops(e), len(sp.srepr(e)), sp.srepr(e)))


def _map_condition(cond, f: sp.Expr):
    """Map a condition on ``z`` (``z > c`` etc.) to one on ``a = f(z)``, for monotone ``f``."""
    if cond in (sp.true, sp.false):
        return cond
    if isinstance(cond, sp.core.relational.Relational):
        lhs, rhs = cond.lhs, cond.rhs
        if lhs == z and z not in rhs.free_symbols:
            return cond.func(a, f.subs(z, rhs))
        if rhs == z and z not in lhs.free_symbols:
            return cond.func(f.subs(z, lhs), a)
    return None


def output_form(d: sp.Expr, f: sp.Expr) -> sp.Expr | None:
    """Rewrite ``d(z)`` as an expression of ``a = f(z)`` (and parameters), or None.

    Smooth activations: solve ``a = f(u)`` for a sub-expression ``u`` of ``f`` (``e^{-z}`` for
    the sigmoid, ``tanh z`` for tanh) and substitute. Piecewise ones: rewrite branch by branch
    and map each condition ``z > c`` to ``a > f(c)`` (valid for monotone ``f``). The result is
    accepted only if it equals ``d`` at sample points on both sides of every branch.
    """
    if z not in d.free_symbols:
        return d
    d = sp.piecewise_fold(d)
    if not isinstance(d, sp.Piecewise):
        return _smooth_output_form(d, f)
    f_pw = sp.piecewise_fold(f)
    if not isinstance(f_pw, sp.Piecewise):
        return None
    f_branches = {cond: expr for expr, cond in f_pw.args}
    pieces = []
    for expr, cond in d.args:
        branch_f = f_branches.get(cond)
        mapped = _map_condition(cond, f_pw)
        if branch_f is None or mapped is None:
            return None
        if z in expr.free_symbols:
            g = _smooth_output_form(expr, branch_f)
            if g is None:
                return None
        else:
            g = expr
        pieces.append((g, mapped))
    g = sp.Piecewise(*pieces)
    points = [{**p, a: f_pw.subs(p)} for p in sample_points(d.free_symbols | f.free_symbols)]
    return g if numerically_equal(g, d, points) else None


def stable_from_logits(loss_of_f: sp.Expr) -> sp.Expr | None:
    """Rewrite ``ℓ(f(z), y)`` so that no ``log`` of a squashed value remains, or None.

    ``log`` arguments are combined over a common denominator and split
    (``log(e^{-z}/(1+e^{-z})) = -z - log(1+e^{-z})``), and each ``log(1 + e^{w})`` becomes
    ``softplus(w)``; ``softplus(-w) = softplus(w) - w`` leaves one canonical sign. The form is
    accepted only if no other ``log`` or ``exp`` remains and it equals the original at samples.
    """
    e = loss_of_f.replace(lambda x: isinstance(x, sp.log), lambda x: sp.log(sp.together(x.args[0])))
    e = stabilize(sp.expand_log(e, force=True))
    e = e.replace(
        lambda x: isinstance(x, Softplus) and x.args[0].could_extract_minus_sign(),
        lambda x: Softplus(-x.args[0]) - x.args[0],
    )
    e = sp.expand(e)
    if e.has(sp.log) or e.has(sp.exp):
        return None
    points = sample_points(loss_of_f.free_symbols)
    return e if numerically_equal(e, loss_of_f, points) else None


def substitute_params(expr: sp.Expr, values: Mapping[sp.Symbol, float]) -> sp.Expr:
    """``expr`` with parameter symbols replaced by Float values (for code generation)."""
    return expr.xreplace({s: sp.Float(v) for s, v in values.items()})
