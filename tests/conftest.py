"""Shared fixtures: the catalogue, generated modules (compiled once per session), a module
loader for models rendered on the fly, and a verify_grad-style finite-difference checker."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "derive.toml"
# Models built from Python specs (fit(Model(...)), the scikit-learn estimators, sweeps) go to one
# cache folder for the whole run, shared by the workers (builds into it take a lock), not the
# user's ~/.cache/derive; a process imports its derive_models package from one folder only.
os.environ.setdefault("DERIVE_CACHE_DIR", str(ROOT / ".cache" / "derive-tests"))
CATALOGUE_NAMES = ("linear", "logistic", "xor", "regression", "deep_sigmoid", "activations", "iris", "digits", "spiral")


@pytest.fixture(scope="session")
def catalogue():
    from derive.spec import load_catalogue

    return load_catalogue(CATALOGUE)


@pytest.fixture(scope="session")
def generated():
    """name -> the committed generated module (Numba compiles once per session, cached)."""
    return {name: importlib.import_module(f"generated.{name}") for name in CATALOGUE_NAMES}


def load_rendered(text: str, name: str, folder: Path):
    """Import a module rendered into ``folder`` under a unique name (by its file path, as a
    top-level module: it loads the kernel runtime written beside it)."""
    from derive.codegen.render import RUNTIME_NAME, runtime_text, runtime_version

    (folder / RUNTIME_NAME).write_text(runtime_text())
    # A module loaded by path uses the runtime registered under _kernel_runtime_<sha> when there is
    # one: the committed package's, whose compiled code (cached beside it) every test then shares,
    # instead of compiling the same runtime again in each test's folder.
    shared = importlib.import_module("generated._kernel_runtime")
    sys.modules.setdefault(f"_kernel_runtime_{runtime_version()[1]}", shared)
    path = folder / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"_derive_test_{name}_{id(folder)}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pure_python(module):
    """Swap the module's Numba kernels for their Python functions (no compilation): the same
    generated source, run by the interpreter. Nested kernel calls resolve to the swapped names."""
    for attr in ("_forward", "_loss", "_backward", "_penalty", "_regularize", "_factors", "_update_one", "_update",
                 "_batch_step", "_step", "_batch_at"):
        kernel = getattr(module, attr, None)
        if kernel is not None and hasattr(kernel, "py_func"):
            setattr(module, attr, kernel.py_func)
    module._api.KERNELS = ()  # nothing compiled to link: the kernels above now run as Python
    return module


def random_problem(module, n=7, seed=0, dtype=np.float64):
    """Parameters, inputs and targets (in [0, 1], valid for BCE and MSE; rows of probabilities for
    softmax models) from a seeded RNG."""
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed, dtype=dtype)
    for k in params:  # non-zero biases so every term is exercised
        if k.startswith("b"):
            params[k] = rng.normal(0, 0.3, size=params[k].shape).astype(dtype)
    X = rng.normal(size=(n, module.SPEC["inputs"])).astype(dtype)
    Y = rng.uniform(size=(n, module.SPEC["layers"][-1][0]))
    if getattr(module, "TARGETS", None) == "distribution":  # softmax: rows of class probabilities
        Y /= Y.sum(axis=1, keepdims=True)
    return params, X, Y.astype(dtype)


def verify_grad(module, params, X, Y, rtol, seed=0):
    """Finite differences along a random direction (PyTensor's verify_grad idea): the
    directional derivative of the loss must match <grad, direction>. Raises with the
    parameter whose own direction disagrees most."""
    rng = np.random.default_rng(seed)
    grads = module.gradients(params, X, Y)
    dtype = X.dtype
    h = 1e-6 if dtype == np.float64 else 1e-2
    for name in params:
        u = rng.normal(size=params[name].shape)
        u /= np.linalg.norm(u)
        plus = {k: v.copy() for k, v in params.items()}
        minus = {k: v.copy() for k, v in params.items()}
        plus[name] = (params[name].astype(np.float64) + h * u).astype(dtype)
        minus[name] = (params[name].astype(np.float64) - h * u).astype(dtype)
        fd = (module.loss(plus, X, Y) - module.loss(minus, X, Y)) / (2 * h)
        analytic = float(np.sum(grads[name].astype(np.float64) * u))
        scale = max(abs(fd), abs(analytic), 1e-3 if dtype == np.float64 else 1e-2)
        assert abs(fd - analytic) <= rtol * scale, (
            f"{module.SPEC['name']}: gradient of {name} ({dtype.__name__}) disagrees with finite "
            f"differences: analytic {analytic!r}, numeric {fd!r}")
