"""The symbolic blocks: derivatives derived by SymPy in output form, joint output deltas,
stable loss forms, ranges — each compared with what the textbooks state."""

from __future__ import annotations

import pytest
import sympy as sp

from derive.blocks import activations, losses
from derive.derivation import loss_element, output_delta_forms
from derive.symbolic import a, numerically_equal, sample_points, y, z

s, alpha = sp.Symbol("s", positive=True), sp.Symbol("alpha", positive=True)
TEXTBOOK = {
    "identity": sp.Integer(1),
    "sigmoid": a * (1 - a),
    "tanh": 1 - a**2,
    "relu": sp.Piecewise((1, a > 0), (0, True)),
    "leaky_relu": sp.Piecewise((1, a > 0), (s, True)),
    "softplus": 1 - sp.exp(-a),
    "elu": sp.Piecewise((1, a > 0), (a + alpha, True)),
}


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_derivative_in_output_form_is_the_textbook_one(name):
    forms = activations.forms(name)
    assert forms.in_output_form
    pts = [{**p, a: forms.f.rewrite(sp.log).subs(p)} for p in sample_points(forms.f.free_symbols | {s, alpha})]
    assert numerically_equal(forms.derivative, TEXTBOOK[name], pts)
    assert sp.simplify(forms.derivative - TEXTBOOK[name]) == 0 or forms.derivative.has(sp.Piecewise)


def test_every_derivative_is_sympys_derivative():
    for name, rule in activations.REGISTRY.items():
        if rule.vector:  # softmax: a Jacobian, derived in derive.blocks.softmax (tests/test_softmax.py)
            with pytest.raises(ValueError, match="vector activation"):
                activations.forms(name)
            continue
        forms = activations.forms(name)
        assert forms.raw_derivative == sp.diff(rule.expr(), z)


def test_silu_has_no_output_form_and_is_computed_in_z():
    forms = activations.forms("silu")
    assert not forms.in_output_form and a not in forms.derivative.free_symbols
    assert not forms.derivative.has(sp.exp)  # written through sigma(z): no inf/inf for large |z|


def test_bce_of_sigmoid_gives_yhat_minus_y():
    *_, joint = output_delta_forms("sigmoid", "bce")
    assert sp.simplify(joint - (a - y)) == 0


def test_mse_of_identity_and_tanh():
    assert sp.expand(output_delta_forms("identity", "mse")[-1]) == sp.expand(2 * (a - y))
    assert sp.simplify(output_delta_forms("tanh", "mse")[-1] - 2 * (a - y) * (1 - a**2)) == 0


def test_bce_of_sigmoid_loss_is_computed_from_logits_and_finite():
    expr, from_logits = loss_element("sigmoid", "bce")
    assert from_logits
    for zv, yv, want in ((1e9, 1.0, 0.0), (-1e9, 0.0, 0.0), (1e9, 0.0, 1e9), (-1e9, 1.0, 1e9)):
        from derive.codegen.printer import VECTOR_MATH, KernelPrinter

        code = KernelPrinter().doprint(expr)
        import math

        value = eval(code, {"math": math, **VECTOR_MATH, "z": zv, "y": yv})  # printed kernel code, our own
        assert math.isfinite(value) and value == pytest.approx(want)


def test_mse_loss_is_computed_from_predictions():
    expr, from_logits = loss_element("tanh", "mse")
    assert not from_logits and expr == (a - y) ** 2


def test_sigmoid_derivative_bound_is_one_quarter():
    """The vanishing-gradient bound max sigma' = 1/4, found symbolically from sigma'' = 0."""
    assert activations.forms("sigmoid").max_derivative == sp.Rational(1, 4)
    assert activations.forms("tanh").max_derivative == 1


@pytest.mark.parametrize("name,lo,hi", [("sigmoid", 0, 1), ("tanh", -1, 1), ("relu", 0, float("inf")),
                                        ("identity", float("-inf"), float("inf")), ("elu", -1, float("inf"))])
def test_ranges(name, lo, hi):
    params = {k: p.default for k, p in activations.REGISTRY[name].params.items()}
    assert activations.value_range(name, params) == (lo, hi)


def test_losses_are_declared_once_as_expressions():
    assert losses.REGISTRY["mse"].expr == (losses.yhat - y) ** 2
    assert losses.REGISTRY["bce"].needs_range == (0.0, 1.0)


def test_relu_derivative_times_the_error_keeps_float32(generated):
    """e * Piecewise((1, c), (0, True)) prints as _mask(e, c) (compiled: c ? e : e * 0, a select):
    the same values as e * (1.0 if c else 0.0), NaN and signed zeros included, but a float32
    operand stays float32 (a float64 literal made the float32 ReLU backward loop float64)."""
    import numba
    import numpy as np

    from derive.codegen.printer import KernelPrinter

    e = sp.Symbol("e", real=True)
    code = KernelPrinter().doprint(e * activations.forms("relu").derivative)
    assert code.startswith("_mask(") and "if" not in code and "1.0" not in code, code
    fn = numba.njit(eval(f"lambda e, a: {code}", {"_mask": generated["xor"]._mask}))  # printed kernel code, our own
    for ev, av in ((np.float32(-2.5), np.float32(1.0)), (np.float32(-2.5), np.float32(-1.0)),
                   (np.float32(np.nan), np.float32(-1.0)), (np.float32(3.0), np.float32(0.0))):
        want = ev * (1.0 if av > 0 else 0.0)
        got = fn(ev, av)
        assert (np.isnan(want) and np.isnan(got)) or (got == want and np.signbit(got) == np.signbit(want))
    assert fn.nopython_signatures[0].return_type == numba.float32


def test_a_product_with_an_indicator_prints_as_mask():
    """e * Piecewise((1, c), (0, True)) (the ReLU derivative times the backpropagated error) prints
    as _mask(e, c), which the kernels compute as a select; the indicator alone stays a bool."""
    from derive.codegen.printer import VECTOR_MATH, KernelPrinter

    e = sp.Symbol("e_1", real=True)
    step = sp.Piecewise((1, a > 0), (0, True))
    printer = KernelPrinter()
    assert printer.doprint(-2 * e * step) == "_mask(-2.0*e_1, (a > 0.0))"
    assert printer.doprint(step) == "((a > 0.0))"
    for av, ev in ((1.0, -3.0), (-1.0, -3.0), (-1.0, float("inf"))):
        code = printer.doprint(e * step)
        got = eval(code, {**VECTOR_MATH, "a": av, "e_1": ev})  # printed kernel code, our own
        want = ev * (av > 0)
        assert got == want or (got != got and want != want)
