"""The training-workflow parts of the generated modules: initialisers, dropout, per-layer gradient
norms, chunk-invariant shuffles and random restarts (train_many) in one parallel call."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from derive.data import load_dataset
from derive.spec import Dense, Model
from tests.conftest import load_rendered


@pytest.fixture(scope="module")
def xor_adam():
    return importlib.import_module("generated.xor_adam")


@pytest.fixture(scope="module")
def diabetes():
    return importlib.import_module("generated.diabetes")


@pytest.fixture(scope="module")
def dropout_module(tmp_path_factory):
    from derive.codegen.render import render_module
    from derive.derivation import derive_model

    spec = Model("dropnet", 3, [Dense(16, "tanh"), Dense(8, "relu"), Dense(1, "sigmoid")], "bce",
                 {"name": "adam", "lr": 0.01}, dropout=[0.5, 0.25])
    return load_rendered(render_module(derive_model(spec)), "dropnet", tmp_path_factory.mktemp("dropnet"))


@pytest.fixture(scope="module")
def xor_data():
    d = load_dataset("xor")
    return d.X, d.Y


# --------------------------------------------------------------------------- initialisers


@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "torch_linear"])
def test_initialisers_have_the_reference_spread(diabetes, scheme):
    """W1 is 10 x 32 (relu, gain sqrt 2): the sample std matches torch.nn.init's formula."""
    fan_in, fan_out, gain = 10, 32, np.sqrt(2.0)
    expected = {
        "xavier_uniform": gain * np.sqrt(6.0 / (fan_in + fan_out)) / np.sqrt(3.0),
        "xavier_normal": gain * np.sqrt(2.0 / (fan_in + fan_out)),
        "he_uniform": gain * np.sqrt(3.0 / fan_in) / np.sqrt(3.0),
        "he_normal": gain / np.sqrt(fan_in),
        "torch_linear": 1.0 / np.sqrt(fan_in) / np.sqrt(3.0),
    }[scheme]
    stds = [diabetes.init_params(seed=s, init=scheme)["W1"].std() for s in range(20)]
    assert np.mean(stds) == pytest.approx(expected, rel=0.05)
    p = diabetes.init_params(seed=0, init=scheme)
    if scheme.endswith("uniform") or scheme == "torch_linear":
        bound = expected * np.sqrt(3.0)
        assert np.abs(p["W1"]).max() <= bound
    if scheme == "torch_linear":
        assert np.abs(p["b1"]).max() <= 1 / np.sqrt(fan_in) and np.any(p["b1"] != 0)
    else:
        assert not np.any(p["b1"])


def test_default_initialiser_follows_the_activation(diabetes, xor_adam):
    assert diabetes.INIT[0][0] == "he_uniform" and xor_adam.INIT[0] == ("xavier_uniform", pytest.approx(5 / 3))
    assert np.array_equal(diabetes.init_params(3)["W1"], diabetes.init_params(3, init=["he_uniform",
                                                                                       "xavier_uniform"])["W1"])


def test_initialiser_errors(diabetes):
    with pytest.raises(ValueError, match="unknown initialiser 'glorot'"):
        diabetes.init_params(init="glorot")
    with pytest.raises(ValueError, match="one initialiser per layer"):
        diabetes.init_params(init=["he_normal"])
    with pytest.raises(ValueError, match="dtype"):
        diabetes.init_params(dtype=np.int32)


# --------------------------------------------------------------------------- train(): epochs, norms


def test_train_is_chunk_invariant(xor_adam, xor_data):
    """Each epoch's shuffle depends on (seed, epoch): 10 epochs = 4 + 6 epochs, bit for bit."""
    X, Y = xor_data
    a = xor_adam.init_params(1)
    sa = xor_adam.init_state(a)
    ra = xor_adam.train(a, sa, X, Y, epochs=10, batch_size=16, seed=7)
    b = xor_adam.init_params(1)
    sb = xor_adam.init_state(b)
    r1 = xor_adam.train(b, sb, X, Y, epochs=4, batch_size=16, seed=7)
    r2 = xor_adam.train(b, sb, X, Y, epochs=6, batch_size=16, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(ra["loss"], np.concatenate([r1["loss"], r2["loss"]]))
    assert sa["t"] == sb["t"] == 130 and sa["epoch"] == sb["epoch"] == 10
    assert np.array_equal(xor_adam.permutations(200, 3, seed=7, start=4), xor_adam.permutations(200, 7, seed=7)[4:])


def test_grad_norm_is_the_weight_gradient_norm(xor_adam, xor_data):
    """Full batch, one epoch: the recorded norm is ||dL/dW_l|| at the starting parameters."""
    X, Y = xor_data
    p = xor_adam.init_params(2)
    g = xor_adam.gradients(p, X, Y)
    res = xor_adam.train(p, xor_adam.init_state(p), X, Y, epochs=1, batch_size=len(X))
    assert res["grad_norm"].shape == (1, 2)
    np.testing.assert_allclose(res["grad_norm"][0], [np.linalg.norm(g["W1"]), np.linalg.norm(g["W2"])], rtol=1e-12)
    p = xor_adam.init_params(2)
    assert xor_adam.train(p, xor_adam.init_state(p), X, Y, epochs=2, grad_norms=False)["grad_norm"].shape == (0, 2)


# --------------------------------------------------------------------------- restarts


def test_train_many_equals_train_per_run(xor_adam, xor_data):
    X, Y = xor_data
    ps = [xor_adam.init_params(k) for k in range(3)]
    ss = [xor_adam.init_state(p) for p in ps]
    many = xor_adam.train_many(ps, ss, X, Y, epochs=5, batch_size=16, seeds=[10, 11, 12])
    for k in range(3):
        q = xor_adam.init_params(k)
        sq = xor_adam.init_state(q)
        one = xor_adam.train(q, sq, X, Y, epochs=5, batch_size=16, seed=10 + k)
        assert all(np.array_equal(ps[k][n], q[n]) for n in q)
        assert all(np.array_equal(ss[k][n], sq[n]) for n in sq)
        assert np.array_equal(many[k]["loss"], one["loss"]) and np.array_equal(many[k]["grad_norm"], one["grad_norm"])
    assert len({float(r["loss"][-1]) for r in many}) == 3


def test_train_many_with_per_run_hyperparameters_equals_train_per_run(xor_adam, xor_data):
    """A sweep in one compiled call: each run its own lr and beta2 (a list, an array), one eps for all."""
    X, Y = xor_data
    lrs, beta2s = [0.1, 0.01, 0.03], np.array([0.99, 0.999, 0.9])
    ps = [xor_adam.init_params(k) for k in range(3)]
    ss = [xor_adam.init_state(p) for p in ps]
    many = xor_adam.train_many(ps, ss, X, Y, epochs=4, batch_size=16, seeds=[7, 8, 9], lr=lrs, beta2=beta2s,
                               eps=1e-7)
    for k in range(3):
        q = xor_adam.init_params(k)
        sq = xor_adam.init_state(q)
        one = xor_adam.train(q, sq, X, Y, epochs=4, batch_size=16, seed=7 + k, lr=lrs[k], beta2=float(beta2s[k]),
                             eps=1e-7)
        assert all(np.array_equal(ps[k][n], q[n]) for n in q)
        assert np.array_equal(many[k]["loss"], one["loss"])
    with pytest.raises(ValueError, match="lr has 2 values, expected one number or one per run"):
        xor_adam.train_many(ps, ss, X, Y, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"lr must lie in .*\(run 1\)"):
        xor_adam.train_many(ps, ss, X, Y, lr=[0.1, -0.2, 0.1])


def test_train_many_rolls_back_a_diverging_run_alone():
    """Restarts are independent: a run whose loss overflows stops alone (the runs share the
    hyperparameters, so this one diverges by its starting point)."""
    lin = importlib.import_module("generated.linear")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    Y = X @ np.array([[1.0], [-2.0], [0.5]])
    good = lin.init_params(0)
    bad = {k: v * 1e200 for k, v in lin.init_params(1).items()}
    states = [lin.init_state(good), lin.init_state(bad)]
    res = lin.train_many([good, bad], states, X, Y, epochs=3, batch_size=8, lr=0.05)
    assert res[0]["status"] == "ok" and res[1]["status"] == "non-finite"
    assert all(np.isfinite(v).all() for v in bad.values()) and res[1]["steps"] == 0
    assert res[0]["steps"] == 24


def test_train_many_input_errors(xor_adam, xor_data):
    X, Y = xor_data
    p = xor_adam.init_params(0)
    with pytest.raises(ValueError, match="states must be a list of 1"):
        xor_adam.train_many([p], [], X, Y)
    with pytest.raises(ValueError, match="seeds must have one seed per run"):
        xor_adam.train_many([p], [xor_adam.init_state(p)], X, Y, seeds=[1, 2])
    q = xor_adam.init_params(1)
    sq = xor_adam.init_state(q)
    xor_adam.step(q, sq, X, Y)
    with pytest.raises(ValueError, match="lockstep"):
        xor_adam.train_many([p, q], [xor_adam.init_state(p), sq], X, Y)


# --------------------------------------------------------------------------- dropout


def _buffers(m, arrays, n):
    Zs, As, Ds, Hs, Ms = m._api.workspace(arrays, n)
    fw = [Zs[0], As[0], Hs[0], Ms[0], Zs[1], As[1], Hs[1], Ms[1], Zs[2], As[2]]
    return fw, Zs, As, Ds, Hs, Ms


def test_dropout_masks_are_inverted_bernoulli(dropout_module):
    m = dropout_module
    assert m.DROPOUT == (0.5, 0.25)
    p = m.init_params(0)
    arrays = [p[k] for k in m.PARAM_NAMES]
    X = np.random.default_rng(0).normal(size=(400, 3))
    fw, Zs, As, Ds, Hs, Ms = _buffers(m, arrays, 400)
    m._forward(X, *arrays, *fw, 1)
    for M, rate in ((Ms[0], 0.5), (Ms[1], 0.25)):
        assert set(np.unique(M)) == {0.0, 1 / (1 - rate)}
        assert (M == 0).mean() == pytest.approx(rate, abs=0.03)
    np.testing.assert_array_equal(Hs[0], As[0] * Ms[0])
    m._forward(X, *arrays, *fw, 0)  # prediction: no dropout
    assert np.all(Ms[0] == 1.0) and np.array_equal(Hs[0], As[0])
    np.testing.assert_array_equal(m.forward(p, X), As[2])


def test_dropout_gradient_matches_finite_differences_with_the_masks_fixed(dropout_module):
    m = dropout_module
    rng = np.random.default_rng(1)
    p = m.init_params(1)
    arrays = [p[k] for k in m.PARAM_NAMES]
    X = rng.normal(size=(20, 3))
    Y = rng.uniform(size=(20, 1))
    fw, Zs, As, Ds, Hs, Ms = _buffers(m, arrays, 20)
    m._forward(X, *arrays, *fw, 1)  # draw the masks once
    assert (Ms[0] == 0).any()

    def loss(arrs):
        m._forward(X, *arrs, *fw, 2)  # reuse them
        return m._loss(Zs[2], As[2], Y, np.empty_like(Y))

    grads = [np.empty_like(a) for a in arrays]
    loss(arrays)
    m._backward(X, Y, *arrays, *fw, *Ds, *grads)
    for _ in range(3):
        V = [rng.normal(size=a.shape) for a in arrays]
        h = 1e-6
        fd = (loss([a + h * v for a, v in zip(arrays, V)]) - loss([a - h * v for a, v in zip(arrays, V)])) / (2 * h)
        assert sum(float((g * v).sum()) for g, v in zip(grads, V)) == pytest.approx(fd, rel=1e-6)


def test_dropout_training_is_seeded_and_chunk_invariant(dropout_module):
    m = dropout_module
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    Y = (X[:, :1] > 0).astype(float)
    runs = []
    for split in ((6,), (2, 4)):
        p = m.init_params(0)
        s = m.init_state(p)
        for e in split:
            m.train(p, s, X, Y, epochs=e, batch_size=16, seed=3)
        runs.append(p)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    p = m.init_params(0)
    s = m.init_state(p)
    res = m.train(p, s, X, Y, epochs=60, batch_size=16, seed=3)
    assert res["status"] == "ok" and res["loss"][-1] < 0.5 * res["loss"][0]
    assert ((m.forward(p, X) >= 0.5) == (Y >= 0.5)).mean() > 0.9


def test_dropout_spec_validation():
    from derive.errors import SpecError

    layers = [Dense(4, "tanh"), Dense(1, "sigmoid")]
    assert Model("d", 2, layers, "bce", dropout=0.3).dropout == (0.3,)
    assert Model("d", 2, layers, "bce", dropout=0.0).dropout == ()
    assert "dropout" not in Model("d", 2, layers, "bce").to_dict()
    with pytest.raises(SpecError, match=r"dropout rate of hidden layer 1 must be a number in \[0, 1\)"):
        Model("d", 2, layers, "bce", dropout=1.0)
    with pytest.raises(SpecError, match="one rate per hidden layer"):
        Model("d", 2, layers, "bce", dropout=[0.1, 0.2])
    with pytest.raises(SpecError, match="this model has none"):
        Model("d", 2, [Dense(1, "sigmoid")], "bce", dropout=0.5)


def test_dropout_appears_in_the_derivation():
    from derive.derivation import derive_model

    d = derive_model(Model("d", 2, [Dense(4, "tanh"), Dense(1, "sigmoid")], "bce", dropout=0.3))
    assert str(d.eq("forward.h1").rhs) == "a_1*m_1"
    assert "H_1" in str(d.eq("forward.z2").rhs) and "H_1" in str(d.eq("grad.W2").rhs)
    assert "m_1" in str(d.eq("delta1").rhs)
