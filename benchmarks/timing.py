"""The one timing loop every peer uses, so that all peers are measured the same way.

A peer wraps its training step in ``run_block(k)``: run ``k`` consecutive training steps (each on
the next mini-batch of the pool), wait until the results are really computed (JAX dispatches
asynchronously), and return the loss of the *first* of those steps: anything ``float()`` takes, or
a zero-argument callable that gives it (so that reading it back costs nothing inside a timed
block; it is called only once, after the first block).
:func:`time_blocks` then

1. calls ``run_block(steps)`` once and records it as ``first_call_s`` (this includes JIT
   compilation and first-touch costs) and its loss as ``first_loss`` (the loss at the initial
   parameters on batch 0, the same for every peer: a cheap cross-check);
2. warms up with more blocks until at least ``min_warmup_s`` and ``min_warmup_blocks`` passed;
   the first of them gives ``loss_after_steps``, the loss of step ``steps + 1`` (after ``steps``
   updates on batches 0 .. steps-1 of the pool): peers that agree on it compute the same
   gradients and updates;
3. with the garbage collector off, times ``repeats`` blocks; each block gives one sample,
   ``block seconds / steps``;
4. returns the median and spread of those per-step samples.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of an already sorted list."""
    if not sorted_xs:
        raise ValueError("percentile of an empty list")
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict:
    """Median, p10, p90 and min of per-step samples (seconds)."""
    xs = sorted(samples)
    return {
        "median_s": statistics.median(xs),
        "p10_s": percentile(xs, 10),
        "p90_s": percentile(xs, 90),
        "min_s": xs[0],
    }


def _value(x) -> float | None:
    if callable(x):
        x = x()
    return None if x is None else float(x)


def time_blocks(
    run_block: Callable[[int], object],
    *,
    steps: int,
    repeats: int,
    min_warmup_s: float = 0.3,
    min_warmup_blocks: int = 2,
    max_seconds: float = 8.0,
    min_repeats: int = 3,
) -> dict:
    """Time ``repeats`` blocks of ``steps`` training steps; see the module docstring.

    ``max_seconds`` bounds a measurement that runs far slower than planned (a machine busy
    with other work): past it, warm-up stops after one block and timing after ``min_repeats``
    samples; ``repeats`` in the result is the number of samples actually taken.

    Returns the keys of :func:`summarize` plus ``steps``, ``repeats``, ``first_call_s``,
    ``warmup_s``, ``first_loss`` and ``loss_after_steps``.
    """
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps and repeats must be >= 1 (got steps={steps}, repeats={repeats})")
    t_begin = time.perf_counter()
    first = run_block(steps)
    first_call_s = time.perf_counter() - t_begin

    t_start = time.perf_counter()
    second = run_block(steps)
    blocks = 1
    while blocks < min_warmup_blocks or time.perf_counter() - t_start < min_warmup_s:
        if time.perf_counter() - t_begin > max_seconds:
            break
        run_block(steps)
        blocks += 1
    warmup_s = time.perf_counter() - t_start

    samples: list[float] = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_block(steps)
            samples.append((time.perf_counter() - t0) / steps)
            if len(samples) >= min_repeats and time.perf_counter() - t_begin > max_seconds:
                break
    finally:
        if was_enabled:
            gc.enable()

    out = summarize(samples)
    out.update(
        steps=steps,
        repeats=len(samples),
        first_call_s=first_call_s,
        warmup_s=warmup_s,
        first_loss=_value(first),
        loss_after_steps=_value(second),
    )
    return out
