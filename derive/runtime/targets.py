"""A model's targets and classes: class labels in, one-hot rows to train on, labels back out.

A softmax model with C outputs trains on (N, C) rows of class probabilities, or on one column of
class labels (integers or text; a CSV column of text arrives as indices into ``Dataset.classes``):
:func:`targets` takes the sorted classes (:class:`~derive.data.ClassLabels`), checks there are C
of them and one-hot encodes the rows. A one-output sigmoid model may take a column of two text
labels (its classes 0 and 1). :func:`predicted_labels` and :func:`probabilities` read a model's
outputs back as classes, as ``FitResult.predict_labels`` / ``predict_proba`` and ``derive predict`` do.
"""

from __future__ import annotations

import numpy as np

from ..data import ClassLabels, DataError, Dataset
from ..errors import DeriveError
from . import metrics as M


def _matrix(a: object, name: str, cols: int | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (samples, columns), got shape {arr.shape}")
    if cols is not None and arr.shape[1] != cols:
        raise DataError(f"{name} has {arr.shape[1]} columns but the model takes {cols}")
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"{name} has a non-finite value {arr[i, j]} at row {i + 1}, column {j + 1}")
    return np.ascontiguousarray(arr)


def classes_of(spec: dict, labels: ClassLabels | None) -> tuple | None:
    """A classifier's classes in output order (the labels, else 0 ... C-1); None for regression."""
    task = M.task_of(spec)
    if task == "regression":
        return None
    if labels is not None:
        return labels.classes
    return (0, 1) if task == "binary" else tuple(range(spec["layers"][-1][0]))


def probabilities(spec: dict, out: np.ndarray) -> np.ndarray:
    """The model's output ``out`` as class probabilities (see :meth:`FitResult.predict_proba`)."""
    task = M.task_of(spec)
    if task == "regression":
        raise DeriveError(f"model {spec['name']!r} is a regression model (loss {M.loss_name(spec)!r}); "
                          "class probabilities are for classifiers: use predict")
    if task == "binary":
        return np.column_stack([1 - out[:, 0], out[:, 0]])
    return out


def predicted_labels(spec: dict, out: np.ndarray, labels: ClassLabels | None) -> np.ndarray:
    """The predicted class of each row of the model's output ``out`` (see :meth:`FitResult.predict_labels`)."""
    task = M.task_of(spec)
    if task == "regression":
        raise DeriveError(f"model {spec['name']!r} is a regression model (loss {M.loss_name(spec)!r}); "
                          "labels are for classifiers: use predict")
    if task == "multilabel":
        return (out >= 0.5).astype(np.int64)
    idx = (out[:, 0] >= 0.5).astype(np.int64) if task == "binary" else np.argmax(out, axis=1)
    return labels.decode(idx) if labels is not None else idx


def targets(spec: dict, Y: object, data: Dataset | None, where: str,
            saved: ClassLabels | None = None) -> tuple[np.ndarray, ClassLabels | None]:
    """The targets as the model's (N, outputs) float64 matrix, and the class labels they came from.

    A softmax model with C outputs takes one column (or a 1-D array) of class labels, integers or
    text, or ``data.classes`` indices: the classes are the sorted distinct labels (``saved``, a
    resumed model's, when given: a label it does not know is an error naming the row), there must
    be C of them, and each row becomes a one-hot row. Or (N, C) rows of class probabilities.
    A one-output sigmoid model given a column of two text labels trains on their indices 0/1."""
    task = M.task_of(spec)
    units = spec["layers"][-1][0]
    raw = label_column(Y, data)
    what = f"the target column{f' {data.target_names[0]!r}' if data is not None else ''}"
    if task == "multiclass" and raw is not None:
        labels = saved if saved is not None else ClassLabels.fit(raw, where)
        if labels.n_classes != units:
            raise DataError(f"{what} has {labels.n_classes} classes {_show(labels.classes)} but the model's softmax "
                            f"output has {units} units; they must match", where)
        return labels.one_hot(raw, np.float64, where), labels
    if task == "multiclass":
        Y = _matrix(Y, "Y")
        if Y.shape[1] != units:
            raise DataError(f"Y has {Y.shape[1]} columns but model {spec['name']!r} has a softmax output of {units} "
                            f"units: give one column of class labels, or {units} columns of class probabilities",
                            where)
        return Y, None
    if task == "binary" and raw is not None and (saved is not None or _is_text(raw)):
        labels = saved if saved is not None else ClassLabels.fit(raw, where)
        if labels.n_classes != 2:
            raise DataError(f"{what} has {labels.n_classes} classes {_show(labels.classes)} but model "
                            f"{spec['name']!r} has one sigmoid output, for two classes; for more use a softmax "
                            "output of that many units with loss 'cross_entropy'", where)
        return labels.encode(raw, where).astype(np.float64)[:, None], labels
    return _matrix(Y, "Y", units), None


def label_column(Y: object, data: Dataset | None) -> np.ndarray | None:
    """The target as one column of raw labels (text labels read back from ``data.classes``), or
    None when it has several columns."""
    if data is not None:
        if data.Y.shape[1] != 1:
            return None
        if data.classes is not None:
            return np.asarray(data.classes, dtype=str)[data.Y[:, 0].astype(np.int64)]
        return data.Y[:, 0]
    arr = Y if isinstance(Y, np.ndarray) else np.asarray(Y, dtype=object)
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return arr.reshape(-1)
    return None


def _is_text(raw: np.ndarray) -> bool:
    return raw.dtype.kind in "US" or (raw.dtype.kind == "O" and any(isinstance(v, str) for v in raw))


def saved_labels(meta: dict) -> ClassLabels | None:
    """The classes a checkpoint's ``meta`` records (None for a model trained without labels)."""
    d = meta.get("classes")
    return ClassLabels.from_dict(d) if d else None


def _show(classes: tuple) -> str:
    shown = ", ".join(repr(c) for c in classes[:8])
    return f"[{shown}{', ...' if len(classes) > 8 else ''}]"


def class_names(spec: dict, labels: ClassLabels | None, data: Dataset | None) -> tuple[str, ...] | None:
    """The names of the report's rows: the classes, or a multi-label model's target columns."""
    if M.task_of(spec) == "multilabel":
        return data.target_names if data is not None else None
    classes = classes_of(spec, labels)
    return None if classes is None else tuple(str(c) for c in classes)
