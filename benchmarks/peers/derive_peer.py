"""derive's generated kernels: the whole run in one compiled call (``train``), per step.

Each timed block of k steps is one ``train(..., epochs=1, batch_size=B, shuffle=False)`` call
over the next k batches of the benchmark's pool (stacked once into one array, in order).
"""

from __future__ import annotations

NAME = "derive"


def available() -> str | None:
    try:
        import numba  # noqa: F401
        import sympy  # noqa: F401

        import derive  # noqa: F401
    except ImportError as exc:
        return f"not importable: {exc}"
    return None


def measure(config, optimizer, dtype, *, steps, repeats, seed):
    import time

    import numpy as np

    from benchmarks.configs import init_params, make_batches
    from benchmarks.peers._derive_common import module_for, params_from
    from benchmarks.timing import time_blocks

    t0 = time.perf_counter()
    module = module_for(config, optimizer)
    build_s = time.perf_counter() - t0
    params = params_from(module, init_params(config, dtype, seed))
    state = module.init_state(params)
    pool = make_batches(config, dtype, seed)
    B = config.batch
    tiles = -(-(len(pool) + steps) // len(pool))
    X = np.ascontiguousarray(np.concatenate([x for x, _ in pool] * tiles))
    Y = np.ascontiguousarray(np.concatenate([y for _, y in pool] * tiles))
    pos = [0]
    calls = [0]

    def run_block(k):
        s = pos[0] * B
        first = None
        if calls[0] < 2:  # the loss checks only need the first two blocks' first steps
            first = module.loss(params, X[s:s + B], Y[s:s + B])
        calls[0] += 1
        # grad_norms=False: the per-layer norms are a diagnostic the other peers do not compute
        module.train(params, state, X[s:s + k * B], Y[s:s + k * B], epochs=1, batch_size=B, shuffle=False,
                     grad_norms=False)
        pos[0] = (pos[0] + k) % len(pool)
        return first

    result = time_blocks(run_block, steps=steps, repeats=repeats)
    result["compile_s"] = result.get("first_call_s")
    result["note"] = f"derive: SymPy derivation + render {build_s:.2f} s; first block includes Numba compile"
    return result
