r"""The softmax output layer and categorical cross-entropy, derived and checked by SymPy.

Softmax is a *vector* activation: each output depends on every logit of its row,

.. math:: a_j = \frac{e^{z_j}}{\sum_k e^{z_k}},

so it has a Jacobian, not an elementwise derivative. Nothing below is written by hand and
trusted: SymPy differentiates the definition for explicit widths :math:`C = 2 .. 5`, rewrites
each result in the outputs :math:`a` (every :math:`e^{z_k}` becomes :math:`a_k Q` with the row
sum :math:`Q`, and :math:`\sum_k a_k = 1`), and the general forms the derivation shows are
checked equal to what SymPy found at every width:

* the Jacobian :math:`\partial a_j / \partial z_k = a_j (\delta_{jk} - a_k)`, i.e.
  :math:`\operatorname{diag}(a) - a a^\top`;
* the cross-entropy of targets :math:`t` (one-hot rows, probabilities, smoothed or weighted),
  :math:`\ell = -\sum_j t_j \log a_j`, computed as :math:`\sum_j t_j (\operatorname{lse} - z_j)`
  with :math:`\operatorname{lse} = m + \log \sum_k e^{z_k - m}`, :math:`m = \max_k z_k`, finite for
  every finite logit;
* its gradient through the softmax, found jointly: :math:`\partial \ell / \partial z_k =
  a_k \tau - t_k` with :math:`\tau = \sum_j t_j`, which is :math:`a_k - t_k` when each target row
  sums to 1 (the same form as BCE after a sigmoid).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from ..errors import BuildError

#: Widths at which every general form is checked against SymPy's own derivative.
CHECK_WIDTHS = (2, 3, 4, 5)

j, k = sp.symbols("j k", integer=True, positive=True)
#: Element symbols of the kernels (the element (i, j) of its row): target t, its row sum tau,
#: the class weight w of column j, the row's max logit m and log-sum-exp lse.
t = sp.Symbol("t", real=True)
tau = sp.Symbol("tau", real=True)
w = sp.Symbol("w", positive=True)


def row_symbol(name: str, l: int) -> sp.Symbol:
    """A per-row quantity of layer l: ``m_2`` (max logit), ``s_2`` (sum of exponentials), ``lse_2``."""
    return sp.Symbol(f"{name}_{l}", real=True)


def indexed(name: str, l: int | None, index: sp.Symbol) -> sp.Indexed:
    """Element ``index`` of a row of layer l's ``name`` (``z_2[j]``, printed z_{2,j} in the
    documents): an Indexed object, so that a displayed sum over the row evaluates (``doit()``
    with a width expands it into the row's elements)."""
    return sp.IndexedBase(f"{name}_{l}" if l is not None else name, real=True)[index]


@dataclass(frozen=True)
class SoftmaxForms:
    """The displayed general forms for layer l (symbols from :func:`indexed`), each checked."""

    definition: sp.Expr  # a_{l,j} = e^{z_{l,j}} / sum_k e^{z_{l,k}}
    shifted: sp.Expr  # the same with the row max m_l subtracted (what is computed)
    jacobian: sp.Expr  # a_{l,j} (delta_jk - a_{l,k})
    ce: sp.Expr  # -sum_j t_j log a_{l,j}
    ce_logits: sp.Expr  # sum_j t_j (lse_l - z_{l,j})
    lse: sp.Expr  # m_l + log sum_k e^{z_{l,k} - m_l}
    dl_da: sp.Expr  # d ell / d a_{l,j} = -t_j / a_{l,j}
    chain: sp.Expr  # sum_j (-t_j / a_{l,j}) a_{l,j} (delta_jk - a_{l,k})
    joint: sp.Expr  # a_{l,k} tau - t_k


def _explicit(C: int):
    z = sp.symbols(f"z1:{C + 1}", real=True)
    tt = sp.symbols(f"t1:{C + 1}", real=True)
    a = sp.symbols(f"a1:{C + 1}", positive=True)
    return z, tt, a


def _in_outputs(expr: sp.Expr, z, a) -> sp.Expr:
    """``expr`` in the outputs: z_k = log(a_k Q) (so e^{z_k} = a_k Q for the row sum Q), then
    a_C = 1 - (a_1 + ... + a_{C-1}); expanded."""
    Q = sp.Symbol("Q", positive=True)
    e = expr.xreplace({zk: sp.log(ak * Q) for zk, ak in zip(z, a)})
    e = sp.simplify(e.subs(a[-1], 1 - sum(a[:-1])))
    return sp.expand(e)


def _check(C: int) -> None:
    """SymPy's derivatives at width C equal the general forms (BuildError otherwise)."""
    z, tt, a = _explicit(C)
    total = sum(sp.exp(zk) for zk in z)
    soft = [sp.exp(zk) / total for zk in z]
    last = 1 - sum(a[:-1])

    def same(found, claimed) -> bool:
        return sp.simplify(found - sp.expand(claimed.subs(a[-1], last))) == 0

    m = sp.Symbol("m", real=True)
    for jj in range(C):
        shifted = sp.exp(z[jj] - m) / sum(sp.exp(zk - m) for zk in z)
        if sp.simplify(shifted - soft[jj]) != 0:
            raise BuildError(f"softmax shifted by the row max differs from its definition (C={C})")
        for kk in range(C):
            found = _in_outputs(sp.diff(soft[jj], z[kk]), z, a)
            if not same(found, a[jj] * ((1 if jj == kk else 0) - a[kk])):
                raise BuildError(f"softmax Jacobian entry ({jj + 1}, {kk + 1}) disagrees (C={C})")
    ce = -sum(tj * sp.log(sj) for tj, sj in zip(tt, soft))
    lse = sp.log(total)
    if sp.simplify(sp.expand_log(ce - sum(tj * (lse - zj) for tj, zj in zip(tt, z)), force=True)) != 0:
        raise BuildError(f"cross-entropy from the logits differs from -sum t log a (C={C})")
    for kk in range(C):
        found = _in_outputs(sp.diff(ce, z[kk]), z, a)
        if not same(found, a[kk] * sum(tt) - tt[kk]):
            raise BuildError(f"joint gradient of cross-entropy∘softmax disagrees at k={kk + 1} (C={C})")
        chain = sum((-tt[jj] / a[jj]) * a[jj] * ((1 if jj == kk else 0) - a[kk]) for jj in range(C))
        if sp.simplify(sp.expand(chain) - (a[kk] * sum(tt) - tt[kk])) != 0:
            raise BuildError(f"chain-rule product of cross-entropy∘softmax disagrees at k={kk + 1} (C={C})")


def found_joint(C: int = 3) -> sp.Expr:
    r"""The joint gradient as SymPy finds it at width C, for the first logit and in the outputs:
    :math:`a_1 (t_1 + \dots + t_C) - t_1`."""
    z, tt, a = _explicit(C)
    total = sum(sp.exp(zk) for zk in z)
    ce = -sum(tj * sp.log(sp.exp(zj) / total) for tj, zj in zip(tt, z))
    return sp.collect(_in_outputs(sp.diff(ce, z[0]), z, a), a[0])


@functools.cache
def checked() -> bool:
    """Check every general form against SymPy's derivatives at :data:`CHECK_WIDTHS` (once per
    process: about 4 s); BuildError when one disagrees."""
    for C in CHECK_WIDTHS:
        _check(C)
    return True


@functools.cache
def forms(l: int, width: sp.Symbol) -> SoftmaxForms:
    """The general forms for output layer l of ``width`` units, checked at :data:`CHECK_WIDTHS`."""
    checked()
    zj, zk, aj, ak = indexed("z", l, j), indexed("z", l, k), indexed("a", l, j), indexed("a", l, k)
    tj, tk = indexed("t", None, j), indexed("t", None, k)
    m = row_symbol("m", l)
    definition = sp.exp(zj) / sp.Sum(sp.exp(zk), (k, 1, width))
    shifted = sp.exp(zj - m) / sp.Sum(sp.exp(zk - m), (k, 1, width))
    jac = aj * (sp.KroneckerDelta(j, k) - ak)
    ce = -sp.Sum(tj * sp.log(aj), (j, 1, width))
    lse = m + sp.log(sp.Sum(sp.exp(zk - m), (k, 1, width)))
    ce_logits = sp.Sum(tj * (row_symbol("lse", l) - zj), (j, 1, width))
    dl_da = -tj / aj
    chain = sp.Sum(sp.Mul(dl_da, jac, evaluate=False), (j, 1, width))
    joint = ak * sp.Symbol("tau", real=True) - tk
    return SoftmaxForms(definition, shifted, jac, ce, ce_logits, lse, dl_da, chain, joint)


__all__ = ["CHECK_WIDTHS", "SoftmaxForms", "checked", "forms", "found_joint", "indexed", "row_symbol", "t", "tau", "w"]
