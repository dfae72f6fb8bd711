"""Not a training step: one step's matrix products alone, the floor under the medium and large steps.

A training step of every peer does the matmuls that :func:`benchmarks.configs.flops_per_step`
counts: per layer ``Z_l = A_{l-1} @ W_l`` and ``dW_l = A_{l-1}.T @ D_l``, and ``D_{l-1} = D_l @
W_l.T`` for every layer but the first. This "peer" runs exactly those products on the config's
shapes with NumPy's ``matmul`` into preallocated outputs (its BLAS, default threads) and nothing
else: no bias, activation, loss, update or batch handling. So no step that uses this BLAS for
its products can be faster; derive's kernels call the same OpenBLAS (SciPy's build, through
Numba), PyTorch and JAX call their own libraries.

The report treats it as a bound (:data:`benchmarks.peers.BOUNDS`): it is never the "best
other peer", and each group says how much of a step's time lies outside its matmuls. The
harness plans it only for configs whose matmuls are the bulk of a step (at least the FLOPs
given in ``BOUNDS``); below that a step costs more in call overheads than in arithmetic, and
five NumPy calls alone take longer than derive's whole tiny step.
"""

from __future__ import annotations

import numpy as np

from benchmarks.configs import Config
from benchmarks.timing import time_blocks

NAME = "matmuls"


def available() -> str | None:
    return None


def measure(config: Config, optimizer: str | None, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    """``steps`` rounds of the step's matmuls per timed block; ``median_s`` is seconds per round."""
    rng = np.random.default_rng(seed)
    B = config.batch
    layers = config.layers
    A = [rng.standard_normal((B, n)).astype(dtype) for n in config.sizes]  # A_0 = X, ..., A_L
    D = [rng.standard_normal((B, n)).astype(dtype) for n in config.sizes]  # D_l: rows of layer l
    W = [rng.standard_normal((n_in, n_out)).astype(dtype) for n_in, n_out in layers]
    Z = [np.empty((B, n_out), dtype=dtype) for _, n_out in layers]
    G = [np.empty_like(w) for w in W]

    def run_block(k: int) -> None:
        for _ in range(k):
            for l in range(len(layers)):
                np.matmul(A[l], W[l], out=Z[l])
            for l in reversed(range(len(layers))):
                np.matmul(A[l].T, D[l + 1], out=G[l])
                if l > 0:
                    np.matmul(D[l + 1], W[l].T, out=D[l])

    out = time_blocks(run_block, steps=steps, repeats=repeats)
    out["note"] = f"numpy matmul, the {3 * len(layers) - 1} products of one step, nothing else"
    out["version"] = np.__version__
    return out
