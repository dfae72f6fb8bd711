"""Peers: the implementations ``derive bench`` times side by side.

The peer interface
==================
A peer is one module in this package. It must be cheap to import: import heavy libraries
(torch, jax, numba, generated kernels) *inside* its functions, never at module top level,
because the harness process must not start their thread pools. Each peer is run by
``benchmarks.worker`` in its own fresh subprocess, one (peer, config, optimizer, dtype) group
per process.

A peer module defines::

    NAME: str
        The peer's name in reports (e.g. ``"numpy"``).

    def available() -> str | None:
        None if the peer can run here, else a short reason ("torch not installed").
        A peer that is not available is reported as *skipped*, not as an error.

    def measure(config: Config | None, optimizer: str, dtype: str, *,
                steps: int, repeats: int, seed: int) -> dict:
        Train ``config`` (a :class:`benchmarks.configs.Config`) with ``optimizer``
        ("sgd" | "adam"; hyper-parameters in ``benchmarks.configs.OPTIMIZERS``) in
        ``dtype`` ("float32" | "float64"), starting from
        ``benchmarks.configs.init_params(config, dtype, seed)`` and cycling through the batch
        pool ``benchmarks.configs.make_batches(config, dtype, seed)`` (a new mini-batch every
        step). Time it with ``benchmarks.timing.time_blocks(run_block, steps=steps,
        repeats=repeats)`` and return its dict (plus any extra keys).

The result dict
---------------
Required:
    ``median_s``  median seconds per training step (forward + loss + backward + update)
    ``p10_s``, ``p90_s``  10th / 90th percentile of the per-step samples (seconds)
Filled in by ``time_blocks`` (keep them):
    ``min_s``, ``steps``, ``repeats`` (samples actually taken),
    ``first_call_s``  seconds of the first block of ``steps`` steps (includes JIT compilation),
    ``warmup_s``  seconds spent warming up after it,
    ``first_loss``  loss of the very first step (initial params, batch 0),
    ``loss_after_steps``  loss of step ``steps + 1`` (after ``steps`` updates on batches
                    0 .. steps-1 of the pool).
    The report checks that all peers agree on both losses (same forward pass, same gradients
    and updates), so ``run_block`` must walk the pool in order from batch 0.
Optional:
    ``compile_s``  compile time measured separately, ``note`` a remark,
    ``version``  version string of the library the peer times.

The peer named ``gemm`` is special: the harness runs it once per dtype with ``config=None``
and ``optimizer=None``, and it returns ``gflops`` (the machine's GEMM rate). The peers in
:data:`BOUNDS` time a floor, not a step: they follow the interface (their ``first_loss`` is
None) but are never compared as peers.

Skeleton (``benchmarks/peers/numpy_peer.py`` is a complete example)::

    NAME = "mypeer"

    def available():
        return None

    def measure(config, optimizer, dtype, *, steps, repeats, seed):
        from benchmarks.configs import init_params, make_batches
        from benchmarks.timing import time_blocks
        model = build(config, optimizer, dtype, init_params(config, dtype, seed))
        pool = make_batches(config, dtype, seed)
        pos = [0]

        def run_block(k):
            first = None
            for j in range(k):
                x, y = pool[(pos[0] + j) % len(pool)]
                loss = model.step(x, y)
                first = loss if j == 0 else first
            pos[0] = (pos[0] + k) % len(pool)
            return first          # or a zero-argument callable returning it

        return time_blocks(run_block, steps=steps, repeats=repeats)

Registering a peer
------------------
Add it to :data:`PEERS` (name -> module), or simply drop a module in this package: any module
not listed whose name does not start with ``_`` is discovered under its module name.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from pathlib import Path

PEERS: dict[str, str] = {
    "gemm": "benchmarks.peers.gemm",
    "derive": "benchmarks.peers.derive_peer",
    "derive_step": "benchmarks.peers.derive_step",
    "numpy": "benchmarks.peers.numpy_peer",
    "torch_eager": "benchmarks.peers.torch_eager",
    "jax_step": "benchmarks.peers.jax_step",
    "jax_scan": "benchmarks.peers.jax_scan",
    "matmuls": "benchmarks.peers.matmuls",
}
"""Known peers in report order: name -> module. ``derive`` is provided by the project."""

BOUNDS: dict[str, int] = {"matmuls": 1_000_000}
"""Peers that time a lower bound instead of a training step (``matmuls``: the step's matrix
products alone), each with the least matmul FLOPs per step of the configs it is planned for.
The report never counts them as the best peer."""


def all_peers() -> dict[str, str]:
    """:data:`PEERS` plus any other module found in this package (by its module name)."""
    peers = dict(PEERS)
    known_modules = set(PEERS.values())
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        module = f"{__name__}.{info.name}"
        if info.name.startswith("_") or module in known_modules:
            continue
        peers[info.name] = module
    return peers


def module_exists(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
