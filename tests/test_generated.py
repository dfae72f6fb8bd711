"""The committed generated modules: gradients by finite differences (proof 2), the compiled
kernels equal their Python source run by the interpreter, the wrapper's input checks, and
training actually reduces the loss."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import CATALOGUE_NAMES, ROOT, random_problem, verify_grad


@pytest.mark.parametrize("name", CATALOGUE_NAMES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-6), (np.float32, 3e-2)], ids=["f64", "f32"])
def test_gradients_match_finite_differences(generated, name, dtype, rtol):
    module = generated[name]
    params, X, Y = random_problem(module, dtype=dtype)
    verify_grad(module, params, X, Y, rtol=rtol)


@pytest.mark.parametrize("name", CATALOGUE_NAMES)
def test_outputs_keep_the_dtype(generated, name):
    module = generated[name]
    for dtype in (np.float32, np.float64):
        params, X, Y = random_problem(module, dtype=dtype)
        assert module.forward(params, X).dtype == dtype
        assert all(g.dtype == dtype for g in module.gradients(params, X, Y).values())


@pytest.mark.parametrize("name", CATALOGUE_NAMES)
def test_compiled_equals_python_source(generated, name):
    """The Numba-compiled kernels and the same functions run by CPython agree."""
    module = generated[name]
    params, X, Y = random_problem(module, seed=4)
    fast = module.gradients(params, X, Y)
    saved = {a: getattr(module, a) for a in ("_forward", "_backward")}
    try:
        for attr, kernel in saved.items():
            setattr(module, attr, kernel.py_func)
        slow = module.gradients(params, X, Y)
    finally:
        for attr, kernel in saved.items():
            setattr(module, attr, kernel)
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-12, atol=1e-15)


def test_step_is_sgd_and_returns_loss_before(generated):
    module = generated["xor"]
    params, X, Y = random_problem(module)
    before = {k: v.copy() for k, v in params.items()}
    grads = module.gradients(params, X, Y)
    value = module.step(params, module.init_state(params), X, Y, lr=0.3)
    assert value == pytest.approx(module.loss(before, X, Y), rel=1e-14)
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.3 * grads[k], rtol=1e-14)


def test_one_module_serves_any_width(generated):
    """Widths come from the arrays: a wider hidden layer runs through the same kernels."""
    module = generated["xor"]
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(2, 13)), "b1": np.zeros(13), "W2": rng.normal(size=(13, 1)), "b2": np.zeros(1)}
    X, Y = rng.normal(size=(5, 2)), rng.uniform(size=(5, 1))
    assert module.forward(params, X).shape == (5, 1)
    verify_grad(module, params, X, Y, rtol=1e-6)


def test_xor_is_learned(generated):
    module = generated["xor"]
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    params = module.init_params(seed=1)
    state = module.init_state(params)
    first = module.loss(params, X, Y)
    for _ in range(3000):
        module.step(params, state, X, Y, lr=0.5)
    assert state["t"] == 3000
    assert module.loss(params, X, Y) < 0.05 < first
    np.testing.assert_array_equal(module.forward(params, X) > 0.5, Y > 0.5)


def test_linear_regression_recovers_weights(generated):
    module = generated["linear"]
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    w, b = np.array([[1.5], [-2.0], [0.5]]), 0.25
    Y = X @ w + b
    params = module.init_params()
    state = module.init_state(params)
    for _ in range(500):
        module.step(params, state, X, Y)
    np.testing.assert_allclose(params["W1"], w, atol=1e-6)
    np.testing.assert_allclose(params["b1"], [b], atol=1e-6)


def test_bce_loss_is_finite_at_huge_logits(generated):
    module = generated["logistic"]
    params = {"W1": np.array([[1e9], [0.0]]), "b1": np.zeros(1)}
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    for Y, want in ((np.array([[1.0], [0.0]]), 0.0), (np.array([[0.0], [1.0]]), 1e9)):
        value = module.loss(params, X, Y)
        assert np.isfinite(value) and value == pytest.approx(want)
        assert all(np.isfinite(g).all() for g in module.gradients(params, X, Y).values())


def test_init_params_is_seeded_and_scaled(generated):
    module = generated["regression"]
    a, b = module.init_params(seed=5), module.init_params(seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], module.init_params(seed=6)["W1"])
    assert np.abs(a["W1"]).max() <= np.sqrt(6.0 / 8)  # He uniform bound for relu, fan_in 8
    assert a["W1"].shape == (8, 16) and a["b3"].shape == (1,)
    assert module.init_params(dtype=np.float32)["W1"].dtype == np.float32


BAD_INPUTS = [
    (lambda p, X, Y: ([1, 2], X, Y), "params must be a dict"),
    (lambda p, X, Y: ({k: v for k, v in p.items() if k != "b2"}, X, Y), "missing ['b2']"),
    (lambda p, X, Y: (p, X.astype(np.float32), Y), "X has dtype float32 but the parameters are float64"),
    (lambda p, X, Y: (p, X[:, :1].copy(), Y), "X must have shape (n_samples, 2)"),
    (lambda p, X, Y: (p, np.asfortranarray(np.vstack([X, X])), np.vstack([Y, Y])), "not C-contiguous"),
    (lambda p, X, Y: (p, X, Y[:-1]), "X has 7 samples but Y has 6"),
    (lambda p, X, Y: (p, X[:0], Y[:0]), "X is empty"),
    (lambda p, X, Y: (p, np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), Y),
     "X has a non-finite value nan at row 1, column 1"),
    (lambda p, X, Y: (p, X, np.full_like(Y, np.inf)), "Y has a non-finite value inf"),
    (lambda p, X, Y: ({**p, "W1": p["W1"].astype(np.float32)}, X, Y), "is float64 but params['W1'] is float32"),
    (lambda p, X, Y: ({**p, "b1": np.zeros(3)}, X, Y), "params['b1'] has shape (3,), expected (8,)"),
    (lambda p, X, Y: ({**p, "W1": p["W1"].astype(np.int64)}, X, Y), "dtype int64"),
]


@pytest.mark.parametrize("make,message", BAD_INPUTS)
def test_bad_inputs_get_clear_errors(generated, make, message):
    module = generated["xor"]
    params, X, Y = random_problem(module)
    p, X2, Y2 = make(params, X, Y)
    with pytest.raises(ValueError) as info:
        module.gradients(p, X2, Y2)
    assert message in str(info.value) and str(info.value).startswith("xor: ")


def test_bad_hyperparameters_are_refused(generated):
    module = generated["xor"]
    params, X, Y = random_problem(module)
    before = {k: v.copy() for k, v in params.items()}
    for hyper, message in (({"lr": -1.0}, "lr must lie in (0, inf)"), ({"lr": float("nan")}, "finite"),
                           ({"momentum": 0.9}, "unknown hyperparameter 'momentum'")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            module.step(params, module.init_state(params), X, Y, **hyper)
    assert all(np.array_equal(params[k], before[k]) for k in params)  # nothing was touched


@pytest.mark.parametrize("odd", ["W1", "b1", "W2", "b2"])
def test_params_of_mixed_dtypes_are_refused_naming_both(generated, odd):
    """One float32 array among float64 ones (first, middle or last) is refused before any kernel
    runs, and the message names the odd array and the first one's dtype."""
    module = generated["xor"]
    params, X, Y = random_problem(module)
    params[odd] = params[odd].astype(np.float32)
    first = "float32" if odd == "W1" else "float64"
    culprit = "b1" if odd == "W1" else odd
    with pytest.raises(ValueError, match=rf"params\['{culprit}'\] is .* but params\['W1'\] is {first}; use one dtype"):
        module.train(params, module.init_state(params), X, Y)


def test_read_only_params_are_refused_by_step(generated):
    module = generated["xor"]
    params, X, Y = random_problem(module)
    params["W1"].setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        module.step(params, module.init_state(params), X, Y)


def test_generated_module_runs_without_jit_and_without_derive(tmp_path):
    """NUMBA_DISABLE_JIT=1: the module is plain Python, in float64 and in float32 (whose exp and
    tanh are their own functions), the register-tiled products included; and it imports with only
    numpy/numba on the path (a copy outside the repository, with `derive` made unimportable)."""
    target = tmp_path / "xor_copy.py"
    target.write_text((ROOT / "generated" / "xor.py").read_text())
    (tmp_path / "_kernel_runtime.py").write_text((ROOT / "generated" / "_kernel_runtime.py").read_text())
    (tmp_path / "derive.py").write_text("raise ImportError('derive must not be needed')\n")
    code = (
        "import numpy as np, xor_copy as m\n"
        "p = m.init_params(seed=0); X = np.random.default_rng(0).normal(size=(4, 2)); Y = np.ones((4, 1))\n"
        "g = m.gradients(p, X, Y); v = m.step(p, m.init_state(p), X, Y)\n"
        "assert np.isfinite(v) and set(g) == set(m.PARAM_NAMES)\n"
        "p32 = m.init_params(seed=0, dtype=np.float32)\n"  # float32: _tanh32 and _exp32 as Python
        "v32 = m.step(p32, m.init_state(p32), X.astype(np.float32), Y.astype(np.float32))\n"
        "assert p32['W1'].dtype == np.float32 and abs(v32 - v) < 1e-6 * abs(v), (v32, v)\n"
        # the register-tiled products as Python (vectors are NumPy arrays): every kind of tile
        "for dt in (np.float64, np.float32):\n"
        "    r = np.random.default_rng(1); A = r.normal(size=(9, 7)).astype(dt)\n"
        "    B = r.normal(size=(7, 21)).astype(dt); b = r.normal(size=21).astype(dt)\n"
        "    D = r.normal(size=(9, 21)).astype(dt)\n"
        "    C = np.empty((9, 21), dt); m._rt._tiles(A, B, b, C, False); assert np.allclose(C, A @ B + b, 1e-5, 1e-5)\n"
        "    G = np.empty((7, 21), dt); g = np.empty(21, dt); m._rt._tiles_t(A, D, G, g)\n"
        "    assert np.allclose(G, A.T @ D, 1e-5, 1e-5) and np.allclose(g, D.sum(axis=0), 1e-5, 1e-5)\n"
        "import numba; assert numba.config.DISABLE_JIT\n"
        "print('ok', v)\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_step_docstring_states_the_optimizer_convention(generated):
    import generated.xor_momentum as momentum

    doc = " ".join(momentum.step.__doc__.split())
    assert "b₁ = g₁ (no dampening at the first step)" in doc and "HYPER" in doc


def test_numpy_scalar_hyperparameters_are_accepted(generated):
    import generated.xor_adam as adam

    X, Y = np.zeros((4, 2)), np.ones((4, 1))
    p1 = adam.init_params()
    p2 = {k: v.copy() for k, v in p1.items()}
    adam.step(p1, adam.init_state(p1), X, Y, lr=np.float32(0.5), beta1=np.float64(0.8))
    adam.step(p2, adam.init_state(p2), X, Y, lr=float(np.float32(0.5)), beta1=0.8)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    with pytest.raises(ValueError, match="finite number"):
        adam.step(p1, adam.init_state(p1), X, Y, lr=np.bool_(True))


def test_init_params_at_other_hidden_widths(generated):
    """init_params(widths=...) draws the same scheme at other hidden widths (what sweeps over
    widths use); at the spec's widths it is init_params itself, bit for bit."""
    m = generated["regression"]
    same = m.init_params(4, widths=(16, 16))
    assert all(np.array_equal(v, m.init_params(4)[k]) for k, v in same.items())
    other = m.init_params(4, widths=(5, 3))
    assert [other[k].shape for k in m.PARAM_NAMES] == [(8, 5), (5,), (5, 3), (3,), (3, 1), (1,)]
    X = np.random.default_rng(0).normal(size=(7, 8))
    assert np.isfinite(m.loss(other, X, np.zeros((7, 1))))
    with pytest.raises(ValueError, match="widths must be 2 positive integers"):
        m.init_params(4, widths=(5, 0))
