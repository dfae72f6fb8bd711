"""Benchmark configurations, optimizer settings, FLOP counts and shared problem data.

Every peer trains the *same* problem: the same layer sizes, the same initial parameters
(:func:`init_params`) and the same pool of mini-batches (:func:`make_batches`), so their
first-step losses agree and their times are comparable.

Conventions shared by all peers
-------------------------------
* Weight layout: ``W`` has shape ``(n_in, n_out)`` and ``Z = A @ W + b``.
* Losses use mean reduction over **all** elements (``B * n_out``), like torch; except the
  cross-entropy, which is a mean over the ``B`` rows (torch's ``F.cross_entropy``).
* BCE after a sigmoid output is computed from the logits (the BCEWithLogits form
  ``max(z, 0) - z*y + log1p(exp(-|z|))``); its gradient is ``(sigmoid(z) - y) / (B*n_out)``.
* MSE is ``mean((a - y)**2)``.
* Cross-entropy after a softmax output (the only place softmax may be) is computed from the
  logits with the row max subtracted: ``mean_rows(sum_j y_j (lse - z_j))`` with ``lse = m +
  log(sum_k exp(z_k - m))``, ``m = max_k z_k``; targets are one-hot rows; its gradient with
  respect to the logits is ``(softmax(z) - y) / B``.
* Optimizers follow torch semantics (``torch.optim.SGD`` without momentum, ``torch.optim.Adam``);
  ``optax.sgd`` / ``optax.adam`` (``eps_root=0``) are the same equations.

FLOP count (:func:`flops_per_step`)
-----------------------------------
A matmul of ``(B, n_in) @ (n_in, n_out)`` costs ``2*B*n_in*n_out`` FLOPs. One training step
of a dense network with layers ``l = 1..L`` does, per layer,

* forward ``Z_l = A_{l-1} @ W_l``                -- ``2*B*n_in*n_out``
* weight gradient ``dW_l = A_{l-1}.T @ dZ_l``     -- ``2*B*n_in*n_out``
* input gradient ``dA_{l-1} = dZ_l @ W_l.T``     -- ``2*B*n_in*n_out``, *except for layer 1*
  (nobody needs the gradient with respect to the input data).

So ``flops = 2*B * sum_l(n_in*n_out) * 3 - 2*B*(n_in_1*n_out_1)``. Elementwise work
(bias, activations, loss, optimizer update) is not counted: it is O(B*n) or O(params), small
next to the matmuls for the medium and large configs and the reason the tiny ones are
overhead-bound anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "softmax")
LOSSES = ("bce", "mse", "cross_entropy")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Config:
    """One benchmark network: ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``activations[i]`` is applied after layer ``i+1`` (so ``len(activations) == len(sizes)-1``).
    ``steps`` (training steps per timed repeat) and ``repeats`` (timed repeats) are the
    defaults of a full run; ``--quick`` scales them down.
    """

    name: str
    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str
    batch: int
    steps: int = 100
    repeats: int = 21

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or len(self.activations) != len(self.sizes) - 1:
            raise ValueError(f"config {self.name!r}: need len(activations) == len(sizes) - 1")
        bad = [a for a in self.activations if a not in ACTIVATIONS]
        if bad:
            raise ValueError(f"config {self.name!r}: unknown activation(s) {bad}; use {ACTIVATIONS}")
        if self.loss not in LOSSES:
            raise ValueError(f"config {self.name!r}: unknown loss {self.loss!r}; use {LOSSES}")
        if self.loss == "bce" and self.activations[-1] != "sigmoid":
            raise ValueError(f"config {self.name!r}: BCE needs a sigmoid output (BCE-with-logits form)")
        if (self.loss == "cross_entropy") != (self.activations[-1] == "softmax") or "softmax" in self.activations[:-1]:
            raise ValueError(f"config {self.name!r}: cross_entropy goes with a softmax output layer, and softmax "
                             "only there")

    @property
    def layers(self) -> list[tuple[int, int]]:
        """``(n_in, n_out)`` of each dense layer."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in self.layers)

    def describe(self) -> str:
        """e.g. ``"2-8-1 tanh/sigmoid BCE b32"``, ``"64-128-10 relu/softmax CE b64"``."""
        shape = "-".join(str(s) for s in self.sizes)
        loss = {"cross_entropy": "CE"}.get(self.loss, self.loss.upper())
        return f"{shape} {'/'.join(self.activations)} {loss} b{self.batch}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Config:
        d = dict(d)
        d["sizes"] = tuple(d["sizes"])
        d["activations"] = tuple(d["activations"])
        return cls(**d)


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("tiny", (2, 8, 1), ("tanh", "sigmoid"), "bce", 32, steps=200, repeats=21),
        Config("small", (10, 32, 1), ("relu", "sigmoid"), "bce", 64, steps=200, repeats=21),
        Config("medium", (64, 128, 128, 1), ("relu", "relu", "identity"), "mse", 128, steps=40, repeats=15),
        Config("large", (784, 512, 256, 10), ("relu", "relu", "sigmoid"), "mse", 256, steps=8, repeats=11),
        Config("multiclass", (64, 128, 10), ("relu", "softmax"), "cross_entropy", 64, steps=100, repeats=21),
    )
}


@dataclass(frozen=True)
class OptimizerSpec:
    """Hyper-parameters of one optimizer, torch semantics (no momentum, no weight decay)."""

    name: str
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("sgd", lr=0.01),
    "adam": OptimizerSpec("adam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
}


def flops_per_step(config: Config) -> int:
    """Matmul FLOPs of one training step (see the module docstring for the rule)."""
    per_layer = [2 * config.batch * n_in * n_out for n_in, n_out in config.layers]
    return 3 * sum(per_layer) - per_layer[0]


# --------------------------------------------------------------------------- shared data

N_BATCHES = 64
"""Size of the pool of pre-generated mini-batches every peer cycles through."""


def init_params(config: Config, dtype: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial ``(W, b)`` per layer; W ~ U(-k, k) with k = sqrt(6/(n_in+n_out)) (Glorot), b small.

    Generated in float64 from ``seed`` and cast, so both dtypes start from the same point.
    """
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out in config.layers:
        k = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-k, k, size=(n_in, n_out))
        b = rng.uniform(-0.1, 0.1, size=(n_out,))
        out.append((np.ascontiguousarray(w, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)))
    return out


def make_batches(config: Config, dtype: str, seed: int, n: int = N_BATCHES) -> list[tuple[np.ndarray, np.ndarray]]:
    """A pool of ``n`` random ``(X, Y)`` mini-batches, C-contiguous, of ``dtype``.

    X ~ N(0, 1). Y: {0, 1} for BCE, one-hot rows of uniform random classes for cross-entropy,
    U(0, 1) for an MSE on a sigmoid output, N(0, 1) otherwise.
    """
    rng = np.random.default_rng(seed + 1_000_003)
    b, n_in, n_out = config.batch, config.sizes[0], config.sizes[-1]
    pool = []
    for _ in range(n):
        x = rng.standard_normal((b, n_in))
        if config.loss == "bce":
            y = (rng.random((b, n_out)) < 0.5).astype(np.float64)
        elif config.loss == "cross_entropy":
            y = np.eye(n_out)[rng.integers(0, n_out, size=b)]
        elif config.activations[-1] == "sigmoid":
            y = rng.random((b, n_out))
        else:
            y = rng.standard_normal((b, n_out))
        pool.append((np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(y, dtype=dtype)))
    return pool


def select(names: list[str] | None, known: dict | tuple, what: str) -> list[str]:
    """Validate a user's list of names against ``known`` (keeps ``known``'s order)."""
    if not names:
        return list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}; choose from {', '.join(known)}")
    return [k for k in known if k in names]
