"""User-defined activations, losses and optimizers declared as text in a spec file: built with
`derive build --spec tmp.toml --out tmpdir`, imported and proven like the built-ins (finite
differences, the SymPy oracle, the symbolic update equations); every invalid declaration gets
a clear SpecError, doubtful ones a SpecWarning; names never collide with generated code."""

from __future__ import annotations

import ast
import importlib
import json
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from derive import userblocks
from derive.blocks import activations, losses
from derive.blocks import optimizers as opt
from derive.codegen.render import render_module
from derive.derivation import derive_model
from derive.errors import SpecError
from derive.spec import Dense, Model, load_catalogue, parse_catalogue
from derive.userblocks import SpecWarning

from .conftest import load_rendered, pure_python, random_problem, verify_grad
from .test_optimizers import symbolic_step
from .test_oracle import _oracle

USER_SPEC = """
[activation.swish_beta]
expr = "z * sigmoid(beta * z)"
params = { beta = 1.5 }

[loss.my_log_cosh]
expr = "abs(yhat - y) + log1p(exp(-2*abs(yhat - y))) - log(2)"

[loss.my_huber]
expr = "where(abs(yhat - y) <= 1, 0.5*(yhat - y)**2, abs(yhat - y) - 0.5)"

[optimizer.adamax_like]
hyper = { lr = 0.002, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 }
state = { m = 0, u = 0 }
update = [["m", "beta1*m + (1 - beta1)*g"],
          ["u", "max(beta2*u, abs(g) + eps)"],
          ["theta", "theta - lr/(1 - beta1**t) * m/u"]]

[optimizer.ema_momentum]
hyper = { lr = 0.1, beta = { default = 0.9, min = 0, max = 0.999 }, init = 0.25 }
state = { vel = "init*lr" }
update = [["vel", "beta*vel + (1 - beta)*g"], ["theta", "theta - lr*vel"]]

[model.ub_net]
description = "User swish (two slopes), log-cosh loss, Adamax-like optimizer: \\"quoted\\" text."
inputs = 3
layers = [[5, "swish_beta"], [4, "swish_beta", { beta = 0.7 }], [2, "identity"]]
loss = "my_log_cosh"
optimizer = { name = "adamax_like", lr = 0.01 }

[model.ub_huber]
inputs = 2
layers = [[4, "tanh"], [1, "identity"]]
loss = "my_huber"
optimizer = "ema_momentum"
schedule = { name = "step", step_size = 2, gamma = 0.5, per = "step" }
clip = { norm = 1.0 }
"""
MODELS = ("ub_net", "ub_huber")
pytestmark = pytest.mark.filterwarnings("ignore::derive.userblocks.SpecWarning")


@pytest.fixture(scope="module", autouse=True)
def _isolated():
    """Blocks registered by this module's tests are unregistered afterwards."""
    with userblocks.isolated():
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The user spec built by the CLI into a package, imported (compiled once), with derivations."""
    root = tmp_path_factory.mktemp("userblocks")
    spec = root / "user.toml"
    spec.write_text(USER_SPEC)
    out = root / "ub_pkg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        result = CliRunner().invoke(cli.main, ["build", "--spec", str(spec), "--out", str(out)])
        assert result.exit_code == 0, result.output
        catalogue = load_catalogue(spec)
    derivations = {name: derive_model(catalogue[name]) for name in MODELS}
    sys.path.insert(0, str(root))
    try:
        modules = {name: importlib.import_module(f"ub_pkg.{name}") for name in MODELS}
    finally:
        sys.path.remove(str(root))
    return {"out": out, "spec": spec, "modules": modules, "d": derivations, "catalogue": catalogue}


def parse(text: str, source: str = "user.toml"):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        return parse_catalogue(text, source)


MODEL = '\n[model.{name}]\ninputs = 2\nlayers = [[3, "{act}"], [1, "{out}"]]\nloss = "{loss}"\noptimizer = "{opt}"\n'


def catalogue(blocks: str, act="tanh", out="identity", loss="mse", optimizer="sgd", name="m") -> str:
    return blocks + MODEL.format(name=name, act=act, out=out, loss=loss, opt=optimizer)


# ----------------------------------------------------------------------------- the built package


def test_spec_with_user_blocks_builds_and_records_them(built):
    assert sorted(p.name for p in built["out"].iterdir() if p.suffix == ".py") == [
        "__init__.py", "_kernel_runtime.py", "ub_huber.py", "ub_net.py"]
    net = built["modules"]["ub_net"]
    assert net.SPEC["blocks"]["activation"] == {"swish_beta": {"expr": "z * sigmoid(beta * z)",
                                                               "params": {"beta": 1.5}}}
    assert net.SPEC["blocks"]["optimizer"]["adamax_like"]["update"][1] == ["u", "max(beta2*u, abs(g) + eps)"]
    assert net.HYPER == {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert '"quoted" text.' in net.__doc__
    huber = built["modules"]["ub_huber"]
    assert huber.HYPER == {"lr": 0.1, "beta": 0.9, "init": 0.25, "step_size": 2.0, "gamma": 0.5, "clip_norm": 1.0}
    # state initial values are expressions of hyperparameters, evaluated at init_state time
    assert np.all(huber.init_state(huber.init_params())["vel_W1"] == 0.25 * 0.1)
    assert np.all(huber.init_state(huber.init_params(), init=2.0, lr=0.5)["vel_W1"] == 1.0)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 0.999\]"):
        huber.init_state(huber.init_params(), beta=1.0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-6), (np.float32, 3e-2)], ids=["f64", "f32"])
def test_user_gradients_match_finite_differences(built, name, dtype, rtol):
    module = built["modules"][name]
    params, X, Y = random_problem(module, dtype=dtype)
    verify_grad(module, params, X, Y, rtol=rtol)


def test_log_cosh_output_delta_is_tanh(built):
    """d/dŷ log cosh(ŷ − y) = tanh(ŷ − y): SymPy finds it from the stable text form."""
    net = built["modules"]["ub_net"]
    params, X, Y = random_problem(net, seed=3)
    grads = net.gradients(params, X, Y)
    pred = net.forward(params, X)
    np.testing.assert_allclose(grads["b3"], np.tanh(pred - Y).sum(axis=0) / Y.size, rtol=1e-12)
    want = np.mean(np.log(np.cosh(pred - Y)))
    assert net.loss(params, X, Y) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_user_step_follows_the_symbolic_update_equations(built, name):
    module, d = built["modules"][name], built["d"][name]
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(16, module.SPEC["inputs"])), rng.normal(size=(16, module.SPEC["layers"][-1][0]))
    params = module.init_params(seed=2)
    params["W1"] *= 3.0  # large gradients: clipping and the max() of Adamax both act
    state = module.init_state(params)
    ref_params = {k: v.copy() for k, v in params.items()}
    ref_state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    for t in range(1, 9):
        grads = module.gradients(ref_params, X, Y)
        ref_params, new_state = symbolic_step(d, ref_params, ref_state, grads, dict(module.HYPER), t)
        ref_state.update(new_state)
        module.step(params, state, X, Y)
        for k in params:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-12, atol=1e-14, err_msg=f"{name}: {k}, {t}")
        for k in new_state:
            np.testing.assert_allclose(state[k], ref_state[k], rtol=1e-12, atol=1e-14, err_msg=f"{name}: {k}, {t}")


def test_user_blocks_equal_the_sympy_oracle(built, tmp_path):
    """The layered derivation of user blocks equals SymPy differentiating the whole network."""
    model = Model("ub_oracle", 2, [Dense(2, "swish_beta", beta=0.8), Dense(1, "tanh")], "my_huber")
    module = pure_python(load_rendered(render_module(derive_model(model)), model.name, tmp_path))
    rng = np.random.default_rng(5)
    params = {k: v + rng.normal(0, 0.5, size=v.shape) for k, v in module.init_params(seed=1).items()}
    X, Y = rng.normal(size=(4, 2)), np.array([[2.5], [-0.2], [0.3], [-2.0]])  # both Huber branches
    want_loss, want_grads = _oracle(model, params, X, Y)
    np.testing.assert_allclose(module.loss(params, X, Y), want_loss, rtol=1e-10)
    got = module.gradients(params, X, Y)
    for k in params:
        np.testing.assert_allclose(got[k], want_grads[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_user_bce_takes_the_built_in_path(tmp_path):
    """A user loss with BCE's text is computed exactly as the built-in: from the logit, stably."""
    text = ('[loss.my_bce]\nexpr = "-(y*log(yhat) + (1 - y)*log(1 - yhat))"\nneeds_range = [0, 1]\n'
            + catalogue("", out="sigmoid", loss="my_bce", name="ub_bce"))
    mine = parse(text)["ub_bce"]
    theirs = Model("ub_ref", 2, [[3, "tanh"], [1, "sigmoid"]], "bce")
    a = pure_python(load_rendered(render_module(derive_model(mine)), mine.name, tmp_path))
    b = pure_python(load_rendered(render_module(derive_model(theirs)), theirs.name, tmp_path))
    params, X, Y = random_problem(a)
    params["b2"][:] = 1e9  # saturated: finite only when computed from the logit
    assert a.loss(params, X, Y) == pytest.approx(b.loss(params, X, Y), rel=1e-14)
    assert np.isfinite(a.loss(params, X, Y))
    for k, v in a.gradients(params, X, Y).items():
        np.testing.assert_allclose(v, b.gradients(params, X, Y)[k], rtol=1e-14)
    with pytest.raises(SpecError, match="needs predictions in \\[0, 1\\]"):
        parse(text.replace('"sigmoid"]]', '"tanh"]]'))


def test_show_prints_the_derivation_of_user_blocks(built):
    result = CliRunner().invoke(cli.main, ["show", "ub_net", "--spec", str(built["spec"])])
    assert result.exit_code == 0, result.output
    assert "swish_beta activation" in result.output and "tanh" in result.output


@pytest.mark.parametrize("bias", [-1e9, -1e3, 1e3, 1e9])
def test_user_swish_gradient_is_finite_at_huge_logits(built, bias):
    """The derivative of z*sigmoid(beta*z) is computed through sigma(beta*z): no exp(-beta*z)
    that overflows to inf/inf. (Found with these tests; fixed in derive.symbolic.sigmoid_form.)"""
    net = built["modules"]["ub_net"]
    for dtype in (np.float64, np.float32):
        params, X, Y = random_problem(net, dtype=dtype)
        params["b1"][:] = bias
        params["b2"][:] = bias
        assert all(np.isfinite(g).all() for g in net.gradients(params, X, Y).values())
        assert np.isfinite(net.loss(params, X, Y))


def test_overflowing_derivative_form_is_warned_about():
    block = '[activation.ub_gompertz]\nexpr = "z*exp(-exp(z))"\n'
    with pytest.warns(SpecWarning, match=r"activation 'ub_gompertz': its derivative as computed is nan at z = 1000 "
                                         r"although its exact value is finite"):
        parse_catalogue(catalogue(block, act="ub_gompertz"), "user.toml")


@pytest.fixture(scope="module")
def mish():
    """The kernel forms of a user mish, evaluated with the kernels' float semantics."""
    from derive.symbolic import a, z

    parse_catalogue(catalogue('[activation.ub_mish]\nexpr = "softplus(z)*tanh(softplus(z))"\n', act="ub_mish"),
                    "user.toml")
    forms = activations.forms("ub_mish")
    f = userblocks.kernel_function(forms.f, [z])
    d = userblocks.kernel_function(forms.derivative, [z, a])
    return lambda x: (f(x), d(x, f(x)))


@pytest.mark.parametrize("x", [-1e3, -40.0, 10.0, 40.0, 100.0, 700.0])
def test_user_mish_is_finite_where_its_forms_do_not_overflow(mish, x):
    """Found with these tests: sigmoid_form used to rewrite mish's derivative into log(1/(1 - sigma)),
    NaN for z > 37; it now keeps only rational functions of sigma."""
    assert all(np.isfinite(v) for v in mish(x))


@pytest.mark.parametrize("x", [-1e3, -30.0, -0.7, 0.0, 0.9, 12.0, 300.0, 709.0, 710.0, 1e3, 1e5])
def test_user_mish_derivative_is_finite_and_right_beyond_exp_overflow(mish, x):
    """SymPy's derivative has e^z/(1 + e^z) and log(1 + e^z) (inf/inf = NaN beyond z ~ 709): the
    kernel form is written with softplus and sigma instead (sigmoid_form after stabilize), and
    equals the exact derivative, computed at 50 digits, to 1e-13."""
    import mpmath

    with mpmath.workdps(50):
        zz = mpmath.mpf(x)
        sp_ = mpmath.log1p(mpmath.exp(zz))
        exact = float(mpmath.diff(lambda t: mpmath.log1p(mpmath.exp(t)) * mpmath.tanh(mpmath.log1p(mpmath.exp(t))),
                                  zz)) if abs(x) < 100 else float(
            # beyond, the derivative is sigma(z) (tanh s + s / cosh(s)^2) with s = softplus(z)
            (1 / (1 + mpmath.exp(-zz))) * (mpmath.tanh(sp_) + sp_ / mpmath.cosh(sp_) ** 2))
    got = mish(x)[1]
    assert np.isfinite(got) and got == pytest.approx(exact, rel=1e-13, abs=1e-300)


def test_user_mish_loads_without_warning_and_its_derivative_is_finite_everywhere():
    """The usual mish, z*tanh(softplus(z)): no load-time warning (its derivative as computed is no
    longer NaN beyond exp's overflow) and f' = tanh(s) + z sigma(z) / cosh(s)^2, s = softplus(z)."""
    from derive.symbolic import a, z

    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        parse_catalogue(catalogue('[activation.ub_mish_z]\nexpr = "z*tanh(softplus(z))"\n', act="ub_mish_z"),
                        "user.toml")
    forms = activations.forms("ub_mish_z")
    f = userblocks.kernel_function(forms.f, [z])
    d = userblocks.kernel_function(forms.derivative, [z, a])
    for x in (-1e3, -5.0, 0.3, 709.5, 800.0, 1e4):
        s = np.logaddexp(0.0, x)
        exact = np.tanh(s) + x / (1 + np.exp(-x)) / np.cosh(s) ** 2 if abs(x) < 700 else (1.0 if x > 0 else 0.0)
        assert d(x, f(x)) == pytest.approx(exact, rel=1e-13, abs=1e-300), x


# ----------------------------------------------------------------------------- registration


def test_loading_twice_is_idempotent_and_a_different_definition_is_refused(built):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        again = parse_catalogue(USER_SPEC, "copy.toml")  # same definitions, another file: fine
    assert again["ub_net"].layers == built["catalogue"]["ub_net"].layers
    assert activations.REGISTRY["swish_beta"].declared.startswith("user.toml:")  # the first declaration
    changed = USER_SPEC.replace('expr = "z * sigmoid(beta * z)"', 'expr = "z * sigmoid(beta * z) + 0*z + z/100"')
    with pytest.raises(SpecError, match=r"other.toml:2: activation 'swish_beta': this name is already declared "
                                        r"differently, at user.toml:2;"):
        parse_catalogue(changed, "other.toml")
    # the same expression written differently is the same definition
    same = USER_SPEC.replace('expr = "z * sigmoid(beta * z)"', 'expr = "sigmoid(z*beta)*z"')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        parse_catalogue(same, "same.toml")


@pytest.mark.parametrize("block", [
    '[activation.relu]\nexpr = "max(z, 0)"', '[activation.swish]\nexpr = "z*sigmoid(z)"',
    '[loss.bce]\nexpr = "(yhat - y)**2"', '[loss.l2]\nexpr = "(yhat - y)**2"',
    '[optimizer.adam]\nhyper = { lr = 0.1 }\nupdate = [["theta", "theta - lr*g"]]',
])
def test_built_in_names_cannot_be_shadowed(block):
    with pytest.raises(SpecError, match="is built in .* cannot redefine it"):
        parse(catalogue(block))


def test_custom_cannot_replace_a_built_in_optimizer():
    with pytest.raises(SpecError, match="optimizer 'adam' already exists"):
        opt.custom("adam", {"lr": 0.1}, [("theta", opt.theta - opt.H("lr") * opt.g)])
    assert opt.REGISTRY["adam"].declared == "" and "amsgrad" in opt.REGISTRY["adam"].options


def test_a_catalogue_uses_only_the_blocks_it_declares(built):
    with pytest.raises(SpecError, match=r"activation 'swish_beta' is declared in another spec \(user.toml:2\), not "
                                        r"in this one"):
        parse(catalogue("", act="swish_beta"))


def test_a_failed_load_registers_nothing():
    block = '[activation.ub_rollback]\nexpr = "z + tanh(z)"\n'
    with pytest.raises(SpecError, match="inputs: must be at least 1"):
        parse(catalogue(block, act="ub_rollback").replace("inputs = 2", "inputs = 0"))
    assert "ub_rollback" not in activations.REGISTRY and userblocks.declared("activation", "ub_rollback") is None
    # the name is free again, even for another definition
    parse(catalogue(block.replace("tanh(z)", "tanh(2*z)"), act="ub_rollback"))


def test_isolated_undoes_registrations():
    with userblocks.isolated():
        parse(catalogue('[loss.ub_scoped]\nexpr = "(yhat - y)**4"\n', loss="ub_scoped"))
        assert "ub_scoped" in losses.REGISTRY
    assert "ub_scoped" not in losses.REGISTRY


# ----------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize("block,message", [
    ('[activation.b1]\nexpr = "log(z)"', "f(z) is not a real number (nan) at z = -8"),
    ('[activation.b2]\nexpr = "1/z"', "f(z) is infinite (inf) at z = 0"),
    ('[activation.b3]\nexpr = "sqrt(abs(z))"', "its derivative is infinite (inf) at z = 0"),
    ('[activation.b4]\nexpr = "exp(exp(exp(z)))"', "f(z) is infinite (inf) at z = "),
    ('[activation.b5]\nexpr = "x*z"', "unknown name 'x' at column 1; valid names: e, pi, z."),
    ('[activation.b6]\nexpr = "__import__(\'os\').system(\'true\')"', "only named functions can be called"),
    ('[activation.b7]\nexpr = "z.real"', "attribute access 'z.real' is not allowed"),
    ('[activation.b8]\nexpr = "where(z > 0, 1, 0)"', "derivative is zero everywhere"),
    ('[activation.b9]\nexpr = "2.5"', "does not depend on z"),
    ('[activation.b10]\nexpr = "z*sigmoid(beta*z)"\nparams = { beta = -1 }', "beta: must be positive"),
    ('[activation.b11]\nexpr = "z*sigmoid(z)"\nparams = { beta = 1 }', "parameter 'beta' is not used in expr"),
    ('[activation.b12]\nexpr = "z*a"\nparams = { a = 1 }', "parameter name 'a' is reserved"),
    ('[activation.b13]\nexpr = "z"\nslope = 1', "has no key 'slope'"),
    ('[activation.b14]\nparams = {}', "missing key 'expr'"),
    ('[activation.b15]\nexpr = 3', "must be an expression in a string"),
    ('[activation.b16]\nexpr = "' + "+".join(f"(tanh({k}*z)+tanh(z/{k}))" for k in range(1, 41)) + '"',
     "expression is too large for a block"),
    ('[loss.c1]\nexpr = "-(y*log(yhat) + (1-y)*log(1-yhat))"', "declare needs_range = [low, high]"),
    ('[loss.c2]\nexpr = "(yhat - 1)**2"', "does not use the target y"),
    ('[loss.c3]\nexpr = "(yhat - y)**2"\nneeds_range = [1, 0]', "needs_range must have low < high"),
    ('[loss.c4]\nexpr = "log(yhat - y)"\nneeds_range = [0, 1]', "the loss is not a real number (nan) at yhat"),
    ('[optimizer.d1]\nhyper = { lr = 0.1 }\nupdate = [["theta", "theta - lr*g/abs(g)"]]',
     "update of 'theta' gives not a real number (nan) at step t = 1 with theta = -1.3 and g = 0"),
    ('[optimizer.d2]\nhyper = { lr = 0.1, beta1 = 0.9 }\nupdate = [["theta", "theta - lr*g/(1 - beta1**(t-1))"]]',
     "update of 'theta' gives infinite (inf) at step t = 1"),
    ('[optimizer.d3]\nhyper = { rate = 0.1 }\nupdate = [["theta", "theta - rate*g"]]', "includes the learning rate lr"),
    ('[optimizer.d4]\nhyper = { lr = 0.1 }\nstate = { m = 0 }\nupdate = [["theta", "theta - lr*g"]]',
     "state 'm' is never updated"),
    ('[optimizer.d5]\nhyper = { lr = 0.1 }\nstate = { m = 0 }\nupdate = [["m", "m + g"], ["theta", "theta - lr*mm"]]',
     "update[1] (theta): unknown name 'mm' at column 12; did you mean 'm'?"),
    ('[optimizer.d6]\nhyper = { lr = 0.1 }\nupdate = [["g", "2*g"], ["theta", "theta - lr*g"]]',
     "'g' cannot be assigned"),
    ('[optimizer.d7]\nhyper = { lr = 0.1 }\nupdate = [["m", "g"]]', 'no equation updates "theta"'),
    ('[optimizer.d8]\nhyper = { lr = 0.1 }\nupdate = [["theta", "theta - lr*v"], ["v", "g"]]', "unknown name 'v'"),
    ('[optimizer.d9]\nhyper = { lr = -0.1 }\nupdate = [["theta", "theta - lr*g"]]', "must lie in (0, inf)"),
    ('[optimizer.d10]\nhyper = { lr = 0.1 }\nstate = { m = "lr + q2" }\nupdate = [["m", "m"], ["theta", "theta"]]',
     "state: m: unknown name 'q2'"),
    ('[optimizer.d11]\nhyper = { lr = 0.1 }\nupdate = "theta - lr*g"', "update must be a non-empty list"),
    ('[optimizer.d12]\nhyper = { lr = 0.1, m = 1 }\nstate = { m = 0 }\nupdate = [["m", "g"], ["theta", "m"]]',
     "'m' is both a hyperparameter and a state variable"),
    ('[optimizer.d13]\nhyper = { lr = { default = 0.1, max = 0.01 } }\nupdate = [["theta", "theta - lr*g"]]',
     "must lie in (0, 0.01]"),
    ('[optimizer.d14]\nhyper = { lr = 0.1 }\nupdate = [["theta", "theta - lr*g"]]\nnesterov = true',
     "has no key 'nesterov'"),
    ("[activation]\nfoo = 1", "activation 'foo'"),
    ('[activation.ub_t1]\nexpr = "tanh(z)"\n[activation.ub_t2]\nexpr = "tanh(z)"\n[activation.ub_t3]\nexpr = "z"\n'
     '[model.M]\ninputs = 1\nlayers = [[1, "ub_t3"]]\nloss = "mse"\n', "model names 'M' and 'm' differ only in case"),
])
def test_invalid_blocks_get_clear_errors(block, message):
    with pytest.raises(SpecError) as info:
        parse(catalogue(block))
    assert message in str(info.value), str(info.value)
    assert str(info.value).startswith("user.toml:")


def test_errors_in_model_tables_name_the_model(built):
    block = '[optimizer.ub_g]\nhyper = { lr = 0.1, gamma = 0.9 }\nupdate = [["theta", "theta - gamma*lr*g"]]\n'
    text = catalogue(block, optimizer="ub_g") + 'schedule = { name = "step", gamma = 0.5 }\n'
    with pytest.raises(SpecError, match=r"user.toml:\d+: model 'm': hyperparameter 'gamma' of schedule 'step' is also "
                                        "a hyperparameter of optimizer 'ub_g'"):
        parse(text)


@pytest.mark.parametrize("block,message", [
    ('[activation.w1]\nexpr = "abs(z)"', "not differentiable at z ≈ 0: its derivative jumps from -1 to 1"),
    ('[activation.w2]\nexpr = "where(z > 0, 1 + z, z)"', "discontinuous at z ≈ 0: it jumps from 0 to 1"),
    ('[activation.w3]\nexpr = "max(z, 0.1*z)"', "not differentiable at z ≈ 0"),
    ('[activation.w4]\nexpr = "where(z > 1.5, z - 1.5, 0)"', "not differentiable at z ≈ 1.5"),
    ('[loss.w5]\nexpr = "abs(yhat - y)"', "at y = -3, not differentiable at yhat ≈ -3"),
    ('[optimizer.w6]\nhyper = { lr = 0.1, unused = 2 }\nupdate = [["theta", "theta - lr*g"]]',
     "hyperparameter 'unused' is not used"),
])
def test_doubtful_blocks_get_warnings(block, message):
    with pytest.warns(SpecWarning, match=message):
        parse_catalogue(catalogue(block), "user.toml")


def test_smooth_blocks_get_no_warning():
    parse(catalogue('[activation.ub_softsign]\nexpr = "z/(1 + abs(z))"\n'
                    '[loss.ub_pseudo_huber]\nexpr = "sqrt(1 + (yhat - y)**2) - 1"\n', act="ub_softsign",
                    loss="ub_pseudo_huber"))


def test_derivation_time_is_bounded(monkeypatch):
    monkeypatch.setattr(userblocks, "TIME_LIMIT", 0.05)
    # (a coefficient no other test uses: SymPy's cache, warm from other tests in this process,
    # made the derivation of the plain expression finish within the limit)
    block = '[activation.ub_slow]\nexpr = "softplus(1.2345*z)*tanh(softplus(z)) + atan(z)*sin(0.6789*z)"\n'
    with pytest.raises(SpecError, match=r"deriving .* took longer than 0.05 s; simplify the expression"):
        parse_catalogue(catalogue(block, act="ub_slow"), "user.toml")


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["i", "j", "k", "p", "total", "seed", "epochs", "batch_size", "theta", "g", "t", "N",
                                  "W1", "b2", "gW1", "m_W1", "v_b3_out", "s_m", "S_m", "R_v", "x_out", "mu_state",
                                  "clip_coef", "lr_t", "grad_norm", "epoch", "np", "math", "range", "float", "exp",
                                  "params", "state", "values", "arrays", "hyper", "_private", "lambda", "match",
                                  "é", "a" * 65])
def test_kernel_names_are_refused_for_hyperparameters_and_state(name):
    for table in (f'hyper = {{ lr = 0.1, "{name}" = 1 }}\nupdate = [["theta", "theta - lr*g"]]',
                  f'hyper = {{ lr = 0.1 }}\nstate = {{ "{name}" = 0 }}\n'
                  f'update = [["{name}", "g"], ["theta", "theta"]]'):
        with pytest.raises(SpecError, match="reserved|not a Python identifier|keyword|too long|cannot be assigned"):
            parse(catalogue(f"[optimizer.ub_names]\n{table}\n", optimizer="ub_names"))


def _exposed_identifiers(source: str, own: set[str]) -> set[str]:
    """Names a user hyperparameter or state variable could collide with: every name used in a
    function that receives hyperparameters or state as arguments (the update kernels) or reads
    them into locals (init_state), the named parameters of functions taking **hyper, and the
    module's own globals."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            args = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
            if args & own or node.name == "init_state":
                names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | args
            elif node.args.kwarg is not None:
                names |= args - {node.args.kwarg.arg}
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


RICH_MODELS = ("xor_regularized", "xor_nadam", "xor_adam", "xor_rmsprop_centered", "activations", "breast_cancer")


def test_every_generated_identifier_is_reserved():
    """If a template gains a local or argument, this test names it: add it to KERNEL_NAMES."""
    from .conftest import CATALOGUE

    models = load_catalogue(CATALOGUE)
    for name in RICH_MODELS:
        d = derive_model(models[name])
        eqs = d.optimizer_equations
        own = set(models[name].hyper()) | set(eqs.state) | set(eqs.scalar_state) | {tg for tg, _ in eqs.updates}
        free = []
        for ident in sorted(_exposed_identifiers(render_module(d), own) - own):
            try:
                userblocks.check_kernel_name(ident, "test", "name")
            except SpecError:
                continue
            free.append(ident)
        assert not free, f"{name}: generated identifiers a user hyperparameter could take: {free}"


@pytest.mark.parametrize("name,message", [
    ("os", "would shadow a module the generated code imports"), ("random", "would shadow"),
    ("MODELS", "would shadow"), ("con", "Windows reserves"), ("LPT1", "Windows reserves"),
    ("numpy", "is reserved"), ("_x", "is reserved"), ("class", "Python keyword"), ("x" * 101, "too long"),
    ("my-net", "not a Python identifier"), ("../evil", "not a Python identifier"), ("a/b", "not a Python identifier"),
    ("naïve", "not a Python identifier"),
])
def test_model_names_cannot_escape_or_shadow(name, message):
    text = f'[model."{name}"]\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "mse"\n'
    with pytest.raises(SpecError, match=message):
        parse(text)


@pytest.mark.parametrize("description", ['"""', 'end """ import os', "C:\\temp", "bell\x07", "nul\x00"])
def test_descriptions_cannot_break_out_of_the_docstring(description):
    text = f'[model.m]\ndescription = {json.dumps(description)}\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "mse"\n'
    with pytest.raises(SpecError, match="description contains .* cannot be copied into the generated module"):
        parse(text)


def test_spec_file_names_cannot_break_out_of_the_generated_code(tmp_path):
    for bad in ('x"""import os.toml', "x\nimport os.toml", "x\\y.toml"):
        with pytest.raises(SpecError, match="the spec source name contains"):
            parse(catalogue(""), source=bad)


def test_a_build_writes_only_inside_out(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(catalogue("", name="inside"))
    before = set(tmp_path.rglob("*"))
    out = tmp_path / "deep" / "out"
    result = CliRunner().invoke(cli.main, ["build", "--spec", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    created = set(tmp_path.rglob("*")) - before
    assert created == {tmp_path / "deep", out, out / "__init__.py", out / "inside.py", out / "_kernel_runtime.py"}


def test_allowed_odd_text_still_compiles(tmp_path):
    """Quotes, unicode and newlines in a description are fine: the module still compiles."""
    text = catalogue("", name="odd").replace(
        "inputs = 2", 'description = """He said "hi" — ünïcode ✓\n\'single\' \'\'\' and a "" pair"""\ninputs = 2')
    model = parse(text, source="odd name (1).toml")["odd"]
    module = load_rendered(render_module(derive_model(model)), "odd", tmp_path)  # imports: it compiles
    assert "ünïcode ✓" in module.__doc__ and "He said \"hi\"" in module.__doc__
