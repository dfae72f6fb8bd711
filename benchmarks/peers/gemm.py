"""The machine's GEMM rate: NumPy (its BLAS, default threads) multiplying two 2048x2048 matrices.

It is the yardstick for the "share of GEMM" column: a training step can at best run its
matmul FLOPs at this rate.
"""

from __future__ import annotations

import numpy as np

from benchmarks.configs import Config
from benchmarks.timing import time_blocks

NAME = "gemm"
N = 2048


def available() -> str | None:
    return None


def measure(config: Config | None, optimizer: str | None, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    """``steps`` matmuls per timed block; ``median_s`` is seconds per matmul."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N, N)).astype(dtype)
    b = rng.standard_normal((N, N)).astype(dtype)
    c = np.empty((N, N), dtype=dtype)

    def run_block(k: int) -> None:
        for _ in range(k):
            np.matmul(a, b, out=c)

    out = time_blocks(run_block, steps=steps, repeats=repeats, min_warmup_blocks=1, min_warmup_s=0.2)
    flops = 2.0 * N**3
    out["gflops"] = flops / out["median_s"] / 1e9
    out["gflops_p10"] = flops / out["p90_s"] / 1e9
    out["gflops_p90"] = flops / out["p10_s"] / 1e9
    out["note"] = f"numpy matmul {N}x{N}"
    out["version"] = np.__version__
    return out
