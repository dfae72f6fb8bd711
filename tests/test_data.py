"""Tests for derive.data: bundled data sets, CSV loading, standardiser, split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from derive.data import (
    DATA_DIR,
    DATASETS,
    DataError,
    Dataset,
    Standardizer,
    check_targets,
    circles,
    load_csv,
    load_dataset,
    moons,
    train_val_split,
    xor,
)
from derive.errors import DeriveError


def _is_c_f64(a: np.ndarray) -> bool:
    return a.dtype == np.float64 and a.flags.c_contiguous


def write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(path: Path, targets, features=None) -> str:
    with pytest.raises(DataError) as info:
        load_csv(path, targets, features)
    return str(info.value)


# --------------------------------------------------------------------------- #
# Generated data sets
# --------------------------------------------------------------------------- #

GENERATORS = [xor, moons, circles]


@pytest.mark.parametrize("gen", GENERATORS)
@pytest.mark.parametrize("n", [1, 7, 200])
def test_generator_shape_and_labels(gen, n):
    X, Y = gen(n=n)
    assert X.shape == (n, 2) and Y.shape == (n, 1)
    assert _is_c_f64(X) and _is_c_f64(Y)
    assert set(np.unique(Y)) <= {0.0, 1.0}
    assert np.isfinite(X).all()


@pytest.mark.parametrize("gen", GENERATORS)
def test_generator_balanced_and_deterministic(gen):
    X1, Y1 = gen(seed=3)
    X2, Y2 = gen(seed=3)
    X3, _ = gen(seed=4)
    assert np.array_equal(X1, X2) and np.array_equal(Y1, Y2)
    assert not np.array_equal(X1, X3)
    assert Y1.sum() == 100  # 200 samples, half per class
    # shuffled: labels are not sorted
    assert not np.array_equal(Y1[:, 0], np.sort(Y1[:, 0]))


def test_xor_corners():
    X, Y = xor(n=8, noise=0.0)
    for (a, b), y in zip(X, Y[:, 0]):
        assert a in (0.0, 1.0) and b in (0.0, 1.0)
        assert y == float((a > 0.5) != (b > 0.5))
    assert sorted(map(tuple, X)) == sorted([(0, 0), (0, 1), (1, 0), (1, 1)] * 2)


def test_moons_geometry():
    # without noise: upper half of the unit circle (label 0), lower half of the
    # unit circle around (1, 0.5) (label 1)
    X, Y = moons(n=50, noise=0.0)
    outer = X[Y[:, 0] == 0]
    inner = X[Y[:, 0] == 1]
    assert len(outer) == 25 and len(inner) == 25
    np.testing.assert_allclose(np.hypot(*outer.T), 1.0)
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1.0)
    assert (outer[:, 1] >= -1e-12).all() and (inner[:, 1] <= 0.5 + 1e-12).all()


def test_moons_not_linearly_separable():
    # least-squares linear classifier cannot get all of them right
    X, Y = moons(n=200, noise=0.0)
    A = np.column_stack([X, np.ones(len(X))])
    w, *_ = np.linalg.lstsq(A, 2 * Y[:, 0] - 1, rcond=None)
    acc = np.mean((A @ w > 0) == (Y[:, 0] == 1))
    assert 0.7 < acc < 1.0


def test_circles_radii():
    X, Y = circles(n=40, noise=0.0, factor=0.3)
    r = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(r[Y[:, 0] == 0], 1.0)
    np.testing.assert_allclose(r[Y[:, 0] == 1], 0.3)


@pytest.mark.parametrize(
    "call, text",
    [
        (lambda: xor(n=0), "n must be >= 1"),
        (lambda: moons(n=2.5), "n must be an integer"),
        (lambda: moons(noise=-1), "noise must be in"),
        (lambda: circles(factor=1.0), "factor must be in [0, 1)"),
        (lambda: xor(seed=-1), "seed must be >= 0"),
    ],
)
def test_generator_bad_arguments(call, text):
    with pytest.raises(DataError, match=re.escape(text)):
        call()


# --------------------------------------------------------------------------- #
# Bundled real data sets and the registry
# --------------------------------------------------------------------------- #


def test_breast_cancer():
    ds = load_dataset("breast_cancer")
    assert ds.X.shape == (569, 30) and ds.Y.shape == (569, 1)
    assert _is_c_f64(ds.X) and _is_c_f64(ds.Y)
    assert np.isfinite(ds.X).all() and np.isfinite(ds.Y).all()
    assert ds.target_names == ("malignant",)
    assert ds.feature_names[0] == "mean_radius"
    assert ds.feature_names[-1] == "worst_fractal_dimension"
    assert set(np.unique(ds.Y)) == {0.0, 1.0}
    assert ds.Y.sum() == 212  # 212 malignant, 357 benign
    # first sample of WDBC is malignant, radius 17.99
    assert ds.X[0, 0] == 17.99 and ds.Y[0, 0] == 1.0
    check_targets(ds.Y, "bce", "breast_cancer")


def test_diabetes():
    ds = load_dataset("diabetes")
    assert ds.X.shape == (442, 10) and ds.Y.shape == (442, 1)
    assert _is_c_f64(ds.X) and _is_c_f64(ds.Y)
    assert np.isfinite(ds.X).all() and np.isfinite(ds.Y).all()
    assert ds.feature_names == (
        "age",
        "sex",
        "bmi",
        "bp",
        "s1",
        "s2",
        "s3",
        "s4",
        "s5",
        "s6",
    )
    assert ds.target_names == ("progression",)
    assert ds.Y.min() == 25 and ds.Y.max() == 346
    assert set(np.unique(ds.X[:, 1])) == {1.0, 2.0}  # raw, unscaled: sex coded 1/2
    assert list(ds.X[0]) == [59, 2, 32.1, 101.0, 157, 93.2, 38.0, 4.0, 4.8598, 87]


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_matches_loaded(name):
    info = DATASETS[name]
    ds = load_dataset(name)
    assert isinstance(ds, Dataset)
    assert info.loss in ("bce", "mse", "cross_entropy")
    assert (ds.n_samples, ds.n_inputs, ds.n_outputs) == (
        info.n_samples,
        info.n_inputs,
        info.n_outputs,
    )
    assert info.description
    check_targets(ds.Y, info.loss, name)
    if info.loss == "cross_entropy":  # one column of class indices 0 ... C-1, every class present
        assert ds.n_outputs == 1
        assert np.array_equal(np.unique(ds.Y), np.arange(info.n_classes))
    else:
        assert info.n_classes is None and ds.classes is None


def test_bundled_files_present():
    assert (DATA_DIR / "breast_cancer.csv").is_file()
    assert (DATA_DIR / "diabetes.csv").is_file()
    assert (DATA_DIR / "README.md").is_file()


def test_load_dataset_options():
    a = load_dataset("moons", n=30, seed=5)
    X, Y = moons(n=30, seed=5)
    assert np.array_equal(a.X, X) and np.array_equal(a.Y, Y)
    assert "seed=5" in a.source
    with pytest.raises(DataError, match="bad option"):
        load_dataset("xor", colour="red")
    with pytest.raises(DataError, match="takes no options"):
        load_dataset("diabetes", n=3)


def test_load_dataset_unknown_name_suggests():
    with pytest.raises(DataError) as info:
        load_dataset("moon")
    msg = str(info.value)
    assert "unknown data set 'moon'" in msg and "did you mean 'moons'?" in msg
    assert "breast_cancer" in msg
    assert isinstance(info.value, DeriveError) and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- #
# load_csv: success
# --------------------------------------------------------------------------- #


def test_load_csv_basic(tmp_path):
    p = write(tmp_path, "a,b,y\n1,2,0\n3.5, -4e-1 ,1\n\n")
    ds = load_csv(p, "y")
    assert ds.feature_names == ("a", "b") and ds.target_names == ("y",)
    assert np.array_equal(ds.X, [[1, 2], [3.5, -0.4]])
    assert np.array_equal(ds.Y, [[0], [1]])
    assert _is_c_f64(ds.X) and _is_c_f64(ds.Y)
    assert ds.source == str(p)


def test_load_csv_feature_selection_and_order(tmp_path):
    # a text column is fine as long as it is not used
    p = write(tmp_path, "id,a,b,t1,t2\nx,1,2,3,4\ny,5,6,7,8\n")
    ds = load_csv(p, ["t2", "t1"], features=["b", "a"])
    assert ds.feature_names == ("b", "a") and ds.target_names == ("t2", "t1")
    assert np.array_equal(ds.X, [[2, 1], [6, 5]])
    assert np.array_equal(ds.Y, [[4, 3], [8, 7]])


def test_load_csv_bom_and_crlf(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(b"\xef\xbb\xbfx,y\r\n1,0\r\n2,1\r\n")
    ds = load_csv(p, "y")
    assert ds.feature_names == ("x",)
    assert np.array_equal(ds.X[:, 0], [1, 2])


# --------------------------------------------------------------------------- #
# load_csv: every error, with file, line and column
# --------------------------------------------------------------------------- #


def test_missing_file(tmp_path):
    p = tmp_path / "nope.csv"
    msg = error_of(p, "y")
    assert str(p) in msg and "file not found" in msg


def test_folder_instead_of_file(tmp_path):
    assert "is a folder" in error_of(tmp_path, "y")


@pytest.mark.parametrize("text", ["", "\n\n", "  \n"])
def test_empty_file(tmp_path, text):
    p = write(tmp_path, text)
    msg = error_of(p, "y")
    assert msg.startswith(str(p)) and "empty" in msg


def test_no_header(tmp_path):
    p = write(tmp_path, "1,2,3\n4,5,6\n")
    msg = error_of(p, "y")
    assert f"{p}, line 1:" in msg and "no header row" in msg


def test_header_but_no_rows(tmp_path):
    p = write(tmp_path, "a,y\n")
    assert "no data rows" in error_of(p, "y")


def test_empty_column_name(tmp_path):
    p = write(tmp_path, "a,,y\n1,2,3\n")
    msg = error_of(p, "y")
    assert f"{p}, line 1, column 2:" in msg and "empty column name" in msg


def test_duplicate_column_names(tmp_path):
    p = write(tmp_path, "a,b,a,y\n1,2,3,4\n")
    msg = error_of(p, "y")
    assert f"{p}, line 1:" in msg
    assert "duplicate column name 'a'" in msg and "columns 1 and 3" in msg


def test_ragged_rows(tmp_path):
    p = write(tmp_path, "a,b,y\n1,2,3\n4,5\n")
    msg = error_of(p, "y")
    assert f"{p}, line 3:" in msg and "has 2 fields" in msg and "has 3" in msg


def test_ragged_row_line_number_counts_blank_lines(tmp_path):
    p = write(tmp_path, "a,b,y\n1,2,3\n\n\n4,5,6,7\n")
    msg = error_of(p, "y")
    assert f"{p}, line 5:" in msg and "has 4 fields" in msg


@pytest.mark.parametrize("cell", ["abc", "1,5", "NA", "?", "1.2.3"])
def test_non_numeric_cell(tmp_path, cell):
    quoted = '"1,5"' if cell == "1,5" else cell
    p = write(tmp_path, f"a,b,y\n1,2,0\n3,{quoted},1\n")
    msg = error_of(p, "y")
    assert f"{p}, line 3, column 'b':" in msg
    assert f"{cell!r} is not a number" in msg


@pytest.mark.parametrize("row", ["3,,1", "3,  ,1"])
def test_empty_cell(tmp_path, row):
    p = write(tmp_path, f"a,b,y\n1,2,0\n{row}\n")
    msg = error_of(p, "y")
    assert f"{p}, line 3, column 'b':" in msg and "empty cell" in msg


def test_empty_target_cell(tmp_path):
    p = write(tmp_path, "a,b,y\n1,2,0\n3,4,\n")
    msg = error_of(p, "y")
    assert f"{p}, line 3, column 'y':" in msg and "empty cell" in msg


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_nan_and_infinity(tmp_path, cell):
    p = write(tmp_path, f"a,b,y\n1,2,0\n3,4,1\n5,{cell},0\n")
    msg = error_of(p, "y")
    assert f"{p}, line 4, column 'b':" in msg
    assert f"{cell!r} is not a finite number" in msg


def test_unknown_target_suggests(tmp_path):
    p = write(tmp_path, "age,bmi,progression\n1,2,3\n")
    msg = error_of(p, "progresion")
    assert "target column 'progresion' not found" in msg
    assert "did you mean 'progression'?" in msg
    assert "Valid names: age, bmi, progression." in msg


def test_unknown_feature(tmp_path):
    p = write(tmp_path, "age,bmi,y\n1,2,3\n")
    msg = error_of(p, "y", ["age", "bm"])
    assert "feature column 'bm' not found" in msg and "did you mean 'bmi'?" in msg


def test_semicolon_separated_hint(tmp_path):
    p = write(tmp_path, "a;b;y\n1;2;3\n")
    msg = error_of(p, "y")
    assert "separated by ';'" in msg


def test_no_feature_columns_left(tmp_path):
    p = write(tmp_path, "y1,y2\n1,2\n")
    msg = error_of(p, ["y1", "y2"])
    assert "no feature columns left" in msg


def test_other_target_feature_mistakes(tmp_path):
    p = write(tmp_path, "a,b,y\n1,2,3\n")
    assert "no target column" in error_of(p, [])
    assert "named twice" in error_of(p, ["y", "y"])
    assert "both a feature and a target" in error_of(p, "y", ["a", "y"])
    assert "no feature columns given" in error_of(p, "y", [])


def test_not_utf8(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("a,b,y\n1,2,3\n\xe9,1,1\n".encode("latin-1"))
    assert "not a UTF-8 text file" in error_of(p, "y")


# --------------------------------------------------------------------------- #
# check_targets
# --------------------------------------------------------------------------- #


def test_check_targets_ok():
    check_targets(np.array([[0.0], [1.0], [0.25]]), "bce", "here")
    check_targets(np.array([[-5.0, 300.0]]), "mse", "here")


def test_check_targets_bce_out_of_range():
    Y = np.array([[0.0, 1.0], [1.0, 0.5], [0.0, 2.0], [-1.0, 0.0]])
    with pytest.raises(DataError) as info:
        check_targets(Y, "bce", "train.csv")
    msg = str(info.value)
    assert msg.startswith("train.csv:")
    assert "row 3, column 2" in msg and "[0, 1]" in msg
    with pytest.raises(DataError, match="row 3, column 'label'"):
        check_targets(Y, "bce", "train.csv", target_names=["other", "label"])


def test_check_targets_not_finite_and_shape():
    with pytest.raises(DataError, match="row 2, column 1 is nan"):
        check_targets(np.array([[1.0], [np.nan]]), "mse", "w")
    with pytest.raises(DataError, match="2-D"):
        check_targets(np.array([0.0, 1.0]), "bce", "w")


# --------------------------------------------------------------------------- #
# Standardizer
# --------------------------------------------------------------------------- #


def test_standardizer_round_trip():
    rng = np.random.default_rng(1)
    X = rng.normal(loc=[3.0, -10.0, 0.0], scale=[2.0, 0.01, 50.0], size=(100, 3))
    s = Standardizer().fit(X)
    Z = s.transform(X)
    assert _is_c_f64(Z)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-12)
    back = s.inverse(Z)
    assert _is_c_f64(back)
    np.testing.assert_allclose(back, X, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(Z), X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [0.0, 0.1, 7.3, -1e6])
def test_standardizer_constant_column(value):
    X = np.column_stack([np.full(37, value), np.arange(37.0)])
    s = Standardizer().fit(X)
    assert s.std[0] == 1.0 and s.mean[0] == pytest.approx(value)
    Z = s.transform(X)
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z[:, 0], 0.0, atol=1e-9)


def test_standardizer_dict_and_npz_round_trip(tmp_path):
    X = load_dataset("diabetes").X
    s = Standardizer().fit(X)
    d = s.to_dict()
    assert set(d) == {"mean", "std"}
    s2 = Standardizer.from_dict(d)
    assert np.array_equal(s2.transform(X), s.transform(X))
    np.savez(tmp_path / "stats.npz", **d)
    with np.load(tmp_path / "stats.npz") as f:
        s3 = Standardizer.from_dict(f)
    assert np.array_equal(s3.mean, s.mean) and np.array_equal(s3.std, s.std)
    assert np.array_equal(s3.transform(X), s.transform(X))
    # to_dict returns copies
    d["mean"][:] = 0
    assert not np.array_equal(s.mean, d["mean"])


def test_standardizer_errors():
    s = Standardizer().fit(np.ones((4, 3)) * np.arange(4.0)[:, None])
    with pytest.raises(DataError, match="fitted on 3 columns, got X with 2 columns"):
        s.transform(np.zeros((5, 2)))
    with pytest.raises(DataError, match="fitted on 3 columns, got X with 4 columns"):
        s.inverse(np.zeros((5, 4)))
    with pytest.raises(DataError, match="not fitted"):
        Standardizer().transform(np.zeros((2, 2)))
    with pytest.raises(DataError, match="not fitted"):
        Standardizer().to_dict()
    with pytest.raises(DataError, match="no rows"):
        Standardizer().fit(np.zeros((0, 3)))
    with pytest.raises(DataError, match="2-D"):
        Standardizer().fit(np.zeros(3))
    with pytest.raises(DataError, match="non-finite"):
        Standardizer().fit(np.array([[1.0], [np.inf]]))
    with pytest.raises(DataError, match="missing key"):
        Standardizer.from_dict({"mean": np.zeros(2)})
    with pytest.raises(DataError, match="std must be > 0"):
        Standardizer.from_dict({"mean": np.zeros(2), "std": np.array([1.0, 0.0])})
    with pytest.raises(DataError, match="equal length"):
        Standardizer.from_dict({"mean": np.zeros(2), "std": np.ones(3)})


# --------------------------------------------------------------------------- #
# train_val_split
# --------------------------------------------------------------------------- #


def _rows(*arrays):
    return {tuple(r) for a in arrays for r in a}


def test_split_sizes_disjoint_complete():
    X = np.arange(200.0).reshape(100, 2)
    Y = np.arange(100.0).reshape(100, 1)
    Xtr, Ytr, Xva, Yva = train_val_split(X, Y, 0.2, seed=0)
    assert Xtr.shape == (80, 2) and Ytr.shape == (80, 1)
    assert Xva.shape == (20, 2) and Yva.shape == (20, 1)
    assert all(_is_c_f64(a) for a in (Xtr, Ytr, Xva, Yva))
    assert not set(Ytr[:, 0]) & set(Yva[:, 0])
    assert set(Ytr[:, 0]) | set(Yva[:, 0]) == set(range(100))
    # X and Y rows stay paired
    np.testing.assert_array_equal(Xtr[:, 0], 2 * Ytr[:, 0])
    np.testing.assert_array_equal(Xva[:, 1], 2 * Yva[:, 0] + 1)


def test_split_deterministic():
    X, Y = moons(n=50)
    a = train_val_split(X, Y, 0.3, seed=7)
    b = train_val_split(X, Y, 0.3, seed=7)
    c = train_val_split(X, Y, 0.3, seed=8)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[2], c[2])


def test_split_zero_fraction():
    X, Y = xor(n=10)
    Xtr, Ytr, Xva, Yva = train_val_split(X, Y, 0.0, seed=0)
    assert Xtr.shape == (10, 2) and Ytr.shape == (10, 1)
    assert Xva.shape == (0, 2) and Yva.shape == (0, 1)
    assert Xva.dtype == np.float64 and Yva.dtype == np.float64
    assert _rows(Xtr) == _rows(X)


def test_split_small_fraction_gives_one_validation_sample():
    X, Y = xor(n=5)
    _, _, Xva, _ = train_val_split(X, Y, 0.01, seed=0)
    assert Xva.shape == (1, 2)


def test_split_errors():
    X, Y = xor(n=4)
    with pytest.raises(DataError, match="no training sample"):
        train_val_split(X[:1], Y[:1], 0.5, seed=0)
    with pytest.raises(DataError, match=re.escape("val_fraction must be in [0, 1)")):
        train_val_split(X, Y, 1.0, seed=0)
    with pytest.raises(DataError, match=re.escape("val_fraction must be in [0, 1)")):
        train_val_split(X, Y, -0.1, seed=0)
    with pytest.raises(DataError, match="X has 4 rows but Y has 3"):
        train_val_split(X, Y[:3], 0.5, seed=0)
    with pytest.raises(DataError, match="reshape"):
        train_val_split(X, Y[:, 0], 0.5, seed=0)
    with pytest.raises(DataError, match="seed must be an integer"):
        train_val_split(X, Y, 0.5, seed=1.5)
