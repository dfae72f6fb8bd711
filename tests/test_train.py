"""The whole training run in one compiled call: equal to a Python loop over step() with the
same shuffles, bit for bit; dtypes kept; partial, stochastic and full batches; schedules per
epoch and per step; a non-finite loss stops at once and leaves the last finite state."""

from __future__ import annotations

import importlib

import numpy as np
import pytest


def _data(n=50, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(dtype)
    Y = (X[:, :1] * X[:, 1:] > 0).astype(dtype)
    return X, Y


def _loop(module, params, state, X, Y, epochs, batch_size, seed=0, shuffle=True, **hyper):
    """The reference: step() over the batches train() sees. Returns (epoch losses, snapshots
    of (params, state) before each step, where a non-finite loss stopped it or None)."""
    n = len(X)
    orders = module.permutations(n, epochs, seed) if shuffle else np.tile(np.arange(n), (epochs, 1))
    B = min(batch_size, n)
    losses, snaps, epoch0 = [], [], state["epoch"]
    for e in range(epochs):
        state["epoch"] = epoch0 + e
        total = 0.0
        for b, s in enumerate(range(0, n, B)):
            rows = orders[e][s:s + B]
            snaps.append(({k: v.copy() for k, v in params.items()},
                          {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}))
            value = module.step(params, state, np.ascontiguousarray(X[rows]), np.ascontiguousarray(Y[rows]), **hyper)
            if not np.isfinite(value):
                return losses, snaps, (e, b)
            total += value * len(rows)
        losses.append(total / n)
    state["epoch"] = epoch0 + epochs
    return losses, snaps, None


def _same(a, b):
    for k in a:
        assert np.array_equal(a[k], b[k]), k


CASES = [  # (model, n, epochs, batch size): partial last batch, stochastic, full batch, schedules
    ("xor_adam", 50, 4, 16),
    ("xor_nadam", 37, 3, 8),
    ("xor_regularized", 40, 5, 12),
    ("xor_rmsprop_centered", 20, 3, 1),
    ("xor_momentum", 30, 6, 1000),
    ("deep_sigmoid", 33, 2, 10),
    ("diabetes", 70, 2, 16),  # a hidden ReLU from the register tiles (REGISTER_Z), a partial last batch
]


@pytest.mark.parametrize("name,n,epochs,batch", CASES)
def test_train_equals_a_python_loop_over_step_bit_for_bit(name, n, epochs, batch):
    module = importlib.import_module(f"generated.{name}")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, module.SPEC["inputs"]))
    Y = (rng.uniform(size=(n, 1)) > 0.5).astype(np.float64)
    p1 = module.init_params(seed=2)
    s1 = module.init_state(p1)
    p2 = {k: v.copy() for k, v in p1.items()}
    s2 = module.init_state(p2)
    history = module.train(p1, s1, X, Y, epochs=epochs, batch_size=batch, seed=9)
    losses, _, stop = _loop(module, p2, s2, X, Y, epochs, batch, seed=9)
    assert history["status"] == "ok" and stop is None
    assert history["steps"] == epochs * -(-n // min(batch, n)) == s1["t"]
    np.testing.assert_array_equal(history["loss"], losses)
    _same(p1, p2)
    for k in s1:
        assert np.array_equal(s1[k], s2[k]), k
    assert s1["epoch"] == epochs


def test_float32_stays_float32_and_matches_its_loop():
    import generated.xor_adam as m

    X, Y = _data(40, np.float32)
    p1 = m.init_params(seed=0, dtype=np.float32)
    s1 = m.init_state(p1)
    p2 = {k: v.copy() for k, v in p1.items()}
    s2 = m.init_state(p2)
    m.train(p1, s1, X, Y, epochs=3, batch_size=16, seed=1)
    _loop(m, p2, s2, X, Y, 3, 16, seed=1)
    assert all(v.dtype == np.float32 for v in p1.values()) and s1["m_W1"].dtype == np.float32
    _same(p1, p2)
    with pytest.raises(ValueError, match="X has dtype float64 but the parameters are float32"):
        m.train(p1, s1, X.astype(np.float64), Y, epochs=1)


def test_without_shuffle_batches_come_in_order():
    import generated.xor as m

    X, Y = _data(30)
    p1 = m.init_params()
    s1 = m.init_state(p1)
    p2 = {k: v.copy() for k, v in p1.items()}
    s2 = m.init_state(p2)
    m.train(p1, s1, X, Y, epochs=2, batch_size=7, shuffle=False)
    _loop(m, p2, s2, X, Y, 2, 7, shuffle=False)
    _same(p1, p2)


def test_shuffles_are_fresh_each_epoch_and_seeded():
    import generated.xor as m

    a, b = m.permutations(20, 3, seed=4), m.permutations(20, 3, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a[0], a[1])
    assert all(sorted(row) == list(range(20)) for row in a)
    assert not np.array_equal(a, m.permutations(20, 3, seed=5))


def test_non_finite_loss_stops_and_keeps_the_last_finite_state():
    import generated.linear as m  # MSE, identity output: a huge rate overflows to inf, then NaN

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    Y = X @ np.array([[1.0], [-2.0], [0.5]])
    p1 = m.init_params(seed=3)
    s1 = m.init_state(p1)
    p2 = {k: v.copy() for k, v in p1.items()}
    s2 = m.init_state(p2)
    history = m.train(p1, s1, X, Y, epochs=500, batch_size=8, seed=0, lr=50.0)
    _, snaps, stop = _loop(m, p2, s2, X, Y, 500, 8, seed=0, lr=50.0)
    assert stop is not None and history["status"] == "non-finite"
    assert (history["epoch"], history["batch"]) == stop
    k = len(snaps) - 1  # the step whose loss was not finite
    assert k >= 2 and history["steps"] == k - 1 == s1["t"]
    good_params, good_state = snaps[k - 1]  # before the update that produced non-finite values
    _same(p1, good_params)
    assert all(np.isfinite(v).all() for v in p1.values())
    assert s1["t"] == good_state["t"]
    assert len(history["loss"]) == stop[0] and np.isfinite(history["loss"]).all()
    assert m.loss(p1, X, Y) == pytest.approx(m.loss(good_params, X, Y))


def test_per_epoch_schedule_advances_with_the_epoch_counter():
    import generated.xor_regularized as m  # step decay: lr halves every epoch

    X, Y = _data(16)
    p = m.init_params()
    s = m.init_state(p)
    m.train(p, s, X, Y, epochs=3, batch_size=16, momentum=0.0, l1=0.0, l2=0.0, clip_norm=1e9, clip_value=1e9)
    assert s["epoch"] == 3 and s["t"] == 3
    before = {k: v.copy() for k, v in p.items()}
    g = m.gradients(p, X, Y, l1=0.0, l2=0.0)
    m.train(p, s, X, Y, epochs=1, batch_size=16, momentum=0.0, l1=0.0, l2=0.0, clip_norm=1e9, clip_value=1e9)
    np.testing.assert_allclose(p["W1"], before["W1"] - 0.1 * 0.5**3 * g["W1"], rtol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": -1}, "epochs must be an integer >= 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"lr": -0.1}, "lr must lie in"),
])
def test_bad_arguments_are_refused_before_anything_changes(kwargs, message):
    import generated.xor as m

    X, Y = _data(10)
    p = m.init_params()
    s = m.init_state(p)
    before = {k: v.copy() for k, v in p.items()}
    with pytest.raises(ValueError, match=message):
        m.train(p, s, X, Y, **kwargs)
    _same(p, before)
    assert s["t"] == 0


def test_zero_epochs_changes_nothing():
    import generated.xor as m

    X, Y = _data(10)
    p = m.init_params()
    s = m.init_state(p)
    before = {k: v.copy() for k, v in p.items()}
    h = m.train(p, s, X, Y, epochs=0)
    assert h["status"] == "ok" and len(h["loss"]) == 0 and s["t"] == 0
    _same(p, before)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the run diverges on purpose
def test_rollback_restores_optimizer_state_arrays(tmp_path):
    from derive.codegen.render import render_module
    from derive.derivation import derive_model
    from derive.spec import Model

    from .conftest import load_rendered, pure_python

    model = Model("diverging_momentum", 3, [[1, "identity"]], "mse", {"name": "momentum", "lr": 3.0})
    m = pure_python(load_rendered(render_module(derive_model(model)), model.name, tmp_path))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 3))
    Y = X @ np.array([[1.0], [-2.0], [0.5]])
    p1 = m.init_params(seed=1)
    s1 = m.init_state(p1)
    p2 = {k: v.copy() for k, v in p1.items()}
    s2 = m.init_state(p2)
    history = m.train(p1, s1, X, Y, epochs=200, batch_size=6, seed=2)
    _, snaps, stop = _loop(m, p2, s2, X, Y, 200, 6, seed=2)
    assert stop is not None and history["status"] == "non-finite"
    good_params, good_state = snaps[len(snaps) - 2]
    _same(p1, good_params)
    for k in ("b_W1", "b_b1"):
        assert np.isfinite(s1[k]).all() and np.array_equal(s1[k], good_state[k])


def test_threads_training_at_once_equal_training_one_after_the_other():
    """train() keeps its work arrays for the next call, one set per thread: runs in two threads
    at once (the kernels release the GIL) give what the same runs give one after the other, and
    a call with other shapes in between (a different batch size, float32) changes nothing."""
    import threading

    module = importlib.import_module("generated.xor_adam")
    X, Y = _data(400)
    runs = [(module.init_params(seed), seed) for seed in (1, 2)]
    expected = []
    for params, seed in runs:
        p = {k: v.copy() for k, v in params.items()}
        s = module.init_state(p)
        result = module.train(p, s, X, Y, epochs=40, batch_size=16, seed=seed)
        module.train(module.init_params(0, np.float32), module.init_state(module.init_params(0, np.float32)),
                     X.astype(np.float32), Y.astype(np.float32), epochs=1, batch_size=7)
        expected.append((p, result["loss"]))
    got = [None, None]
    start = threading.Barrier(2)

    def work(i):
        params, seed = runs[i]
        p = {k: v.copy() for k, v in params.items()}
        s = module.init_state(p)
        start.wait()
        got[i] = (p, module.train(p, s, X, Y, epochs=40, batch_size=16, seed=seed)["loss"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (p_want, loss_want), (p_got, loss_got) in zip(expected, got):
        _same(p_want, p_got)
        assert np.array_equal(loss_want, loss_got)


def test_work_arrays_and_fresh_parameters_start_on_cache_lines():
    """init_params, init_state and train()'s work arrays (activations, deltas, gradients, the
    second buffers) start on a 64-byte line: the register tiles' 32-byte loads then never cross
    one (NumPy aligns to 16 bytes, which made the small network's step 5.2 us or 4.9 by chance)."""
    m = importlib.import_module("generated.xor_adam")
    for shape, dtype in (((3, 5), np.float32), ((0,), np.float64), ((7,), np.float64), ((2, 3, 4), np.float32)):
        a = m._rt._empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % 64 == 0  # (an empty array's address means nothing)
    filled = m._rt._empty((3, 5), np.float32, np.arange(5.0))
    assert filled.ctypes.data % 64 == 0 and filled.dtype == np.float32 and (filled == np.arange(5.0)).all()
    for dtype in (np.float64, np.float32):
        params = m.init_params(seed=1, dtype=dtype)
        state = m.init_state(params)
        X, Y = _data(23, dtype)
        m.train(params, state, X, Y, epochs=1, batch_size=5)
        arrays = [*params.values(), *(v for v in state.values() if isinstance(v, np.ndarray))]
        for item in m._rt._SCRATCH.entry[1]:  # lists and dicts of arrays, and the batch buffers Xb, Yb
            items = [item] if isinstance(item, np.ndarray) else item.values() if isinstance(item, dict) else item
            arrays += [a for a in items if a is not None]
        assert len(arrays) > 20
        for a in arrays:
            assert a.ctypes.data % 64 == 0, a.shape
        assert all(a.dtype == dtype for a in params.values())
