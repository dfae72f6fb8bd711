"""JAX: ``jax.jit(lax.scan)`` over an epoch of ``steps`` training steps; time reported per step.

The batch pool is stacked into epoch arrays of shape ``(steps, B, n)``: epoch ``e`` holds the
batches of steps ``e*steps .. (e+1)*steps - 1`` of the sequence every peer cycles through, and
the epochs are used in turn. One timed block is one epoch call.
"""

from __future__ import annotations

import math

from benchmarks.configs import Config, make_batches
from benchmarks.peers.jax_step import available  # noqa: F401  (same requirements)
from benchmarks.timing import time_blocks

NAME = "jax_scan"
MAX_EPOCH_BYTES = 256 * 2**20


def measure(config: Config, optimizer: str, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    from benchmarks.peers import _jax_common as jc

    jc.setup(dtype)
    import jax
    import jax.numpy as jnp
    import numpy as np

    step_fn, opt = jc.make_step(config, optimizer)

    def epoch_fn(params, opt_state, xs, ys):
        def body(carry, xy):
            p, s, loss = step_fn(carry[0], carry[1], xy[0], xy[1])
            return (p, s), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    epoch = jax.jit(epoch_fn, donate_argnums=(0, 1))
    state = {"params": jc.initial_params(config, dtype, seed)}
    state["opt"] = opt.init(state["params"])

    pool = make_batches(config, dtype, seed)
    n = len(pool)
    # Epoch e holds steps e*steps .. (e+1)*steps-1 of the same batch sequence the other peers
    # cycle through; lcm(n, steps)/steps epochs make one full cycle (capped by memory).
    epoch_bytes = steps * (pool[0][0].nbytes + pool[0][1].nbytes)
    n_epochs = max(1, min(math.lcm(n, steps) // steps, MAX_EPOCH_BYTES // epoch_bytes))
    epochs = []
    for e in range(n_epochs):
        idx = [(e * steps + k) % n for k in range(steps)]
        epochs.append(
            (jnp.asarray(np.stack([pool[i][0] for i in idx])), jnp.asarray(np.stack([pool[i][1] for i in idx])))
        )
    del pool
    pos = [0]

    def run_block(k: int):
        if k != steps:
            raise ValueError(f"jax_scan: epochs are built for {steps} steps, asked for {k}")
        xs, ys = epochs[pos[0]]
        params, opt_state, losses = epoch(state["params"], state["opt"], xs, ys)
        jax.block_until_ready((params, opt_state, losses))
        state["params"], state["opt"] = params, opt_state
        pos[0] = (pos[0] + 1) % len(epochs)
        return lambda: losses[0]

    out = time_blocks(run_block, steps=steps, repeats=repeats)
    out["version"] = jax.__version__
    out["note"] = f"{len(epochs)} epoch array(s) of {steps} steps"
    if len(epochs) == 1 and steps % n:
        out["loss_after_steps"] = None  # its 2nd block re-used epoch 0: not the common sequence
    return out
