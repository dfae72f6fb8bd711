"""Proof 3 (convergence): every optimizer configuration, through its generated update kernel,
reaches the minimum of a parabola and of Rosenbrock's function; and the saddle x² − y² is
left along y (no optimizer stays on the saddle's unstable axis once pushed off it)."""

from __future__ import annotations

import numpy as np
import pytest

from derive.objective import Objective

PARABOLA = "(x - 1)**2 + 10*(y + 0.5)**2"
ROSENBROCK = "(1 - x)**2 + 100*(y - x**2)**2"
# (label, optimizer, parabola steps, rosenbrock steps)
CONFIGS = [
    ("sgd", {"name": "sgd", "lr": 1.5e-3}, 3000, 60000),
    ("momentum", {"name": "momentum", "lr": 2e-4, "momentum": 0.9}, 3000, 60000),
    ("momentum_ema", {"name": "momentum", "ema": True, "lr": 2e-3, "momentum": 0.9}, 3000, 60000),
    ("nesterov", {"name": "nesterov", "lr": 2e-4, "momentum": 0.9}, 3000, 60000),
    ("adagrad", {"name": "adagrad", "lr": 0.5}, 3000, 60000),
    ("adagrad_optax", {"name": "adagrad", "eps_inside_sqrt": True, "lr": 0.5, "initial_accumulator_value": 0.1,
                       "eps": 1e-7}, 3000, 60000),
    ("adadelta", {"name": "adadelta", "lr": 1.0, "rho": 0.95, "eps": 1e-6}, 20000, 200000),
    ("rmsprop", {"name": "rmsprop", "lr": 1e-3}, 10000, 60000),
    ("rmsprop_centered", {"name": "rmsprop", "centered": True, "lr": 1e-3, "momentum": 0.5}, 3000, 60000),
    ("adam", {"name": "adam", "lr": 0.02}, 3000, 60000),
    ("amsgrad", {"name": "adam", "amsgrad": True, "lr": 0.02}, 3000, 60000),
    ("adamw", {"name": "adamw", "lr": 0.02, "weight_decay": 0.0}, 3000, 60000),
    ("nadam", {"name": "nadam", "lr": 0.01}, 3000, 100000),
]


def _load(tmp_path_factory, label, expr, optimizer, schedule=None, variables=("x", "y")):
    folder = tmp_path_factory.mktemp("objectives")
    return Objective(f"{label}", expr, variables, optimizer, schedule).load(folder)


@pytest.mark.parametrize("label,optimizer,steps,_", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_parabola(tmp_path_factory, label, optimizer, steps, _):
    module = _load(tmp_path_factory, f"parabola_{label}", PARABOLA, optimizer)
    path, values = module.minimize([-2.0, 2.0], steps=steps)
    assert len(values) == steps + 1 and np.isfinite(values).all()
    np.testing.assert_allclose(path[-1], [1.0, -0.5], atol=2e-2)
    assert values[-1] < 1e-3 < values[0]


# Adadelta's step does not shrink by itself: at a constant rate it rattles across Rosenbrock's
# ravine (value ~2 after 2M steps); with inverse-time decay it reaches the minimum.
ROSENBROCK_SCHEDULE = {"adadelta": {"name": "inverse_time", "decay": 1e-3, "per": "step"}}


@pytest.mark.parametrize("label,optimizer,_,steps", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_rosenbrock(tmp_path_factory, label, optimizer, _, steps):
    module = _load(tmp_path_factory, f"rosenbrock_{label}", ROSENBROCK, optimizer, ROSENBROCK_SCHEDULE.get(label))
    path, values = module.minimize([-1.2, 1.0], steps=steps)
    np.testing.assert_allclose(path[-1], [1.0, 1.0], atol=5e-2, err_msg=label)


def test_gradient_is_derived(tmp_path_factory):
    module = _load(tmp_path_factory, "rosen_grad", ROSENBROCK, "sgd")
    x, y = 0.3, -0.7
    np.testing.assert_allclose(module.gradient([x, y]), [-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


def test_saddle_is_escaped_and_divergence_stops(tmp_path_factory):
    module = _load(tmp_path_factory, "saddle", "x**2 - y**2", {"name": "momentum", "lr": 0.05, "momentum": 0.9})
    path, values = module.minimize([1.0, 1e-6], steps=400)
    assert abs(path[-1, 0]) < 1e-2  # the stable direction converges
    assert abs(path[-1, 1]) > 1.0  # the unstable one is left: a saddle, not a minimum
    blow = _load(tmp_path_factory, "blowup", "x**4", {"name": "sgd", "lr": 10.0}, variables=("x",))
    path, values = blow.minimize([3.0], steps=1000)
    assert len(values) < 1001 and np.isfinite(values[:-1]).all() and not np.isfinite(values[-1])


def test_scheduled_rate_through_objective(tmp_path_factory):
    module = _load(tmp_path_factory, "sched", PARABOLA, {"name": "sgd", "lr": 0.04},
                   {"name": "exponential", "gamma": 0.999, "per": "step"})
    path, _ = module.minimize([-2.0, 2.0], steps=2000)
    np.testing.assert_allclose(path[-1], [1.0, -0.5], atol=1e-3)


def test_objective_text_cannot_run_code(tmp_path_factory):
    from derive.errors import SpecError

    with pytest.raises(SpecError, match="not allowed"):
        Objective("evil", "__import__('os').system('true')", ("x",)).render()


def test_objective_refuses_bad_arguments(tmp_path_factory):
    module = _load(tmp_path_factory, "checked", PARABOLA, {"name": "adam", "lr": 0.1})
    for kwargs, message in (({"beta1": 1.0}, r"beta1 must lie in \[0, 1\)"), ({"lr": float("nan")}, "finite"),
                            ({"rho": 0.9}, "unknown hyperparameter 'rho'")):
        with pytest.raises(ValueError, match=message):
            module.minimize([0.0, 0.0], steps=5, **kwargs)
    with pytest.raises(ValueError, match="x0 must be 2 finite numbers"):
        module.minimize([0.0], steps=5)
