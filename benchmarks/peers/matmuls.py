"""Not a training step: one step's matrix products alone, the floor under the medium, large and
multiclass steps.

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


def products(config: Config, dtype: str, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ``(a, b, out)`` of every matmul of one step, in the order a step runs them: the
    forward ``A_{l-1} @ W_l``, then from the last layer down ``A_{l-1}.T @ D_l`` and, for l > 1,
    ``D_l @ W_l.T`` (random data: the time of a matmul does not depend on the values)."""
    rng = np.random.default_rng(seed)
    B = config.batch
    A = [rng.standard_normal((B, n)).astype(dtype) for n in config.sizes]  # A_0 = X, ..., A_L
    D = [rng.standard_normal((B, n)).astype(dtype) for n in config.sizes]  # D_l: rows of layer l
    W = [rng.standard_normal(shape).astype(dtype) for shape in config.layers]
    out = [(A[l], W[l], np.empty((B, W[l].shape[1]), dtype=dtype)) for l in range(len(W))]
    for l in reversed(range(len(W))):
        out.append((A[l].T, D[l + 1], np.empty_like(W[l])))
        if l > 0:
            out.append((D[l + 1], W[l].T, D[l]))
    return out


def measure(config: Config, optimizer: str | None, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    """``steps`` rounds of the step's matmuls per timed block; ``median_s`` is seconds per round."""
    step = products(config, dtype, seed)

    def run_block(k: int) -> None:
        for _ in range(k):
            for a, b, out in step:
                np.matmul(a, b, out=out)

    out = time_blocks(run_block, steps=steps, repeats=repeats)
    out["note"] = f"numpy matmul, the {len(step)} products of one step, nothing else"
    out["version"] = np.__version__
    return out
