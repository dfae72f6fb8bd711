"""Multi-class data in derive.data: ClassLabels, text labels in CSV files, the spiral
generator and the bundled iris / wine / digits files (equal to scikit-learn's when it is
importable)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from derive.data import (
    DATA_DIR,
    DATASETS,
    ClassLabels,
    DataError,
    Dataset,
    check_targets,
    class_indices,
    load_csv,
    load_dataset,
    spiral,
)

# --------------------------------------------------------------------------- #
# ClassLabels: classes, encode, decode, one-hot
# --------------------------------------------------------------------------- #


def test_fit_sorts_strings_and_round_trips():
    column = ["virginica", "setosa", "versicolor", "setosa", "virginica"]
    labels = ClassLabels.fit(column)
    assert labels.classes == ("setosa", "versicolor", "virginica")
    assert labels.n_classes == 3 and labels.kind == "str"
    idx = labels.encode(column)
    assert idx.dtype == np.int64 and idx.shape == (5,) and idx.flags.c_contiguous
    assert idx.tolist() == [2, 0, 1, 0, 2]
    back = labels.decode(idx)
    assert back.tolist() == column and back.dtype.kind == "U"


def test_fit_strings_by_code_point_and_kept_verbatim():
    labels = ClassLabels.fit(np.array(["b", "B", "a", " a"]))
    assert labels.classes == (" a", "B", "a", "b")  # no stripping, no case folding


@pytest.mark.parametrize(
    "column",
    [
        [3, 1, 2, 1],
        np.array([3, 1, 2, 1], dtype=np.int32),
        np.array([3.0, 1.0, 2.0, 1.0]),  # a float column of whole numbers (Y from a CSV file)
        np.array([[3.0], [1.0], [2.0], [1.0]]),  # (N, 1)
        np.array([3, 1, 2, 1], dtype=np.uint8),
    ],
)
def test_fit_integers_stay_integers(column):
    labels = ClassLabels.fit(column)
    assert labels.classes == (1, 2, 3) and labels.kind == "int"
    assert all(type(c) is int for c in labels.classes)  # plain ints, JSON-able
    assert labels.encode(column).tolist() == [2, 0, 1, 0]
    assert labels.decode([2, 0]).tolist() == [3, 1] and labels.decode([0]).dtype == np.int64


def test_negative_and_sparse_integer_classes():
    labels = ClassLabels.fit([10, -5, 7, 10])
    assert labels.classes == (-5, 7, 10)
    assert labels.encode([7, -5, 10]).tolist() == [1, 0, 2]


@pytest.mark.parametrize(
    "column, text",
    [
        (np.array([0.0, 1.0, 1.5]), "row 3: 1.5 is not a whole number"),
        (np.array([0.0, np.nan]), "row 2: nan is not a whole number"),
        ([0, 2.5], "row 2: 2.5 is not a class label"),
        ([1, "a"], "the labels mix numbers (row 1: 1) and text (row 2: 'a')"),
        (["a", "", "b"], "row 2: empty class label"),
        ([None, 1], "row 1: None is not a class label"),
        (np.zeros((3, 2)), "must be one column, shape (N,) or (N, 1); got shape (3, 2)"),
        (np.array([1 + 2j]), "must be integers or text, got an array of complex128"),
        ([], "no labels to take the classes from"),
    ],
)
def test_fit_refuses(column, text):
    with pytest.raises(DataError, match=re.escape(text)):
        ClassLabels.fit(column, where="train.csv")
    with pytest.raises(DataError, match=r"^train\.csv: "):
        ClassLabels.fit(column, where="train.csv")


def test_unknown_label_names_row_label_and_classes():
    labels = ClassLabels.fit(["cat", "dog"])
    with pytest.raises(DataError) as info:
        labels.encode(["dog", "cat", "cow", "emu"], where="test.csv")
    assert str(info.value) == (
        "test.csv: row 3: unknown class label 'cow'; the known classes are ['cat', 'dog']"
    )
    with pytest.raises(DataError, match=r"^row 2: unknown class label 3; the known classes are \[0, 1, 2\]$"):
        ClassLabels.fit([0, 1, 2]).encode([2, 3])


def test_unknown_label_of_the_other_kind_says_so():
    with pytest.raises(DataError, match=r"row 1: unknown class label 1; .* \(the classes are text and the labels"):
        ClassLabels.fit(["1", "2"]).encode([1])
    with pytest.raises(DataError, match=r"row 1: unknown class label '1'; .* \(the classes are numbers and the"):
        ClassLabels.fit([1, 2]).encode(["1"])


def test_long_class_lists_are_shortened_in_messages():
    labels = ClassLabels.fit(np.arange(100))
    with pytest.raises(DataError) as info:
        labels.encode([100])
    msg = str(info.value)
    assert "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (100 classes)]" in msg and "99" not in msg
    assert repr(labels) == "ClassLabels([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (100 classes)])"


def test_encode_empty_column():
    assert ClassLabels.fit(["a"]).encode([]).shape == (0,)


def test_one_hot():
    labels = ClassLabels.fit(["a", "b", "c"])
    oh = labels.one_hot(["c", "a", "c", "b"])
    assert oh.dtype == np.float64 and oh.shape == (4, 3) and oh.flags.c_contiguous
    assert np.array_equal(oh, np.eye(3)[[2, 0, 2, 1]])
    oh32 = labels.one_hot(np.array([["b"]]), dtype=np.float32)
    assert oh32.dtype == np.float32 and oh32.tolist() == [[0.0, 1.0, 0.0]]
    with pytest.raises(DataError, match="needs a floating dtype, got int64"):
        labels.one_hot(["a"], dtype=np.int64)
    with pytest.raises(DataError, match="row 1: unknown class label 'd'"):
        labels.one_hot(["d"])


def test_decode_checks_indices():
    labels = ClassLabels.fit(["x", "y", "z"])
    assert labels.decode(np.array([[2.0], [0.0]])).tolist() == ["z", "x"]  # Y as load_csv gives it
    for bad, text in [
        ([0, 3], "row 2: class index 3 is out of range 0 ... 2"),
        ([-1], "row 1: class index -1 is out of range 0 ... 2"),
        ([0.5], "row 1: 0.5 is not a class index"),
        (np.zeros((2, 3)), "must be (N,) or (N, 1), got shape (2, 3); for (N, C) probabilities decode their argmax"),
        (["a"], "class indices must be integers"),
    ]:
        with pytest.raises(DataError, match=re.escape(text)):
            labels.decode(bad)


def test_given_order_is_kept():
    labels = ClassLabels(["pear", "apple", "fig"])  # not sorted: the constructor keeps the order
    assert labels.classes == ("pear", "apple", "fig")
    assert labels.encode(["apple", "fig", "pear"]).tolist() == [1, 2, 0]
    assert labels.decode([0, 1]).tolist() == ["pear", "apple"]
    assert labels != ClassLabels.fit(["pear", "apple", "fig"])


@pytest.mark.parametrize(
    "classes, text",
    [
        (["a", "b", "a"], "class 'a' is listed twice (positions 1 and 3)"),
        ([], "no classes given"),
        ("abc", "classes must be a sequence of labels, got str"),
        ([1, "1"], "the labels mix numbers"),
    ],
)
def test_constructor_refuses(classes, text):
    with pytest.raises(DataError, match=re.escape(text)):
        ClassLabels(classes)


def test_equality_hash_repr():
    a = ClassLabels.fit(["b", "a"])
    assert a == ClassLabels(("a", "b")) and hash(a) == hash(ClassLabels(["a", "b"]))
    assert ClassLabels([1, 2]) != ClassLabels(["1", "2"])
    assert a != ("a", "b")
    assert len({a, ClassLabels(["a", "b"]), ClassLabels([0, 1])}) == 2
    assert repr(a) == "ClassLabels(['a', 'b'])"


# --------------------------------------------------------------------------- #
# to_dict / from_dict
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("column", [["setosa", "virginica", "versicolor"], [4, 0, 9, 2], ["é", "ß", "中"]])
def test_dict_round_trip_through_json(column):
    labels = ClassLabels.fit(column)
    d = labels.to_dict()
    assert d == {"kind": labels.kind, "classes": list(labels.classes)}
    again = ClassLabels.from_dict(json.loads(json.dumps(d)))
    assert again == labels and again.classes == labels.classes
    assert again.encode(column).tolist() == labels.encode(column).tolist()


@pytest.mark.parametrize("column", [["b", "a", "c"], [5, 3]])
def test_dict_round_trip_through_npz(tmp_path, column):
    labels = ClassLabels.fit(column)
    d = labels.to_dict()
    np.savez(tmp_path / "m.npz", classes=np.asarray(d["classes"]), kind=np.asarray(d["kind"]))
    with np.load(tmp_path / "m.npz") as z:
        assert ClassLabels.from_dict(z) == labels


@pytest.mark.parametrize(
    "d, text",
    [
        ({"kind": "str"}, "expected a mapping with key 'classes'"),
        ({"classes": "abc"}, "'classes' must be a list, got str"),
        ({"classes": ["a", "b"], "kind": "int"}, "'kind' is 'int' but the classes are strs"),
        ({"classes": [1, 2], "kind": "float"}, "'kind' must be 'int' or 'str', got 'float'"),
        ({"classes": ["a", "a"]}, "listed twice"),
    ],
)
def test_from_dict_refuses(d, text):
    with pytest.raises(DataError, match=re.escape(text)):
        ClassLabels.from_dict(d)


def test_from_dict_without_kind_infers_it():
    assert ClassLabels.from_dict({"classes": [0, 1]}).kind == "int"


# --------------------------------------------------------------------------- #
# Text labels in CSV files
# --------------------------------------------------------------------------- #


def write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_text_labels(tmp_path):
    p = write(tmp_path, "a,b,kind\n1,2, dog\n3,4,cat\n5,6,emu\n7,8,cat\n")
    ds = load_csv(p, "kind")
    assert ds.classes == ("cat", "dog", "emu")  # sorted, cells stripped as every cell is
    assert ds.Y.shape == (4, 1) and ds.Y.dtype == np.float64 and ds.Y.flags.c_contiguous
    assert ds.Y[:, 0].tolist() == [1.0, 0.0, 2.0, 0.0]
    assert np.array_equal(ds.X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert "classes=['cat', 'dog', 'emu']" in repr(ds)
    labels, idx = class_indices(ds)
    assert labels == ClassLabels(["cat", "dog", "emu"]) and idx.tolist() == [1, 0, 2, 0]
    assert labels.decode(idx).tolist() == ["dog", "cat", "emu", "cat"]


def test_csv_numeric_class_column_stays_numeric(tmp_path):
    ds = load_csv(write(tmp_path, "a,y\n1,7\n2,3\n3,7\n"), "y")
    assert ds.classes is None and ds.Y[:, 0].tolist() == [7.0, 3.0, 7.0]
    labels, idx = class_indices(ds)
    assert labels.classes == (3, 7) and idx.tolist() == [1, 0, 1]


def test_csv_label_that_looks_like_nan_is_text(tmp_path):
    # no cell is a finite number, so "nan" is just a name here
    ds = load_csv(write(tmp_path, "a,name\n1,Nan\n2,Bob\n"), "name")
    assert ds.classes == ("Bob", "Nan") and ds.Y[:, 0].tolist() == [1.0, 0.0]


def test_csv_target_mixing_numbers_and_text(tmp_path):
    p = write(tmp_path, "a,y\n1,0\n2,1\n3,l\n")
    with pytest.raises(DataError) as info:
        load_csv(p, "y")
    assert str(info.value) == (
        f"{p}, line 4, column 'y': 'l' is not a number; target column 'y' holds numbers "
        "(line 2: '0') and text, so it is neither numeric nor a column of class labels"
    )


def test_csv_text_in_feature_column_is_still_an_error(tmp_path):
    p = write(tmp_path, "a,b,kind\n1,x,dog\n3,4,cat\n")
    with pytest.raises(DataError) as info:
        load_csv(p, "kind")
    assert str(info.value) == f"{p}, line 2, column 'b': 'x' is not a number"


def test_csv_text_target_must_be_the_only_target(tmp_path):
    p = write(tmp_path, "a,k1,k2,v\n1,x,p,0\n2,y,q,1\n")
    with pytest.raises(DataError) as info:
        load_csv(p, ["k1", "k2"])
    assert str(info.value) == (
        f"{p}: target columns 'k1', 'k2' all hold text; class labels come in one target "
        "column, the only one (targets given: k1, k2)"
    )
    with pytest.raises(DataError, match=r"target column 'k1' holds text \(class labels\); class labels come in one"):
        load_csv(p, ["v", "k1"], features=["a"])


def test_csv_empty_label_cell(tmp_path):
    p = write(tmp_path, "a,kind\n1,dog\n2,\n")
    with pytest.raises(DataError, match=re.escape(f"{p}, line 3, column 'kind': empty cell")):
        load_csv(p, "kind")


def test_dataset_checks_classes():
    X = np.zeros((2, 1))
    ds = Dataset(X, [[1.0], [0.0]], ("x",), ("y",), "s", classes=["b", "a"])
    assert ds.classes == ("b", "a")  # given order kept: Y indexes into it
    for Y, classes, text in [
        ([[0.0], [2.0]], ("a", "b"), "Y at row 2 is 2, not a class index 0 ... 1"),
        ([[0.5], [0.0]], ("a", "b"), "Y at row 1 is 0.5, not a class index"),
        ([[0.0, 1.0], [0.0, 1.0]], ("a", "b"), "Y must be one column of class indices; got 2 columns"),
        ([[0.0], [1.0]], (0, 1), "Dataset.classes must be the class names (text)"),
        ([[0.0], [1.0]], ("a", "a"), "listed twice"),
    ]:
        names = ("y",) if len(Y[0]) == 1 else ("y", "z")
        with pytest.raises(DataError, match=re.escape(text)):
            Dataset(X, Y, ("x",), names, "s", classes=classes)


def test_class_indices_needs_one_column():
    ds = Dataset(np.zeros((2, 1)), np.zeros((2, 2)), ("x",), ("p", "q"), "s")
    with pytest.raises(DataError, match=r"^s: class labels come in one target column; the data has 2 \(p, q\)$"):
        class_indices(ds)
    ds = Dataset(np.zeros((2, 1)), [[0.5], [1.0]], ("x",), ("y",), "s")
    with pytest.raises(DataError, match=r"^s, target 'y': row 1: 0\.5 is not a whole number"):
        class_indices(ds)


# --------------------------------------------------------------------------- #
# check_targets for cross-entropy
# --------------------------------------------------------------------------- #


def test_check_targets_cross_entropy():
    check_targets(np.array([[0.0], [2.0], [1.0]]), "cross_entropy", "w")
    check_targets(np.array([[0.2, 0.8], [1.0, 0.0]]), "categorical_crossentropy", "w")
    cases = [
        (np.array([[0.0], [1.5]]), "target at row 2, column 'y' is 1.5, not a class index"),
        (np.array([[-1.0]]), "target at row 1, column 'y' is -1, not a class index"),
        (np.array([[0.5, 0.5], [0.7, 0.2]]), "target row 2 sums to 0.9, not 1"),
        (np.array([[1.5, -0.5]]), "target at row 1, column 'y' is 1.5; loss 'cross_entropy' needs each row"),
    ]
    for Y, text in cases:
        with pytest.raises(DataError, match=re.escape(f"w: {text}")):
            check_targets(Y, "cross_entropy", "w", ["y", "z"])


# --------------------------------------------------------------------------- #
# spiral
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", [1, 2, 3, 7, 300])
def test_spiral_shape_and_classes(n):
    X, Y = spiral(n=n)
    assert X.shape == (n, 2) and Y.shape == (n, 1)
    assert X.dtype == Y.dtype == np.float64 and X.flags.c_contiguous and Y.flags.c_contiguous
    counts = np.bincount(Y[:, 0].astype(int), minlength=3)
    assert counts.tolist() == [n // 3 + (k < n % 3) for k in range(3)]
    assert np.isfinite(X).all() and (np.hypot(*X.T) <= 1.0 + 1e-12).all()


def test_spiral_deterministic_and_shuffled():
    X1, Y1 = spiral(seed=3)
    X2, Y2 = spiral(seed=3)
    X3, _ = spiral(seed=4)
    assert np.array_equal(X1, X2) and np.array_equal(Y1, Y2)
    assert not np.array_equal(X1, X3)
    assert not np.array_equal(Y1[:, 0], np.sort(Y1[:, 0]))


def test_spiral_geometry_without_noise():
    # CS231n: arm k has radius linspace(0, 1, m) and angle linspace(4k, 4k + 4, m),
    # at (r sin t, r cos t)
    X, Y = spiral(n=30, noise=0.0)
    for k in range(3):
        arm = X[Y[:, 0] == k]
        r = np.hypot(arm[:, 0], arm[:, 1])
        order = np.argsort(r)
        np.testing.assert_allclose(r[order], np.linspace(0, 1, 10), atol=1e-12)
        t = np.linspace(4.0 * k, 4.0 * k + 4.0, 10)
        np.testing.assert_allclose(arm[order], np.column_stack([r[order] * np.sin(t), r[order] * np.cos(t)]),
                                   atol=1e-12)


def test_spiral_noise_jitters_the_angle_only():
    X0, Y0 = spiral(n=60, noise=0.0, seed=1)
    X1, Y1 = spiral(n=60, noise=0.3, seed=1)
    key0 = np.lexsort((np.hypot(*X0.T), Y0[:, 0]))
    key1 = np.lexsort((np.hypot(*X1.T), Y1[:, 0]))
    np.testing.assert_allclose(np.hypot(*X0[key0].T), np.hypot(*X1[key1].T), atol=1e-12)  # same radii
    assert not np.allclose(X0[key0], X1[key1])


def test_spiral_not_linearly_separable():
    # the best a linear one-vs-rest least-squares classifier does is far from perfect
    X, Y = spiral(n=300, noise=0.2)
    A = np.column_stack([X, np.ones(len(X))])
    T = np.eye(3)[Y[:, 0].astype(int)]
    W, *_ = np.linalg.lstsq(A, T, rcond=None)
    acc = np.mean(np.argmax(A @ W, axis=1) == Y[:, 0])
    assert 0.34 < acc < 0.7


@pytest.mark.parametrize(
    "kwargs, text",
    [({"n": 0}, "n must be >= 1"), ({"noise": -0.1}, "noise must be in"), ({"seed": 1.5}, "seed must be an integer")],
)
def test_spiral_bad_arguments(kwargs, text):
    with pytest.raises(DataError, match=re.escape(text)):
        spiral(**kwargs)


def test_spiral_through_load_dataset():
    ds = load_dataset("spiral", n=30, seed=2)
    X, Y = spiral(n=30, seed=2)
    assert np.array_equal(ds.X, X) and np.array_equal(ds.Y, Y)
    assert ds.classes is None and ds.feature_names == ("x1", "x2")
    labels, idx = class_indices(ds)
    assert labels.classes == (0, 1, 2) and np.array_equal(idx, Y[:, 0])


# --------------------------------------------------------------------------- #
# iris, wine, digits
# --------------------------------------------------------------------------- #


def test_files_present_and_registered():
    for name in ("iris", "wine", "digits"):
        assert (DATA_DIR / f"{name}.csv").is_file()
        assert DATASETS[name].loss == "cross_entropy"
    assert DATASETS["digits"].n_classes == 10 and DATASETS["iris"].n_classes == 3
    assert DATASETS["spiral"].n_classes == 3 and DATASETS["spiral"].n_samples == 300


def test_iris():
    ds = load_dataset("iris")
    assert ds.X.shape == (150, 4) and ds.Y.shape == (150, 1)
    assert ds.feature_names == ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")
    assert ds.target_names == ("species",)
    assert ds.classes == ("setosa", "versicolor", "virginica")
    assert np.bincount(ds.Y[:, 0].astype(int)).tolist() == [50, 50, 50]
    assert ds.X[0].tolist() == [5.1, 3.5, 1.4, 0.2] and ds.Y[0, 0] == 0.0
    assert ds.X[-1].tolist() == [5.9, 3.0, 5.1, 1.8] and ds.Y[-1, 0] == 2.0
    np.testing.assert_allclose(ds.X.sum(axis=0), [876.5, 458.6, 563.7, 179.9], rtol=1e-12)
    lines = (DATA_DIR / "iris.csv").read_text(encoding="utf-8").splitlines()
    assert lines[1].endswith(",setosa")  # the file holds the names, not numbers


def test_wine():
    ds = load_dataset("wine")
    assert ds.X.shape == (178, 13) and ds.Y.shape == (178, 1)
    assert ds.classes is None and ds.target_names == ("cultivar",)
    assert ds.feature_names[0] == "alcohol" and ds.feature_names[-1] == "proline"
    assert np.bincount(ds.Y[:, 0].astype(int)).tolist() == [59, 71, 48]
    assert ds.X[0].tolist()[:5] == [14.23, 1.71, 2.43, 15.6, 127.0]
    assert ds.X[:, -1].min() == 278 and ds.X[:, -1].max() == 1680


def test_digits():
    ds = load_dataset("digits")
    assert ds.X.shape == (1797, 64) and ds.Y.shape == (1797, 1)
    assert ds.classes is None and ds.target_names == ("digit",)
    assert ds.feature_names[:2] == ("pixel_0_0", "pixel_0_1") and ds.feature_names[-1] == "pixel_7_7"
    assert np.bincount(ds.Y[:, 0].astype(int)).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert ds.X.min() == 0 and ds.X.max() == 16 and np.array_equal(ds.X, np.round(ds.X))
    assert ds.X.sum() == 561718
    assert ds.Y[:10, 0].tolist() == list(range(10))
    # the first image is a zero: a ring of ink around an empty middle
    img = ds.X[0].reshape(8, 8)
    assert img[3:5, 3:5].sum() == 0 and img[:, 2].sum() > 40


@pytest.mark.parametrize("name", ["iris", "wine", "digits"])
def test_equal_to_scikit_learn(name):
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = getattr(datasets, f"load_{name}")()
    ds = load_dataset(name)
    assert np.array_equal(ds.X, bunch.data)
    labels, idx = class_indices(ds)
    assert np.array_equal(idx, bunch.target)
    if name == "iris":
        assert list(labels.classes) == [str(t) for t in bunch.target_names]
        assert list(ds.feature_names) == [f.replace(" (cm)", "_cm").replace(" ", "_") for f in bunch.feature_names]
    else:
        assert list(ds.feature_names) == list(bunch.feature_names)
