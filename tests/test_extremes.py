"""Numerical extremes in every committed generated kernel: logits of ±1e9, predictions exactly
0 or 1, very large and very small weights and inputs, huge, tiny and zero gradients, in float32
and float64 -> finite losses, gradients, parameters and optimizer state wherever the
mathematics is finite (inputs are chosen so that every exact intermediate is representable in
the dtype: a product that overflows float32 is not a kernel bug)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from .conftest import CATALOGUE_NAMES

OPTIMIZER_MODELS = ("xor", "xor_momentum", "xor_momentum_ema", "xor_nesterov", "xor_adagrad", "xor_adadelta",
                    "xor_rmsprop", "xor_rmsprop_centered", "xor_adam", "xor_amsgrad", "xor_adamw", "xor_nadam",
                    "xor_regularized")
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
#: A large and a small magnitude per dtype whose products with O(1) numbers stay representable
#: (squares too: Adam and Adagrad square gradients).
BIG = {np.float64: 1e100, np.float32: 1e15}
TINY = {np.float64: 1e-300, np.float32: 1e-40}  # subnormal in float32


def _module(name):
    return importlib.import_module(f"generated.{name}")


def _problem(module, dtype, seed=0, n=6):
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed, dtype=dtype)
    X = rng.normal(size=(n, module.SPEC["inputs"])).astype(dtype)
    Y = (rng.uniform(size=(n, module.SPEC["layers"][-1][0])) > 0.5).astype(dtype)  # targets exactly 0 or 1
    if getattr(module, "TARGETS", None) == "distribution":  # softmax: one-hot rows
        Y = np.eye(Y.shape[1], dtype=dtype)[rng.integers(0, Y.shape[1], n)]
    return params, X, Y


def _finite(module, params, X, Y) -> list[str]:
    """What is not finite: the loss or the gradient of a parameter ([] when everything is)."""
    bad = []
    with np.errstate(all="ignore"):  # a kernel's own overflow would show as inf/nan below
        value = module.loss(params, X, Y)
        grads = module.gradients(params, X, Y)
    if not np.isfinite(value):
        bad.append(f"loss = {value}")
    bad += [f"d/d{k} has {np.sum(~np.isfinite(g))} non-finite" for k, g in grads.items() if not np.isfinite(g).all()]
    return bad


def _cases(module, dtype):
    """(label, params, X, Y) for every extreme of the forward/backward kernels."""
    L = len(module.SPEC["layers"])
    out = []
    for l in range(1, L + 1):
        for sign in (1, -1):  # every layer saturated on either side: logits of +-1e9
            params, X, Y = _problem(module, dtype)
            params[f"b{l}"][:] = sign * 1e9
            out.append((f"b{l} = {sign:+d}e9", params, X, Y))
        for label, scale in (("big", BIG[dtype]), ("tiny", TINY[dtype])):  # one layer at a time: no overflow
            params, X, Y = _problem(module, dtype)
            params[f"W{l}"] = (params[f"W{l}"] * scale).astype(dtype)
            out.append((f"W{l} {label}", params, X, Y))
    params, X, Y = _problem(module, dtype)
    params = {k: (v * TINY[dtype]).astype(dtype) for k, v in params.items()}
    out.append(("all weights tiny", params, X, Y))
    params, X, Y = _problem(module, dtype)
    params["W1"] = (params["W1"] / BIG[dtype]).astype(dtype)
    out.append(("X huge, W1 tiny", params, (X * BIG[dtype]).astype(dtype), Y))
    params, X, Y = _problem(module, dtype)
    out.append(("zero weights and inputs", {k: np.zeros_like(v) for k, v in params.items()}, np.zeros_like(X), Y))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CATALOGUE_NAMES)
def test_forward_and_backward_stay_finite_at_extremes(name, dtype):
    module = _module(name)
    failures = []
    for label, params, X, Y in _cases(module, dtype):
        bad = _finite(module, params, X, Y)
        if bad:
            failures.append(f"{label}: {', '.join(bad)}")
        assert all(v.dtype == dtype for v in module.gradients(params, X, Y).values())
    assert not failures, f"{name} ({dtype.__name__}): " + "; ".join(failures)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["logistic", "xor", "deep_sigmoid"])  # the BCE models
def test_saturated_sigmoid_predicts_exactly_zero_or_one_and_bce_stays_exact(name, dtype):
    """Predictions exactly 0 and 1: the loss is 0 where they are right, 1e9 where they are wrong
    (BCE is computed from the logit), and the output delta is (a - y)/N exactly."""
    module = _module(name)
    params, X, Y = _problem(module, dtype)
    last = f"b{len(module.SPEC['layers'])}"
    W = f"W{len(module.SPEC['layers'])}"
    params[W][:] = 0.0
    for sign in (1.0, -1.0):
        params[last][:] = sign * 1e9
        pred = module.forward(params, X)
        assert np.all(pred == (1.0 if sign > 0 else 0.0))
        for target in (pred, 1.0 - pred):
            value = module.loss(params, X, target)
            want = 0.0 if target is pred else 1e9
            assert np.isfinite(value) and value == pytest.approx(want, rel=1e-6)
            grads = module.gradients(params, X, target)
            np.testing.assert_allclose(grads[last], (pred - target).sum(axis=0) / target.size, rtol=1e-6)


def _step_cases(module, dtype):
    rng = np.random.default_rng(0)
    X0, Y0 = rng.normal(size=(6, 2)).astype(dtype), (rng.uniform(size=(6, 1)) > 0.5).astype(dtype)
    big, tiny = BIG[dtype], TINY[dtype]
    cases = {}
    params = module.init_params(seed=1, dtype=dtype)
    params["W1"] = (params["W1"] / big).astype(dtype)
    cases["huge gradients (X huge, W1 tiny)"] = (params, (X0 * big).astype(dtype), Y0)
    params = module.init_params(seed=1, dtype=dtype)
    cases["tiny weights and gradients"] = ({k: (v * tiny).astype(dtype) for k, v in params.items()}, X0, Y0)
    cases["zero gradients (zero weights, zero X)"] = (
        {k: np.zeros_like(v) for k, v in module.init_params(seed=1, dtype=dtype).items()}, np.zeros_like(X0), Y0)
    params = module.init_params(seed=1, dtype=dtype)
    params["W2"] = (params["W2"] * 1e9).astype(dtype)
    cases["logits of 1e9 (predictions exactly 0 or 1)"] = (params, X0, Y0)
    params = module.init_params(seed=1, dtype=dtype)
    params["W1"] = (params["W1"] * big).astype(dtype)
    cases["huge weights"] = (params, X0, Y0)
    return cases


STEP_CASES = ("huge gradients (X huge, W1 tiny)", "tiny weights and gradients", "zero gradients (zero weights, zero X)",
              "logits of 1e9 (predictions exactly 0 or 1)", "huge weights")
#: (model, dtype, case) -> why it is expected to fail (a strict xfail: fixed code makes it fail).
#: Found here and fixed: centered RMSProp in float32 with gradients ~1e-39 computed g**2 in
#: float32 (underflow to 0) but gbar**2 in float64, so sqrt(v - gbar**2) saw a negative number;
#: the update kernel now computes every element in float64.
KNOWN: dict[tuple[str, str, str], str] = {}


def _step_params():
    for name in OPTIMIZER_MODELS:
        for dtype in DTYPES:
            for case in STEP_CASES:
                reason = KNOWN.get((name, dtype.id, case))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                yield pytest.param(name, dtype.values[0], case, id=f"{name}-{dtype.id}-{case}", marks=marks)


@pytest.mark.parametrize("name,dtype,case", list(_step_params()))
def test_optimizer_steps_stay_finite_at_extremes(name, dtype, case):
    module = _module(name)
    params, X, Y = _step_cases(module, dtype)[case]
    state = module.init_state(params)
    with np.errstate(all="ignore"):
        values = [module.step(params, state, X, Y) for _ in range(3)]
    bad = [f"loss {v}" for v in values if not np.isfinite(v)]
    bad += [k for k, v in params.items() if not np.isfinite(v).all()]
    bad += [f"state {k}" for k, v in state.items() if isinstance(v, np.ndarray) and not np.isfinite(v).all()]
    assert not bad, f"{name} ({dtype.__name__}), {case}: not finite after 3 steps: {bad}"
    assert state["t"] == 3
    assert all(v.dtype == dtype for v in params.values())
