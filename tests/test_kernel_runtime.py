"""The kernel runtime (derive/kernel_runtime.py, written as generated/_kernel_runtime.py): one file
every model shares, compiled once, whose caches neither go stale nor break the next process.

The process tests work on a copy of a model and the runtime in a folder outside the repository,
with `derive` made unimportable, as a user who copied the two files would have them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from derive.codegen.render import RUNTIME_NAME, runtime_text, runtime_version

ROOT = Path(__file__).resolve().parent.parent

PROBE = r'''
import importlib, importlib.util, json, sys
import numpy as np
how = sys.argv[1]
if how == "import":
    m = importlib.import_module("models.xor")
else:  # the path recipe that does not register the module in sys.modules
    spec = importlib.util.spec_from_file_location("xor", "models/xor.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 2)); Y = (X[:, :1] * X[:, 1:] > 0) * 1.0
p = m.init_params(seed=1); s = m.init_state(p)
r = m.train(p, s, X, Y, epochs=3, batch_size=8, seed=2)
kernels = (m._batch_at.dispatcher, m._rt._train_loop)  # the model's step, the runtime's loop
print(json.dumps({"loss": r["loss"].tolist(), "grad_norm": r["grad_norm"].tolist(), "W1": p["W1"].tolist(),
                  "hits": sum(sum(d.stats.cache_hits.values()) for d in kernels),
                  "misses": sum(sum(d.stats.cache_misses.values()) for d in kernels)}))
'''


def _probe(folder: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "probe.py", how], cwd=folder, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHONPATH"))})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """models/xor.py and models/_kernel_runtime.py copied into a fresh project folder."""
    folder = tmp_path_factory.mktemp("project")
    models = folder / "models"
    models.mkdir()
    (models / "__init__.py").write_text("")
    for name in ("xor.py", RUNTIME_NAME):
        (models / name).write_text((ROOT / "generated" / name).read_text())
    (folder / "derive.py").write_text("raise ImportError('a copied model must not need derive')\n")
    (folder / "probe.py").write_text(PROBE)
    return folder


def test_the_runtime_is_written_verbatim_and_every_module_records_it():
    text = runtime_text()
    assert (ROOT / "generated" / RUNTIME_NAME).read_text() == text
    abi, sha = runtime_version()
    assert sha == hashlib.sha256(text.encode()).hexdigest()[:16]
    import generated
    import generated._kernel_runtime as rt

    assert (rt.ABI, rt.SHA) == (abi, sha)
    for name in generated.MODELS:
        head = (ROOT / "generated" / f"{name}.py").read_text()
        assert f"RUNTIME = ({abi}, \"{sha}\")" in head and f"runtime={sha}" in head, name


def test_a_model_meeting_another_runtime_refuses_to_import_saying_what_to_run():
    import generated._kernel_runtime as rt

    with pytest.raises(ImportError, match=r"generated\.xor was built with derive's kernel runtime 0000.*run `derive "
                                          r"build`"):
        rt.check(rt.ABI, "0000000000000000", "generated.xor")
    with pytest.raises(ImportError, match="interface 999"):
        rt.check(999, rt.SHA, "generated.xor")


def test_shared_products_called_from_python_and_from_a_kernel_agree(generated):
    """The primitive a kernel calls (by the stable symbol) and the runtime's own function."""
    import numba

    import generated._kernel_runtime as rt

    rng = np.random.default_rng(3)
    A, B, b = rng.normal(size=(13, 5)), rng.normal(size=(5, 9)), rng.normal(size=9)
    C1, C2, C3 = np.empty((13, 9)), np.empty((13, 9)), np.empty((13, 9))
    rt._mm(A, B, b, C1)
    rt.mm(A, B, b, C2)

    @numba.njit(_nrt=False)
    def kernel(A, B, b, C):
        rt.mm(A, B, b, C)

    kernel(A, B, b, C3)
    np.testing.assert_array_equal(C1, C2)
    np.testing.assert_array_equal(C1, C3)
    assert any(name.startswith(f"derive_{rt.SHA}_mm_float64x2") for name in rt._LINKED if isinstance(name, str))
    with pytest.raises(ValueError, match="mismatched"):  # an exception raised in shared code reaches the caller
        kernel(A, B, b[:3], C3)


def test_adopt_registers_a_module_loaded_without_sys_modules_and_guards_its_caches(tmp_path):
    import numba

    import generated._kernel_runtime as rt

    path = tmp_path / "loose.py"
    path.write_text("import numba\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("_derive_test_loose", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not registered: Numba would record the module '<dynamic>'
    assert "_derive_test_loose" not in sys.modules
    try:
        rt.adopt(module.__dict__)
        assert sys.modules["_derive_test_loose"] is module
        cache = module.f._cache
        assert cache._derive_guarded
        broken = types.SimpleNamespace(load_overload=lambda sig, ctx: (_ for _ in ()).throw(
            ModuleNotFoundError("No module named '<dynamic>'")))
        module.f._cache = broken
        rt._guard(module.f, save=True)
        assert module.f._cache.load_overload((numba.int64,), None) is None  # a miss, not an error
    finally:
        sys.modules.pop("_derive_test_loose", None)


def test_a_copied_pair_caches_reloads_and_survives_every_way_of_loading(copied):
    """One process compiles; the next loads the cache (hits, no misses) and gets the same numbers.
    Then the bug found by trying it as a new user would: the path recipe without sys.modules
    (twice), then a plain import, each in a new process: no '<dynamic>' cache, same numbers."""
    first = _probe(copied, "import")
    second = _probe(copied, "import")
    assert second["hits"] >= 1 and second["misses"] == 0, second
    assert second["loss"] == first["loss"] and second["W1"] == first["W1"]
    for how in ("path", "path", "import"):
        again = _probe(copied, how)
        assert again["loss"] == first["loss"] and again["W1"] == first["W1"], how


def test_a_changed_runtime_is_never_run_stale_and_a_mismatched_pair_refuses(copied):
    """A runtime whose gradient norm is doubled, with the model rebuilt for it (only the runtime's
    hash changes in the model): the next process runs the new code, not the cached old one. A
    model beside a runtime it was not built with refuses to import, naming `derive build`."""
    models = copied / "models"
    before = _probe(copied, "import")
    old_text, old_model = (models / RUNTIME_NAME).read_text(), (models / "xor.py").read_text()
    old_sha = hashlib.sha256(old_text.encode()).hexdigest()[:16]
    assert "    return math.sqrt(acc)\n" in old_text
    new_text = old_text.replace("    return math.sqrt(acc)\n", "    return 2.0 * math.sqrt(acc)\n")
    new_sha = hashlib.sha256(new_text.encode()).hexdigest()[:16]
    try:
        (models / RUNTIME_NAME).write_text(new_text)
        out = subprocess.run([sys.executable, "probe.py", "import"], cwd=copied, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode != 0
        assert "ImportError" in out.stderr and "run `derive build`" in out.stderr
        assert out.stderr.count("Traceback") == 1 and "numba" not in out.stderr.splitlines()[-1]
        (models / "xor.py").write_text(old_model.replace(old_sha, new_sha))
        after = _probe(copied, "import")
        assert after["loss"] == before["loss"]
        np.testing.assert_allclose(after["grad_norm"], 2 * np.array(before["grad_norm"]), rtol=1e-12)
    finally:
        (models / RUNTIME_NAME).write_text(old_text)
        (models / "xor.py").write_text(old_model)


def test_a_model_step_linked_first_links_what_it_calls_without_deadlock(copied, tmp_path):
    """Linking a separate kernel compiles it; its lowering links the kernels and products it
    calls, re-entering the link lock (a plain lock hung here): first thing in a process, with an
    empty cache (so that everything compiles), then one step through the address."""
    script = ("import numpy as np, importlib\n"
              "m = importlib.import_module('models.xor')\n"
              "print(m._batch_at.address(np.float64) > 0)\n"
              "p = m.init_params(0); r = m.train(p, m.init_state(p), np.ones((4, 2)), np.ones((4, 1)))\n"
              "print(r['status'])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHONPATH"))}
    out = subprocess.run([sys.executable, "-c", script], cwd=copied, capture_output=True, text=True, timeout=300,
                         env={**env, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-2:] == ["True", "ok"]


def test_train_calls_in_turn_use_each_call_s_arrays_and_hyperparameters():
    """train() keeps the last call's table of array addresses and its hyperparameter array for
    the next call with the same arrays: calls on two models' parameters in turn, with their own
    learning rates, must equal each run trained alone."""
    import generated.xor_adam as m

    rng = np.random.default_rng(5)
    X = rng.normal(size=(24, 2))
    Y = (X[:, :1] * X[:, 1:] > 0) * 1.0

    def alone(seed, lr):
        p = m.init_params(seed)
        m.train(p, m.init_state(p), X, Y, epochs=3, batch_size=8, seed=seed, lr=lr)
        return p

    expected = [alone(0, 0.01), alone(1, 0.05)]
    runs = [(m.init_params(seed), lr) for seed, lr in ((0, 0.01), (1, 0.05))]
    states = [m.init_state(p) for p, _ in runs]
    for _ in range(3):
        for k, (p, lr) in enumerate(runs):
            m.train(p, states[k], X, Y, epochs=1, batch_size=8, seed=k, lr=lr)
    for (p, _), q in zip(runs, expected):
        for name in m.PARAM_NAMES:
            np.testing.assert_array_equal(p[name], q[name])


def test_a_module_rebuilt_at_the_same_path_trains_with_its_own_kernels(tmp_path):
    """The separate kernels' symbols are named by the module file's content: a model rebuilt with
    another loss at the same path and imported again in the same process (a notebook) must train
    with the new kernels, not find the old module's symbols under the old name."""
    from derive.codegen.render import render_module
    from derive.derivation import derive_model
    from derive.spec import Dense, Model

    from .conftest import load_rendered

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    for loss in ("mse", "mae"):
        model = Model("rebuilt", 3, [Dense(4, "tanh"), Dense(2, "identity")], loss)
        m = load_rendered(render_module(derive_model(model)), model.name, tmp_path)
        p = m.init_params(seed=1)
        residual = m.forward(p, X) - Y
        want = np.mean(residual ** 2) if loss == "mse" else np.mean(np.abs(residual))
        r = m.train(p, m.init_state(p), X, Y, epochs=1, batch_size=6, shuffle=False)
        assert r["loss"][0] == pytest.approx(want, rel=1e-12), loss
