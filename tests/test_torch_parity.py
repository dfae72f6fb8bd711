"""When torch is importable: 25-step trajectories equal torch.optim's in float64, for every
optimizer whose convention the reference document marks as matching. The gradients come from
the generated module and are handed to torch as .grad, so this compares the update rules."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

CASES = {
    "xor": lambda p, h: torch.optim.SGD(p, lr=h["lr"], foreach=False),
    "xor_momentum": lambda p, h: torch.optim.SGD(p, lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                                                 foreach=False),
    "xor_nesterov": lambda p, h: torch.optim.SGD(p, lr=h["lr"], momentum=h["momentum"], nesterov=True, foreach=False),
    "xor_adagrad": lambda p, h: torch.optim.Adagrad(p, lr=h["lr"], lr_decay=h["lr_decay"], eps=h["eps"],
                                                    initial_accumulator_value=h["initial_accumulator_value"],
                                                    foreach=False),
    "xor_adadelta": lambda p, h: torch.optim.Adadelta(p, lr=h["lr"], rho=h["rho"], eps=h["eps"], foreach=False),
    "xor_rmsprop": lambda p, h: torch.optim.RMSprop(p, lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                                                    momentum=h["momentum"], foreach=False),
    "xor_rmsprop_centered": lambda p, h: torch.optim.RMSprop(p, lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                                                             momentum=h["momentum"], centered=True, foreach=False),
    "xor_adam": lambda p, h: torch.optim.Adam(p, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                                              foreach=False),
    "xor_amsgrad": lambda p, h: torch.optim.Adam(p, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                                                 amsgrad=True, foreach=False),
    "xor_adamw": lambda p, h: torch.optim.AdamW(p, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                                                weight_decay=h["weight_decay"], foreach=False),
    "xor_nadam": lambda p, h: torch.optim.NAdam(p, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                                                momentum_decay=h["momentum_decay"], foreach=False),
}


@pytest.fixture
def float64_default():
    """torch keeps scalar optimizer state (NAdam's mu_product, step) in the default dtype:
    float32 unless set, which alone makes NAdam differ by ~1e-9 relative."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_torch_optim(name, float64_default):
    module = importlib.import_module(f"generated.{name}")
    rng = np.random.default_rng(11)
    X, Y = rng.normal(size=(16, 2)), (rng.uniform(size=(16, 1)) > 0.5).astype(np.float64)
    params = module.init_params(seed=5)
    state = module.init_state(params)
    tparams = [torch.tensor(params[k].copy(), dtype=torch.float64, requires_grad=True) for k in module.PARAM_NAMES]
    opt = CASES[name](tparams, module.HYPER)
    for step in range(25):
        current = {k: tp.detach().numpy().copy() for k, tp in zip(module.PARAM_NAMES, tparams)}
        grads = module.gradients(current, X, Y)
        for k, tp in zip(module.PARAM_NAMES, tparams):
            tp.grad = torch.tensor(grads[k])
        opt.step()
        module.step(params, state, X, Y)
        for k, tp in zip(module.PARAM_NAMES, tparams):
            np.testing.assert_allclose(params[k], tp.detach().numpy(), rtol=1e-10, atol=1e-13,
                                       err_msg=f"{name}: {k} after step {step + 1}")
