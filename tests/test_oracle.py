"""Proof 1: the layered derivation + generated code equals SymPy differentiating the whole
network written out as explicit scalars (micrograd's idea: two independent routes).

Every activation x loss combination allowed, depths 1-3, tiny shapes (<= 40 parameters).
The generated kernels run as plain Python here (same source, no compile per model); the
compiled path is compared with the Python one on the catalogue in test_generated.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from derive.blocks import activations, losses
from derive.codegen.render import render_module
from derive.derivation import derive_model
from derive.spec import Dense, Model

from .conftest import load_rendered, pure_python

ACTS = {"identity": {}, "sigmoid": {}, "tanh": {}, "relu": {}, "leaky_relu": {"slope": 0.1},
        "softplus": {}, "elu": {"alpha": 0.7}, "silu": {}}


def _cases():
    cases = []
    for act in ACTS:  # depth 1, two outputs: every activation as output under MSE
        cases.append(((act,), "mse"))
    cases.append((("sigmoid",), "bce"))
    for hidden in ACTS:  # depth 2: every activation as hidden layer, both losses
        cases.append(((hidden, "identity"), "mse"))
        cases.append(((hidden, "sigmoid"), "bce"))
    for h1, h2 in itertools.combinations(["relu", "tanh", "elu", "silu", "softplus"], 2):
        cases.append(((h1, h2, "sigmoid"), "bce"))
    cases.append((("leaky_relu", "sigmoid", "tanh"), "mse"))
    return cases


def _model(acts, loss):
    units = {1: [2], 2: [3, 1], 3: [2, 2, 1]}[len(acts)]
    layers = [Dense(u, act, **ACTS[act]) for u, act in zip(units, acts)]
    return Model("oracle_" + "_".join(acts) + "_" + loss, inputs=2, layers=layers, loss=loss)


def _oracle(model, params, X, Y):
    """Loss and gradients by differentiating the explicit scalar network with SymPy."""
    syms = {k: np.array(sp.symarray(k, v.shape), dtype=object) for k, v in params.items()}
    A = X.astype(object)
    for l, layer in enumerate(model.layers, start=1):
        rule = activations.REGISTRY[layer.activation]
        f = rule.expr().subs({rule.symbols()[k]: sp.Float(v) for k, v in layer.params})
        Z = A.dot(syms[f"W{l}"]) + syms[f"b{l}"]
        A = np.vectorize(lambda zz, f=f: f.subs(activations.z, zz), otypes=[object])(Z)
    ell = losses.REGISTRY[model.loss].expr
    total = sum(ell.subs({losses.yhat: A[i, j], losses.y: sp.Float(Y[i, j])})
                for i in range(A.shape[0]) for j in range(A.shape[1]))
    L = total / A.size
    flat = [s for k in syms for s in syms[k].ravel()]
    values = [float(v) for k in params for v in params[k].ravel()]
    fn = sp.lambdify(flat, [L, *[sp.diff(L, s) for s in flat]], modules="math")
    out = fn(*values)
    grads, pos = {}, 1
    for k, v in params.items():
        grads[k] = np.array(out[pos:pos + v.size]).reshape(v.shape)
        pos += v.size
    return out[0], grads


@pytest.mark.parametrize("acts,loss", _cases(), ids=lambda c: "-".join(c) if isinstance(c, tuple) else c)
def test_generated_equals_symbolic_oracle(acts, loss, tmp_path):
    model = _model(acts, loss)
    assert sum(np.prod(s) for s in model.param_shapes().values()) <= 40
    module = pure_python(load_rendered(render_module(derive_model(model)), model.name, tmp_path))
    rng = np.random.default_rng(len(model.name))
    params = module.init_params(seed=3)
    for k in params:
        params[k] = params[k] + rng.normal(0, 0.4, size=params[k].shape)
    X = rng.normal(size=(3, 2))
    Y = rng.uniform(0.05, 0.95, size=(3, model.outputs))
    want_loss, want_grads = _oracle(model, params, X, Y)
    np.testing.assert_allclose(module.loss(params, X, Y), want_loss, rtol=1e-10)
    got = module.gradients(params, X, Y)
    for k in params:
        np.testing.assert_allclose(got[k], want_grads[k], rtol=1e-10, atol=1e-13, err_msg=f"{model.name}: {k}")
