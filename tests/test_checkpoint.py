"""Checkpoints: a lossless round trip (parameters, optimizer state, standardiser, meta, history),
bit-exact resumption, atomic writes, and a CheckpointError naming the file for every corrupt,
tampered or mismatched checkpoint."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import generated.xor as xor
import generated.xor_adam as xor_adam
import generated.xor_nadam as xor_nadam
from derive.data import Standardizer
from derive.errors import DeriveError
from derive.runtime.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    Y = (X[:, :1] * X[:, 1:] > 0).astype(np.float64)
    return X, Y


def _trained(module=xor_adam, epochs=3, dtype=np.float64):
    X, Y = _data()
    X, Y = X.astype(dtype), Y.astype(dtype)
    params = module.init_params(seed=1, dtype=dtype)
    state = module.init_state(params)
    history = module.train(params, state, X, Y, epochs=epochs, batch_size=5, seed=3)
    return params, state, history


def _rewrite(path, **changes):
    """Rewrite the .npz at path by hand: entries replaced, or dropped when given None."""
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            entries.pop(key)
        else:
            entries[key] = value
    np.savez(path, **entries)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_keeps_everything(tmp_path):
    params, state, history = _trained()
    X, _ = _data()
    scaler = Standardizer().fit(X)
    meta = {"seed": np.int64(3), "lr": 0.01, "epochs": 3, "features": ["x1", "x2"], "metrics": {"acc": np.float32(0.5)}}
    out = save_checkpoint(tmp_path / "run.npz", xor_adam, params, state, standardizer=scaler, meta=meta,
                          history=history)
    assert out == tmp_path / "run.npz" and out.is_file()
    ck = load_checkpoint(out, xor_adam)
    assert isinstance(ck, Checkpoint) and ck.path == out
    assert ck.name == "xor_adam" and ck.spec == xor_adam.SPEC and ck.spec_hash == xor_adam.SPEC_HASH
    assert set(ck.params) == set(xor_adam.PARAM_NAMES)
    for k, v in params.items():
        np.testing.assert_array_equal(ck.params[k], v)
    assert set(ck.state) == set(state) and {k for k in state if k.startswith(("m_", "v_"))}
    for k, v in state.items():
        if k in ("t", "epoch"):
            assert ck.state[k] == v and type(ck.state[k]) is int
        else:
            np.testing.assert_array_equal(ck.state[k], v)
    assert ck.state["t"] == 15 and ck.state["epoch"] == 3
    np.testing.assert_array_equal(ck.standardizer.mean, scaler.mean)
    np.testing.assert_array_equal(ck.standardizer.std, scaler.std)
    assert ck.meta == {"seed": 3, "lr": 0.01, "epochs": 3, "features": ["x1", "x2"], "metrics": {"acc": 0.5}}
    np.testing.assert_array_equal(ck.history["loss"], history["loss"])
    assert {k: ck.history[k] for k in ("status", "epoch", "batch", "steps")} == {
        k: history[k] for k in ("status", "epoch", "batch", "steps")}
    for arr in [*ck.params.values(), *(v for v in ck.state.values() if isinstance(v, np.ndarray))]:
        assert arr.flags.writeable and arr.flags.c_contiguous and arr.dtype == np.float64
    np.testing.assert_array_equal(xor_adam.forward(ck.params, X), xor_adam.forward(params, X))


def test_float32_and_scalar_state_round_trip(tmp_path):
    params, state, _ = _trained(xor, epochs=2, dtype=np.float32)
    ck = load_checkpoint(save_checkpoint(tmp_path / "f32", xor, params, state), xor)
    assert all(a.dtype == np.float32 for a in ck.params.values())
    assert ck.standardizer is None and ck.meta == {} and ck.history == {}
    X = _data()[0].astype(np.float32)
    np.testing.assert_array_equal(xor.forward(ck.params, X), xor.forward(params, X))
    p = xor_nadam.init_params(seed=0)
    s = xor_nadam.init_state(p)
    s["mu_product"][...] = 0.123456789  # SCALAR_STATE: float64 arrays of shape (1,)
    ck = load_checkpoint(save_checkpoint(tmp_path / "nadam", xor_nadam, p, s), xor_nadam)
    assert ck.state["mu_product"].shape == (1,) and ck.state["mu_product"][0] == 0.123456789


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_is_bit_exact(tmp_path, shuffle):
    X, Y = _data()
    kw = {"batch_size": 5, "seed": 7, "shuffle": shuffle}
    p, s = xor_adam.init_params(seed=2), None
    s = xor_adam.init_state(p)
    xor_adam.train(p, s, X, Y, epochs=3, **kw)
    ck = load_checkpoint(save_checkpoint(tmp_path / "mid", xor_adam, p, s), xor_adam)
    resumed = xor_adam.train(ck.params, ck.state, X, Y, epochs=2, **kw)
    xor_adam.train(p, s, X, Y, epochs=2, **kw)  # the same 3 + 2 split, without the checkpoint
    for k in p:
        np.testing.assert_array_equal(ck.params[k], p[k])
    for k in s:
        np.testing.assert_array_equal(ck.state[k], s[k])
    assert ck.state["t"] == 25 and ck.state["epoch"] == 5 and resumed["status"] == "ok"
    if not shuffle:  # without shuffling the order does not depend on the split: 3 + 2 == 5
        q = xor_adam.init_params(seed=2)
        r = xor_adam.init_state(q)
        xor_adam.train(q, r, X, Y, epochs=5, **kw)
        for k in q:
            np.testing.assert_array_equal(ck.params[k], q[k])


def test_npz_suffix_is_added_and_found(tmp_path):
    params, state, _ = _trained(xor, epochs=1)
    assert save_checkpoint(tmp_path / "run", xor, params, state) == tmp_path / "run.npz"
    assert save_checkpoint(str(tmp_path / "x.ckpt"), xor, params, state) == tmp_path / "x.ckpt.npz"
    assert load_checkpoint(tmp_path / "run").path == tmp_path / "run.npz"
    assert load_checkpoint(str(tmp_path / "run.npz")).name == "xor"
    assert _listing(tmp_path) == ["run.npz", "x.ckpt.npz"]


def _raw_npz(path):
    np.savez(path, a=np.arange(3))


def _truncated(path):
    params, state, _ = _trained(xor, epochs=1)
    save_checkpoint(path, xor, params, state)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flipped(path):
    params, state, _ = _trained(xor, epochs=1)
    save_checkpoint(path, xor, params, state)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/W1.npy")
    data[info.header_offset + 120] ^= 0xFF  # inside W1's data: the CRC check fails
    path.write_bytes(bytes(data))


def _other_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("format", "derive-checkpoint")
        z.writestr("notes.txt", "hello")


def _pickled(path):
    np.savez(path, format=np.array("derive-checkpoint"), evil=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize("name, make", [
    ("random.npz", lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000))),
    ("empty.npz", lambda p: p.write_bytes(b"")),
    ("notes.txt", lambda p: p.write_text("epoch 3: loss 0.1\n")),
    ("plain.npz", _raw_npz),
    ("array.npy", lambda p: np.save(p, np.arange(4))),
    ("truncated.npz", _truncated),
    ("flipped.npz", _flipped),
    ("pickled.npz", _pickled),
    ("other.zip", _other_zip),
    ("pk.npz", lambda p: p.write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(500))),
])
def test_corrupt_files_are_rejected(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, DeriveError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("change, words", [
    ({"spec": None}, "'spec'"),
    ({"name": None}, "'name'"),
    ({"meta": np.array("{not json")}, "JSON"),
    ({"version": np.array(2)}, "version 2"),
    ({"format": np.array("something-else")}, "not a derive checkpoint"),
    ({"state__t": None}, "state/t"),
    ({"state__epoch": np.array(-1)}, "state/epoch"),
    ({"param__W1": np.full((2, 8), np.nan)}, "'W1'"),
    ({"standardizer__mean": np.zeros(3)}, "standardizer"),
])
def test_damaged_entries_are_rejected(tmp_path, change, words):
    params, state, _ = _trained(xor, epochs=1)
    path = save_checkpoint(tmp_path / "ck.npz", xor, params, state, standardizer=Standardizer().fit(_data()[0]))
    _rewrite(path, **change)
    with pytest.raises(CheckpointError, match="ck.npz") as err:
        load_checkpoint(path)
    assert words in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file") as err:
        load_checkpoint(tmp_path / "nope.npz")
    assert str(tmp_path / "nope.npz") in str(err.value)
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)
    params, state, _ = _trained(xor, epochs=1)
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "ck.npz", xor, params, state)


def test_other_model_is_rejected_naming_the_difference(tmp_path):
    params, state, _ = _trained(xor, epochs=1)
    path = save_checkpoint(tmp_path / "xor.npz", xor, params, state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, xor_adam)
    msg = str(err.value)
    assert str(path) in msg and "model 'xor' does not fit model 'xor_adam'" in msg
    assert "saved with optimizer 'sgd' but the model now has 'adam'" in msg
    with pytest.raises(CheckpointError, match="optimizer 'sgd'"):
        load_checkpoint(path).check(xor_adam)


def test_changed_layers_are_named(tmp_path):
    from derive.codegen.render import render_module
    from derive.derivation import derive_model
    from derive.spec import Model

    from .conftest import load_rendered

    wide = load_rendered(render_module(derive_model(
        Model("xor", 2, [[16, "tanh"], [1, "sigmoid"]], "bce", {"name": "sgd", "lr": 0.1}))), "xor", tmp_path)
    params, state, _ = _trained(xor, epochs=1)
    path = save_checkpoint(tmp_path / "xor.npz", xor, params, state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, wide)
    assert ("model 'xor': saved with layers [[8, 'tanh'], [1, 'sigmoid']] but the model now has "
            "[[16, 'tanh'], [1, 'sigmoid']]") in str(err.value)
    assert "changed since" in str(err.value)


@pytest.mark.parametrize("change, words", [
    ({"param__W1": np.zeros((2, 7))}, ["parameter 'W1'", "(2, 7)", "(2, 8)"]),
    ({"param__b2": np.zeros((1, 1))}, ["parameter 'b2'", "(1, 1)", "(1,)"]),
    ({"param__W2": np.zeros((8, 1), np.float32)}, ["parameter 'W2'", "float32", "float64"]),
    ({"param__W3": np.zeros((1, 1))}, ["'W3'"]),
    ({"state__m_W1": np.zeros((3, 8))}, ["state['m_W1']", "(3, 8)", "(2, 8)"]),
    ({"state__v_b1": None}, ["missing ['v_b1']"]),
])
def test_tampered_arrays_are_rejected(tmp_path, change, words):
    params, state, _ = _trained(xor_adam, epochs=1)
    path = save_checkpoint(tmp_path / "ck.npz", xor_adam, params, state)
    _rewrite(path, **change)
    ck = load_checkpoint(path)  # the file itself is readable ...
    with pytest.raises(CheckpointError) as err:  # ... but no longer fits the model
        ck.check(xor_adam)
    for w in [str(path), *words]:
        assert w in str(err.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(path, xor_adam)


@pytest.mark.parametrize("where", ["param", "state"])
def test_non_finite_values_are_refused_and_the_old_file_kept(tmp_path, where):
    params, state, _ = _trained(xor_adam, epochs=1)
    path = save_checkpoint(tmp_path / "ck.npz", xor_adam, params, state)
    before = path.read_bytes()
    if where == "param":
        params["b1"][3] = np.inf
        words = "parameter 'b1' is not finite (inf at index (3,))"
    else:
        state["v_W2"][5, 0] = np.nan
        words = "state['v_W2'] is not finite"
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, xor_adam, params, state)
    assert words in str(err.value) and str(path) in str(err.value)
    assert path.read_bytes() == before and _listing(tmp_path) == ["ck.npz"]


def test_failed_write_leaves_no_temp_file_and_the_old_file(tmp_path, monkeypatch):
    params, state, _ = _trained(xor, epochs=1)
    path = save_checkpoint(tmp_path / "ck.npz", xor, params, state)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    path.chmod(0o600)
    save_checkpoint(path, xor, params, state, meta={"again": True})  # replacing works, keeping the mode
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_checkpoint(path).meta == {"again": True} and _listing(tmp_path) == ["ck.npz"]
    before = path.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, xor, params, state)
    assert path.read_bytes() == before and _listing(tmp_path) == ["ck.npz"]
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "new.npz", xor, params, state)
    assert _listing(tmp_path) == ["ck.npz"]


@pytest.mark.parametrize("kwargs, words", [
    ({"meta": {"when": object()}}, "meta must be JSON-serialisable"),
    ({"meta": {"nested": {"s": {1, 2}}}}, "meta must be JSON-serialisable"),
    ({"meta": ["not", "a", "dict"]}, "meta must be a dict"),
    ({"history": {"loss": [object()]}}, "history['loss']"),
    ({"history": {"": [1.0]}}, "history keys"),
    ({"standardizer": Standardizer()}, "standardizer"),
])
def test_bad_extras_are_refused_before_writing(tmp_path, kwargs, words):
    params, state, _ = _trained(xor, epochs=1)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(tmp_path / "ck.npz", xor, params, state, **kwargs)
    assert words in str(err.value) and "ck.npz" in str(err.value)
    assert _listing(tmp_path) == []


def test_bad_params_state_or_module_are_refused(tmp_path):
    params, state, _ = _trained(xor_adam, epochs=1)
    path = tmp_path / "ck.npz"
    with pytest.raises(CheckpointError, match="do not match model 'xor_adam'"):
        save_checkpoint(path, xor_adam, {k: v for k, v in params.items() if k != "b2"}, state)
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        save_checkpoint(path, xor, xor.init_params(), state)
    with pytest.raises(CheckpointError, match="state\\['t'\\] must be an integer"):
        save_checkpoint(path, xor_adam, params, {**state, "t": -1})
    with pytest.raises(CheckpointError, match="float32 or float64"):
        save_checkpoint(path, xor_adam, {k: v.astype(np.int64) for k, v in params.items()}, state)
    with pytest.raises(CheckpointError, match="not a generated derive module"):
        save_checkpoint(path, json, params, state)
    assert _listing(tmp_path) == []
