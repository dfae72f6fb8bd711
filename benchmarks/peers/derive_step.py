"""derive's generated ``step`` called from Python once per mini-batch (the per-call API)."""

from __future__ import annotations

from benchmarks.peers.derive_peer import available  # noqa: F401  (same requirements)

NAME = "derive_step"


def measure(config, optimizer, dtype, *, steps, repeats, seed):
    from benchmarks.configs import init_params, make_batches
    from benchmarks.peers._derive_common import module_for, params_from
    from benchmarks.timing import time_blocks

    module = module_for(config, optimizer)
    params = params_from(module, init_params(config, dtype, seed))
    state = module.init_state(params)
    pool = make_batches(config, dtype, seed)
    pos = [0]

    def run_block(k):
        first = None
        for j in range(k):
            x, y = pool[(pos[0] + j) % len(pool)]
            value = module.step(params, state, x, y)
            first = value if j == 0 else first
        pos[0] = (pos[0] + k) % len(pool)
        return first

    return time_blocks(run_block, steps=steps, repeats=repeats)
