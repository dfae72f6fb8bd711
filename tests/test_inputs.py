"""Inputs that must be handled: what the generated modules are given at run time (wrong types,
shapes, dtypes, layouts, non-finite values, a state from another model) and what builds meet
(another build at the same time, an output folder that cannot be written)."""

from __future__ import annotations

import errno
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from derive import build as build_mod
from derive.errors import BuildError
from derive.spec import parse_catalogue

from .conftest import random_problem

# ----------------------------------------------------------------------------- kernel inputs


def _copy(params):
    return {k: v.copy() for k, v in params.items()}


@pytest.fixture(scope="module")
def xor():
    import generated.xor as module

    return module


@pytest.fixture(scope="module")
def adam():
    import generated.xor_adam as module

    return module


BAD_DATA = [
    (lambda X, Y: (X.tolist(), Y), "numpy array, got list"),
    (lambda X, Y: (X, Y.tolist()), "Y must be a plain numpy array, got list"),
    (lambda X, Y: (tuple(map(tuple, X)), Y), "numpy array, got tuple"),
    (lambda X, Y: (np.asmatrix(X), Y), "numpy array, got matrix"),
    (lambda X, Y: (np.ma.masked_invalid(np.where(X > 1, np.nan, X)), Y), "numpy array, got MaskedArray"),
    (lambda X, Y: (X[None], Y), "X must have shape (n_samples, 2), got (1, 7, 2)"),
    (lambda X, Y: (X[:, 0].copy(), Y), "X must have shape (n_samples, 2), got (7,)"),
    (lambda X, Y: (np.float64(1.0), Y), "numpy array, got float64"),
    (lambda X, Y: (X, Y[:, 0].copy()), "Y must have shape (n_samples, 1), got (7,)"),
    (lambda X, Y: (X, Y[None]), "Y must have shape (n_samples, 1), got (1, 7, 1)"),
    (lambda X, Y: (X.astype(object), Y), "X has dtype object"),
    (lambda X, Y: (X.astype(np.float16), Y), "X has dtype float16"),
    (lambda X, Y: (X.astype(np.complex128), Y), "X has dtype complex128"),
    (lambda X, Y: (X.astype(">f8"), Y), "X has dtype >f8"),
    (lambda X, Y: (X, Y.astype(np.int64)), "Y has dtype int64"),
    (lambda X, Y: (X, Y.astype(bool)), "Y has dtype bool"),
    (lambda X, Y: (np.repeat(X, 2, axis=0)[::2], Y), "X is not C-contiguous"),
    (lambda X, Y: (X, np.hstack([Y, Y])[:, :1]), "Y is not C-contiguous"),
    (lambda X, Y: (np.zeros((0, 2)), np.zeros((0, 1))), "X is empty (0 samples)"),
    (lambda X, Y: (X, np.where(np.arange(Y.size).reshape(Y.shape) == 2, np.nan, Y)),
     "Y has a non-finite value nan at row 2, column 0"),
    (lambda X, Y: (np.where(np.arange(X.size).reshape(X.shape) == 5, -np.inf, X), Y),
     "X has a non-finite value -inf at row 2, column 1"),
]


ENTRY_CASES = [pytest.param(entry, make, message, id=f"{entry}-{message}") for make, message in BAD_DATA
               for entry in ("forward", "loss", "gradients", "step") if not (entry == "forward" and message[0] == "Y")]
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.asmatrix


@pytest.mark.parametrize("entry,make,message", ENTRY_CASES)
def test_bad_data_gets_a_clear_error_at_every_entry_point(xor, entry, make, message):
    params, X, Y = random_problem(xor)
    X2, Y2 = make(X, Y)
    before = _copy(params)
    state = xor.init_state(params)
    calls = {"forward": lambda: xor.forward(params, X2), "loss": lambda: xor.loss(params, X2, Y2),
             "gradients": lambda: xor.gradients(params, X2, Y2), "step": lambda: xor.step(params, state, X2, Y2)}
    with pytest.raises(ValueError) as info:
        calls[entry]()
    assert str(info.value).startswith("xor: ") and message in str(info.value), str(info.value)
    assert all(np.array_equal(params[k], before[k]) for k in params) and state["t"] == 0


BAD_PARAMS = [
    (lambda p: {**p, "W1": p["W1"].tolist()}, "params['W1'] must be a plain numpy array, got list"),
    (lambda p: {**p, "W1": p["W1"][None]}, "params['W1'] must be 2-D, got shape (1, 2, 8)"),
    (lambda p: {**p, "b1": p["b1"][None]}, "params['b1'] must be 1-D, got shape (1, 8)"),
    (lambda p: {**p, "W1": np.ascontiguousarray(p["W1"].T).T}, "params['W1'] is not C-contiguous"),
    (lambda p: {**p, "W1": p["W1"].astype(object)}, "params['W1'] has dtype object"),
    (lambda p: {**p, "W2": np.zeros((5, 1))}, "params['W2'] has 5 rows but the previous layer has 8 units"),
    (lambda p: {**p, "W1": np.zeros((3, 8))}, "X must have shape (n_samples, 3)"),
    (lambda p: {k: v for k, v in p.items() if k != "W1"}, "params is missing ['W1']"),
    (lambda p: list(p.values()), "params must be a dict"),
    (lambda p: None, "params must be a dict"),
]


@pytest.mark.parametrize("make,message", BAD_PARAMS, ids=[m for _, m in BAD_PARAMS])
def test_bad_params_get_clear_errors(xor, make, message):
    params, X, Y = random_problem(xor)
    for call in (lambda q: xor.forward(q, X), lambda q: xor.gradients(q, X, Y)):
        with pytest.raises(ValueError) as info:
            call(make(params))
        assert message in str(info.value), str(info.value)


def test_a_state_from_another_model_is_refused(xor, adam):
    import generated.xor_momentum as momentum
    import generated.xor_nadam as nadam

    params, X, Y = random_problem(xor)
    narrow = {"W1": np.zeros((2, 3)), "b1": np.zeros(3), "W2": np.zeros((3, 1)), "b2": np.zeros(1)}
    cases = [
        (momentum, adam.init_state(params), "state['b_W1'] must be an array like params['W1']"),
        (adam, xor.init_state(params), "state['m_W1'] must be an array like params['W1']"),
        (adam, adam.init_state(narrow), "state['m_W1'] must be an array like params['W1'] (float64, (2, 8))"),
        (adam, adam.init_state({k: v.astype(np.float32) for k, v in params.items()}), "(float64, (2, 8))"),
        (nadam, {**nadam.init_state(params), "mu_product": np.ones(2)}, "state['mu_product'] must be a float64"),
        (adam, {k: v for k, v in adam.init_state(params).items() if k != "t"}, "state must be the dict"),
        (adam, list(adam.init_state(params).values()), "state must be the dict"),
        (adam, {**adam.init_state(params), "m_W1": adam.init_state(params)["m_W1"].tolist()}, "state['m_W1']"),
        (adam, {**adam.init_state(params), "t": -1}, "state['t'] must be an integer >= 0"),
        (adam, {**adam.init_state(params), "m_W1": np.asfortranarray(np.zeros((2, 8)))[:, :]},
         "state['m_W1'] must be a writeable C-contiguous array"),
    ]
    for module, state, message in cases:
        p = _copy(params)
        with pytest.raises(ValueError) as info:
            module.step(p, state, X, Y)
        assert message in str(info.value), f"{module.__name__}: {info.value}"
        assert all(np.array_equal(p[k], params[k]) for k in p)  # refused before anything ran


def test_read_only_state_is_refused(adam):
    params, X, Y = random_problem(adam)
    state = adam.init_state(params)
    state["v_b2"].setflags(write=False)
    with pytest.raises(ValueError, match=r"state\['v_b2'\] must be a writeable C-contiguous array"):
        adam.step(params, state, X, Y)


def test_read_only_inputs_work(xor):
    params, X, Y = random_problem(xor)
    want = xor.gradients(params, X, Y)
    for array in (X, Y, *params.values()):
        array.setflags(write=False)
    for k, v in xor.gradients(params, X, Y).items():
        np.testing.assert_array_equal(v, want[k])


@pytest.mark.parametrize("key,value", [("t", -1), ("t", "3"), ("t", 2.5), ("t", True), ("epoch", -2),
                                       ("epoch", None)])
def test_an_invalid_step_counter_is_refused(adam, key, value):
    """A negative t would make Adam's bias correction 1 - beta1**0 = 0: NaN parameters."""
    params, X, Y = random_problem(adam)
    before = _copy(params)
    state = adam.init_state(params)
    state[key] = value
    with pytest.raises(ValueError, match=rf"xor_adam: state\['{key}'\] must be an integer >= 0, got {value!r}"):
        adam.step(params, state, X, Y)
    assert all(np.array_equal(params[k], before[k]) for k in params)


# ----------------------------------------------------------------------------- builds

SPEC = """
[model.alpha]
inputs = 2
layers = [[3, "tanh"], [1, "sigmoid"]]
loss = "bce"
optimizer = { name = "adam", lr = 0.01 }

[model.beta]
inputs = 3
layers = [[4, "relu"], [2, "identity"]]
loss = "mse"
optimizer = { name = "momentum", lr = 0.1 }
"""


@pytest.fixture(scope="module")
def models():
    catalogue = parse_catalogue(SPEC, "locks.toml")
    return list(catalogue.values())


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _build_in_child(out: str, go, log: str) -> None:
    """A forked process: wait for the signal, then build (writes slowed down and logged)."""
    catalogue = parse_catalogue(SPEC, "locks.toml")
    real = build_mod.write_atomic

    def slow(path, text):
        with open(log, "a") as fh:
            fh.write(f"start {os.getpid()} {time.monotonic()}\n")
        time.sleep(0.05)
        real(path, text)
        with open(log, "a") as fh:
            fh.write(f"end {os.getpid()} {time.monotonic()}\n")

    build_mod.write_atomic = slow
    go.wait(30)
    models = list(catalogue.values())
    build_mod.build(models, models, Path(out), "locks.toml")


def test_two_builds_at_once_equal_one_build(models, tmp_path):
    single = tmp_path / "single"
    build_mod.build(models, models, single, "locks.toml")
    out, log = tmp_path / "shared", tmp_path / "log.txt"
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_build_in_child, args=(str(out), go, str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert _tree(out) == _tree(single)  # no lock file and no temporary file left, same bytes
    # Comparing and writing happen under the lock: the first build wrote the four files, the
    # others found them current and wrote nothing (unserialised, all would have written).
    events = [line.split() for line in log.read_text().splitlines()]
    assert len({pid for _, pid, _ in events}) == 1, events
    assert [kind for kind, _, _ in events] == ["start", "end"] * 4


def test_a_held_lock_makes_another_build_wait_then_fail_clearly(models, tmp_path, monkeypatch):
    out = tmp_path / "gen"
    out.mkdir()
    monkeypatch.setattr(build_mod, "LOCK_TIMEOUT", 0.3)
    with build_mod.build_lock(out):
        start = time.monotonic()
        with pytest.raises(BuildError) as info:
            build_mod.build(models, models, out, "locks.toml")
        assert time.monotonic() - start >= 0.3
    message = str(info.value)
    assert f"another derive build is writing to {out}" in message and "waited 0.3 s" in message
    assert not any(out.iterdir())  # the refused build wrote nothing; the lock file is gone


def test_a_build_waits_for_the_lock(models, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    held = threading.Event()

    def hold():
        with build_mod.build_lock(out):
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    start = time.monotonic()
    result = build_mod.build(models, models, out, "locks.toml")
    thread.join()
    assert time.monotonic() - start >= 0.4
    assert sorted(p.name for p in result.written) == ["__init__.py", "_kernel_runtime.py", "alpha.py", "beta.py"]
    assert sorted(p.name for p in out.iterdir()) == ["__init__.py", "_kernel_runtime.py", "alpha.py", "beta.py"]


def test_a_lock_file_left_by_a_killed_build_does_not_block(models, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / build_mod.LOCK_NAME).write_text("")  # flock locks die with their process; the file is harmless
    build_mod.build(models, models, out, "locks.toml")
    assert sorted(p.name for p in out.iterdir()) == ["__init__.py", "_kernel_runtime.py", "alpha.py", "beta.py"]


def test_check_takes_no_lock_and_writes_nothing(models, tmp_path):
    out = tmp_path / "gen"
    build_mod.build(models, models, out, "locks.toml")
    with build_mod.build_lock(out):
        result = build_mod.build(models, models, out, "locks.toml", check=True)
    assert result.ok and sorted(p.name for p in out.iterdir()) == [
        "__init__.py", "_kernel_runtime.py", "alpha.py", "beta.py"]


def _read_only(monkeypatch, code=errno.EROFS):
    """Simulate a read-only folder (the tests may run as root, who can write anyway)."""
    real_open = os.open

    def refuse_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def refuse_mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "open", refuse_open)
    monkeypatch.setattr(tempfile, "mkstemp", refuse_mkstemp)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_output_gives_a_clear_error_and_keeps_old_files(models, tmp_path, monkeypatch, code):
    out = tmp_path / "gen"
    build_mod.build(models[:1], models[:1], out, "locks.toml")
    before = _tree(out)
    _read_only(monkeypatch, code)
    with pytest.raises(BuildError) as info:
        build_mod.build(models, models, out, "locks.toml")
    assert str(info.value) == f"cannot write to {out}: {os.strerror(code)}"
    monkeypatch.undo()
    assert _tree(out) == before


def test_read_only_but_current_output_still_builds(models, tmp_path, monkeypatch):
    """Nothing to write: an up-to-date read-only folder (an installed package) is fine."""
    out = tmp_path / "gen"
    build_mod.build(models, models, out, "locks.toml")
    _read_only(monkeypatch)
    result = build_mod.build(models, models, out, "locks.toml")
    assert not result.written and len(result.unchanged) == 4


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_really_read_only_folder(models, tmp_path):
    out = tmp_path / "gen"
    build_mod.build(models[:1], models[:1], out, "locks.toml")
    out.chmod(0o555)
    try:
        with pytest.raises(BuildError, match=f"cannot write to {out}: Permission denied"):
            build_mod.build(models, models, out, "locks.toml")
    finally:
        out.chmod(0o755)


def test_output_that_is_a_file_or_under_a_file_gives_a_clear_error(models, tmp_path):
    spec = tmp_path / "locks.toml"
    spec.write_text(SPEC)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BuildError, match=f"cannot write to {blocker}: File exists"):
        build_mod.build(models, models, blocker, "locks.toml")
    out = blocker / "sub"
    result = CliRunner().invoke(cli.main, ["build", "--spec", str(spec), "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: cannot write to {out}: Not a directory" in result.output
    assert blocker.read_text() == "not a folder"
