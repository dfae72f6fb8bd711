"""The regression losses beyond MSE (mae, huber, smooth_l1, log_cosh) and loss options.

One small model per loss (3 -> 4 tanh -> 2 identity) is rendered and compiled once for the
module; its loss and gradients are compared with SymPy differentiating the whole network written
as explicit scalars, with finite differences, with the closed-form gradients PyTorch documents
(and with torch itself when it is importable) at residuals of exactly 0 and ±δ, and at residuals
of ±1e4 in float32 and float64. Huber and SmoothL1 use δ = β = 0.75 (not the default, so the
option reaches the kernels; a power-of-two fraction, so residuals of exactly ±δ can be made).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import sympy as sp

from derive.blocks import activations, losses
from derive.codegen.render import render_module, spec_hash
from derive.derivation import derive_model
from derive.errors import SpecError
from derive.spec import Dense, Model, parse_catalogue

from .conftest import CATALOGUE, ROOT, load_rendered, pure_python, verify_grad

DELTA = BETA = 0.75
LOSSES = {
    "mae": "mae",
    "huber": {"name": "huber", "delta": DELTA},
    "smooth_l1": {"name": "smooth_l1", "beta": BETA},
    "log_cosh": "log_cosh",
}
NAMES = tuple(LOSSES)


def _model(name: str, loss=None, layers=None):
    return Model(f"loss_{name}", 3, layers or [Dense(4, "tanh"), Dense(2, "identity")],
                 LOSSES[name] if loss is None else loss)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """loss name -> (model, module), rendered once; Numba compiles each dtype on first use."""
    folder = tmp_path_factory.mktemp("losses")
    out = {}
    for name in NAMES:
        model = _model(name)
        out[name] = (model, load_rendered(render_module(derive_model(model)), model.name, folder))
    return out


def _problem(module, seed=0, n=5, dtype=np.float64, scale=1.5):
    """Perturbed parameters, inputs and targets N(0, scale²): residuals on both sides of δ."""
    rng = np.random.default_rng(seed)
    params = {k: (v + rng.normal(0, 0.4, size=v.shape)).astype(dtype)
              for k, v in module.init_params(seed=seed).items()}
    X = rng.normal(size=(n, 3)).astype(dtype)
    Y = rng.normal(0, scale, size=(n, 2)).astype(dtype)
    return params, X, Y


# ----------------------------------------------------------------------------- (a) SymPy oracle


def _definition(model) -> sp.Expr:
    """ℓ(yhat, y) as the registry defines it, with the model's option values substituted."""
    rule = losses.REGISTRY[model.loss]
    return rule.expr.xreplace({s: sp.Float(v) for s, v in rule.values(model.loss_options).items()})


def _oracle(model, params, X, Y):
    """Loss and every gradient from SymPy differentiating the network written out as scalars."""
    syms = {k: np.array(sp.symarray(k, v.shape, real=True), dtype=object) for k, v in params.items()}
    A = X.astype(object)
    for l, layer in enumerate(model.layers, start=1):
        rule = activations.REGISTRY[layer.activation]
        f = rule.expr().subs({rule.symbols()[k]: sp.Float(v) for k, v in layer.params})
        Z = A.dot(syms[f"W{l}"]) + syms[f"b{l}"]
        A = np.vectorize(lambda zz, f=f: f.subs(activations.z, zz), otypes=[object])(Z)
    ell = _definition(model)
    total = sum(ell.subs({losses.yhat: A[i, j], losses.y: sp.Float(Y[i, j])})
                for i in range(A.shape[0]) for j in range(A.shape[1]))
    L = total / A.size
    flat = [s for k in syms for s in syms[k].ravel()]
    fn = sp.lambdify(flat, [L, *[sp.diff(L, s) for s in flat]], modules="math", cse=True)
    out = fn(*[float(v) for k in params for v in params[k].ravel()])
    grads, pos = {}, 1
    for k, v in params.items():
        grads[k] = np.array(out[pos:pos + v.size]).reshape(v.shape)
        pos += v.size
    return out[0], grads


def _assert_oracle(module, model, params, X, Y):
    want_loss, want_grads = _oracle(model, params, X, Y)
    np.testing.assert_allclose(module.loss(params, X, Y), want_loss, rtol=1e-10)
    got = module.gradients(params, X, Y)
    for k in params:
        np.testing.assert_allclose(got[k], want_grads[k], rtol=1e-10, atol=1e-13, err_msg=f"{model.name}: {k}")


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_gradients_equal_the_sympy_oracle(nets, name):
    model, module = nets[name]
    params, X, Y = _problem(module, seed=1, n=3)
    residual = np.abs(module.forward(params, X) - Y)
    if name in ("huber", "smooth_l1"):  # both branches are exercised
        assert (residual < DELTA).any() and (residual > DELTA).any()
    _assert_oracle(module, model, params, X, Y)


# Every output activation is allowed with these losses (none needs a range); each one once,
# each loss twice, one layer, run as plain Python (no compile).
AFTER = [("sigmoid", "mae"), ("tanh", "huber"), ("relu", "smooth_l1"), ("leaky_relu", "log_cosh"),
         ("softplus", "mae"), ("elu", "huber"), ("silu", "smooth_l1"), ("sigmoid", "log_cosh")]
PARAMS = {"leaky_relu": {"slope": 0.1}, "elu": {"alpha": 0.7}}


@pytest.mark.parametrize("act,name", AFTER, ids=[f"{n}-after-{a}" for a, n in AFTER])
def test_losses_after_other_output_activations_equal_the_oracle(act, name, tmp_path):
    model = Model(f"loss_{name}_{act}", 2, [Dense(3, act, **PARAMS.get(act, {}))], LOSSES[name])
    module = pure_python(load_rendered(render_module(derive_model(model)), model.name, tmp_path))
    rng = np.random.default_rng(7)
    params = {k: v + rng.normal(0, 0.6, size=v.shape) for k, v in module.init_params(seed=2).items()}
    X, Y = rng.normal(size=(4, 2)), rng.normal(0.5, 1.0, size=(4, 3))
    _assert_oracle(module, model, params, X, Y)


def test_log_cosh_is_log_cosh_and_its_gradient_tanh(nets):
    """Independently of SymPy: numpy's log(cosh(d)), and ∂L/∂b_2 = Σ_rows tanh(d)/(N n)."""
    _, module = nets["log_cosh"]
    params, X, Y = _problem(module, seed=2)
    d = module.forward(params, X) - Y
    assert module.loss(params, X, Y) == pytest.approx(np.mean(np.log(np.cosh(d))), rel=1e-13)
    np.testing.assert_allclose(module.gradients(params, X, Y)["b2"], np.tanh(d).sum(axis=0) / d.size, rtol=1e-13)


def test_log_cosh_computed_form_is_the_definition():
    """|d| + log1p(e^{-2|d|}) - log 2 = log cosh d at 50 digits, from 0 to beyond float64's cosh
    overflow, on both sides."""
    rule = losses.REGISTRY["log_cosh"]
    for dv in (-1000, -711, -90, -3.3, -0.2, 1e-6, 0.37, 2.5, 88.9, 700.5, 1000):
        at = {losses.yhat: sp.Float(dv, 60) + sp.Rational(1, 3), losses.y: sp.Rational(1, 3)}
        got, want = rule.computed.subs(at).evalf(50), rule.expr.subs(at).evalf(50)
        assert abs(got - want) <= sp.Float("1e-40") * max(1, abs(want)), dv


# ----------------------------------------------------------------------------- (b) finite differences


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-6), (np.float32, 3e-2)], ids=["f64", "f32"])
def test_gradients_match_finite_differences(nets, name, dtype, rtol):
    _, module = nets[name]
    params, X, Y = _problem(module, seed=3, n=7, dtype=dtype)
    d = np.abs(module.forward(params, X).astype(np.float64) - Y)
    if name == "mae":  # ℓ' jumps at d = 0 (the others' ℓ' is continuous)
        assert d.min() > 0.02, "a residual sits on the kink: pick another seed"
    verify_grad(module, params, X, Y, rtol=rtol)
    grads = module.gradients(params, X, Y)
    assert np.isfinite(module.loss(params, X, Y)) and all(g.dtype == dtype for g in grads.values())


# ----------------------------------------------------------------------------- (c) PyTorch


def _closed_form(name: str, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element losses and ∂ℓ/∂ŷ as PyTorch defines them (torch/nn/modules/loss.py, ATen Loss.cpp)."""
    ad = np.abs(d)
    if name == "mae":
        return ad, np.sign(d)  # np.sign(0) = 0, as torch's abs backward (sgn)
    if name == "huber":
        return np.where(ad < DELTA, 0.5 * d * d, DELTA * (ad - 0.5 * DELTA)), np.clip(d, -DELTA, DELTA)
    if name == "smooth_l1":
        return np.where(ad < BETA, 0.5 * d * d / BETA, ad - 0.5 * BETA), np.clip(d / BETA, -1.0, 1.0)
    return np.log(np.cosh(d)), np.tanh(d)


def _boundary_problem(module):
    """W_2 = 0, so ŷ = b_2 exactly and Y = b_2 - r gives residuals of exactly r: 0, ±δ, ±δ/2, ±3δ."""
    rng = np.random.default_rng(4)
    params = {k: v + rng.normal(0, 0.4, size=v.shape) for k, v in module.init_params(seed=4).items()}
    params["W2"][:] = 0.0
    params["b2"][:] = [0.25, -0.5]
    r = np.array([[0.0, DELTA], [-DELTA, 0.0], [DELTA / 2, -3 * DELTA], [3 * DELTA, -DELTA / 2], [0.0, -DELTA]])
    X = rng.normal(size=(r.shape[0], 3))
    Y = params["b2"] - r
    assert np.array_equal(module.forward(params, X) - Y, r)
    return params, X, Y, r


@pytest.mark.parametrize("name", NAMES)
def test_residuals_of_exactly_zero_and_delta_follow_pytorch(nets, name):
    """Loss and ∂L/∂W_2, ∂L/∂b_2 at residuals 0 and ±δ (±β): PyTorch's definitions, including
    the L1 gradient 0 at exactly 0."""
    _, module = nets[name]
    params, X, Y, r = _boundary_problem(module)
    ell, dl = _closed_form(name, r)
    assert module.loss(params, X, Y) == pytest.approx(ell.mean(), rel=1e-14)
    grads = module.gradients(params, X, Y)
    A1 = np.tanh(X @ params["W1"] + params["b1"])
    np.testing.assert_allclose(grads["b2"], dl.sum(axis=0) / r.size, rtol=1e-14, atol=0)
    np.testing.assert_allclose(grads["W2"], A1.T @ dl / r.size, rtol=1e-13, atol=1e-17)
    if name == "mae":  # a column whose residuals are all 0 has gradient exactly 0
        Y0 = Y.copy()
        Y0[:, 0] = params["b2"][0]
        assert module.gradients(params, X, Y0)["b2"][0] == 0.0


TORCH_LOSSES = {"mae": lambda t: t.nn.L1Loss(), "huber": lambda t: t.nn.HuberLoss(delta=DELTA),
                "smooth_l1": lambda t: t.nn.SmoothL1Loss(beta=BETA)}


@pytest.mark.parametrize("name", sorted(TORCH_LOSSES))
@pytest.mark.parametrize("case", ["random", "boundary"])
def test_matches_torch(nets, name, case):
    torch = pytest.importorskip("torch")
    _, module = nets[name]
    if case == "random":
        params, X, Y = _problem(module, seed=5)
    else:
        params, X, Y, _ = _boundary_problem(module)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    pred = torch.tanh(torch.tensor(X) @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    value = TORCH_LOSSES[name](torch)(pred, torch.tensor(Y))
    value.backward()
    assert module.loss(params, X, Y) == pytest.approx(value.item(), rel=1e-10)
    got = module.gradients(params, X, Y)
    for k in params:
        np.testing.assert_allclose(got[k], t[k].grad.numpy(), rtol=1e-10, atol=1e-15, err_msg=f"{name}: {k}")


def test_huber_is_beta_times_smooth_l1(nets):
    """PyTorch's identity Huber(δ) = β·SmoothL1(β) for δ = β: the definitions and their derivatives
    in exact arithmetic on both branches and at the switch, then the kernels' loss and gradients."""
    hub, sl1 = losses.REGISTRY["huber"], losses.REGISTRY["smooth_l1"]
    b = sp.Rational(3, 4)
    h = hub.expr.xreplace({hub.symbols()["delta"]: b})
    s = sl1.expr.xreplace({sl1.symbols()["beta"]: b})
    for dv in (-2, -b, -b / 3, 0, b / 2, sp.Rational(7, 10), b, 5 * b):
        at = {losses.yhat: dv + sp.Rational(1, 5), losses.y: sp.Rational(1, 5)}
        assert h.subs(at) == b * s.subs(at), dv
        assert sp.diff(h, losses.yhat).subs(at) == b * sp.diff(s, losses.yhat).subs(at), dv
    (_, huber), (_, smooth) = nets["huber"], nets["smooth_l1"]
    params, X, Y = _problem(huber, seed=6)
    assert huber.loss(params, X, Y) == pytest.approx(BETA * smooth.loss(params, X, Y), rel=1e-14)
    gs = smooth.gradients(params, X, Y)
    for k, g in huber.gradients(params, X, Y).items():
        np.testing.assert_allclose(g, BETA * gs[k], rtol=1e-13, atol=1e-17)


# ----------------------------------------------------------------------------- (d) extremes


SLOPE = {"mae": 1.0, "huber": DELTA, "smooth_l1": 1.0, "log_cosh": 1.0}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_huge_residuals_give_finite_loss_and_gradients(nets, name, dtype):
    """Residuals of ±1e4 (and, for log-cosh, ±100 and ±800, past float32's and float64's cosh
    overflow): finite loss and gradients with the values of the linear branch."""
    _, module = nets[name]
    params, X, _ = _problem(module, seed=8, n=6, dtype=dtype)
    pred = module.forward(params, X).astype(np.float64)
    sizes = [1e4, 800.0, 100.0] if name == "log_cosh" else [1e4]
    for size in sizes:
        r = size * np.array([[1, -1], [1, 1], [1, -1], [-1, -1], [1, -1], [1, 1]], dtype=np.float64)
        Y = (pred - r).astype(dtype)
        d = pred - Y.astype(np.float64)  # the residuals as the kernel sees them
        value = module.loss(params, X, Y)
        grads = module.gradients(params, X, Y)
        assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads.values()), (name, size)
        want = {"mae": np.abs(d), "huber": DELTA * (np.abs(d) - DELTA / 2), "smooth_l1": np.abs(d) - BETA / 2,
                "log_cosh": np.abs(d) - math.log(2)}[name].mean()
        rtol = 1e-12 if dtype == np.float64 else 1e-5
        assert value == pytest.approx(want, rel=rtol), (name, size)
        np.testing.assert_allclose(grads["b2"], SLOPE[name] * np.sign(d).sum(axis=0) / d.size, rtol=rtol, atol=1e-7)


# ----------------------------------------------------------------------------- (e) the spec


SPEC = """
[model.m]
inputs = 2
layers = [[3, "tanh"], [1, "identity"]]
loss = {loss}
"""


def _spec_error(loss_text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_catalogue(SPEC.format(loss=loss_text), "spec.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("loss_text,message", [
    ('{ name = "huber", delt = 2.0 }',
     "spec.toml:2: model 'm': loss: loss 'huber' has no option 'delt'; did you mean 'delta'? Valid names: delta."),
    ('{ name = "smooth_l1", beta = 0 }', "spec.toml:2: model 'm': loss: beta: must lie in (0, inf), got 0"),
    ('{ name = "huber", delta = -1.5 }', "spec.toml:2: model 'm': loss: delta: must lie in (0, inf), got -1.5"),
    ('{ name = "huber", delta = inf }', "spec.toml:2: model 'm': loss: delta: must lie in (0, inf), got inf"),
    ('{ name = "huber", delta = nan }', "spec.toml:2: model 'm': loss: delta: must lie in (0, inf), got nan"),
    ('{ name = "huber", delta = "2" }', "spec.toml:2: model 'm': loss: delta: must be a number, got '2'"),
    ('{ name = "huber", delta = true }', "spec.toml:2: model 'm': loss: delta: must be a number, got True"),
    ('{ name = "huber", delta = [1.0] }', "spec.toml:2: model 'm': loss: delta: must be a number, got [1.0]"),
    ('{ name = "mae", delta = 1.0 }', "spec.toml:2: model 'm': loss: loss 'mae' takes no options, got 'delta'"),
    ('{ name = "log_cosh", beta = 1.0 }',
     "spec.toml:2: model 'm': loss: loss 'log_cosh' takes no options, got 'beta'"),
    ('{ name = "mse", delta = 1.0 }', "spec.toml:2: model 'm': loss: loss 'mse' takes no options, got 'delta'"),
    ('{ delta = 1.0 }', "spec.toml:2: model 'm': loss: loss must be a name or a table with a 'name', e.g. "
                       "{ name = \"huber\", delta = 2.0 }; got {'delta': 1.0}"),
    ('{ name = "hubber" }', "spec.toml:2: model 'm': loss: unknown loss 'hubber'; did you mean 'huber'?"),
    ("3", "spec.toml:2: model 'm': loss: loss must be a name or a table with a 'name'"),
])
def test_bad_loss_options_are_one_clear_line(loss_text, message):
    got = _spec_error(loss_text)
    assert got.startswith(message), got


def test_the_python_api_gives_the_same_errors():
    with pytest.raises(SpecError, match=re.escape("<python>: model 'p': loss: delta: must lie in (0, inf), got -2")):
        Model("p", 2, [[1, "identity"]], {"name": "huber", "delta": -2})
    with pytest.raises(SpecError, match=re.escape("model 'p': loss: loss 'mae' takes no options, got 'scale'")):
        Model("p", 2, [[1, "identity"]], {"name": "l1", "scale": 2})


def test_options_are_recorded_with_defaults_and_plain_names_stay_names():
    layers = [[3, "tanh"], [1, "identity"]]
    plain = Model("p", 2, layers, "huber")
    explicit = parse_catalogue(SPEC.format(loss='{ name = "huber", delta = 1.0 }'), "spec.toml")["m"]
    assert plain.loss_options == explicit.loss_options == (("delta", 1.0),)
    assert plain.to_dict()["loss"] == {"name": "huber", "delta": 1.0}
    assert Model("p", 2, layers, {"name": "huber", "delta": 2}).summary() == \
        "2 -> 3 tanh -> 1 identity; loss huber(delta=2); sgd(lr=0.01)"
    again = Model("p", 2, layers, plain.to_dict()["loss"])
    assert again == plain and spec_hash(again) == spec_hash(plain)
    for name, canonical in (("mae", "mae"), ("l1", "mae"), ("log_cosh", "log_cosh"), ("mse", "mse"), ("l2", "mse")):
        model = Model("p", 2, layers, name)
        assert model.loss == canonical and model.loss_options == () and model.to_dict()["loss"] == canonical
        assert Model("p", 2, layers, {"name": name}) == model
    assert Model("p", 2, layers, {"name": "smooth_l1"}).loss_options == (("beta", 1.0),)


def test_generated_modules_record_the_options(nets):
    model, module = nets["huber"]
    assert module.SPEC["loss"] == {"name": "huber", "delta": DELTA} and module.SPEC_HASH == spec_hash(model)
    assert nets["mae"][1].SPEC["loss"] == "mae"


def test_committed_modules_keep_their_spec_hash():
    """Losses without options are still recorded as plain names: no committed module's SPEC_HASH
    (computed from the spec's plain data) changes."""
    from derive.spec import load_catalogue

    checked = 0
    for name, model in load_catalogue(CATALOGUE).items():
        path = ROOT / "generated" / f"{name}.py"
        if path.exists():  # a model just added to the catalogue may not be built yet
            assert f'SPEC_HASH = "{spec_hash(model)}"' in path.read_text(), name
            checked += 1
    assert checked >= 6
