"""derive.sklearn: DeriveClassifier / DeriveRegressor behave as scikit-learn estimators and train
exactly as derive's own modules do.

The models here keep to a few module shapes (ReLU hidden layers with a softmax, one sigmoid, two
sigmoids, one or two identity outputs), so that the suite compiles few modules; widths vary
freely, since they share a module.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from derive.derivation import Derivation  # noqa: E402
from derive.runtime.fit import fit as derive_fit  # noqa: E402
from derive.sklearn import DeriveClassifier, DeriveRegressor, _kernels  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------- the same training as derive's


def test_classifier_trains_bit_for_bit_as_the_catalogue_digits_model():
    """generated/digits.py is 64 -> 128 relu -> 10 softmax, Adam, l2 = 1e-4; the estimator's
    module is declared with placeholder widths and gets 128 from its arrays. Same seed, same
    batches: the same parameters to the last bit (alpha = l2 * batch, scikit-learn's scaling)."""
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:300]
    y = y[:300]
    clf = DeriveClassifier(hidden_layer_sizes=(128,), alpha=1e-4 * 32, batch_size=32, learning_rate_init=1e-3,
                           max_iter=4, random_state=3).fit(X, y)
    assert clf.spec_.layers[0].units == 128 and clf._kernel_spec.layers[0].units == 2
    assert dict(clf.spec_.regularization) == {"l2": 1e-4}
    ref = derive_fit("digits", X, y, epochs=4, batch_size=32, seed=3, val_split=0.0)
    for l in (1, 2):
        np.testing.assert_array_equal(clf.coefs_[l - 1], ref.params[f"W{l}"])
        np.testing.assert_array_equal(clf.intercepts_[l - 1], ref.params[f"b{l}"])
    np.testing.assert_array_equal(clf.loss_curve_, ref.history["loss"][0])


def test_regressor_trains_bit_for_bit_as_the_catalogue_diabetes_model():
    """generated/diabetes.py is 10 -> 32 relu -> 1 identity, MSE, Adam lr 0.01, no penalty."""
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    reg = DeriveRegressor(hidden_layer_sizes=(32,), alpha=0.0, batch_size=16, learning_rate_init=1e-2, max_iter=3,
                          random_state=1).fit(X, y)
    ref = derive_fit("diabetes", X, y, epochs=3, batch_size=16, seed=1, val_split=0.0)
    for l in (1, 2):
        np.testing.assert_array_equal(reg.coefs_[l - 1], ref.params[f"W{l}"])
    np.testing.assert_array_equal(reg.predict(X[:5]), ref.predict(X[:5])[:, 0])


def test_widths_and_hyperparameters_share_one_module(iris):
    X, y = iris
    fitted = [DeriveClassifier(hidden_layer_sizes=(w,), learning_rate_init=lr, alpha=a, max_iter=2,
                               random_state=0).fit(X, y) for w, lr, a in ((5, 1e-3, 1e-4), (17, 0.05, 0.0))]
    a, b = fitted
    assert a.spec_.name == b.spec_.name and a._kernel_spec == b._kernel_spec
    assert [W.shape for W in a.coefs_] == [(4, 5), (5, 3)] and [W.shape for W in b.coefs_] == [(4, 17), (17, 3)]
    assert a._module().train is b._module().train  # the same compiled function
    assert a._hyper["lr"] == 1e-3 and b._hyper["lr"] == 0.05
    # a second hidden layer, another activation or another output is another module
    deeper = DeriveClassifier(hidden_layer_sizes=(5, 5), max_iter=1)._model(
        DeriveClassifier(hidden_layer_sizes=(5, 5))._settings(150, False), 4, 3, "softmax", "cross_entropy")
    assert deeper[1].name != a.spec_.name
    # one-unit layers keep code of their own (their backward pass is an outer product)
    one = DeriveClassifier(hidden_layer_sizes=(1,))
    _, kernel, _ = one._model(one._settings(150, False), 4, 3, "softmax", "cross_entropy")
    assert [x.units for x in kernel.layers] == [1, 2]


def _code(model) -> list[str]:
    """A rendered module's text without what records the spec (its summary, header, SPEC, HYPER)."""
    from derive.codegen.render import render_module
    from derive.derivation import derive_model

    lines, out, in_spec = render_module(derive_model(model)).splitlines(), [], False
    for i, line in enumerate(lines):
        in_spec = (in_spec or line.startswith("SPEC = ")) and not line.startswith("SPEC_HASH")
        if i and not in_spec and not line.startswith(("# derive:", "SPEC_HASH", "HYPER = ")) \
                and "Hyperparameters default to" not in line:
            out.append(line)
    return out


def test_generated_code_does_not_depend_on_widths_or_values():
    """What the shared modules rest on: derive renders the same kernels for any widths other
    than 1 and any number of inputs, and for any hyperparameter values (they are arguments)."""
    from derive.spec import make_model

    def model(n_in, widths, lr, l2):
        layers = [[w, "relu"] for w in widths[:-1]] + [[widths[-1], "softmax"]]
        return make_model("m", n_in, layers, "cross_entropy", {"name": "adam", "lr": lr}, regularization={"l2": l2})

    placeholder = _code(model(2, [2, 2, 2], 1e-3, 0.0))
    assert _code(model(37, [50, 3, 9], 0.1, 0.5)) == placeholder
    assert _code(model(1, [2, 64, 2], 0.2, 1e-4)) == placeholder
    assert _code(model(2, [2, 1, 2], 1e-3, 0.0)) != placeholder  # a one-unit layer has code of its own


def test_schedule_clip_values_are_arguments_not_module_code():
    def kernel_and_hyper(**kw):
        est = DeriveRegressor(**kw)
        full, kernel, hyper = est._model(est._settings(100, False), 3, 1, "identity", est._loss())
        return full, kernel, hyper

    f1, k1, h1 = kernel_and_hyper(schedule={"name": "step", "step_size": 10, "gamma": 0.5}, clip=1.0)
    f2, k2, h2 = kernel_and_hyper(schedule={"name": "step", "step_size": 3, "gamma": 0.9}, clip={"norm": 7.0})
    assert k1 == k2 and f1 != f2
    assert (h1["gamma"], h1["step_size"], h1["clip_norm"]) == (0.5, 10, 1.0)
    assert (h2["gamma"], h2["step_size"], h2["clip_norm"]) == (0.9, 3, 7.0)
    f3, k3, _ = kernel_and_hyper(dropout=0.2, loss={"name": "huber", "delta": 2.0})
    assert f3.dropout == (0.2,) and k3.dropout == (0.2,)  # compile-time: in the module
    assert dict(k3.loss_options) == {"delta": 2.0} and k3 != k1


# --------------------------------------------------------------------------- targets and outputs


def test_binary_text_labels_one_sigmoid(cancer):
    X, y = cancer
    labels = np.where(y == 1, "benign", "malignant")
    clf = DeriveClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=30, random_state=0).fit(X, labels)
    assert clf.spec_.layers[-1].to_list() == [1, "sigmoid"] and clf.spec_.loss == "bce"
    assert clf.classes_.tolist() == ["benign", "malignant"] and clf.out_activation_ == "logistic"
    proba, z = clf.predict_proba(X), clf.decision_function(X)
    assert proba.shape == (len(X), 2) and z.shape == (len(X),)
    np.testing.assert_allclose(proba[:, 1], _sigmoid(z), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    log_proba = clf.predict_log_proba(X)  # from the logits: finite where a probability rounds to 0 or 1
    np.testing.assert_allclose(np.exp(log_proba), proba, rtol=1e-9, atol=1e-15)
    assert np.isfinite(log_proba).all()
    pred = clf.predict(X)
    assert set(pred) <= {"benign", "malignant"}
    assert (pred == np.where(z > 0, "malignant", "benign")).all()
    assert clf.score(X, labels) > 0.95


def test_multiclass_integer_labels_softmax(iris):
    X, y = iris
    odd = np.array([3, 7, 11])[y]  # integer labels that are not 0 .. C-1
    clf = DeriveClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=60, random_state=0).fit(X, odd)
    assert clf.spec_.layers[-1].to_list() == [3, "softmax"] and clf.spec_.loss == "cross_entropy"
    assert clf.classes_.tolist() == [3, 7, 11] and clf.n_outputs_ == 3 and clf.n_layers_ == 3
    proba, z = clf.predict_proba(X), clf.decision_function(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, soft / soft.sum(axis=1, keepdims=True), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10, atol=1e-15)
    assert (clf.predict(X) == clf.classes_[np.argmax(z, axis=1)]).all()
    assert clf.score(X, odd) > 0.9
    assert len(clf.loss_curve_) == clf.n_iter_ == 60 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.t_ == 60 * len(X)


def test_multilabel_indicator_sigmoids(iris):
    X, y = iris
    Y = np.column_stack([y == 0, y == 2]).astype(np.int64)
    clf = DeriveClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=40, random_state=0).fit(X, Y)
    assert clf.spec_.layers[-1].to_list() == [2, "sigmoid"] and clf.classes_.tolist() == [0, 1]
    pred, proba, z = clf.predict(X), clf.predict_proba(X), clf.decision_function(X)
    assert pred.shape == Y.shape and pred.dtype == Y.dtype and proba.shape == Y.shape
    np.testing.assert_allclose(proba, _sigmoid(z), rtol=1e-12)
    assert ((pred == 1) == (z > 0)).all()
    assert (pred == Y).mean() > 0.9


def test_regressor_one_and_several_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=200)
    reg = DeriveRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.02, max_iter=100, random_state=0).fit(X, y)
    assert reg.predict(X).shape == (200,) and reg.score(X, y) > 0.9 and reg.out_activation_ == "identity"
    Y = np.column_stack([y, X[:, 2]])
    reg2 = clone(reg).fit(X, Y)
    assert reg2.predict(X).shape == (200, 2) and reg2.spec_.layers[-1].to_list() == [2, "identity"]
    # alpha -> l2: scikit-learn minimises (1/2B) sum of squares + alpha/(2B) |W|^2 summed over
    # the outputs; derive's MSE is the mean over B*K elements, so l2 = 2 alpha / (B K)
    assert dict(reg2.spec_.regularization)["l2"] == pytest.approx(2 * 1e-4 / (200 * 2))
    assert reg2.score(X, Y) > 0.9


def test_l2_scaling_per_loss():
    def l2(est, n_out, out, loss, n=1000):
        return dict(est._model(est._settings(n, False), 4, n_out, out, loss)[0].regularization)["l2"]

    clf = DeriveClassifier(alpha=0.5, batch_size=50)
    assert l2(clf, 3, "softmax", "cross_entropy") == pytest.approx(0.5 / 50)
    assert l2(clf, 1, "sigmoid", "bce") == pytest.approx(0.5 / 50)
    assert l2(clf, 4, "sigmoid", "bce") == pytest.approx(0.5 / (50 * 4))
    assert l2(DeriveClassifier(alpha=0.5), 3, "softmax", "cross_entropy", n=120) == pytest.approx(0.5 / 120)  # auto
    assert l2(DeriveClassifier(alpha=0.5), 3, "softmax", "cross_entropy", n=5000) == pytest.approx(0.5 / 200)


def test_solver_mapping():
    def optimizer(**kw):
        return DeriveClassifier(**kw)._optimizer()

    assert optimizer() == {"name": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert optimizer(solver="adam", beta_1=0.8, epsilon=1e-6)["beta1"] == 0.8
    assert optimizer(solver="sgd") == {"name": "nesterov", "lr": 1e-3, "momentum": 0.9}
    assert optimizer(solver="sgd", nesterovs_momentum=False, momentum=0.5) == {"name": "momentum", "lr": 1e-3,
                                                                               "momentum": 0.5}
    assert optimizer(solver="sgd", momentum=0.0) == {"name": "sgd", "lr": 1e-3}
    assert optimizer(solver={"name": "rmsprop", "centered": True, "alpha": 0.9}) == {
        "name": "rmsprop", "lr": 1e-3, "centered": True, "alpha": 0.9}


# --------------------------------------------------------------------------- partial_fit, early stopping, restarts


def test_partial_fit(iris):
    X, y = iris
    clf = DeriveClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01, batch_size=16, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=[0, 1, 2])  # only class 0 in this first batch
    assert clf.classes_.tolist() == [0, 1, 2] and clf.n_iter_ == 1
    for _ in range(30):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 31 and len(clf.loss_curve_) == 31 and clf.t_ == 50 + 30 * 150
    assert clf.loss_curve_[-1] < clf.loss_curve_[1] and clf.score(X, y) > 0.85
    with pytest.raises(ValueError, match="labels not in classes_"):
        clf.partial_fit(X[:3], [0, 1, 5])
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)
    with pytest.raises(ValueError, match="call fit to start again"):
        clone(clf).set_params(hidden_layer_sizes=(9,)).partial_fit(X, y, classes=[0, 1, 2]).set_params(
            hidden_layer_sizes=(10,)).partial_fit(X, y)
    clf.set_params(learning_rate_init=0.02).partial_fit(X, y)  # hyperparameter values may change
    assert clf._hyper["lr"] == 0.02 and clf.n_iter_ == 32
    # partial_fit after fit goes on from the fitted parameters and optimizer state
    fitted = clone(clf).set_params(max_iter=5).fit(X, y)
    before = [W.copy() for W in fitted.coefs_]
    fitted.partial_fit(X, y)
    assert fitted.n_iter_ == 6 and not np.array_equal(before[0], fitted.coefs_[0])


def test_partial_fit_epochs_equal_fit_epochs():
    """Five partial_fit calls are five epochs of fit: the same shuffles (seeded by the seed and
    the epoch), the same optimizer state carried over. (fit takes its rows in the order of
    derive's seeded train/validation split, so partial_fit gets them in that order.)"""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = X @ [1.0, -1.0, 0.5]
    kw = dict(hidden_layer_sizes=(6,), batch_size=8, random_state=4)
    whole = DeriveRegressor(max_iter=5, **kw).fit(X, y)
    part = DeriveRegressor(**kw)
    order = np.random.default_rng(4).permutation(60)  # derive.data.train_val_split's order for seed 4
    for _ in range(5):
        part.partial_fit(X[order], y[order])
    for a, b in zip(whole.coefs_, part.coefs_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(whole.loss_curve_, part.loss_curve_, rtol=1e-12)


def test_early_stopping_restores_the_best_epoch(cancer):
    X, y = cancer
    clf = DeriveClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.05, max_iter=300, early_stopping=True,
                           validation_fraction=0.2, n_iter_no_change=5, random_state=0).fit(X, y)
    assert clf.n_iter_ < 300 and clf.best_loss_ is None
    val = clf.validation_loss_curve_
    assert len(val) == clf.n_iter_ == len(clf.loss_curve_)
    best = int(np.argmin(val))
    assert clf.best_validation_loss_ == val[best]
    assert clf.n_iter_ == best + 1 + 6  # scikit-learn stops after n_iter_no_change + 1 epochs without improvement
    assert clf.t_ == clf.n_iter_ * (len(X) - round(0.2 * len(X)))


def test_restarts_keep_the_best_run(iris):
    X, y = iris
    one = DeriveClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=5)
    runs = [clone(one).set_params(random_state=5 + k).fit(X, y).loss_ for k in range(3)]
    best = clone(one).set_params(restarts=3).fit(X, y)
    assert best.fit_metrics_["restarts"] == 3
    assert best.loss_ == pytest.approx(min(runs), rel=1e-12)


def test_divergence_raises_with_the_last_finite_parameters():
    from derive.runtime.fit import Diverged

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = 1e3 * X[:, 0]
    wild = dict(hidden_layer_sizes=(6,), solver="sgd", momentum=0.0, learning_rate_init=1e12, batch_size=8,
                random_state=0)
    with pytest.raises(Diverged, match="diverged"):
        DeriveRegressor(max_iter=5, **wild).fit(X, y)
    reg = DeriveRegressor(**{**wild, "learning_rate_init": 1e-3}).partial_fit(X, y)
    with pytest.raises(Diverged, match="partial_fit"):
        reg.set_params(learning_rate_init=1e12).partial_fit(X, y)
    assert all(np.isfinite(W).all() for W in reg.coefs_) and reg.n_iter_ == 1


def test_verbose_prints_each_epoch_and_the_summary(iris, capsys):
    X, y = iris
    DeriveClassifier(hidden_layer_sizes=(4,), max_iter=3, verbose=True, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "epoch 1/3  loss" in out and "epoch 3/3  loss" in out and "classification_report" in out


def test_float32(cancer):
    X, y = cancer
    clf = DeriveClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=20, dtype="float32",
                           random_state=0).fit(X, y)
    assert all(W.dtype == np.float32 for W in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X).dtype == np.float64  # outputs follow X's dtype
    assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert clf.score(X, y) > 0.9


# --------------------------------------------------------------------------- scikit-learn plumbing


def test_pipeline_in_grid_search_and_cross_val_score(iris):
    X, y = load_iris(return_X_y=True)  # raw features: the pipeline standardises them
    pipe = Pipeline([("scale", StandardScaler()), ("clf", DeriveClassifier(max_iter=60, random_state=0))])
    grid = GridSearchCV(pipe, {"clf__learning_rate_init": [1e-3, 0.02], "clf__hidden_layer_sizes": [(4,), (16,)]},
                        cv=3)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4 and np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_params_["clf__learning_rate_init"] == 0.02  # 60 epochs at 1e-3 is not enough
    assert grid.best_score_ > 0.85 and grid.score(X, y) > 0.9
    names = {grid.best_estimator_["clf"].spec_.name}
    for params in grid.cv_results_["params"]:
        names.add(clone(pipe).set_params(**params).fit(X, y)["clf"].spec_.name)
    assert len(names) == 1  # the whole grid ran on one generated module
    scores = cross_val_score(pipe.set_params(clf__learning_rate_init=0.02), X, y, cv=5)
    assert scores.shape == (5,) and scores.mean() > 0.9


def test_get_set_params_and_clone():
    clf = DeriveClassifier(hidden_layer_sizes=(7, 3), activation="tanh", dropout=[0.1, 0.0],
                           schedule={"name": "cosine", "T_max": 50}, clip={"norm": 1.0}, restarts=2)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (7, 3) and params["schedule"] == {"name": "cosine", "T_max": 50}
    twin = clone(clf)
    assert twin.get_params() == params and twin is not clf and twin.schedule is not clf.schedule
    assert clf.set_params(alpha=0.5, activation="logistic") is clf and clf.alpha == 0.5
    assert DeriveRegressor(loss="huber").get_params()["loss"] == "huber"


@pytest.mark.parametrize("bad, match", [
    ({"solver": "lbfgs"}, "lbfgs.*not supported"),
    ({"solver": "newton"}, "solver must be one of"),
    ({"activation": "softmax"}, "activation must be one of"),
    ({"hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": "8"}, "hidden_layer_sizes"),
    ({"alpha": -1.0}, "alpha"),
    ({"learning_rate_init": 0.0}, "learning_rate_init"),
    ({"beta_1": 1.0}, "beta_1"),
    ({"momentum": 1.5, "solver": "sgd"}, "momentum"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_iter": 0}, "max_iter"),
    ({"restarts": 0}, "restarts"),
    ({"n_iter_no_change": 0, "early_stopping": True}, "n_iter_no_change"),
    ({"validation_fraction": 1.0, "early_stopping": True}, "validation_fraction"),
    ({"dtype": "float16"}, "dtype"),
    ({"random_state": -1}, "random_state"),
    ({"clip": "big"}, "clip"),
    ({"init": "zeros"}, "unknown initialiser"),
    ({"dropout": 1.5}, "dropout"),
    ({"schedule": "sometimes"}, "schedule"),
    ({"solver": {"name": "adam", "lr": 0.1}}, "learning_rate_init"),
])
def test_bad_parameters_fail_at_fit_with_a_value_error(iris, bad, match):
    X, y = iris
    clf = DeriveClassifier(**{"max_iter": 1, **bad})  # __init__ stores, never checks
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_bad_targets_and_unfitted(iris):
    X, y = iris
    with pytest.raises(ValueError, match="only 1 class"):
        DeriveClassifier(max_iter=1).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Unknown label type"):
        DeriveClassifier(max_iter=1).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="loss must be one of"):
        DeriveRegressor(loss="poisson", max_iter=1).fit(X, X[:, 0])
    clf = DeriveClassifier()
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        clf.derivation()


def test_feature_names_from_a_dataframe(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    clf = DeriveClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["sepal_l", "sepal_w", "petal_l", "petal_w"] and clf.n_features_in_ == 4
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        plain = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict_proba(frame), plain)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"petal_w": "petal_width"}))


def test_derivation_and_show(iris):
    X, y = iris
    clf = DeriveClassifier(hidden_layer_sizes=(9,), max_iter=1, random_state=0).fit(X, y)
    d = clf.derivation()
    assert isinstance(d, Derivation) and d.model == clf.spec_
    md = d._repr_markdown_()
    assert "4 -> 9 relu -> 3 softmax" in md and "\\delta" in md
    assert "$$" in d._repr_latex_()
    assert "softmax" in clf.show() and "adam" in clf.show()


# --------------------------------------------------------------------------- saving


def test_pickle_and_joblib_in_a_new_process(tmp_path, iris):
    joblib = pytest.importorskip("joblib")
    X, y = iris
    clf = DeriveClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, np.array(["a", "b", "c"])[y])
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(f"""
        import joblib, numpy as np
        clf = joblib.load({str(path)!r})
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "proba.npy")!r}, clf.predict_proba(X))
        np.save({str(tmp_path / "pred.npy")!r}, clf.predict(X))
        print(type(clf).__name__, clf.classes_.tolist())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "DeriveClassifier ['a', 'b', 'c']"
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), clf.predict_proba(X))
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy", allow_pickle=False), clf.predict(X))


def test_import_without_scikit_learn_says_what_to_install():
    script = "import sys; sys.modules['sklearn'] = None; import derive.sklearn"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == ("ImportError: derive.sklearn needs scikit-learn >= 1.6: pip install 'derive[sklearn]' "
                    "(or pip install 'scikit-learn>=1.6')")
    assert "During handling" not in out.stderr  # one error, not a chain through scikit-learn


def test_the_module_view_keeps_the_module_functions(iris):
    X, y = iris
    clf = DeriveClassifier(hidden_layer_sizes=(6,), max_iter=1, random_state=0).fit(X, y)
    view = _kernels(clf.spec_, clf._kernel_spec)
    assert view.SPEC["layers"] == [[6, "relu"], [3, "softmax"]] and view.SPEC["inputs"] == 4
    params = view.init_params(seed=1)
    assert params["W1"].shape == (4, 6) and params["W2"].shape == (6, 3)
    sk = view.init_params(seed=1, init="sklearn")
    bound = np.sqrt(6 / (4 + 6))
    assert np.abs(sk["W1"]).max() <= bound and np.abs(sk["b1"]).max() > 0  # biases drawn too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert view.forward(params, X).shape == (150, 3)
