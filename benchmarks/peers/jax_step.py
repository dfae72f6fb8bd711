"""JAX: ``jax.jit`` of one whole training step (``value_and_grad`` + optax update).

Parameters and optimizer state are donated to the step, so XLA may update them in place.
The batch pool is put on the device once; each block ends with ``block_until_ready``.
"""

from __future__ import annotations

import importlib.util

from benchmarks.configs import Config, make_batches
from benchmarks.timing import time_blocks

NAME = "jax_step"


def available() -> str | None:
    missing = [m for m in ("jax", "jaxlib", "optax") if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def measure(config: Config, optimizer: str, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    from benchmarks.peers import _jax_common as jc

    jc.setup(dtype)
    import jax
    import jax.numpy as jnp

    step_fn, opt = jc.make_step(config, optimizer)
    step = jax.jit(step_fn, donate_argnums=(0, 1))
    state = {"params": jc.initial_params(config, dtype, seed)}
    state["opt"] = opt.init(state["params"])
    pool = [(jnp.asarray(x), jnp.asarray(y)) for x, y in make_batches(config, dtype, seed)]
    n = len(pool)
    pos = [0]

    def run_block(k: int):
        params, opt_state, i = state["params"], state["opt"], pos[0]
        params, opt_state, first = step(params, opt_state, *pool[i])
        for _ in range(k - 1):
            i = (i + 1) % n
            params, opt_state, _ = step(params, opt_state, *pool[i])
        jax.block_until_ready((params, opt_state))
        state["params"], state["opt"], pos[0] = params, opt_state, (i + 1) % n
        return first

    out = time_blocks(run_block, steps=steps, repeats=repeats)
    out["version"] = jax.__version__
    return out
