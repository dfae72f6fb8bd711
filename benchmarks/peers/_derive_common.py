"""Shared by the two derive peers: build (once, cached on disk) the generated module of a
benchmark config, and load the benchmark's initial parameters into it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

#: Generated benchmark modules live here (git-ignored) so Numba's on-disk cache survives
#: the harness's one-subprocess-per-measurement design.
BUILD_DIR = Path(__file__).resolve().parent.parent / "_generated"


def module_for(config, optimizer: str):
    """The generated module for ``config`` trained with the benchmark's ``optimizer``."""
    import derive
    import derive.build
    from benchmarks.configs import OPTIMIZERS

    spec = OPTIMIZERS[optimizer]
    opt = {"name": "sgd", "lr": spec.lr} if optimizer == "sgd" else {
        "name": "adam", "lr": spec.lr, "beta1": spec.betas[0], "beta2": spec.betas[1], "eps": spec.eps}
    layers = [[n, act] for n, act in zip(config.sizes[1:], config.activations)]
    name = f"bench_{config.name}_{optimizer}"
    model = derive.Model(name, config.sizes[0], layers, config.loss, opt)
    path = BUILD_DIR / f"{name}.py"
    files = derive.build.render_all([model], [model], "benchmarks")
    BUILD_DIR.mkdir(exist_ok=True)
    for file in (derive.build.RUNTIME_NAME, f"{name}.py"):  # the module and the kernel runtime it loads
        if not (BUILD_DIR / file).exists() or (BUILD_DIR / file).read_text() != files[file]:
            derive.build.write_atomic(BUILD_DIR / file, files[file])
    spec_ = importlib.util.spec_from_file_location(f"_derive_bench_{name}", path)
    module = importlib.util.module_from_spec(spec_)
    sys.modules[spec_.name] = module
    spec_.loader.exec_module(module)
    return module


def params_from(module, pairs) -> dict:
    """The benchmark's ``[(W, b), ...]`` as the module's parameter dict (copies)."""
    params = {}
    for l, (W, b) in enumerate(pairs, start=1):
        params[f"W{l}"] = np.ascontiguousarray(W).copy()
        params[f"b{l}"] = np.ascontiguousarray(b).copy()
    assert tuple(params) == module.PARAM_NAMES
    return params
