"""Softmax output and categorical cross-entropy, proven three ways.

1. SymPy oracle: the whole network written as explicit scalars with softmax and cross-entropy,
   differentiated directly (no Jacobian, no joint simplification): loss and every gradient at
   rtol 1e-10, depths 1-3, with and without label smoothing and class weights.
2. PyTorch (when importable): ``F.cross_entropy`` with index targets, probability targets,
   label smoothing and class weights, loss and gradients at rtol 1e-10 in float64.
3. Identities and extremes: rows of probabilities, labels equal to one-hot rows, logits of
   ±1e4 in float32 and float64, and the spec's refusals.
Finite differences on the catalogue models iris, digits and spiral are in test_generated.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from derive.blocks import activations, softmax
from derive.codegen.render import render_module
from derive.derivation import derive_model
from derive.errors import SpecError
from derive.spec import Dense, Model

from .conftest import load_rendered, pure_python

HIDDEN = {1: (), 2: ("tanh",), 3: ("relu", "sigmoid")}
OPTIONS = {"plain": {}, "smoothing": {"label_smoothing": 0.2}, "weights": {"class_weights": [0.5, 2.0, 1.25]},
           "both": {"label_smoothing": 0.1, "class_weights": [3.0, 0.25, 1.0]}}


def _model(depth: int, options: dict, name: str = "") -> Model:
    units = {1: [], 2: [3], 3: [3, 2]}[depth]
    layers = [Dense(u, act) for u, act in zip(units, HIDDEN[depth])] + [Dense(3, "softmax")]
    return Model(name or f"sm_{depth}_{'_'.join(options) or 'plain'}", inputs=2, layers=layers,
                 loss={"name": "cross_entropy", **options})


def _oracle(model, params, X, Y, options):
    """Loss and gradients of the explicit scalar network, by SymPy."""
    syms = {k: np.array(sp.symarray(k, v.shape), dtype=object) for k, v in params.items()}
    A = X.astype(object)
    for l, layer in enumerate(model.layers[:-1], start=1):
        f = activations.REGISTRY[layer.activation].expr()
        Z = A.dot(syms[f"W{l}"]) + syms[f"b{l}"]
        A = np.vectorize(lambda zz, f=f: f.subs(activations.z, zz), otypes=[object])(Z)
    L = model.depth
    Z = A.dot(syms[f"W{L}"]) + syms[f"b{L}"]
    C = Z.shape[1]
    eps = options.get("label_smoothing", 0.0)
    w = options.get("class_weights", [1.0] * C)
    total, weight = 0, 0.0
    for i in range(Z.shape[0]):
        denom = sum(sp.exp(Z[i, k]) for k in range(C))
        for j in range(C):
            t = w[j] * ((1 - eps) * Y[i, j] + eps / C)
            total += -sp.Float(t) * sp.log(sp.exp(Z[i, j]) / denom)
            weight += w[j] * Y[i, j]
    loss = total / (weight if "class_weights" in options else Z.shape[0])
    flat = [s for k in syms for s in syms[k].ravel()]
    values = [float(v) for k in params for v in params[k].ravel()]
    out = sp.lambdify(flat, [loss, *[sp.diff(loss, s) for s in flat]], modules="math", cse=True)(*values)
    grads, pos = {}, 1
    for k, v in params.items():
        grads[k] = np.array(out[pos:pos + v.size]).reshape(v.shape)
        pos += v.size
    return out[0], grads


# depth 3 without and with both options (its scalar network is the slow one for SymPy)
ORACLE_CASES = [(depth, option) for depth in (1, 2) for option in OPTIONS] + [(3, "plain"), (3, "both")]


@pytest.mark.parametrize("depth,option", ORACLE_CASES)
def test_generated_equals_symbolic_oracle(depth, option, tmp_path):
    options = OPTIONS[option]
    model = _model(depth, options)
    module = pure_python(load_rendered(render_module(derive_model(model)), model.name, tmp_path))
    rng = np.random.default_rng(depth * 10 + len(option))
    params = module.init_params(seed=1)
    for k in params:
        params[k] = params[k] + rng.normal(0, 0.5, size=params[k].shape)
    X = rng.normal(size=(3, 2))
    Y = np.eye(3)[[0, 2, 1]]
    Y[1] = [0.2, 0.3, 0.5]  # a probability row among the one-hot ones
    want_loss, want_grads = _oracle(model, params, X, Y, options)
    np.testing.assert_allclose(module.loss(params, X, Y), want_loss, rtol=1e-10)
    got = module.gradients(params, X, Y)
    for k in params:
        np.testing.assert_allclose(got[k], want_grads[k], rtol=1e-10, atol=1e-13, err_msg=f"{model.name}: {k}")


def test_sympy_finds_the_joint_delta_and_the_jacobian():
    assert softmax.checked()
    a1, t1, t2, t3 = sp.symbols("a1 t1 t2 t3", real=True)
    found = softmax.found_joint(3)
    assert sp.expand(found.subs({sp.Symbol("a1", positive=True): a1}) - (a1 * (t1 + t2 + t3) - t1)) == 0
    d = derive_model(_model(2, {}))
    delta = d.eq("delta2").rhs
    N = sp.Symbol("N", positive=True, integer=True)
    assert sp.simplify(delta - (sp.Symbol("a_2", real=True) - sp.Symbol("y", real=True)) / N) == 0
    weighted = derive_model(_model(2, OPTIONS["weights"])).eq("delta2").rhs
    assert softmax.tau in weighted.free_symbols  # tau = sum of the weighted targets is not 1


# --------------------------------------------------------------------------- compiled


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A compiled model with label smoothing and class weights (one compile for the module)."""
    model = _model(2, OPTIONS["both"], "sm_compiled_both")
    return load_rendered(render_module(derive_model(model)), model.name, tmp_path_factory.mktemp("sm"))


def _params(module, rng, dtype=np.float64):
    p = module.init_params(seed=2, dtype=dtype)
    return {k: (v + rng.normal(0, 0.3, size=v.shape)).astype(dtype) for k, v in p.items()}


def _torch_loss(torch, params, X, target, act, **kw):
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(X)
    L = len(params) // 2
    for l in range(1, L):
        h = act(h @ tp[f"W{l}"] + tp[f"b{l}"])
    logits = h @ tp[f"W{L}"] + tp[f"b{L}"]
    loss = torch.nn.functional.cross_entropy(logits, target, **kw)
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in tp.items()}


def test_against_torch_index_and_probability_targets(generated):
    torch = pytest.importorskip("torch")
    module = generated["iris"]  # 4 -> 16 tanh -> 3 softmax
    rng = np.random.default_rng(0)
    params = _params(module, rng)
    X = rng.normal(size=(16, 4))
    labels = rng.integers(0, 3, 16)
    want, wgrad = _torch_loss(torch, params, X, torch.tensor(labels), torch.tanh)
    for Y in (labels, np.eye(3)[labels]):  # 1-D labels and one-hot rows give the same numbers
        np.testing.assert_allclose(module.loss(params, X, Y), want, rtol=1e-10)
        got = module.gradients(params, X, Y)
        for k in params:
            np.testing.assert_allclose(got[k], wgrad[k], rtol=1e-10, atol=1e-14)
    P = rng.dirichlet(np.ones(3), size=16)  # probability targets
    want, wgrad = _torch_loss(torch, params, X, torch.tensor(P), torch.tanh)
    np.testing.assert_allclose(module.loss(params, X, P), want, rtol=1e-10)
    got = module.gradients(params, X, P)
    for k in params:
        np.testing.assert_allclose(got[k], wgrad[k], rtol=1e-10, atol=1e-14)


def test_against_torch_label_smoothing_and_class_weights(both):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    params = _params(both, rng)
    X = rng.normal(size=(12, 2))
    labels = rng.integers(0, 3, 12)
    kw = {"weight": torch.tensor(OPTIONS["both"]["class_weights"], dtype=torch.float64), "label_smoothing": 0.1}
    want, wgrad = _torch_loss(torch, params, X, torch.tensor(labels), torch.tanh, **kw)
    np.testing.assert_allclose(both.loss(params, X, labels), want, rtol=1e-10)
    got = both.gradients(params, X, labels)
    for k in params:
        np.testing.assert_allclose(got[k], wgrad[k], rtol=1e-10, atol=1e-14)


def test_probability_targets_with_class_weights_divide_by_the_rows_weights(both):
    """Documented difference: PyTorch divides a weighted probability-target loss by N; derive by
    the rows' weights sum_i sum_j w_j y_ij, as PyTorch does for class-index targets."""
    rng = np.random.default_rng(2)
    params = _params(both, rng)
    X = rng.normal(size=(5, 2))
    P = rng.dirichlet(np.ones(3), size=5)
    w = np.array(OPTIONS["both"]["class_weights"])
    logits = np.tanh(X @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    t = w * (0.9 * P + 0.1 / 3)
    np.testing.assert_allclose(both.loss(params, X, P), -(t * logp).sum() / (w * P).sum(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_give_finite_loss_and_gradients(generated, dtype):
    """Logits of ±1e4 (exp overflows at 89 in float32) and one logit far above the rest."""
    module = generated["iris"]
    params = module.init_params(seed=0, dtype=dtype)
    params["W2"][:] = 0
    params["b2"][:] = np.array([1e4, -1e4, 0.0], dtype)
    X = np.zeros((3, 4), dtype)
    labels = np.array([0, 1, 2])
    value = module.loss(params, X, labels)
    # rows predict class 0 with probability 1: losses 0, 2e4, 1e4
    np.testing.assert_allclose(value, (0 + 2e4 + 1e4) / 3, rtol=1e-6)
    grads = module.gradients(params, X, labels)
    for k, g in grads.items():
        assert np.all(np.isfinite(g)), k
    # dL/db2 = mean over rows of (a - y) = ([1, 0, 0] * 3 - onehot) / 3
    np.testing.assert_allclose(grads["b2"], [2 / 3, -1 / 3, -1 / 3], atol=1e-6)
    A = module.forward(params, X)
    assert np.all(np.isfinite(A)) and np.allclose(A.sum(1), 1)


def test_targets_are_checked_with_the_row_named(generated):
    module = generated["iris"]
    params = module.init_params(seed=0)
    X = np.zeros((3, 4))
    with pytest.raises(ValueError, match="row 1 is not a probability distribution"):
        module.loss(params, X, np.array([[1.0, 0, 0], [0.5, 0.6, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="class label 3 at row 2"):
        module.loss(params, X, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        module.loss(params, X, np.zeros((3, 2)))


def test_training_with_labels_equals_training_with_one_hot_rows(generated):
    module = generated["iris"]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 4))
    labels = rng.integers(0, 3, 30)
    runs = []
    for Y in (labels, np.eye(3)[labels]):
        p = module.init_params(seed=4)
        s = module.init_state(p)
        runs.append((module.train(p, s, X, Y, epochs=3, batch_size=8)["loss"], p))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k])


@pytest.mark.parametrize("layers,loss,match", [
    ([[4, "softmax"], [3, "softmax"]], "cross_entropy", "only for the output layer"),
    ([[3, "softmax"]], "bce", "needs loss 'cross_entropy'"),
    ([[3, "softmax"]], "mse", "needs loss 'cross_entropy'"),
    ([[1, "sigmoid"]], "cross_entropy", "'bce' is the cross-entropy of a sigmoid"),
    ([[3, "tanh"]], "categorical_crossentropy", "needs a 'softmax' output layer"),
    ([[1, "softmax"]], "cross_entropy", "at least 2 units"),
    ([[3, "softmax"]], {"name": "cross_entropy", "class_weights": [1, 2]}, "one weight per class"),
    ([[3, "softmax"]], {"name": "cross_entropy", "label_smoothing": 1.5}, "label_smoothing"),
])
def test_the_spec_refuses_with_a_clear_error(layers, loss, match):
    with pytest.raises(SpecError, match=match):
        Model("bad", inputs=2, layers=layers, loss=loss)


def test_show_and_latex_derive_the_softmax(catalogue):
    from derive import latex
    from derive.text import to_text

    d = derive_model(catalogue["spiral"])
    text = to_text(d)
    assert "the Jacobian diag(a) - a aᵀ" in text and "as SymPy finds it" in text
    tex = latex.to_latex(d)
    for piece in (r"\operatorname{diag}(a) - a a^{\top}", r"\operatorname{lse}_{3}", "label smoothing",
                  r"\frac{e^{z_{3,j}}}{\sum_{k=1}^{n_{3}} e^{z_{3,k}}}"):
        assert piece in tex, piece


def test_derive_train_digits_reaches_95_percent_held_out(tmp_path):
    """End to end through the CLI: digits (1797 8x8 images, 10 classes), 20 % held out."""
    from click.testing import CliRunner

    from cli import main

    result = CliRunner().invoke(main, ["train", "digits", "--standardize", "--epochs", "30", "--seed", "0",
                                       "--save", str(tmp_path / "digits.npz")])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.strip().startswith("val loss"))
    accuracy = float(line.split("accuracy")[1].split("%")[0])
    assert accuracy >= 95.0, line
    assert "classification_report" in result.output and "confusion matrix" in result.output
    out = CliRunner().invoke(main, ["predict", str(tmp_path / "digits.npz"), "--data", "digits"])
    assert out.exit_code == 0, out.output
    header = out.output.splitlines()[0].split(",")
    assert header[1:] == [f"p_{k}" for k in range(10)]


@pytest.mark.parametrize("name", ["iris", "spiral"])
def test_displayed_softmax_equations_equal_the_kernels_values(name, catalogue):
    """Every displayed softmax equation (definition, computed form, log-sum-exp, the loss as
    defined and as computed, the targets, the Jacobian chain, the general and the computed delta),
    evaluated element by element with SymPy at the model's width, equals the kernels' arrays."""
    import importlib

    from .test_latex import call

    m = catalogue[name]
    d = derive_model(m)
    mod = importlib.import_module(f"generated.{name}")
    rng = np.random.default_rng(7)
    N, L, C = 5, m.depth, m.outputs
    widths = [m.inputs] + [layer.units for layer in m.layers]
    arrays = {"X": rng.normal(size=(N, m.inputs)), "Y": rng.dirichlet(np.ones(C), size=N)}
    for l in range(1, L + 1):
        arrays[f"W{l}"] = rng.normal(0, 0.8, size=(widths[l - 1], widths[l]))
        arrays[f"b{l}"] = rng.normal(0, 0.5, size=widths[l])
        for k in ("Z", "A", "D"):
            arrays[f"{k}{l}"] = np.zeros((N, widths[l]))
        arrays[f"gW{l}"] = np.zeros((widths[l - 1], widths[l]))
        arrays[f"gb{l}"] = np.zeros(widths[l])
    arrays["E"] = np.zeros((N, C))
    call(mod._forward, arrays)
    loss = call(mod._loss, arrays)
    call(mod._backward, arrays)
    Z, A, Y, D = arrays[f"Z{L}"], arrays[f"A{L}"], arrays["Y"], arrays[f"D{L}"]
    n, Nsym = sp.Symbol(f"n_{L}", positive=True, integer=True), sp.Symbol("N", positive=True, integer=True)
    z, a, t = (sp.IndexedBase(f"{x}_{L}", real=True) for x in ("z", "a", "t"))
    target = d.eq("loss.target").rhs if any(e.key == "loss.target" for e in d.equations) else sp.Symbol("y", real=True)
    T = np.array([[float(target.subs({sp.Symbol("y", real=True): Y[i, j], n: C})) for j in range(C)] for i in range(N)])

    def value(expr, i, j=None, k=None):
        """expr at row i (element j, k: 1-based indices of the displayed sums)."""
        e = expr.subs(n, C).doit()
        if j is not None:
            e = e.subs(softmax.j, j)
        if k is not None:
            e = e.subs(softmax.k, k)
        e = e.doit().subs({z[c + 1]: Z[i, c] for c in range(C)}).subs({a[c + 1]: A[i, c] for c in range(C)})
        e = e.subs({sp.IndexedBase("t", real=True)[c + 1]: T[i, c] for c in range(C)})
        subs = {softmax.row_symbol("m", L): Z[i].max(), softmax.row_symbol("lse", L): np.log(np.exp(Z[i]).sum()),
                Nsym: N, softmax.tau: T[i].sum(), sp.Symbol("y", real=True): Y[i, (j or 1) - 1],
                sp.Symbol("t", real=True): T[i, (j or 1) - 1], sp.Symbol(f"a_{L}", real=True): A[i, (j or 1) - 1],
                sp.Symbol(f"z_{L}", real=True): Z[i, (j or 1) - 1]}
        return float(e.subs(subs))

    fwd = d.eq(f"forward.a{L}")
    lse, el, out = d.eq("loss.lse"), d.eq("loss.element"), d.eq(f"delta{L}")
    dl_da, jac, chain, general, _ = out.steps
    for i in range(N):
        np.testing.assert_allclose(value(lse.rhs, i), np.log(np.exp(Z[i]).sum()), rtol=1e-12)
        for j in range(1, C + 1):
            for form in (fwd.rhs, fwd.steps[0]):
                np.testing.assert_allclose(value(form, i, j), A[i, j - 1], rtol=1e-12)
            np.testing.assert_allclose(value(chain, i, k=j) / N, D[i, j - 1], rtol=1e-10, atol=1e-15)
            np.testing.assert_allclose(value(general, i, k=j) / N, D[i, j - 1], rtol=1e-10, atol=1e-15)
            np.testing.assert_allclose(value(out.rhs, i, j), D[i, j - 1], rtol=1e-10, atol=1e-15)
    total = sum(value(el.rhs, i, j) for i in range(N) for j in range(1, C + 1))
    defined = sum(value(el.steps[0], i, j) for i in range(N) for j in range(1, C + 1))
    np.testing.assert_allclose([total / N, defined / N], [loss, loss], rtol=1e-12)
