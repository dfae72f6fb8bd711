"""Data in, cleanly: bundled data sets, CSV loading, standardisation, splitting.

Everything here returns C-contiguous float64 arrays: inputs ``X`` of shape
``(n, d)`` and targets ``Y`` of shape ``(n, k)``. Problems with the data raise
:class:`DataError`, whose message names the file, the line (counted as a person
counts lines in the file, the header being line 1) and the column.

Bundled data sets (see ``derive/datasets/README.md`` for sources and licences):

========================  ======  ====  ========  ==========================
name                      loss    n     inputs    outputs
========================  ======  ====  ========  ==========================
``xor``                   bce     200   2         1 (label 0/1)
``moons``                 bce     200   2         1 (label 0/1)
``circles``               bce     200   2         1 (label 0/1)
``spiral``                ce      300   2         1 (class 0, 1, 2)
``breast_cancer``         bce     569   30        1 (``malignant``: 1 / 0)
``diabetes``              mse     442   10        1 (``progression``)
``iris``                  ce      150   4         1 (``species``: 3 names)
``wine``                  ce      178   13        1 (``cultivar``: 0, 1, 2)
``digits``                ce      1797  64        1 (``digit``: 0 ... 9)
========================  ======  ====  ========  ==========================

(ce = ``cross_entropy``.) A classification target is one column of class
labels; :class:`ClassLabels` maps labels to indices 0 ... C-1 (classes sorted)
and back, and gives one-hot rows. A CSV target column of text (iris's species
names) loads as each row's index into the sorted ``Dataset.classes``.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from derive.errors import DeriveError, suggest

__all__ = [
    "DATASETS",
    "DATA_DIR",
    "ClassLabels",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "Standardizer",
    "check_targets",
    "circles",
    "class_indices",
    "load_csv",
    "load_dataset",
    "moons",
    "spiral",
    "train_val_split",
    "xor",
]

#: Folder holding the bundled CSV files.
DATA_DIR = Path(__file__).resolve().parent / "datasets"


class DataError(DeriveError, ValueError):
    """Input data (a CSV file, an array, a split request) is unusable.

    ``where`` names the place: a file, line and column, or a function argument.
    """

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


# --------------------------------------------------------------------------- #
# Containers
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs ``X`` (n, d) and targets ``Y`` (n, k), both C-contiguous float64.

    ``classes``: for a target column of class names (text in a CSV file), the
    sorted names; ``Y`` is then (n, 1) and holds each row's index into them
    (0.0, 1.0, ...). None for numeric targets. :func:`class_indices` gives the
    :class:`ClassLabels` and the integer indices of either kind.
    """

    X: np.ndarray
    Y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    source: str
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        X = _as_matrix(self.X, "X", self.source)
        Y = _as_matrix(self.Y, "Y", self.source)
        if X.shape[0] != Y.shape[0]:
            raise DataError(
                f"X has {X.shape[0]} rows but Y has {Y.shape[0]}", self.source
            )
        fnames = tuple(str(n) for n in self.feature_names)
        tnames = tuple(str(n) for n in self.target_names)
        if len(fnames) != X.shape[1]:
            raise DataError(
                f"{len(fnames)} feature names for {X.shape[1]} columns of X",
                self.source,
            )
        if len(tnames) != Y.shape[1]:
            raise DataError(
                f"{len(tnames)} target names for {Y.shape[1]} columns of Y", self.source
            )
        classes = None
        if self.classes is not None:
            classes = _check_class_names(self.classes, self.source)
            if Y.shape[1] != 1:
                raise DataError(
                    f"classes are given, so Y must be one column of class indices; "
                    f"got {Y.shape[1]} columns",
                    self.source,
                )
            bad = (Y[:, 0] < 0) | (Y[:, 0] >= len(classes)) | (Y[:, 0] != np.round(Y[:, 0]))
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"Y at row {i + 1} is {Y[i, 0]:g}, not a class index 0 ... "
                    f"{len(classes) - 1} (classes {list(classes)})",
                    self.source,
                )
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "Y", Y)
        object.__setattr__(self, "feature_names", fnames)
        object.__setattr__(self, "target_names", tnames)
        object.__setattr__(self, "classes", classes)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.Y.shape[1])

    def __repr__(self) -> str:
        classes = "" if self.classes is None else f", classes={list(self.classes)}"
        return (
            f"Dataset(source={self.source!r}, n_samples={self.n_samples}, "
            f"features={list(self.feature_names)}, targets={list(self.target_names)}"
            f"{classes})"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What :data:`DATASETS` says about a bundled data set."""

    description: str
    # "bce" (targets 0/1), "mse" (real-valued targets) or "cross_entropy"
    # (one column of class labels; the model has n_classes outputs)
    loss: str
    n_inputs: int
    n_outputs: int  # columns of Y (1 for a column of class labels)
    n_samples: int  # default size (generators accept another ``n``)
    n_classes: int | None = None  # classification with cross_entropy: how many classes


DATASETS: dict[str, DatasetInfo] = {
    "xor": DatasetInfo(
        "XOR: four Gaussian clusters at the corners of the unit square, "
        "label = x1 xor x2 (generated)",
        "bce",
        2,
        1,
        200,
    ),
    "moons": DatasetInfo(
        "two interleaved half-moons, as scikit-learn's make_moons (generated)",
        "bce",
        2,
        1,
        200,
    ),
    "circles": DatasetInfo(
        "two concentric circles, inner = 1, as scikit-learn's make_circles (generated)",
        "bce",
        2,
        1,
        200,
    ),
    "spiral": DatasetInfo(
        "three interleaved spiral arms, class = arm, as in Stanford's CS231n "
        "(generated; no linear model separates them)",
        "cross_entropy",
        2,
        1,
        300,
        3,
    ),
    "breast_cancer": DatasetInfo(
        "Wisconsin diagnostic breast cancer (UCI): 30 cell-nucleus features, "
        "target malignant = 1 / benign = 0",
        "bce",
        30,
        1,
        569,
    ),
    "diabetes": DatasetInfo(
        "diabetes progression (Efron et al. 2004): 10 raw baseline variables, "
        "target = disease progression one year later",
        "mse",
        10,
        1,
        442,
    ),
    "iris": DatasetInfo(
        "Fisher's iris: 4 flower measurements (cm), target species "
        "setosa / versicolor / virginica (text labels)",
        "cross_entropy",
        4,
        1,
        150,
        3,
    ),
    "wine": DatasetInfo(
        "wine recognition (UCI): 13 chemical measurements, target cultivar 0 / 1 / 2",
        "cross_entropy",
        13,
        1,
        178,
        3,
    ),
    "digits": DatasetInfo(
        "handwritten digits (UCI optdigits test set): 8x8 images, pixels 0-16, "
        "target digit 0-9",
        "cross_entropy",
        64,
        1,
        1797,
        10,
    ),
}


# --------------------------------------------------------------------------- #
# Small checks shared by everything below
# --------------------------------------------------------------------------- #


def _as_matrix(a: object, name: str, where: str | None) -> np.ndarray:
    """A 2-D, finite, C-contiguous float64 copy-or-view of ``a``."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} is not a numeric array ({exc})", where) from None
    if arr.ndim != 2:
        hint = f"; use {name}.reshape(-1, 1) for one column" if arr.ndim == 1 else ""
        raise DataError(
            f"{name} must be 2-D (samples, columns); got shape {arr.shape}{hint}", where
        )
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(
            f"{name} has a non-finite value {arr[i, j]} at row {i + 1}, column {j + 1}",
            where,
        )
    return np.ascontiguousarray(arr)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_real(value: object, name: str, lo: float, hi: float, hi_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v) or v < lo or (v >= hi if hi_open else v > hi)
    if bad:
        interval = f"[{lo:g}, {hi:g})" if hi_open else f"[{lo:g}, {hi:g}]"
        raise DataError(f"{name} must be in {interval}, got {value!r}")
    return v


# --------------------------------------------------------------------------- #
# Generated data sets
# --------------------------------------------------------------------------- #


def _finish(
    X: np.ndarray, y: np.ndarray, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the samples, add Gaussian noise, return (X (n, 2), Y (n, 1))."""
    perm = rng.permutation(X.shape[0])
    X = X[perm]
    y = y[perm]
    if noise > 0:
        X = X + rng.normal(scale=noise, size=X.shape)
    return (
        np.ascontiguousarray(X, dtype=np.float64),
        np.ascontiguousarray(y.reshape(-1, 1), dtype=np.float64),
    )


def xor(
    n: int = 200, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: ``n`` points around the four corners of the unit square.

    Corner ``(a, b)`` with ``a, b`` in {0, 1} gets label ``a xor b``; the corners
    take turns so each holds ``n // 4`` or one more point; Gaussian noise of
    standard deviation ``noise`` is added to the coordinates.
    Returns ``X`` (n, 2) and ``Y`` (n, 1), float64.
    """
    n = _check_int(n, "n", 1)
    noise = _check_real(noise, "noise", 0.0, math.inf, hi_open=True)
    rng = np.random.default_rng(_check_int(seed, "seed", 0))
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    which = np.arange(n) % 4
    X = corners[which]
    y = np.logical_xor(X[:, 0] > 0.5, X[:, 1] > 0.5).astype(np.float64)
    return _finish(X, y, noise, rng)


def moons(
    n: int = 200, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-moons, built as scikit-learn's ``make_moons``.

    ``n // 2`` points on the upper half circle (label 0) and the rest on the
    lower one shifted by (1, -0.5) (label 1); samples shuffled, then Gaussian
    noise of standard deviation ``noise``. Returns ``X`` (n, 2), ``Y`` (n, 1).
    """
    n = _check_int(n, "n", 1)
    noise = _check_real(noise, "noise", 0.0, math.inf, hi_open=True)
    rng = np.random.default_rng(_check_int(seed, "seed", 0))
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    X = np.vstack(
        [
            np.column_stack([np.cos(t_out), np.sin(t_out)]),
            np.column_stack([1.0 - np.cos(t_in), 1.0 - np.sin(t_in) - 0.5]),
        ]
    )
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)])
    return _finish(X, y, noise, rng)


def circles(
    n: int = 200, noise: float = 0.05, factor: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles, built as scikit-learn's ``make_circles``.

    ``n // 2`` points on the unit circle (label 0) and the rest on a circle of
    radius ``factor`` (label 1, ``0 <= factor < 1``); samples shuffled, then
    Gaussian noise of standard deviation ``noise``. Returns ``X`` (n, 2), ``Y`` (n, 1).
    """
    n = _check_int(n, "n", 1)
    noise = _check_real(noise, "noise", 0.0, math.inf, hi_open=True)
    factor = _check_real(factor, "factor", 0.0, 1.0, hi_open=True)
    rng = np.random.default_rng(_check_int(seed, "seed", 0))
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, 2.0 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0.0, 2.0 * np.pi, n_in, endpoint=False)
    X = np.vstack(
        [
            np.column_stack([np.cos(t_out), np.sin(t_out)]),
            factor * np.column_stack([np.cos(t_in), np.sin(t_in)]),
        ]
    )
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)])
    return _finish(X, y, noise, rng)


def spiral(
    n: int = 300, noise: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spiral arms, class = arm: the 2-D case of Stanford's CS231n.

    Arm ``k`` (k = 0, 1, 2) holds ``n // 3`` points, or one more (arms 0, 1
    first); its ``m`` points have radius ``r = linspace(0, 1, m)`` and angle
    ``t = linspace(4k, 4k + 4, m) + noise * N(0, 1)`` (radians: the noise jitters
    the angle, as in CS231n, not the coordinates) and sit at
    ``(r sin t, r cos t)``. Samples shuffled. Returns ``X`` (n, 2) and ``Y``
    (n, 1) holding the class index 0.0, 1.0 or 2.0, float64.
    """
    n = _check_int(n, "n", 1)
    noise = _check_real(noise, "noise", 0.0, math.inf, hi_open=True)
    rng = np.random.default_rng(_check_int(seed, "seed", 0))
    arms = 3
    parts, labels = [], []
    for k in range(arms):
        m = n // arms + (1 if k < n % arms else 0)
        r = np.linspace(0.0, 1.0, m)
        t = np.linspace(4.0 * k, 4.0 * (k + 1), m)
        if noise > 0:
            t = t + rng.normal(scale=noise, size=m)
        parts.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        labels.append(np.full(m, float(k)))
    return _finish(np.vstack(parts), np.concatenate(labels), 0.0, rng)


_GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "xor": xor,
    "moons": moons,
    "circles": circles,
    "spiral": spiral,
}

_BUNDLED_CSV: dict[str, tuple[str, str]] = {
    # name -> (file in DATA_DIR, target column)
    "breast_cancer": ("breast_cancer.csv", "malignant"),
    "diabetes": ("diabetes.csv", "progression"),
    "iris": ("iris.csv", "species"),
    "wine": ("wine.csv", "cultivar"),
    "digits": ("digits.csv", "digit"),
}


def load_dataset(name: str, **options: object) -> Dataset:
    """One of the bundled data sets listed in :data:`DATASETS`.

    For the generated ones (``xor``, ``moons``, ``circles``, ``spiral``)
    ``options`` go to the generator (``n``, ``noise``, ``seed``, and ``factor``
    for circles); the CSV ones take no options. ``iris`` has text labels, so its
    ``Y`` holds indices into ``Dataset.classes`` (see :func:`load_csv`).
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}{suggest(str(name), DATASETS)}")
    if name in _GENERATORS:
        gen = _GENERATORS[name]
        try:
            X, Y = gen(**options)
        except TypeError as exc:  # an option the generator does not take
            raise DataError(f"bad option for data set {name!r}: {exc}") from None
        args = ", ".join(f"{k}={v!r}" for k, v in options.items())
        return Dataset(X, Y, ("x1", "x2"), ("label",), f"generated: {name}({args})")
    if options:
        raise DataError(
            f"data set {name!r} is read from a file and takes no options, "
            f"got {', '.join(sorted(options))}"
        )
    filename, target = _BUNDLED_CSV[name]
    return load_csv(DATA_DIR / filename, target)


# --------------------------------------------------------------------------- #
# CSV
# --------------------------------------------------------------------------- #


def _parse_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def load_csv(
    path: str | os.PathLike[str],
    targets: Sequence[str] | str,
    features: Sequence[str] | None = None,
) -> Dataset:
    """Read a comma-separated file with a header row of column names.

    ``targets`` names the column(s) that go into ``Y``; ``features`` the ones
    for ``X`` (default: every other column, in file order). With ``features``
    given, ``targets`` may be empty (inputs only, for predictions: ``Y`` is (n, 0)). Only the selected
    columns must hold numbers, so a text column (an id, a name) may stay in the
    file if ``features`` leaves it out. Blank lines are skipped. Every cell used
    must be a finite number: empty cells, ``nan``, ``inf``, ``NA``, ``?`` ... are
    rejected with the line and column, since missing values are not imputed.

    One exception: a target column in which no cell is a finite number (``setosa``,
    ``cat`` ...) holds **class labels**. It must be the only target column; ``Y``
    is then (n, 1) with each row's index into the sorted class names (``Y = 0.0``
    for ``classes[0]``), and ``Dataset.classes`` holds those names. A target column
    mixing numbers and text is refused (a typo or a missing-value marker is more
    likely than a class named like a number). A column of whole numbers stays
    numeric: :func:`class_indices` takes its classes.
    """
    where = str(path)
    p = Path(path)
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets and features is None:  # inputs only (for predictions) need the features named
        raise DataError("no target column given", where)
    if p.is_dir():
        raise DataError("is a folder, not a CSV file", where)
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [
                (reader.line_num, row) for row in reader if any(c.strip() for c in row)
            ]
    except FileNotFoundError:
        raise DataError("file not found", where) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", where
        ) from None
    except csv.Error as exc:
        raise DataError(f"malformed CSV ({exc})", where) from None
    except OSError as exc:
        raise DataError(
            f"cannot read the file ({exc.strerror or exc})", where
        ) from None

    if not rows:
        raise DataError("the file is empty (no header row, no data)", where)

    header_line, raw_header = rows[0]
    header = [c.strip() for c in raw_header]
    if all(_parse_number(c) is not None for c in header):
        raise DataError(
            "has no header row: every cell is a number; the first line must "
            "name the columns (for example: x1,x2,y)",
            f"{where}, line {header_line}",
        )
    first_pos: dict[str, int] = {}
    for j, name in enumerate(header, start=1):
        if not name:
            raise DataError(
                "empty column name in the header",
                f"{where}, line {header_line}, column {j}",
            )
        if name in first_pos:
            raise DataError(
                f"duplicate column name {name!r} in the header "
                f"(columns {first_pos[name]} and {j})",
                f"{where}, line {header_line}",
            )
        first_pos[name] = j

    def lookup(name: object, role: str) -> int:
        if not isinstance(name, str):
            raise DataError(f"{role} column names must be strings, got {name!r}", where)
        if name in first_pos:
            return first_pos[name] - 1
        hint = ""
        if len(header) == 1:
            for sep in (";", "\t", "|"):
                if sep in header[0]:
                    hint = (
                        f" (the file seems to be separated by {sep!r};"
                        " only commas are supported)"
                    )
                    break
        raise DataError(
            f"{role} column {name!r} not found{hint}{suggest(name, header)}", where
        )

    t_idx = [lookup(t, "target") for t in targets]
    if len(set(t_idx)) != len(t_idx):
        raise DataError(f"a target column is named twice in {targets!r}", where)
    if features is None:
        f_idx = [j for j in range(len(header)) if j not in set(t_idx)]
        if not f_idx:
            raise DataError(
                "no feature columns left: every column "
                f"({', '.join(header)}) is a target",
                where,
            )
    else:
        if isinstance(features, str):
            features = [features]
        f_idx = [lookup(c, "feature") for c in features]
        if not f_idx:
            raise DataError("no feature columns given (features=[])", where)
        if len(set(f_idx)) != len(f_idx):
            raise DataError(
                f"a feature column is named twice in {list(features)!r}", where
            )
        both = [header[j] for j in f_idx if j in set(t_idx)]
        if both:
            raise DataError(f"column {both[0]!r} is both a feature and a target", where)

    data_rows = rows[1:]
    if not data_rows:
        raise DataError(f"has a header (line {header_line}) but no data rows", where)

    width = len(header)
    text = _text_targets(data_rows, t_idx, width)
    if text and len(t_idx) > 1:
        names = [header[j] for j in text]
        if len(names) > 1:
            what = f"target columns {', '.join(map(repr, names))} all hold text"
        else:
            what = f"target column {names[0]!r} holds text (class labels)"
        raise DataError(
            f"{what}; class labels come in one target column, the only one "
            f"(targets given: {', '.join(header[j] for j in t_idx)})",
            where,
        )
    first_number = {}  # target column -> (line, cell) of its first number
    for j in t_idx:
        found = _first_finite(data_rows, j, width)
        if found is not None:
            first_number[j] = found

    used = f_idx + t_idx
    out = np.empty((len(data_rows), len(used)), dtype=np.float64)
    labels: list[str] = []
    for i, (line, row) in enumerate(data_rows):
        if len(row) != width:
            raise DataError(
                f"has {len(row)} fields but the header "
                f"(line {header_line}) has {width}",
                f"{where}, line {line}",
            )
        for k, j in enumerate(used):
            cell = row[j].strip()
            loc = f"{where}, line {line}, column {header[j]!r}"
            if not cell:
                raise DataError(
                    "empty cell (missing value); fill it in or remove the row", loc
                )
            if j in text:
                labels.append(cell)
                out[i, k] = 0.0
                continue
            value = _parse_number(cell)
            if value is None:
                hint = ""
                if j in first_number:  # a target column with numbers and text
                    num_line, num_cell = first_number[j]
                    hint = (
                        f"; target column {header[j]!r} holds numbers (line {num_line}: "
                        f"{num_cell!r}) and text, so it is neither numeric nor a column "
                        "of class labels"
                    )
                raise DataError(f"{cell!r} is not a number{hint}", loc)
            if not math.isfinite(value):
                raise DataError(
                    f"{cell!r} is not a finite number (NaN and infinities are "
                    "treated as missing or invalid data)",
                    loc,
                )
            out[i, k] = value

    nf = len(f_idx)
    classes = None
    if text:
        classes = tuple(sorted(set(labels)))
        index = {c: float(k) for k, c in enumerate(classes)}
        out[:, nf] = [index[c] for c in labels]
    return Dataset(
        X=np.ascontiguousarray(out[:, :nf]),
        Y=np.ascontiguousarray(out[:, nf:]),
        feature_names=tuple(header[j] for j in f_idx),
        target_names=tuple(header[j] for j in t_idx),
        source=where,
        classes=classes,
    )


def _is_finite_number(cell: str) -> bool:
    value = _parse_number(cell)
    return value is not None and math.isfinite(value)


def _first_finite(
    data_rows: list[tuple[int, list[str]]], j: int, width: int
) -> tuple[int, str] | None:
    """(line, cell) of the first finite number in column ``j``, or None."""
    for line, row in data_rows:
        if len(row) == width and _is_finite_number(row[j].strip()):
            return line, row[j].strip()
    return None


def _text_targets(
    data_rows: list[tuple[int, list[str]]], t_idx: list[int], width: int
) -> list[int]:
    """The target columns holding class labels: a non-empty cell, none a finite number."""
    text = []
    for j in t_idx:
        cells = [row[j].strip() for _, row in data_rows if len(row) == width]
        if any(cells) and _first_finite(data_rows, j, width) is None:
            text.append(j)
    return text


def check_targets(
    Y: np.ndarray,
    loss: str,
    where: str,
    target_names: Sequence[str] | None = None,
) -> None:
    """Raise :class:`DataError` if targets ``Y`` (n, k) do not suit ``loss``.

    Every loss needs finite values; ``"bce"`` also needs them within [0, 1].
    ``"cross_entropy"`` (or ``"categorical_crossentropy"``) needs one column of
    class indices 0, 1, 2 ... (whole numbers), or (n, C) rows that are probability
    distributions (one-hot or soft: within [0, 1], each summing to 1 within 1e-6).
    The message names the first offending row (1-based sample number) and column.
    """
    arr = np.asarray(Y, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(
            f"targets must be 2-D (samples, outputs); got shape {arr.shape}", where
        )

    def col(j: int) -> str:
        if target_names is not None and j < len(target_names):
            return repr(str(target_names[j]))
        return str(j + 1)

    finite = np.isfinite(arr)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise DataError(
            f"target at row {i + 1}, column {col(j)} is {arr[i, j]}, "
            "not a finite number",
            where,
        )
    if loss == "bce":
        bad = (arr < 0.0) | (arr > 1.0)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(
                f"target at row {i + 1}, column {col(j)} is {arr[i, j]:g}; loss 'bce' "
                "needs targets within [0, 1] (class labels 0/1 or probabilities)",
                where,
            )
    if loss in ("cross_entropy", "categorical_crossentropy"):
        if arr.shape[1] == 1:
            bad = (arr[:, 0] < 0.0) | (arr[:, 0] != np.round(arr[:, 0]))
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"target at row {i + 1}, column {col(0)} is {arr[i, 0]:g}, not a class "
                    f"index; loss {loss!r} with one target column needs class indices "
                    "0, 1, 2 ...",
                    where,
                )
            return
        bad = (arr < 0.0) | (arr > 1.0)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(
                f"target at row {i + 1}, column {col(j)} is {arr[i, j]:g}; loss {loss!r} "
                "needs each row to be class probabilities within [0, 1]",
                where,
            )
        sums = arr.sum(axis=1)
        off = np.abs(sums - 1.0) > 1e-6
        if off.any():
            i = int(np.argmax(off))
            raise DataError(
                f"target row {i + 1} sums to {sums[i]:.9g}, not 1; loss {loss!r} needs "
                "each row to be a probability distribution (one-hot or soft labels)",
                where,
            )


# --------------------------------------------------------------------------- #
# Class labels
# --------------------------------------------------------------------------- #


def _show(classes: Sequence[object], limit: int = 12) -> str:
    """``['a', 'b', 'c']``, or the first ``limit`` and a count for long lists."""
    items = ", ".join(repr(c) for c in classes[:limit])
    if len(classes) > limit:
        items += f", ... ({len(classes)} classes)"
    return f"[{items}]"


def _label_of(value: object) -> tuple[str, object] | None:
    """``("str", s)`` or ``("int", i)`` for one label cell; None if it is neither."""
    if isinstance(value, (str, np.str_)):
        return "str", str(value)
    if isinstance(value, (bool, np.bool_)):
        return "int", int(value)
    if isinstance(value, numbers.Integral):
        return "int", int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isfinite(v) and v == round(v):
            return "int", int(v)
    return None


def _label_array(column: object, where: str | None) -> np.ndarray:
    """A 1-D int64 or str array of labels from a column (N,) or (N, 1)."""
    arr = column if isinstance(column, np.ndarray) else np.array(column, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(
            f"class labels must be one column, shape (N,) or (N, 1); got shape {arr.shape}",
            where,
        )
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.int64)
    if kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"row {i + 1}: {float(arr[i])!r} is not a whole number; class labels "
                "are integers or text",
                where,
            )
        return arr.astype(np.int64)
    if kind in "US":
        out = arr.astype(str)
    elif kind == "O":
        kinds: dict[str, int] = {}
        values: list[object] = []
        for i, v in enumerate(arr):
            got = _label_of(v)
            if got is None:
                raise DataError(
                    f"row {i + 1}: {v!r} is not a class label (a whole number or text)",
                    where,
                )
            kinds.setdefault(got[0], i)
            values.append(got[1])
        if len(kinds) > 1:
            a, b = kinds["int"], kinds["str"]
            raise DataError(
                f"the labels mix numbers (row {a + 1}: {values[a]!r}) and text "
                f"(row {b + 1}: {values[b]!r}); use one kind",
                where,
            )
        if "int" in kinds:
            return np.array(values, dtype=np.int64)
        out = np.array(values, dtype=str) if values else np.empty(0, dtype=str)
    else:
        raise DataError(
            f"class labels must be integers or text, got an array of {arr.dtype}",
            where,
        )
    empty = out == ""
    if empty.any():
        raise DataError(f"row {int(np.argmax(empty)) + 1}: empty class label", where)
    return out


class ClassLabels:
    """The classes of a classification target and the map label <-> index.

    ``ClassLabels.fit(column)`` takes the sorted distinct labels of a column:
    integers stay integers (a float column must be whole numbers), text stays
    text (sorted by code point: ``"B" < "a"``). Class ``classes[k]`` is index
    ``k``, output ``k`` of the model. ``encode`` maps labels to indices,
    ``one_hot`` to (N, C) rows, ``decode`` indices back to labels; ``to_dict`` /
    ``from_dict`` save and restore them with a model (plain JSON types).

    >>> labels = ClassLabels.fit(["b", "a", "c", "a"])
    >>> labels.classes, labels.encode(["c", "a"]).tolist(), labels.decode([1]).tolist()
    (('a', 'b', 'c'), [2, 0], ['b'])
    """

    def __init__(self, classes: Sequence[object]):
        where = "ClassLabels"
        if isinstance(classes, (str, bytes)) or not isinstance(
            classes, (Sequence, np.ndarray)
        ):
            raise DataError(
                f"classes must be a sequence of labels, got {type(classes).__name__}",
                where,
            )
        arr = _label_array(np.array(list(classes), dtype=object), where)
        if arr.size == 0:
            raise DataError("no classes given", where)
        values = arr.tolist()
        seen: dict[object, int] = {}
        for i, v in enumerate(values):
            if v in seen:
                raise DataError(
                    f"class {v!r} is listed twice (positions {seen[v] + 1} and {i + 1})",
                    where,
                )
            seen[v] = i
        self._classes: tuple = tuple(values)
        self._kind = "int" if arr.dtype.kind == "i" else "str"
        self._array = arr
        self._sorter = np.argsort(arr, kind="stable")

    @classmethod
    def fit(cls, column: object, where: str | None = None) -> ClassLabels:
        """The sorted distinct labels of ``column`` ((N,) or (N, 1))."""
        arr = _label_array(column, where)
        if arr.size == 0:
            raise DataError("no labels to take the classes from (the column is empty)", where)
        return cls(np.unique(arr).tolist())

    @property
    def classes(self) -> tuple:
        """The classes in index order (ints or strs)."""
        return self._classes

    @property
    def n_classes(self) -> int:
        return len(self._classes)

    @property
    def kind(self) -> str:
        """``"int"`` or ``"str"``: what the labels are."""
        return self._kind

    def encode(self, column: object, where: str | None = None) -> np.ndarray:
        """Each label's class index, (N,) int64; an unknown label is a DataError."""
        arr = _label_array(column, where)
        n = arr.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.int64)
        same_kind = (arr.dtype.kind == "i") == (self._kind == "int")
        if not same_kind:
            known = np.zeros(n, dtype=bool)
        else:
            pos = np.searchsorted(self._array, arr, sorter=self._sorter)
            pos = np.minimum(pos, self.n_classes - 1)
            idx = self._sorter[pos]
            known = self._array[idx] == arr
        if not known.all():
            i = int(np.argmin(known))
            label = arr[i].item()
            hint = ""
            if not same_kind:
                hint = (
                    " (the classes are text and the labels numbers)"
                    if self._kind == "str"
                    else " (the classes are numbers and the labels text)"
                )
            raise DataError(
                f"row {i + 1}: unknown class label {label!r}; the known classes are "
                f"{_show(self._classes)}{hint}",
                where,
            )
        return np.ascontiguousarray(idx, dtype=np.int64)

    def one_hot(
        self, column: object, dtype: object = np.float64, where: str | None = None
    ) -> np.ndarray:
        """(N, C) rows with a 1 in each label's class column, 0 elsewhere."""
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise DataError(f"one_hot needs a floating dtype, got {dt}", where)
        idx = self.encode(column, where)
        out = np.zeros((idx.shape[0], self.n_classes), dtype=dt)
        out[np.arange(idx.shape[0]), idx] = 1
        return out

    def decode(self, indices: object, where: str | None = None) -> np.ndarray:
        """The labels of class indices (N,) or (N, 1); ints or strs as the classes."""
        a = np.asarray(indices)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1:
            hint = (
                "; for (N, C) probabilities decode their argmax(axis=1)"
                if a.ndim == 2
                else ""
            )
            raise DataError(
                f"class indices must be (N,) or (N, 1), got shape {a.shape}{hint}",
                where,
            )
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a) | (a != np.round(a))
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"row {i + 1}: {float(a[i])!r} is not a class index", where)
        elif a.dtype.kind not in "biu" and a.size:
            raise DataError(f"class indices must be integers, got an array of {a.dtype}", where)
        idx = a.astype(np.int64)
        bad = (idx < 0) | (idx >= self.n_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"row {i + 1}: class index {int(idx[i])} is out of range 0 ... "
                f"{self.n_classes - 1}",
                where,
            )
        return self._array[idx]

    def to_dict(self) -> dict[str, object]:
        """``{"kind": "int" | "str", "classes": [...]}``, plain JSON types."""
        return {"kind": self._kind, "classes": list(self._classes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ClassLabels:
        """Rebuild from :meth:`to_dict` output (also after JSON or ``np.savez``)."""
        where = "ClassLabels.from_dict"
        if not isinstance(d, Mapping) or "classes" not in d:
            raise DataError("expected a mapping with key 'classes' (and 'kind')", where)
        raw = d["classes"]
        values = np.asarray(raw).tolist() if isinstance(raw, np.ndarray) else raw
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise DataError(f"'classes' must be a list, got {type(raw).__name__}", where)
        labels = cls(values)
        kind = d.get("kind", labels.kind)
        kind = kind.item() if isinstance(kind, np.ndarray) else kind
        if kind not in ("int", "str"):
            raise DataError(f"'kind' must be 'int' or 'str', got {kind!r}", where)
        if kind != labels.kind:
            raise DataError(
                f"'kind' is {kind!r} but the classes are {labels.kind}s: "
                f"{_show(labels.classes)}",
                where,
            )
        return labels

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassLabels):
            return NotImplemented
        return self._kind == other._kind and self._classes == other._classes

    def __hash__(self) -> int:
        return hash((self._kind, self._classes))

    def __repr__(self) -> str:
        return f"ClassLabels({_show(self._classes)})"


def _check_class_names(classes: object, where: str) -> tuple[str, ...]:
    """``Dataset.classes``: distinct, non-empty strings."""
    labels = ClassLabels(classes)  # type: ignore[arg-type]
    if labels.kind != "str":
        raise DataError(
            f"Dataset.classes must be the class names (text), got {_show(labels.classes)}",
            where,
        )
    return labels.classes


def class_indices(dataset: Dataset) -> tuple[ClassLabels, np.ndarray]:
    """The classes of a one-column classification target and each row's index (N,) int64.

    With ``dataset.classes`` (text labels read from a CSV file) ``Y`` already
    holds the indices; otherwise the classes are the sorted distinct values of
    ``Y`` (whole numbers), as :meth:`ClassLabels.fit` takes them.
    """
    if dataset.n_outputs != 1:
        raise DataError(
            "class labels come in one target column; the data has "
            f"{dataset.n_outputs} ({', '.join(dataset.target_names)})",
            dataset.source,
        )
    y = dataset.Y[:, 0]
    if dataset.classes is not None:
        return ClassLabels(dataset.classes), y.astype(np.int64)
    where = f"{dataset.source}, target {dataset.target_names[0]!r}"
    labels = ClassLabels.fit(y, where)
    return labels, labels.encode(y, where)


# --------------------------------------------------------------------------- #
# Standardisation
# --------------------------------------------------------------------------- #


class Standardizer:
    """Per-column ``(x - mean) / std``; a constant column gets ``std = 1``.

    ``fit`` returns the standardizer itself, so ``Standardizer().fit(X).transform(X)``
    works; the statistics are in ``.mean`` and ``.std`` (1-D float64 arrays).
    ``to_dict()`` gives ``{"mean": ..., "std": ...}``, ready for ``np.savez``;
    ``from_dict`` reads it back (an ``np.load`` result works as the mapping).
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        if (mean is None) != (std is None):
            raise DataError("give both mean and std, or neither", "Standardizer")
        if mean is not None:
            self._set(mean, std)

    def _set(self, mean: object, std: object) -> None:
        where = "Standardizer"
        try:
            m = np.array(mean, dtype=np.float64)
            s = np.array(std, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"mean and std must be numeric arrays ({exc})", where
            ) from None
        if m.ndim != 1 or s.shape != m.shape:
            raise DataError(
                "mean and std must be 1-D of equal length; "
                f"got shapes {m.shape} and {s.shape}",
                where,
            )
        if not (np.isfinite(m).all() and np.isfinite(s).all()):
            raise DataError("mean and std must be finite", where)
        if (s <= 0).any():
            raise DataError(
                f"std must be > 0; column {int(np.argmax(s <= 0)) + 1} is not", where
            )
        self.mean = np.ascontiguousarray(m)
        self.std = np.ascontiguousarray(s)

    @property
    def n_features(self) -> int | None:
        return None if self.mean is None else int(self.mean.shape[0])

    def fit(self, X: np.ndarray) -> Standardizer:
        """Compute column means and standard deviations of ``X`` (n, d)."""
        X = _as_matrix(X, "X", "Standardizer.fit")
        if X.shape[0] == 0:
            raise DataError("cannot fit on X with no rows", "Standardizer.fit")
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        # constant columns (exactly, or up to rounding in the mean) keep their scale
        constant = (std == 0.0) | (std <= 1e-12 * np.abs(mean))
        std = np.where(constant, 1.0, std)
        self._set(mean, std)
        return self

    def _check(self, X: np.ndarray, what: str) -> np.ndarray:
        where = f"Standardizer.{what}"
        if self.mean is None:
            raise DataError("not fitted yet: call fit(X) first", where)
        X = _as_matrix(X, "X", where)
        if X.shape[1] != self.mean.shape[0]:
            raise DataError(
                f"fitted on {self.mean.shape[0]} columns, "
                f"got X with {X.shape[1]} columns",
                where,
            )
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / std`` as a new C-contiguous float64 array."""
        X = self._check(X, "transform")
        return np.ascontiguousarray((X - self.mean) / self.std)

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform`: ``Z * std + mean``."""
        Z = self._check(Z, "inverse")
        return np.ascontiguousarray(Z * self.std + self.mean)

    inverse_transform = inverse

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{"mean": array, "std": array}`` (copies), for ``np.savez(path, **d)``."""
        if self.mean is None or self.std is None:
            raise DataError("not fitted yet: nothing to save", "Standardizer.to_dict")
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Standardizer:
        """Rebuild from :meth:`to_dict` output (or an ``np.load``-ed .npz)."""
        missing = [k for k in ("mean", "std") if k not in d]
        if missing:
            raise DataError(
                f"missing key(s) {', '.join(missing)}; expected 'mean' and 'std'",
                "Standardizer.from_dict",
            )
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]))

    def __repr__(self) -> str:
        return f"Standardizer(n_features={self.n_features})"


# --------------------------------------------------------------------------- #
# Train / validation split
# --------------------------------------------------------------------------- #


def train_val_split(
    X: np.ndarray, Y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split into training and validation sets with a seeded permutation.

    ``round(val_fraction * n)`` samples (at least one when ``val_fraction > 0``)
    go to validation, the rest to training, both in permuted order.
    ``val_fraction = 0`` gives empty validation arrays of shapes (0, d) and (0, k).
    At least one training sample must remain. Returns ``(Xtr, Ytr, Xva, Yva)``.
    """
    where = "train_val_split"
    X = _as_matrix(X, "X", where)
    Y = _as_matrix(Y, "Y", where)
    n = X.shape[0]
    if Y.shape[0] != n:
        raise DataError(f"X has {n} rows but Y has {Y.shape[0]}", where)
    if n == 0:
        raise DataError("no samples to split", where)
    frac = _check_real(val_fraction, "val_fraction", 0.0, 1.0, hi_open=True)
    seed = _check_int(seed, "seed", 0)
    n_val = math.floor(frac * n + 0.5)
    if frac > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise DataError(
            f"val_fraction={val_fraction} leaves no training sample out of {n}", where
        )
    perm = np.random.default_rng(seed).permutation(n)
    va, tr = perm[:n_val], perm[n_val:]
    return (
        np.ascontiguousarray(X[tr]),
        np.ascontiguousarray(Y[tr]),
        np.ascontiguousarray(X[va]),
        np.ascontiguousarray(Y[va]),
    )
