"""Classifier pictures (derive.runtime.plots): the confusion matrix and the decision regions of
K classes, alone and as panels of plot_training; real PNGs, readable labels, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from derive.data import spiral  # noqa: E402
from derive.errors import DeriveError  # noqa: E402
from derive.runtime.plots import (  # noqa: E402
    GRID,
    PlotError,
    draw_confusion,
    draw_decision_regions,
    new_figure,
    plot_confusion,
    plot_decision_regions,
    plot_training,
)

from .test_plots import assert_png  # noqa: E402

IRIS_CM = np.array([[50, 0, 0], [0, 47, 3], [0, 2, 48]])
IRIS = ["setosa", "versicolor", "virginica"]


def softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def compass(P):
    """4 classes: east, west, north, south by the larger coordinate (the plane in 4 wedges)."""
    assert P.dtype == np.float64 and P.ndim == 2 and P.shape[1] == 2
    return softmax(3.0 * np.column_stack([P[:, 0], -P[:, 0], P[:, 1], -P[:, 1]]))


def kernel_classifier(X, y, C, h):
    """Class probabilities from Gaussian kernels around labelled points (a smooth, curved model)."""

    def predict(P):
        d2 = ((P[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        W = np.exp(-d2 / (2 * h * h))
        S = np.stack([W[:, y == c].sum(1) for c in range(C)], axis=1) + 1e-12
        return S / S.sum(axis=1, keepdims=True)

    return predict


def _overlaps(boxes) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


# ------------------------------------------------------------------------------------------
# confusion matrix


@pytest.mark.parametrize("normalize", [None, "true"])
def test_plot_confusion_writes_png(tmp_path, normalize):
    out = plot_confusion(IRIS_CM, IRIS, tmp_path / "cm.png", normalize=normalize, title="iris")
    assert out == tmp_path / "cm.png"
    assert_png(out, min_colours=30)


def test_confusion_cells_numbers_and_colours():
    fig = new_figure(6, 5)
    ax = fig.subplots()
    draw_confusion(ax, IRIS_CM.astype(float), IRIS)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(cells) == 9
    assert [cells[i, i].get_text() for i in range(3)] == ["50", "47", "48"]
    assert cells[1, 2].get_text() == "3" and cells[2, 1].get_text() == "2" and cells[0, 1].get_text() == "0"
    assert cells[0, 0].get_color() == "white" and cells[1, 2].get_color() == "black"  # readable on dark / light
    assert cells[0, 1].get_color() == "0.6"  # zeros are quiet
    assert "accuracy 96.7% of 150" in ax.get_title()
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.get_yticklabels()] == IRIS  # rows are the true classes


def test_confusion_normalised_rows_and_empty_row():
    fig = new_figure(6, 5)
    ax = fig.subplots()
    M = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]], dtype=float)
    shown = draw_confusion(ax, M, ["a", "b", "c"], normalize="true")
    np.testing.assert_allclose(shown[[0, 2]], [[1, 0, 0], [0.25, 0, 0.75]])
    assert np.isnan(shown[1]).all()  # no samples of class b: blank, not 0/0
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["0", "0", "0", "0.25", "0.75", "1.00"]
    assert "rows normalised" in ax.get_title()


def test_confusion_ten_classes_labels_do_not_overlap(tmp_path):
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(150, 180, size=10)) + rng.integers(0, 4, size=(10, 10))
    names = [f"category_{k}" for k in range(10)]
    fig = new_figure(7.3, 6.3)
    ax = fig.subplots()
    draw_confusion(ax, cm.astype(float), names, cell_inches=0.45)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    labels = ax.get_xticklabels()
    assert all(t.get_rotation() == 45 for t in labels)  # long names are turned ...
    # ... so that neighbours, a tick spacing apart, are that times sin 45 apart across the text
    x = [ax.transData.transform((k, 0))[0] for k in range(10)]
    across = np.diff(x).min() * np.sin(np.pi / 4)
    assert across > labels[0].get_fontsize() * fig.dpi / 72 * 1.1
    level = new_figure(7.3, 6.3).subplots()  # the same names level would run into each other
    level.set_xticks(range(10))
    level.set_xticklabels(names, fontsize=labels[0].get_fontsize())
    level.set_xlim(ax.get_xlim())
    level.get_figure().canvas.draw()
    assert _overlaps([t.get_window_extent(level.get_figure().canvas.get_renderer()) for t in level.get_xticklabels()])
    texts = [t.get_window_extent(r) for t in ax.texts]
    assert len(texts) == 100 and not _overlaps(texts)
    assert_png(plot_confusion(cm, names, tmp_path / "ten.png"), min_colours=30)


def test_confusion_short_names_stay_level():
    fig = new_figure(6, 5)
    ax = fig.subplots()
    draw_confusion(ax, np.eye(10) * 5, [str(k) for k in range(10)], cell_inches=0.45)
    assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())


def test_confusion_many_classes_leave_the_numbers_out(tmp_path):
    fig = new_figure(8, 8)
    ax = fig.subplots()
    draw_confusion(ax, np.eye(40) * 3, [f"c{k}" for k in range(40)])
    assert not ax.texts
    assert_png(plot_confusion(np.eye(40) * 3, [f"c{k}" for k in range(40)], tmp_path / "forty.png"), min_colours=20)


@pytest.mark.parametrize(
    ("matrix", "classes", "normalize", "message"),
    [
        (np.zeros((2, 3)), ["a", "b"], None, "must be square (C, C), got shape (2, 3)"),
        (-IRIS_CM, IRIS, None, "must hold counts: finite numbers >= 0"),
        (IRIS_CM * np.nan, IRIS, None, "must hold counts"),
        (IRIS_CM, IRIS[:2], None, "2 class name(s) for 3 classes"),
        (IRIS_CM, ["a", "b", "a"], None, "the class 'a' is named twice"),
        (IRIS_CM, "abc", None, "classes must be a sequence of class names, got str"),
        (IRIS_CM, IRIS, "all", "normalize must be None or 'true'"),
        ([["x"]], ["a"], None, "must be an array of numbers"),
    ],
)
def test_confusion_bad_inputs(tmp_path, matrix, classes, normalize, message):
    with pytest.raises(PlotError) as info:
        plot_confusion(matrix, classes, tmp_path / "bad.png", normalize=normalize)
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# decision regions


def test_regions_follow_the_argmax():
    fig = new_figure(6, 5)
    ax = fig.subplots()
    X = np.array([[-2.0, -2.0], [2.0, 2.0], [2.0, -1.0], [-2.0, 1.0]])
    K = draw_decision_regions(ax, compass, X, None, ["east", "west", "north", "south"], grid=41)
    lo, hi = X.min(0) - 0.12 * 4, X.max(0) + 0.12 * 4
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 41), np.linspace(lo[1], hi[1], 41))
    expect = np.argmax(compass(np.column_stack([gx.ravel(), gy.ravel()])), axis=1).reshape(41, 41)
    assert np.array_equal(K, expect)
    assert set(np.unique(K)) == {0, 1, 2, 3}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["east", "west", "north", "south"]


def test_regions_of_one_sigmoid_output():
    fig = new_figure(6, 5)
    ax = fig.subplots()
    X = np.array([[-1.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    y = np.array([0, 1, 0])
    K = draw_decision_regions(ax, lambda P: 1 / (1 + np.exp(-4 * P[:, :1])), X, y, ["no", "yes"], grid=30)
    lo, hi = X.min(0) - 0.12 * np.array([2.0, 1.0]), X.max(0) + 0.12 * np.array([2.0, 1.0])
    gx = np.linspace(lo[0], hi[0], 30)
    assert np.array_equal(K, np.broadcast_to((gx >= 0).astype(int), (30, 30)))  # class 1 where p >= 0.5
    assert ax.get_title() == "Decision regions: 1 of 3 points misclassified"  # (0.5, 1) is class 0 but p > 0.5


def test_plot_decision_regions_spiral(tmp_path):
    X, Y = spiral(n=300, seed=0)
    y = Y[:, 0].astype(int)
    predict = kernel_classifier(X, y, 3, 0.08)
    out = plot_decision_regions(predict, X, Y, ["arm 0", "arm 1", "arm 2"], tmp_path / "spiral.png",
                                title="spiral")
    assert out == tmp_path / "spiral.png"
    assert_png(out, min_colours=200)


def test_labels_as_names_equal_labels_as_indices(tmp_path):
    X, Y = spiral(n=90, seed=1)
    y = Y[:, 0].astype(int)
    names = np.array(["a", "b", "c"])
    predict = kernel_classifier(X, y, 3, 0.1)
    a = plot_decision_regions(predict, X, y, list(names), tmp_path / "a.png")
    b = plot_decision_regions(predict, X, names[y], list(names), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_ten_classes_legend_beside_the_plot(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.uniform(-5, 5, size=(10, 2))
    y = np.repeat(np.arange(10), 30)
    X = centres[y] + rng.normal(size=(300, 2))
    fig = new_figure(8.2, 5.4)
    ax = fig.subplots()
    draw_decision_regions(ax, kernel_classifier(X, y, 10, 0.7), X, y, [str(k) for k in range(10)], grid=60)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(r)
    assert legend.x0 >= ax.get_window_extent(r).x1  # not over the data
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:10] == [str(k) for k in range(10)] and labels[-1] == "misclassified"
    assert_png(plot_decision_regions(kernel_classifier(X, y, 10, 0.7), X, y, [str(k) for k in range(10)],
                                     tmp_path / "ten.png"), min_colours=200)


def _bad_region_inputs():
    X = np.random.default_rng(0).normal(size=(10, 2))
    y = np.arange(10) % 3
    names = ["a", "b", "c"]
    M = GRID * GRID
    return [
        ((compass, X, y, names), f"predict_proba returned shape ({M}, 4) for {M} points; expected ({M}, 3)"),
        ((lambda P: P[:, :1], X, y, names), "returned one column (a sigmoid) but there are 3 classes"),
        ((lambda P: 1 / 0, X, y, names), f"predict_proba failed on a ({M}, 2) array of points: ZeroDivisionError"),
        (("model", X, y, names), "predict_proba must be a function"),
        ((compass, np.zeros((10, 3)), y, names), "decision regions need exactly 2 input columns; X has 3"),
        ((compass, X, y[:5], names), "X has 10 rows but y has 5"),
        ((compass, X, np.where(y == 2, 3, y), names), "y at row 3 is 3, not a class index 0 ... 2"),
        ((compass, X, y + 0.5, names), "y at row 1 is 0.5, not a class index"),
        ((compass, X, np.array(names)[y].astype(object) + "x", names), "y at row 1 is 'ax', not one of the classes"),
        ((compass, X, np.zeros((10, 2)), names), "y must be (N,) or (N, 1)"),
        ((compass, X, y, []), "classes is empty"),
        ((compass, np.where(np.eye(10, 2) > 0, np.inf, X), y, names), "X contains NaN or infinite values"),
    ]


@pytest.mark.parametrize(("args", "message"), _bad_region_inputs())
def test_regions_bad_inputs(tmp_path, args, message):
    with pytest.raises(DeriveError) as info:
        plot_decision_regions(*args, tmp_path / "bad.png")
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())


def test_bad_path_refused_before_predicting(tmp_path):
    called = []
    with pytest.raises(PlotError, match=r"must end in \.png"):
        plot_decision_regions(lambda P: called.append(P), np.zeros((3, 2)), None, ["a", "b"], tmp_path / "r.jpg")
    with pytest.raises(PlotError, match="is a folder"):
        plot_confusion(IRIS_CM, IRIS, tmp_path)
    assert not called


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotError, match=r"pip install 'derive\[plot\]'"):
        plot_confusion(IRIS_CM, IRIS, tmp_path / "cm.png")
    with pytest.raises(PlotError, match=r"pip install 'derive\[plot\]'"):
        plot_decision_regions(compass, np.zeros((4, 2)), None, list("abcd"), tmp_path / "r.png")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# as panels of plot_training (what derive train --plot draws for a classifier)


def _history(E=30):
    ep = np.arange(1, E + 1)
    loss = 1.1 * np.exp(-ep / 8) + 0.05
    return loss, loss * 1.1, np.stack([np.exp(-ep / 10), 0.1 * np.exp(-ep / 10)], axis=1)


def test_training_picture_of_a_classifier(tmp_path):
    loss, val, grads = _history()
    X, Y = spiral(n=150, seed=0)
    predict = kernel_classifier(X, Y[:, 0].astype(int), 3, 0.1)
    cm = np.array([[48, 1, 1], [0, 50, 0], [2, 0, 48]])
    full = assert_png(plot_training(tmp_path / "full.png", loss=loss, val_loss=val, grad_norms=grads, predict=predict,
                                    X=X, Y=Y, classes=["a", "b", "c"], confusion=cm, title="spiral"),
                      min_colours=200)
    no_cm = assert_png(plot_training(tmp_path / "no_cm.png", loss=loss, val_loss=val, grad_norms=grads,
                                     predict=predict, X=X, Y=Y, classes=["a", "b", "c"]), min_colours=200)
    assert full.shape[1] > no_cm.shape[1] * 1.2  # the confusion panel adds width


def test_training_picture_many_inputs_confusion_only(tmp_path):
    loss, val, grads = _history()
    called = []
    rng = np.random.default_rng(0)

    def predict(P):
        called.append(P)
        return np.full((len(P), 10), 0.1)

    cm = np.diag(np.full(10, 30)) + (rng.random((10, 10)) < 0.1)
    pixels = assert_png(plot_training(tmp_path / "digits.png", loss=loss, val_loss=val, grad_norms=grads,
                                      predict=predict, X=rng.normal(size=(20, 64)), Y=np.arange(20) % 10,
                                      classes=[str(k) for k in range(10)], confusion=cm), min_colours=30)
    assert not called  # 64 inputs: no regions panel
    two = assert_png(plot_training(tmp_path / "two.png", loss=loss, grad_norms=grads))
    assert pixels.shape[1] > two.shape[1] * 1.3 and pixels.shape[0] > two.shape[0]  # a taller figure for 10 classes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confusion": np.zeros((3, 2))}, "must be square"),
        ({"confusion": np.eye(3), "classes": ["a", "b"]}, "2 class name(s) for 3 classes"),
        ({"classes": "ab"}, "classes must be a sequence"),
        ({"classes": ["a", "b", "c"], "predict": compass, "X": np.zeros((4, 2)), "Y": np.zeros(4)},
         "predict_proba returned shape"),
        ({"classes": ["a", "b"], "predict": compass, "X": np.zeros((4, 2)), "Y": [0, 1, 2, 0]},
         "y at row 3 is 2, not a class index 0 ... 1"),
    ],
)
def test_training_picture_bad_class_inputs(tmp_path, kwargs, message):
    loss, _, _ = _history()
    with pytest.raises(PlotError) as info:
        plot_training(tmp_path / "bad.png", loss=loss, **kwargs)
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# derive train --plot for a softmax classifier (derive.runtime.command.plot_result)


def test_plot_result_of_a_softmax_classifier(tmp_path, monkeypatch):
    import derive.runtime.plots as plots
    from derive.data import load_dataset
    from derive.runtime.command import plot_result
    from derive.runtime.fit import fit

    data = load_dataset("spiral", n=120, seed=1)
    result = fit("spiral", data=data, epochs=3, seed=0)
    assert result.task == "multiclass" and "val" in result.reports
    drawn = {}
    real = plots.draw_decision_regions

    def spy(ax, predict_proba, X, y, names, grid=plots.GRID):
        drawn.update(X=X, y=y, names=names)
        return real(ax, predict_proba, X, y, names, grid=24)

    monkeypatch.setattr(plots, "draw_decision_regions", spy)
    out = plot_result(result, str(tmp_path / "spiral.png"), data)
    assert_png(out, min_colours=200)
    assert drawn["names"] == ["0", "1", "2"] and np.array_equal(drawn["X"], data.X)
    assert np.array_equal(drawn["y"], data.Y[:, 0])  # every row's class, as the outputs number them
