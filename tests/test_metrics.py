"""derive.runtime.metrics against scikit-learn (when importable) and against small cases checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from derive.runtime import metrics as M

try:
    import sklearn.metrics as skm
except ImportError:  # the hand-checked cases below still run
    skm = None

needs_sklearn = pytest.mark.skipif(skm is None, reason="scikit-learn is not installed (pip install -e '.[test]')")


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass_case(seed, n=60, C=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    P = _softmax(rng.normal(size=(n, C)) + 2.0 * np.eye(C)[y] * rng.random((n, 1)))
    return y, P


# --------------------------------------------------------------------------- hand-checked


def test_multiclass_by_hand():
    """3 classes, 5 rows: every number worked out on paper."""
    y = np.array([0, 0, 1, 2, 2])
    P = np.array([[0.7, 0.2, 0.1],   # 0 -> 0
                  [0.3, 0.6, 0.1],   # 0 -> 1
                  [0.2, 0.5, 0.3],   # 1 -> 1
                  [0.1, 0.1, 0.8],   # 2 -> 2
                  [0.5, 0.1, 0.4]])  # 2 -> 0
    r = M.classification_report(y, P, "multiclass", names=["a", "b", "c"])
    assert r.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert r.accuracy == pytest.approx(3 / 5)
    np.testing.assert_allclose(r.precision, [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(r.recall, [1 / 2, 1, 1 / 2])
    np.testing.assert_allclose(r.f1, [1 / 2, 2 / 3, 2 / 3])
    assert r.support.tolist() == [2, 1, 2]
    assert r.averages["macro avg"][2] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert r.averages["weighted avg"][0] == pytest.approx((2 * 0.5 + 0.5 + 2 * 1) / 5)
    assert r.log_loss == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.5, 0.8, 0.4])))
    one_hot = np.eye(3)[y]
    assert M.classification_report(one_hot, P, "multiclass").log_loss == pytest.approx(r.log_loss)
    assert r.text().splitlines()[0] == "              precision    recall  f1-score   support"
    assert r.text().splitlines()[2] == "           a       0.50      0.50      0.50         2"
    assert "    accuracy                           0.60         5" in r.text()
    assert r.confusion_text().splitlines() == ["true \\ predicted  a  b  c",
                                               "               a  1  1  0",
                                               "               b  0  1  0",
                                               "               c  1  0  1"]


def test_never_predicted_and_absent_classes_score_zero():
    """Class 1 is never predicted (precision 0/0 -> 0), class 2 never occurs (recall 0/0 -> 0,
    support 0); both count in the macro average, and F1 of a class with no tp is 0."""
    y = np.array([0, 0, 1, 1])
    yhat = np.array([0, 2, 0, 0])
    r = M.label_report(y, yhat, n_classes=3)
    np.testing.assert_allclose(r.precision, [1 / 3, 0, 0])
    np.testing.assert_allclose(r.recall, [1 / 2, 0, 0])
    np.testing.assert_allclose(r.f1, [2 / 5, 0, 0])
    assert r.support.tolist() == [2, 2, 0]
    assert r.averages["macro avg"][:3] == pytest.approx((1 / 9, 1 / 6, 2 / 15))
    assert r.averages["weighted avg"][:3] == pytest.approx((1 / 6, 1 / 4, 1 / 5))


def test_one_sample():
    r = M.classification_report(np.array([2]), np.array([[0.1, 0.2, 0.7]]), "multiclass")
    assert r.accuracy == 1.0 and r.support.tolist() == [0, 0, 1]
    assert r.confusion.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert r.log_loss == pytest.approx(-np.log(0.7))
    reg = M.regression_metrics([[2.0]], [[1.5]])
    assert reg["rmse"] == 0.5 and reg["mae"] == 0.5 and reg["mape"] == 0.25 and np.isnan(reg["r2"])


def test_binary_by_hand_and_clipping():
    y = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([0.2, 0.9, 0.4, 0.0])  # p = 0 for a 0 target: clipped, the term is log(1 - eps)
    r = M.classification_report(y, p, "binary", names=["no", "yes"])
    assert r.accuracy == 0.75 and r.confusion.tolist() == [[2, 0], [1, 1]]
    expected = -np.mean([np.log(0.8), np.log(0.9), np.log(0.4), np.log1p(-np.finfo(float).eps)])
    assert r.log_loss == pytest.approx(expected, rel=1e-12)
    # a certain wrong answer costs -log(eps), not infinity
    assert M.log_loss([1.0], [0.0]) == pytest.approx(-np.log(np.finfo(float).eps))
    assert M.log_loss([1.0], np.array([0.0], dtype=np.float32)) == pytest.approx(
        -np.log(np.finfo(np.float32).eps), rel=1e-6)


def test_multilabel_by_hand():
    Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    H = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    r = M.multilabel_report(Y, H, names=["x", "y", "z"])
    np.testing.assert_allclose(r.precision, [1, 1, 0])
    np.testing.assert_allclose(r.recall, [1, 1 / 2, 0])
    assert r.support.tolist() == [2, 2, 1]
    assert r.accuracy == pytest.approx(1 / 3)  # subset accuracy: only row 2 is all right
    assert r.extra["label_accuracy"] == pytest.approx(6 / 9)
    assert r.averages["micro avg"][:3] == pytest.approx((3 / 4, 3 / 5, 2 * 3 / 9))
    # samples avg: row 1 P=1 R=1/2, row 2 P=R=1, row 3 P=1/2 R=1/2
    assert r.averages["samples avg"][:2] == pytest.approx(((1 + 1 + 0.5) / 3, (0.5 + 1 + 0.5) / 3))
    assert "accuracy" not in r.text() and "samples avg" in r.text() and r.confusion is None


def test_regression_by_hand():
    y = np.array([1.0, 2.0, 3.0, 0.0])
    p = np.array([1.5, 2.0, 2.0, 0.5])
    m = M.regression_metrics(y, p)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 0.25) / 4))
    assert m["mae"] == pytest.approx(0.5)
    assert m["mape"] == pytest.approx((0.5 + 0 + 1 / 3 + 0.5 / np.finfo(float).eps) / 4)
    assert m["r2"] == pytest.approx(1 - 1.5 / 5)
    assert M.regression_metrics([3.0, 3.0], [3.0, 3.0])["r2"] == 1.0  # constant target, exact
    assert M.regression_metrics([3.0, 3.0], [3.0, 2.0])["r2"] == 0.0  # constant target, not exact
    two = M.regression_metrics(np.c_[y, 2 * y], np.c_[p, 2 * y])  # averaged over the outputs
    assert two["rmse"] == pytest.approx(m["rmse"] / 2) and two["r2"] == pytest.approx((m["r2"] + 1) / 2)


def test_task_of_and_loss_name():
    assert M.task_of({"layers": [[8, "tanh"], [3, "softmax"]], "loss": "cross_entropy"}) == "multiclass"
    assert M.task_of({"layers": [[1, "sigmoid"]], "loss": "bce"}) == "binary"
    assert M.task_of({"layers": [[4, "sigmoid"]], "loss": {"name": "bce"}}) == "multilabel"
    assert M.task_of({"layers": [[1, "identity"]], "loss": {"name": "huber", "delta": 1.0}}) == "regression"
    assert M.loss_name({"loss": {"name": "cross_entropy", "label_smoothing": 0.1}}) == "cross_entropy"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="do not match"):
        M.classification_report(np.eye(3), np.full((3, 4), 0.25), "multiclass")
    with pytest.raises(ValueError, match="class index"):
        M.classification_report(np.array([0, 5]), np.full((2, 3), 1 / 3), "multiclass")
    with pytest.raises(ValueError, match="whole class indices"):
        M.label_report(np.array([0.5]), np.array([0]))
    with pytest.raises(ValueError, match="2 class names for 3"):
        M.label_report([0, 1, 2], [0, 1, 2], names=["a", "b"], n_classes=3)


# --------------------------------------------------------------------------- against scikit-learn


@needs_sklearn
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multiclass_matches_sklearn(seed, dtype):
    y, P = _multiclass_case(seed)
    P = P.astype(dtype)
    names = ["setosa", "versicolor", "virginica", "x"]
    r = M.classification_report(y, P, "multiclass", names)
    yhat = P.argmax(axis=1)
    labels = list(range(4))
    assert r.accuracy == skm.accuracy_score(y, yhat)
    assert r.log_loss == pytest.approx(skm.log_loss(y, P, labels=labels), rel=1e-6 if dtype == np.float32 else 1e-12)
    p, rec, f, s = skm.precision_recall_fscore_support(y, yhat, labels=labels, zero_division=0)
    np.testing.assert_allclose(r.precision, p, rtol=1e-12)
    np.testing.assert_allclose(r.recall, rec, rtol=1e-12)
    np.testing.assert_allclose(r.f1, f, rtol=1e-12)
    np.testing.assert_array_equal(r.support, s)
    np.testing.assert_array_equal(r.confusion, skm.confusion_matrix(y, yhat, labels=labels))
    for digits in (2, 4):
        assert r.text(digits) == skm.classification_report(y, yhat, labels=labels, target_names=names,
                                                           digits=digits, zero_division=0)
    d = skm.classification_report(y, yhat, labels=labels, target_names=names, output_dict=True, zero_division=0)
    for heading in ("macro avg", "weighted avg"):
        ours = r.averages[heading]
        assert ours[:3] == pytest.approx((d[heading]["precision"], d[heading]["recall"], d[heading]["f1-score"]),
                                         rel=1e-12)
        assert ours[3] == d[heading]["support"]


@needs_sklearn
def test_edge_cases_match_sklearn():
    """A class never predicted, a class absent from the targets, one sample, a perfect fit."""
    cases = [(np.array([0, 0, 1, 1, 2]), np.array([0, 0, 0, 1, 1])),   # class 2 never predicted
             (np.array([0, 1, 0, 1, 0]), np.array([0, 2, 0, 1, 0])),   # class 2 never true
             (np.array([1]), np.array([1])),                           # one sample
             (np.array([2, 0, 1]), np.array([2, 0, 1]))]               # all right
    for y, yhat in cases:
        r = M.label_report(y, yhat, names=["a", "b", "c"], n_classes=3)
        assert r.text() == skm.classification_report(y, yhat, labels=[0, 1, 2], target_names=["a", "b", "c"],
                                                     zero_division=0)
        np.testing.assert_array_equal(r.confusion, skm.confusion_matrix(y, yhat, labels=[0, 1, 2]))


@needs_sklearn
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_matches_sklearn(dtype):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80).astype(float)
    p = np.clip(0.5 * y + 0.6 * rng.random(80) - 0.1, 0, 1).astype(dtype)
    p[:3] = [0.0, 1.0, 0.5]  # the clipping and the threshold's tie
    r = M.classification_report(y[:, None], p[:, None], "binary")
    yhat = (p >= 0.5).astype(int)
    assert r.accuracy == skm.accuracy_score(y, yhat)
    assert r.log_loss == pytest.approx(skm.log_loss(y, p), rel=1e-6 if dtype == np.float32 else 1e-12)
    assert r.text() == skm.classification_report(y.astype(int), yhat, labels=[0, 1], target_names=["0", "1"],
                                                 zero_division=0)
    np.testing.assert_array_equal(r.confusion, skm.confusion_matrix(y, yhat))


@needs_sklearn
def test_multilabel_matches_sklearn():
    rng = np.random.default_rng(5)
    Y = (rng.random((50, 4)) < [0.5, 0.2, 0.7, 0.0]).astype(int)  # label 4 never true
    P = np.clip(0.6 * Y + 0.5 * rng.random((50, 4)) - 0.05, 0, 1)
    P[:, 1] = 0.1  # label 2 never predicted
    P[7] = 0.0  # a row with nothing predicted
    names = ["red", "green", "blue", "violet"]
    r = M.classification_report(Y, P, "multilabel", names)
    H = (P >= 0.5).astype(int)
    assert r.text() == skm.classification_report(Y, H, target_names=names, zero_division=0)
    assert r.text(3) == skm.classification_report(Y, H, target_names=names, zero_division=0, digits=3)
    assert r.accuracy == skm.accuracy_score(Y, H)
    assert r.extra["label_accuracy"] == pytest.approx(1 - skm.hamming_loss(Y, H))
    for avg in ("micro", "macro", "weighted", "samples"):
        ours = r.averages[f"{avg} avg"][:3]
        assert ours == pytest.approx(skm.precision_recall_fscore_support(Y, H, average=avg, zero_division=0)[:3])


@needs_sklearn
@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_matches_sklearn(outputs):
    rng = np.random.default_rng(outputs)
    Y = rng.normal(size=(40, outputs)) * [3.0, 1.0, 0.1][:outputs]
    Y[0, 0] = 0.0  # MAPE's floor
    P = Y + rng.normal(scale=0.5, size=Y.shape)
    m = M.regression_metrics(Y, P)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(Y, P), rel=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(Y, P), rel=1e-12)
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(Y, P), rel=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(Y, P), rel=1e-12)
    const = np.c_[np.full(5, 2.0), np.arange(5.0)]
    for pred in (const, const + [[0.1, 0.0]]):  # a constant column: 1.0 if exact, else 0.0
        assert M.regression_metrics(const, pred)["r2"] == pytest.approx(skm.r2_score(const, pred))
