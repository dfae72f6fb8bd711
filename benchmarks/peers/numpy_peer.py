"""Hand-written NumPy training step: a fair baseline written the way a careful person would.

* All parameters live in one flat array (``W`` and ``b`` of each layer are views into it) and
  all gradients in another, so the optimizer update is a handful of whole-array operations.
* Every intermediate buffer is preallocated for the batch size and written with ``out=``.
* Activation derivatives are taken from the activation's output (tanh' = 1 - a^2,
  sigmoid' = a(1 - a), relu' = [a > 0]).
* BCE after a sigmoid is computed from the logits; sigmoid is ``0.5*(1 + tanh(z/2))``, which
  cannot overflow.
* Softmax (output layer only, with cross-entropy) subtracts each row's max logit ``m`` before
  ``exp``; the cross-entropy is computed from the logits, ``mean_rows(sum_j y_j (lse - z_j))``
  with ``lse = m + log(sum_k exp(z_k - m))``, and its gradient with respect to the logits is
  ``(softmax(z) - y) / B`` (target rows sum to 1).
"""

from __future__ import annotations

import numpy as np

from benchmarks.configs import OPTIMIZERS, Config, OptimizerSpec, init_params, make_batches
from benchmarks.timing import time_blocks

NAME = "numpy"


def available() -> str | None:
    return None


def _sigmoid(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def _activate(name: str, z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = f(z)``; ``out`` may be ``z``."""
    if name == "relu":
        np.maximum(z, 0.0, out=out)
    elif name == "tanh":
        np.tanh(z, out=out)
    elif name == "sigmoid":
        _sigmoid(z, out)
    elif name == "softmax":
        raise ValueError("softmax is a row-wise activation: use _softmax")
    elif out is not z:
        out[...] = z
    return out


def _softmax(z: np.ndarray, out: np.ndarray, row_max: np.ndarray, row_sum: np.ndarray) -> np.ndarray:
    """``out = softmax(z)`` row by row, the row max subtracted; leaves ``row_max`` (B, 1) and the
    row sums of ``exp(z - row_max)`` in ``row_sum`` (B, 1), from which the loss takes ``lse``."""
    np.max(z, axis=1, keepdims=True, out=row_max)
    np.subtract(z, row_max, out=out)
    np.exp(out, out=out)
    np.sum(out, axis=1, keepdims=True, out=row_sum)
    out /= row_sum
    return out


class NumpyMLP:
    """A dense network with preallocated buffers for one batch size.

    ``flat`` holds all parameters (layer by layer: W row-major, then b); ``grad`` the gradients
    of the last :meth:`step` in the same layout.
    """

    def __init__(
        self,
        config: Config,
        dtype: str,
        params: list[tuple[np.ndarray, np.ndarray]],
        optimizer: OptimizerSpec,
    ):
        self.config = config
        self.acts = config.activations
        self.opt = optimizer
        dt = np.dtype(dtype)
        self.flat = np.empty(config.n_params, dtype=dt)
        self.grad = np.empty_like(self.flat)
        self.W, self.b, self.gW, self.gb = [], [], [], []
        off = 0
        for (n_in, n_out), (w, b) in zip(config.layers, params, strict=True):
            for store, gstore, shape in ((self.W, self.gW, (n_in, n_out)), (self.b, self.gb, (n_out,))):
                size = int(np.prod(shape))
                store.append(self.flat[off : off + size].reshape(shape))
                gstore.append(self.grad[off : off + size].reshape(shape))
                off += size
            self.W[-1][...] = w
            self.b[-1][...] = b
        B = config.batch
        # A[l]: output of layer l (the pre-activation Z is overwritten in place, except for
        # the last layer whose logits are kept in ``z_out``).
        self.A = [np.empty((B, n_out), dtype=dt) for _, n_out in config.layers]
        self.z_out = np.empty((B, config.sizes[-1]), dtype=dt)
        # dA[l]: gradient w.r.t. the output of hidden layer l (becomes dZ in place).
        self.dA = [np.empty((B, n_out), dtype=dt) for _, n_out in config.layers[:-1]]
        self.tmp = [np.empty((B, n_out), dtype=dt) for _, n_out in config.layers[:-1]]
        self.mask = [np.empty((B, n_out), dtype=bool) for _, n_out in config.layers[:-1]]
        self.d_out = np.empty((B, config.sizes[-1]), dtype=dt)
        self.t_out = np.empty((B, config.sizes[-1]), dtype=dt)
        self.n_out_elems = B * config.sizes[-1]
        self.row_max = np.empty((B, 1), dtype=dt)  # softmax: each row's max logit, then its lse
        self.row_sum = np.empty((B, 1), dtype=dt)
        if optimizer.name == "adam":
            self.m = np.zeros_like(self.flat)
            self.v = np.zeros_like(self.flat)
            self.u = np.empty_like(self.flat)
            self.t = 0
        elif optimizer.name != "sgd":
            raise ValueError(f"numpy peer: unknown optimizer {optimizer.name!r}")

    # ------------------------------------------------------------------ forward / loss
    def _forward(self, x: np.ndarray) -> None:
        a = x
        last = len(self.W) - 1
        for l, (w, b, act) in enumerate(zip(self.W, self.b, self.acts, strict=True)):
            z = self.z_out if l == last else self.A[l]
            np.matmul(a, w, out=z)
            z += b
            if act == "softmax":
                _softmax(z, self.A[l], self.row_max, self.row_sum)
            else:
                _activate(act, z, self.A[l])
            a = self.A[l]

    def _loss_and_output_delta(self, y: np.ndarray) -> float:
        """Loss value; leaves dL/dZ of the output layer in ``self.d_out``."""
        n = self.n_out_elems
        z, a, d, t = self.z_out, self.A[-1], self.d_out, self.t_out
        if self.config.loss == "cross_entropy":
            # loss = mean over rows of sum_j y_j (lse - z_j), lse = m + log(sum_k exp(z_k - m));
            # dL/dz = (softmax(z) - y) / B
            lse = self.row_max
            np.log(self.row_sum, out=self.row_sum)
            lse += self.row_sum
            np.subtract(lse, z, out=t)
            t *= y
            B = z.shape[0]
            loss = float(t.sum()) / B
            np.subtract(a, y, out=d)
            d *= 1.0 / B
            return loss
        if self.config.loss == "bce":
            # loss = mean(max(z,0) - z*y + log1p(exp(-|z|))); dL/dz = (sigmoid(z) - y)/n
            np.abs(z, out=t)
            np.negative(t, out=t)
            np.exp(t, out=t)
            np.log1p(t, out=t)
            np.multiply(z, y, out=d)
            t -= d
            np.maximum(z, 0.0, out=d)
            t += d
            loss = float(t.sum()) / n
            np.subtract(a, y, out=d)
            d *= 1.0 / n
            return loss
        # MSE: loss = mean((a - y)^2); dL/da = 2 (a - y) / n
        np.subtract(a, y, out=d)
        flat_d = d.reshape(-1)
        loss = float(np.dot(flat_d, flat_d)) / n
        d *= 2.0 / n
        act = self.acts[-1]
        if act == "sigmoid":
            np.subtract(1.0, a, out=t)
            t *= a
            d *= t
        elif act == "tanh":
            np.multiply(a, a, out=t)
            np.subtract(1.0, t, out=t)
            d *= t
        elif act == "relu":
            d *= a > 0
        return loss

    # ------------------------------------------------------------------ backward
    def _backward(self, x: np.ndarray) -> None:
        dz = self.d_out
        for l in range(len(self.W) - 1, -1, -1):
            a_prev = x if l == 0 else self.A[l - 1]
            np.matmul(a_prev.T, dz, out=self.gW[l])
            np.sum(dz, axis=0, out=self.gb[l])
            if l == 0:
                break
            da = self.dA[l - 1]
            np.matmul(dz, self.W[l].T, out=da)
            act = self.acts[l - 1]
            if act == "relu":
                np.greater(a_prev, 0.0, out=self.mask[l - 1])
                np.multiply(da, self.mask[l - 1], out=da)
            elif act == "tanh":
                t = self.tmp[l - 1]
                np.multiply(a_prev, a_prev, out=t)
                np.subtract(1.0, t, out=t)
                da *= t
            elif act == "sigmoid":
                t = self.tmp[l - 1]
                np.subtract(1.0, a_prev, out=t)
                t *= a_prev
                da *= t
            dz = da

    # ------------------------------------------------------------------ update
    def _update(self) -> None:
        opt, g = self.opt, self.grad
        if opt.name == "sgd":
            g *= opt.lr
            self.flat -= g
            return
        # torch.optim.Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
        # p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
        b1, b2 = opt.betas
        self.t += 1
        m, v, u = self.m, self.v, self.u
        m *= b1
        np.multiply(g, 1.0 - b1, out=u)
        m += u
        v *= b2
        np.multiply(g, g, out=u)
        u *= 1.0 - b2
        v += u
        bc1 = 1.0 - b1**self.t
        bc2 = 1.0 - b2**self.t
        np.sqrt(v, out=u)
        u *= 1.0 / np.sqrt(bc2)
        u += opt.eps
        np.divide(m, u, out=u)
        u *= opt.lr / bc1
        self.flat -= u

    # ------------------------------------------------------------------ public
    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step on ``(x, y)``; returns the loss before the update."""
        self._forward(x)
        loss = self._loss_and_output_delta(y)
        self._backward(x)
        self._update()
        return loss

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and a copy of the flat gradient at the current parameters (no update)."""
        self._forward(x)
        loss = self._loss_and_output_delta(y)
        self._backward(x)
        return loss, self.grad.copy()

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Loss at the current parameters (no gradient, no update)."""
        self._forward(x)
        return self._loss_and_output_delta(y)


def measure(config: Config, optimizer: str, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    model = NumpyMLP(config, dtype, init_params(config, dtype, seed), OPTIMIZERS[optimizer])
    pool = make_batches(config, dtype, seed)
    n = len(pool)
    pos = [0]

    def run_block(k: int) -> float:
        i = pos[0]
        x, y = pool[i]
        first = model.step(x, y)
        for _ in range(k - 1):
            i = (i + 1) % n
            x, y = pool[i]
            model.step(x, y)
        pos[0] = (i + 1) % n
        return first

    out = time_blocks(run_block, steps=steps, repeats=repeats)
    out["version"] = np.__version__
    return out
