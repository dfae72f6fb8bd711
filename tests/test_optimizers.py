"""Optimizers: the generated step follows the derivation's update equations evaluated
numerically (25 steps, rtol 1e-12), identities between optimizers hold, and the spec refuses
invalid hyperparameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

from derive.blocks import optimizers as opt
from derive.codegen.render import render_module
from derive.derivation import derive_model, epoch
from derive.spec import Model

from .conftest import load_rendered

OPTIMIZER_MODELS = ("xor", "xor_momentum", "xor_momentum_ema", "xor_nesterov", "xor_adagrad", "xor_adadelta",
                    "xor_rmsprop", "xor_rmsprop_centered", "xor_adam", "xor_amsgrad", "xor_adamw", "xor_nadam",
                    "xor_regularized")
STEPS = 25


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(16, 2)), (rng.uniform(size=(16, 1)) > 0.5).astype(np.float64)


def symbolic_step(d, params, state, grads, hyper, t):
    """One step computed from the derivation's update equations, evaluated by SymPy's
    lambdify element by element — independent of the template and the hoisting."""
    scal = {opt.H(k): v for k, v in hyper.items()}
    scal.update({opt.t: t, epoch: state["epoch"]})
    eqs = d.optimizer_equations
    for name in eqs.scalar_state:
        scal[opt.S(name)] = state[name][0]
    per = {p: {opt.theta: params[p].copy(), opt.g: grads[p].copy(),
               **{opt.S(s): state[f"{s}_{p}"].copy() for s in eqs.state}} for p in params}

    def ev(expr, env):
        syms = sorted(expr.free_symbols, key=lambda s: s.name)
        return sp.lambdify(syms, expr, modules="math")(*[env[s] for s in syms])

    for eq in d.section("update"):
        if eq.key == "update.grad_norm":
            scal[eq.lhs] = math.sqrt(sum(float((per[p][opt.g] ** 2).sum()) for p in per))
        elif eq.kind in ("scalar", "scalar_state", "global"):
            scal[eq.lhs] = float(ev(eq.rhs, scal))
        else:
            for p in per:
                arrays = per[p]
                shape = arrays[opt.theta].shape
                flat = {k: v.ravel() for k, v in arrays.items()}
                out = np.array([ev(eq.rhs, {**scal, **{k: v[i] for k, v in flat.items()}})
                                for i in range(flat[opt.theta].size)], dtype=np.float64)
                arrays[eq.lhs] = out.reshape(shape)
    new_state = {f"{s}_{p}": per[p][opt.S(s)] for s in eqs.state for p in params}
    new_state.update({n: np.array([scal[opt.S(n)]]) for n in eqs.scalar_state})
    return {p: per[p][opt.theta] for p in params}, new_state


def _follow(module, d, name):
    X, Y = _problem()
    params = module.init_params(seed=2)
    state = module.init_state(params)
    ref_params = {k: v.copy() for k, v in params.items()}
    ref_state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    hyper = dict(module.HYPER)
    for t in range(1, STEPS + 1):
        state["epoch"] = ref_state["epoch"] = (t - 1) // 5  # exercise per-epoch schedules
        grads = module.gradients(ref_params, X, Y)
        ref_params, new_state = symbolic_step(d, ref_params, ref_state, grads, hyper, t)
        ref_state.update(new_state)
        module.step(params, state, X, Y)
        for k in params:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}: {k} after step {t}")
        for k in new_state:
            np.testing.assert_allclose(state[k], ref_state[k], rtol=1e-12, atol=1e-14, err_msg=f"{name}: {k}")
    assert state["t"] == STEPS


@pytest.mark.parametrize("name", OPTIMIZER_MODELS)
def test_step_follows_the_symbolic_update_equations(catalogue, name):
    import importlib

    _follow(importlib.import_module(f"generated.{name}"), derive_model(catalogue[name]), name)


# Options, schedules and regularisers the catalogue does not exercise: rendered from the Python
# API and run as plain Python (the same generated source, without a compile per case).
EXTRA = {
    "adagrad_optax_decay": dict(optimizer={"name": "adagrad", "eps_inside_sqrt": True, "lr": 0.1, "lr_decay": 0.1,
                                           "initial_accumulator_value": 0.1, "eps": 1e-7}),
    "rmsprop_inside_momentum": dict(optimizer={"name": "rmsprop", "eps_inside_sqrt": True, "momentum": 0.9}),
    "rmsprop_centered_inside": dict(optimizer={"name": "rmsprop", "centered": True, "eps_inside_sqrt": True}),
    "adam_no_bias_correction": dict(optimizer={"name": "adam", "bias_correction": False, "lr": 0.01}),
    "adamw_amsgrad": dict(optimizer={"name": "adamw", "amsgrad": True, "weight_decay": 0.1}),
    "multistep_per_step": dict(optimizer={"name": "sgd", "lr": 0.5},
                               schedule={"name": "multistep", "milestones": [3, 10], "gamma": 0.3, "per": "step"}),
    "cosine_per_step": dict(optimizer={"name": "nesterov", "lr": 0.2},
                            schedule={"name": "cosine", "T_max": 10, "eta_min": 0.01, "per": "step"}),
    "exponential_per_epoch": dict(optimizer={"name": "adam", "lr": 0.05},
                                  schedule={"name": "exponential", "gamma": 0.7}),
    "inverse_time_per_step": dict(optimizer={"name": "rmsprop"}, schedule={"name": "inverse_time", "decay": 0.5,
                                                                           "per": "step"}),
    "decoupled_decay_momentum": dict(optimizer={"name": "momentum", "lr": 0.1, "dampening": 0.3},
                                     regularization={"decoupled_weight_decay": 0.05}),
    "l1_clip_value": dict(optimizer={"name": "adadelta"}, regularization={"l1": 0.01}, clip={"value": 0.01}),
    "l2_clip_norm_nadam": dict(optimizer={"name": "nadam"}, regularization={"l2": 0.1}, clip={"norm": 0.05}),
}


@pytest.mark.parametrize("label", sorted(EXTRA))
def test_options_follow_the_symbolic_update_equations(label, tmp_path):
    from .conftest import pure_python

    model = Model(f"extra_{label}", 2, [[4, "tanh"], [1, "sigmoid"]], "bce", **EXTRA[label])
    d = derive_model(model)
    _follow(pure_python(load_rendered(render_module(d), model.name, tmp_path)), d, label)


def _trajectory(module, steps=20, **hyper):
    X, Y = _problem(3)
    params = module.init_params(seed=4)
    state = module.init_state(params, **hyper)
    losses = [module.step(params, state, X, Y, **hyper) for _ in range(steps)]
    return params, losses


def test_nesterov_with_zero_momentum_is_gradient_descent(generated):
    import generated.xor_nesterov as nesterov

    p1, l1 = _trajectory(generated["xor"], lr=0.2)
    p2, l2 = _trajectory(nesterov, lr=0.2, momentum=0.0)
    np.testing.assert_allclose(l1, l2, rtol=1e-14)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-14)


def test_ema_momentum_is_reference_momentum_with_scaled_lr():
    import generated.xor_momentum as ref
    import generated.xor_momentum_ema as ema

    beta, alpha = 0.8, 0.5
    p1, _ = _trajectory(ema, lr=alpha, momentum=beta)
    p2, _ = _trajectory(ref, lr=alpha * (1 - beta), momentum=beta, dampening=0.0)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-12)


def test_adamw_without_decay_is_adam():
    import generated.xor_adam as adam
    import generated.xor_adamw as adamw

    p1, _ = _trajectory(adam)
    p2, _ = _trajectory(adamw, weight_decay=0.0)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-13)


def test_adam_without_first_moment_and_bias_correction_is_rmsprop(tmp_path):
    layers = [[4, "tanh"], [1, "sigmoid"]]
    a = Model("adam_plain", 2, layers, "bce", {"name": "adam", "beta1": 0.0, "beta2": 0.9, "bias_correction": False})
    r = Model("rms_plain", 2, layers, "bce", {"name": "rmsprop", "alpha": 0.9})
    ma = load_rendered(render_module(derive_model(a)), a.name, tmp_path)
    mr = load_rendered(render_module(derive_model(r)), r.name, tmp_path)
    p1, _ = _trajectory(ma, lr=0.01, eps=1e-8)
    p2, _ = _trajectory(mr, lr=0.01, eps=1e-8)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-12)


def test_clipping_bounds_the_update(generated):
    """With clip value c and norm n, SGD moves every parameter by at most lr*c, and the whole
    step has norm at most lr*n."""
    import generated.xor_regularized as reg

    X, Y = _problem(5)
    params = reg.init_params(seed=0)
    params["W1"] *= 40.0  # saturate, so raw gradients are large
    before = {k: v.copy() for k, v in params.items()}
    state = reg.init_state(params)
    reg.step(params, state, X, Y, momentum=0.0, l1=0.0, l2=0.0, clip_norm=0.3, clip_value=0.05, lr=1.0)
    delta = np.concatenate([(params[k] - before[k]).ravel() for k in params])
    assert np.abs(delta).max() <= 0.05 + 1e-12
    assert np.linalg.norm(delta) <= 0.3 + 1e-9


def test_schedule_halves_the_rate_every_epoch(generated):
    import generated.xor_regularized as reg

    X, Y = _problem(6)
    moves = []
    for ep in range(3):
        params = reg.init_params(seed=0)
        state = reg.init_state(params)
        state["epoch"] = ep
        before = params["W2"].copy()
        reg.step(params, state, X, Y, momentum=0.0, l1=0.0, l2=0.0, clip_norm=1e9, clip_value=1e9)
        moves.append(np.abs(params["W2"] - before).sum())
    assert moves[1] == pytest.approx(moves[0] / 2, rel=1e-12)
    assert moves[2] == pytest.approx(moves[0] / 4, rel=1e-12)


def test_l2_gradient_is_derived_and_included(generated):
    import generated.xor_regularized as reg

    X, Y = _problem(7)
    params = reg.init_params(seed=1)
    g0 = reg.gradients(params, X, Y, l1=0.0, l2=0.0)
    g = reg.gradients(params, X, Y, l1=0.0, l2=0.5)
    for k in params:
        np.testing.assert_allclose(g[k], g0[k] + 0.5 * params[k], rtol=1e-12, atol=1e-15)
    total = reg.loss(params, X, Y, l1=0.1, l2=0.0) - reg.loss(params, X, Y, l1=0.0, l2=0.0)
    assert total == pytest.approx(0.1 * sum(np.abs(v).sum() for v in params.values()), rel=1e-12)


@pytest.mark.parametrize("optimizer,message", [
    ({"name": "adam", "beta1": 1.0}, "beta1: must lie in [0, 1)"),
    ({"name": "adam", "eps": -1e-8}, "eps: must lie in [0, inf)"),
    ({"name": "sgd", "lr": 0}, "lr: must lie in (0, inf)"),
    ({"name": "rmsprop", "centred": True}, "did you mean 'centered'?"),
    ({"name": "adam", "amsgrad": "yes"}, "option 'amsgrad' must be true or false"),
    ({"name": "adamm"}, "did you mean 'adam'?"),
])
def test_invalid_hyperparameters_are_refused(optimizer, message):
    from derive.errors import SpecError

    with pytest.raises(SpecError) as info:
        Model("m", 2, [[1, "sigmoid"]], "bce", optimizer)
    assert message in str(info.value)


def test_generated_step_refuses_invalid_values_at_run_time(generated):
    import generated.xor_adam as adam

    params = adam.init_params()
    state = adam.init_state(params)
    X, Y = _problem()
    with pytest.raises(ValueError, match=r"beta2 must lie in \[0, 1\)"):
        adam.step(params, state, X, Y, beta2=1.0)
    assert state["t"] == 0


def test_custom_optimizer_from_sympy_equations(tmp_path):
    """A user-declared rule (sign descent with a decaying rate) goes through the same path."""
    opt.custom("sign_descent", {"lr": opt.Hyper(0.05, 0.0)},
               [("theta", opt.theta - opt.H("lr") / sp.sqrt(opt.t) * sp.sign(opt.g))])
    model = Model("signed", 2, [[1, "sigmoid"]], "bce", {"name": "sign_descent", "lr": 0.1})
    module = load_rendered(render_module(derive_model(model)), model.name, tmp_path)
    X, Y = _problem(8)
    params = module.init_params()
    state = module.init_state(params)
    grads = module.gradients(params, X, Y)
    before = {k: v.copy() for k, v in params.items()}
    module.step(params, state, X, Y)
    module.step(params, state, X, Y)
    grads2 = module.gradients({k: before[k] - 0.1 * np.sign(grads[k]) for k in before}, X, Y)
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.1 * np.sign(grads[k])
                                   - 0.1 / math.sqrt(2) * np.sign(grads2[k]), rtol=1e-13)
