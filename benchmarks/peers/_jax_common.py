"""Shared by the two JAX peers: the loss function, the optax optimizer and one training step.

Imported only inside a JAX peer's ``measure`` (it imports jax at top level).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks.configs import OPTIMIZERS, Config, init_params

ACTS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
    "softmax": jax.nn.softmax,  # (only before cross-entropy, which folds it into the loss)
}


def setup(dtype: str) -> None:
    """float64 needs x64 mode; call before creating any array."""
    jax.config.update("jax_enable_x64", dtype == "float64")


def make_loss(config: Config):
    acts = [ACTS[a] for a in config.activations]
    loss = config.loss

    def loss_fn(params, x, y):
        a = x
        for (w, b), act in zip(params[:-1], acts[:-1], strict=True):
            a = act(a @ w + b)
        w, b = params[-1]
        z = a @ w + b
        if loss == "bce":
            # BCE with logits: max(z,0) - z*y + log1p(exp(-|z|))
            return jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))
        if loss == "cross_entropy":
            # softmax folded into the loss, from the logits (log-softmax with the max subtracted);
            # one-hot rows y, mean over the rows
            return jnp.mean(optax.softmax_cross_entropy(z, y))
        return jnp.mean((acts[-1](z) - y) ** 2)

    return loss_fn


def make_optimizer(name: str) -> optax.GradientTransformation:
    spec = OPTIMIZERS[name]
    if spec.name == "sgd":
        return optax.sgd(spec.lr)
    return optax.adam(spec.lr, b1=spec.betas[0], b2=spec.betas[1], eps=spec.eps, eps_root=0.0)


def make_step(config: Config, optimizer: str):
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)`` (not jitted) and the optax opt."""
    loss_fn = make_loss(config)
    opt = make_optimizer(optimizer)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    return step, opt


def initial_params(config: Config, dtype: str, seed: int):
    return [(jnp.asarray(w), jnp.asarray(b)) for w, b in init_params(config, dtype, seed)]
