"""PyTorch eager: ``nn.Sequential`` of ``nn.Linear``, torch losses, ``torch.optim`` (foreach=False).

Written the way a PyTorch user would: ``zero_grad`` / forward / loss / ``backward`` / ``step``.
``nn.Linear`` stores its weight as ``(n_out, n_in)``; it is loaded with ``W.T`` so the network
computes exactly ``Z = A @ W + b``. BCE uses ``BCEWithLogitsLoss`` on the logits (the sigmoid
output is folded into the loss), MSE ``MSELoss``; both mean over all elements. Cross-entropy uses
``CrossEntropyLoss`` (``F.cross_entropy``) on the logits (the softmax output is folded into the
loss) with the one-hot rows as probability targets; it means over the rows.
"""

from __future__ import annotations

import importlib.util
import os

from benchmarks.configs import OPTIMIZERS, Config, init_params, make_batches
from benchmarks.timing import time_blocks

NAME = "torch_eager"


def available() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch not installed"
    return None


def measure(config: Config, optimizer: str, dtype: str, *, steps: int, repeats: int, seed: int) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    tdt = getattr(torch, dtype)
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}

    modules: list[nn.Module] = []
    params = init_params(config, dtype, seed)
    last = len(params) - 1
    for l, ((w, b), act) in enumerate(zip(params, config.activations, strict=True)):
        lin = nn.Linear(w.shape[0], w.shape[1], dtype=tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        modules.append(lin)
        if l == last and config.loss in ("bce", "cross_entropy"):
            continue  # sigmoid folded into BCEWithLogitsLoss, softmax into CrossEntropyLoss
        modules.append(acts[act]())
    model = nn.Sequential(*modules)
    losses = {"bce": nn.BCEWithLogitsLoss, "mse": nn.MSELoss, "cross_entropy": nn.CrossEntropyLoss}
    loss_fn = losses[config.loss]()

    spec = OPTIMIZERS[optimizer]
    if spec.name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, foreach=False)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=spec.betas, eps=spec.eps, foreach=False)

    pool = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in make_batches(config, dtype, seed)]
    n = len(pool)
    pos = [0]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def run_block(k: int):
        i = pos[0]
        first = step(*pool[i])
        for _ in range(k - 1):
            i = (i + 1) % n
            step(*pool[i])
        pos[0] = (i + 1) % n
        return first.item

    out = time_blocks(run_block, steps=steps, repeats=repeats)
    out["version"] = torch.__version__
    out["note"] = f"threads={torch.get_num_threads()}"
    return out
