"""Classifiers through fit, derive train and derive predict: class labels (text or integers) in,
one-hot rows trained on, labels and probabilities out; the metrics and report after training;
clear errors for a wrong number of classes, rows that are not distributions, unknown labels."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from derive.data import DataError, load_dataset, train_val_split
from derive.runtime import metrics as M
from derive.runtime.checkpoint import load_checkpoint
from derive.runtime.command import save_result
from derive.runtime.fit import fit

try:
    import sklearn.metrics as skm
except ImportError:
    skm = None

CLASSES = ("setosa", "versicolor", "virginica")


@pytest.fixture(scope="module")
def iris_module():
    return importlib.import_module("generated.iris")


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris")


@pytest.fixture(scope="module")
def names(iris):
    """iris's species as text, a label per row."""
    return np.array(iris.classes)[iris.Y[:, 0].astype(int)]


def _same_params(a, b):
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _csv(path, X, header, column):
    rows = [",".join(header)] + [",".join([*(f"{v:.17g}" for v in x), str(c)]) for x, c in zip(X, column)]
    path.write_text("\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------- fit


def test_labels_train_as_their_one_hot_rows(iris_module, iris, names):
    """Text labels, the data set's class indices and the one-hot rows of the sorted classes are
    the same training: the same parameters, bit for bit; labels come back from predict_labels."""
    idx = iris.Y[:, 0].astype(int)
    by_text = fit(iris_module, iris.X, names, epochs=4, standardize=True)
    by_rows = fit(iris_module, iris.X, np.eye(3)[idx], epochs=4, standardize=True)
    by_data = fit(iris_module, data=iris, epochs=4, standardize=True)
    _same_params(by_text, by_rows)
    _same_params(by_text, by_data)
    assert by_text.labels.classes == by_data.labels.classes == by_text.classes == CLASSES
    assert by_rows.labels is None and by_rows.classes == (0, 1, 2)
    got = by_text.predict_labels(iris.X)
    assert got.tolist() == np.array(CLASSES)[by_rows.predict_labels(iris.X)].tolist()
    proba = by_text.predict_proba(iris.X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (np.array(CLASSES)[proba.argmax(axis=1)] == got).all()
    ints = fit(iris_module, iris.X, (idx + 1) * 10, epochs=4, standardize=True)  # integer labels 10, 20, 30
    _same_params(ints, by_rows)
    assert ints.classes == (10, 20, 30) and set(ints.predict_labels(iris.X).tolist()) <= {10, 20, 30}


def test_metrics_after_training_are_those_of_the_predictions(iris_module, iris, names):
    r = fit(iris_module, data=iris, epochs=30, standardize=True, val_split=0.0)
    m = r.metrics
    pred = r.predict_labels(iris.X)
    assert m["train_accuracy"] == pytest.approx(np.mean(pred == names), abs=1e-15)
    report = M.classification_report(iris.Y[:, 0].astype(int), r.predict(iris.X), "multiclass", CLASSES)
    assert m["train_report"]["classes"] == list(CLASSES)
    assert m["train_report"]["support"] == report.support.tolist() == [50, 50, 50]
    np.testing.assert_allclose(m["train_report"]["f1"], report.f1, rtol=1e-12)
    assert m["train_confusion"] == report.confusion.tolist()
    assert m["train_macro_f1"] == pytest.approx(report.averages["macro avg"][2], rel=1e-12)
    assert m["train_log_loss"] == pytest.approx(report.log_loss, rel=1e-12)
    if skm is not None:
        assert m["train_log_loss"] == pytest.approx(skm.log_loss(names, r.predict_proba(iris.X), labels=CLASSES),
                                                    rel=1e-12)
    text = r.summary()
    assert report.text() in text + "\n" and report.confusion_text() in text
    assert "training rows (150), as scikit-learn's classification_report:" in text
    assert f"accuracy {m['train_accuracy']:.2%}   log loss {m['train_log_loss']:.4g}" in text


def test_bad_targets_are_refused_with_the_row(iris_module, iris, names):
    four = names.copy()
    four[7] = "daisy"
    with pytest.raises(DataError, match=r"the target column has 4 classes \['daisy', 'setosa', 'versicolor', "
                                        r"'virginica'\] but the model's softmax output has 3 units"):
        fit(iris_module, iris.X, four, epochs=1)
    rows = np.eye(3)[iris.Y[:, 0].astype(int)]
    rows[4] = [0.5, 0.6, 0.0]
    with pytest.raises(DataError, match="target row 5 sums to 1.1, not 1"):
        fit(iris_module, iris.X, rows, epochs=1)
    rows[4] = [1.5, -0.5, 0.0]
    with pytest.raises(DataError, match="row 5"):
        fit(iris_module, iris.X, rows, epochs=1)
    with pytest.raises(DataError, match="Y has 2 columns but model 'iris' has a softmax output of 3 units"):
        fit(iris_module, iris.X, rows[:, :2], epochs=1)
    with pytest.raises(DataError, match="row 3: 0.5 is not a whole number"):
        fit(iris_module, iris.X, np.r_[0.0, 1.0, 0.5, np.zeros(147)], epochs=1)


def test_resume_keeps_the_classes_and_refuses_an_unknown_label(tmp_path, iris_module, iris, names):
    a = fit(iris_module, data=iris, epochs=3, standardize=True)
    path = save_result(a, str(tmp_path / "a.npz"), iris)
    ck = load_checkpoint(path, iris_module)
    assert ck.meta["classes"] == {"kind": "str", "classes": list(CLASSES)}
    assert ck.meta["metrics"]["val_report"]["classes"] == list(CLASSES) and "val_confusion" in ck.meta["metrics"]
    two = names != "virginica"  # rows of two classes only: still the model's three
    b = fit(iris_module, iris.X[two], names[two], epochs=1, resume=path)
    assert b.labels.classes == CLASSES
    bad = names.copy()
    bad[6] = "daisy"
    with pytest.raises(DataError, match="row 7: unknown class label 'daisy'"):
        fit(iris_module, iris.X, bad, epochs=1, resume=path)


def test_multilabel_gets_per_label_metrics():
    """Several sigmoid outputs with BCE: subset and per-label accuracy, the per-label table with
    micro / macro / weighted / samples averages; no confusion matrix. (A numpy stand-in for the
    generated module: building and compiling a model of its own would take most of a minute.)"""
    from types import SimpleNamespace

    from derive.runtime.fit import FitResult, _metrics

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    Y = (X + rng.normal(scale=[0.1, 0.3, 1.0], size=X.shape) > [0.0, 0.5, -0.5]).astype(float)  # label 3 noisy
    W = np.diag([4.0, 3.0, 0.5])

    def forward(params, X):
        return 1 / (1 + np.exp(-(X - [0.0, 0.5, -0.5]) @ params["W1"]))

    def loss(params, X, Y):
        p = forward(params, X)
        return float(-np.mean(np.sum(Y * np.log(p) + (1 - Y) * np.log1p(-p), axis=1)))

    module = SimpleNamespace(SPEC={"name": "three_labels", "inputs": 3, "layers": [[3, "sigmoid"]], "loss": "bce"},
                             forward=forward, loss=loss)
    r = FitResult(module, {"W1": W}, {}, None, {}, {"epochs": 1, "wall_time": 0.0, "steps": 1, "restarts": 1})
    _metrics(r, X, Y, X[:0], Y[:0], {}, ("red", "green", "blue"))
    m = r.metrics
    H = r.predict_labels(X)
    assert H.shape == (200, 3) and set(np.unique(H)) == {0, 1}
    assert m["train_accuracy"] == pytest.approx(np.mean((H == Y).all(axis=1))) and m["train_accuracy"] < 1
    assert m["train_label_accuracy"] == pytest.approx(np.mean(H == Y))
    assert m["train_report"]["classes"] == ["red", "green", "blue"] and "train_confusion" not in m
    assert "val_loss" not in m and m["train_loss"] == loss(r.params, X, Y)
    if skm is not None:
        assert r.reports["train"].text() == skm.classification_report(Y, H, target_names=["red", "green", "blue"],
                                                                      zero_division=0)
        assert m["train_samples_f1"] == pytest.approx(skm.f1_score(Y, H, average="samples", zero_division=0), rel=1e-12)
    text = r.summary()
    assert "subset accuracy" in text and "samples avg" in text and "micro avg" in text and "confusion" not in text
    np.testing.assert_array_equal(r.predict_proba(X), r.predict(X))


def test_regression_metrics_through_fit():
    module = importlib.import_module("generated.diabetes")
    d = load_dataset("diabetes")
    r = fit(module, data=d, epochs=5, standardize=True, val_split=0.0)
    expected = M.regression_metrics(d.Y, r.predict(d.X))
    for k, v in expected.items():
        assert r.metrics[f"train_{k}"] == pytest.approx(v, rel=1e-12), k
    assert "RMSE" in r.summary() and "MAPE" in r.summary() and "accuracy" not in r.summary()
    assert r.reports == {} and r.classes is None
    with pytest.raises(Exception, match="regression model"):
        r.predict_labels(d.X)


# --------------------------------------------------------------------------- derive train / derive predict


def test_cli_text_labels_report_and_predict(tmp_path, iris, names):
    csv = _csv(tmp_path / "iris.csv", iris.X, [*iris.feature_names, "species"], names)
    save = tmp_path / "iris.npz"
    r = _run("train", "iris", "--data", csv, "--target", "species", "--standardize", "--epochs", 30, "--save", save)
    assert r.exit_code == 0, r.output
    assert "-> species (3 classes)" in r.output
    ck = load_checkpoint(save)
    # the printed report is scikit-learn's for the validation rows
    _, _, Xva, Yva = train_val_split(iris.X, iris.Y, 0.2, 0)
    module = importlib.import_module("generated.iris")
    proba = module.forward(ck.params, ck.standardizer.transform(Xva))
    yva, yhat = Yva[:, 0].astype(int), proba.argmax(axis=1)
    expected = (skm.classification_report(yva, yhat, labels=[0, 1, 2], target_names=CLASSES, zero_division=0)
                if skm is not None else M.label_report(yva, yhat, CLASSES).text())
    assert "validation rows (30), as scikit-learn's classification_report:\n" + expected in r.output
    assert "true \\ predicted  setosa  versicolor  virginica" in r.output
    assert ck.meta["metrics"]["val_confusion"] == M.confusion_matrix(yva, yhat, 3).tolist()
    # predict: the label and a probability per class, from a file with or without the labels
    inputs = tmp_path / "inputs.csv"  # the inputs only, as for new flowers
    inputs.write_text("\n".join(",".join(line.split(",")[:-1]) for line in csv.read_text().splitlines()) + "\n")
    full = module.forward(ck.params, ck.standardizer.transform(iris.X))
    for data in (csv, inputs):
        r = _run("predict", save, "--data", data)
        assert r.exit_code == 0, r.output
        lines = r.output.strip().splitlines()
        assert lines[0] == "species,p_setosa,p_versicolor,p_virginica" and len(lines) == 151
        got_labels = [line.split(",")[0] for line in lines[1:]]
        got = np.array([line.split(",")[1:] for line in lines[1:]], dtype=float)
        np.testing.assert_allclose(got, full, rtol=1e-8)
        assert got_labels == [CLASSES[k] for k in full.argmax(axis=1)]


def test_cli_bad_labels_are_one_clear_line(tmp_path, iris, names):
    save = tmp_path / "iris.npz"
    assert _run("train", "iris", "--epochs", 2, "--save", save).exit_code == 0
    bad = names.copy()
    bad[3] = "daisy"
    csv = _csv(tmp_path / "bad.csv", iris.X, [*iris.feature_names, "species"], bad)
    out = tmp_path / "pred.csv"
    r = _run("predict", save, "--data", csv, "-o", out)
    assert r.exit_code == 1 and "row 4: unknown class label 'daisy'" in r.output and "Traceback" not in r.output
    assert not out.exists()
    r = _run("train", "iris", "--data", csv, "--target", "species", "--epochs", 1)
    assert r.exit_code == 1 and "has 4 classes" in r.output and "softmax output has 3 units" in r.output


def test_cli_binary_text_labels(tmp_path):
    moons = load_dataset("moons", n=80, seed=2)
    csv = _csv(tmp_path / "moons.csv", moons.X, ["x1", "x2", "label"],
               np.where(moons.Y[:, 0] == 1, "yes", "no"))
    save = tmp_path / "moons.npz"
    r = _run("train", "moons", "--data", csv, "--target", "label", "--epochs", 10, "--save", save)
    assert r.exit_code == 0, r.output
    assert "\n          no " in r.output and "\n         yes " in r.output
    r = _run("predict", save, "--data", csv)
    lines = r.output.strip().splitlines()
    assert lines[0] == "label,p_yes" and len(lines) == 81
    rows = [line.split(",") for line in lines[1:]]
    assert all((label == "yes") == (float(p) >= 0.5) for label, p in rows)
