"""Metrics after training, with scikit-learn's definitions (numpy only).

* classification, one label per row: binary (one sigmoid output, threshold 0.5) and multi-class
  (softmax outputs, the predicted class is the argmax): accuracy, log loss, per-class precision /
  recall / F1 / support with macro and weighted averages, the confusion matrix;
* multi-label (several sigmoid outputs, a 0/1 target per output): per-label precision / recall /
  F1 / support with micro, macro, weighted and samples averages, subset accuracy;
* regression: RMSE, MAE, MAPE (a fraction) and R², each averaged uniformly over the outputs.

Every division by zero gives 0, as scikit-learn's ``zero_division=0`` (its default, ``"warn"``,
gives 0 too). :meth:`Report.text` is scikit-learn's ``classification_report`` layout, character
for character. The definitions, with their formulas, are in ``docs/training.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: The floor of |y| in MAPE's denominator (scikit-learn's).
MAPE_EPS = float(np.finfo(np.float64).eps)

#: Which kinds of task :func:`task_of` tells apart.
TASKS = ("binary", "multiclass", "multilabel", "regression")


def loss_name(spec: dict) -> str:
    """The loss's name in a generated module's SPEC (``"bce"``, or ``{"name": ..., options}``)."""
    loss = spec["loss"]
    return loss if isinstance(loss, str) else str(loss["name"])


def task_of(spec: dict) -> str:
    """``"multiclass"`` (softmax output), ``"binary"`` (one sigmoid output with BCE),
    ``"multilabel"`` (several sigmoid outputs with BCE) or ``"regression"`` (anything else)."""
    units, act = spec["layers"][-1][0], spec["layers"][-1][1]
    if act == "softmax":
        return "multiclass"
    if loss_name(spec) == "bce":
        return "binary" if units == 1 else "multilabel"
    return "regression"


# --------------------------------------------------------------------------- single-label classification


def _indices(y: object, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError(f"{name} must hold whole class indices")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if (arr < 0).any():
        raise ValueError(f"{name} holds a negative class index")
    return arr.astype(np.int64)


def confusion_matrix(y_true: object, y_pred: object, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = the number of rows of true class ``i`` predicted as class ``j`` (classes
    0 ... n_classes - 1, every one a row and a column even when absent)."""
    t, p = _indices(y_true, "y_true"), _indices(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} rows but y_pred has {p.size}")
    if t.size and max(t.max(), p.max()) >= n_classes:
        raise ValueError(f"a class index is >= n_classes = {n_classes}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision tp/pred, recall tp/true and F1 = 2 tp / (pred + true), each 0 on 0/0."""
    return _divide(tp, pred), _divide(tp, true), _divide(2 * tp, pred + true)


def precision_recall_f1(y_true: object, y_pred: object, n_classes: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class: precision, recall, F1 (float arrays) and support (int array), from class indices."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm)
    p, r, f1 = _prf(tp, cm.sum(axis=0), cm.sum(axis=1))
    return p, r, f1, cm.sum(axis=1)


def log_loss(Y: object, P: object) -> float:
    """scikit-learn's ``log_loss``: -1/N Σ_i Σ_k y_ik log p_ik, the probabilities clipped to
    [eps, 1 - eps] with eps = ``finfo(P.dtype).eps``. ``Y`` and ``P`` are (N, C) (one-hot or
    probability rows of targets; predicted probabilities), or (N, 1) / (N,) for a binary model:
    the probability of class 1, expanded to the two columns (1 - p, p) as scikit-learn does."""
    P = np.asarray(P)
    if P.dtype.kind != "f":
        P = P.astype(np.float64)
    Y = np.asarray(Y, dtype=P.dtype)
    if P.ndim == 1:
        P = P[:, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape != P.shape or P.ndim != 2 or P.shape[0] == 0:
        raise ValueError(f"targets of shape {Y.shape} and probabilities of shape {P.shape} do not match")
    if P.shape[1] == 1:
        P = np.concatenate([1 - P, P], axis=1)
        Y = np.concatenate([1 - Y, Y], axis=1)
    eps = np.finfo(P.dtype).eps
    P = np.clip(P, eps, 1 - eps)
    terms = np.where(Y == 0, 0.0, Y * np.log(P))  # xlogy: 0 log p = 0
    return float(-terms.sum(axis=1).mean())


# --------------------------------------------------------------------------- regression


def regression_metrics(Y: object, P: object) -> dict[str, float]:
    """RMSE, MAE, MAPE and R² of predictions ``P`` for targets ``Y`` ((N, K) or (N,)), each
    computed per output and averaged uniformly over the outputs, as scikit-learn's
    ``multioutput="uniform_average"``:

    * RMSE = sqrt(1/N Σ (ŷ - y)²), MAE = 1/N Σ |ŷ - y|;
    * MAPE = 1/N Σ |ŷ - y| / max(|y|, eps), eps = float64's machine epsilon (a fraction, not %);
    * R² = 1 - SS_res / SS_tot; a constant target (SS_tot = 0) gives 1.0 if the predictions are
      exact and 0.0 otherwise; NaN with fewer than two rows (not defined there).
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if P.ndim == 1:
        P = P[:, None]
    if Y.shape != P.shape or Y.ndim != 2 or Y.shape[0] == 0:
        raise ValueError(f"targets of shape {Y.shape} and predictions of shape {P.shape} do not match")
    err = P - Y
    rmse = np.sqrt(np.mean(err ** 2, axis=0))
    mae = np.mean(np.abs(err), axis=0)
    mape = np.mean(np.abs(err) / np.maximum(np.abs(Y), MAPE_EPS), axis=0)
    if Y.shape[0] < 2:
        r2 = float("nan")
    else:
        ss_res = (err ** 2).sum(axis=0)
        ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
        per = np.where(ss_tot != 0, 1.0 - _divide(ss_res, ss_tot), np.where(ss_res == 0, 1.0, 0.0))
        r2 = float(per.mean())
    return {"rmse": float(rmse.mean()), "mae": float(mae.mean()), "mape": float(mape.mean()), "r2": r2}


# --------------------------------------------------------------------------- reports


@dataclass
class Report:
    """Per-class (or per-label) scores and their averages, printable as scikit-learn's
    ``classification_report``. ``averages`` maps each heading (``"macro avg"``, ...) to
    (precision, recall, F1, support); ``accuracy`` is the fraction of rows predicted right
    (for multi-label: with every label right, scikit-learn's subset accuracy)."""

    kind: str  # "binary", "multiclass" or "multilabel"
    names: tuple[str, ...]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float
    averages: dict[str, tuple[float, float, float, int]]
    confusion: np.ndarray | None = None  # (C, C), rows = true class; single-label only
    log_loss: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def text(self, digits: int = 2) -> str:
        """scikit-learn's ``classification_report(..., digits=digits, zero_division=0)``."""
        headers = ["precision", "recall", "f1-score", "support"]
        width = max(max(len(n) for n in self.names), len("weighted avg"), digits)
        head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
        report = head_fmt.format("", *headers, width=width) + "\n\n"
        row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        for row in zip(self.names, self.precision, self.recall, self.f1, self.support):
            report += row_fmt.format(*row, width=width, digits=digits)
        report += "\n"
        total = int(np.sum(self.support))
        if self.kind != "multilabel":
            acc_fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
            report += acc_fmt.format("accuracy", "", "", self.accuracy, total, width=width, digits=digits)
        for heading, (p, r, f1, s) in self.averages.items():
            report += row_fmt.format(heading, p, r, f1, s, width=width, digits=digits)
        return report

    def confusion_text(self) -> str:
        """The confusion matrix with the class names: a row per true class, a column per prediction."""
        if self.confusion is None:
            return ""
        names = list(self.names)
        first = max(len("true \\ predicted"), *(len(n) for n in names))
        widths = [max(len(n), len(str(int(self.confusion[:, j].max(initial=0))))) for j, n in enumerate(names)]
        lines = ["true \\ predicted".ljust(first) + "".join(f"  {n:>{w}}" for n, w in zip(names, widths))]
        for name, row in zip(names, self.confusion):
            lines.append(f"{name:>{first}}" + "".join(f"  {int(v):>{w}}" for v, w in zip(row, widths)))
        return "\n".join(lines)

    def flat(self) -> dict[str, float]:
        """The headline numbers: accuracy, log_loss, and precision / recall / F1 of each average
        (``macro_f1``, ``weighted_precision``, ...; ``micro_*`` and ``samples_*`` for multi-label)."""
        out = {"accuracy": float(self.accuracy)}
        if self.log_loss is not None:
            out["log_loss"] = float(self.log_loss)
        for heading, (p, r, f1, _) in self.averages.items():
            key = heading.split()[0]
            out.update({f"{key}_precision": float(p), f"{key}_recall": float(r), f"{key}_f1": float(f1)})
        out.update({k: float(v) for k, v in self.extra.items()})
        return out

    def to_dict(self) -> dict:
        """A JSON-ready form: the per-class table and the averages (and the confusion matrix)."""
        d = {"kind": self.kind, "classes": list(self.names),
             "precision": [float(v) for v in self.precision], "recall": [float(v) for v in self.recall],
             "f1": [float(v) for v in self.f1], "support": [int(v) for v in self.support],
             "accuracy": float(self.accuracy),
             "averages": {h: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                          for h, (p, r, f, s) in self.averages.items()}}
        if self.confusion is not None:
            d["confusion"] = [[int(v) for v in row] for row in self.confusion]
        if self.log_loss is not None:
            d["log_loss"] = float(self.log_loss)
        return d


def _names(names: Sequence[object] | None, n: int) -> tuple[str, ...]:
    if names is None:
        return tuple(str(k) for k in range(n))
    names = tuple(str(v) for v in names)
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for {n} classes")
    return names


def label_report(y_true: object, y_pred: object, names: Sequence[object] | None = None,
                 n_classes: int | None = None, kind: str = "multiclass") -> Report:
    """A :class:`Report` of single-label predictions from class indices (0 ... C - 1); every
    class 0 ... C - 1 has a row, so a class that is never predicted, or absent from ``y_true``,
    shows its zeros and counts in the macro average (scikit-learn with ``labels=range(C)``)."""
    t, p = _indices(y_true, "y_true"), _indices(y_pred, "y_pred")
    if n_classes is None:
        n_classes = len(names) if names is not None else int(max(t.max(initial=0), p.max(initial=0))) + 1
    cm = confusion_matrix(t, p, n_classes)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    prec, rec, f1 = _prf(tp, cm.sum(axis=0), support)
    n = int(support.sum())
    averages = {"macro avg": (float(prec.mean()), float(rec.mean()), float(f1.mean()), n),
                "weighted avg": (*(_weighted(v, support) for v in (prec, rec, f1)), n)}
    return Report(kind, _names(names, n_classes), prec, rec, f1, support, float(tp.sum() / n) if n else 0.0,
                  averages, confusion=cm)


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    """The support-weighted mean; the plain mean when every weight is 0 (as scikit-learn)."""
    total = weights.sum()
    return float((values * weights).sum() / total) if total else float(values.mean())


def multilabel_report(Y: object, Yhat: object, names: Sequence[object] | None = None) -> Report:
    """A :class:`Report` of multi-label predictions: ``Y`` and ``Yhat`` are (N, K) 0/1 matrices.
    Per label precision / recall / F1 / support; ``micro avg`` pools the counts of every label,
    ``macro avg`` is the plain mean over labels, ``weighted avg`` the support-weighted one and
    ``samples avg`` the mean over rows of each row's scores; accuracy is subset accuracy."""
    T = np.asarray(Y) >= 0.5
    H = np.asarray(Yhat) >= 0.5
    if T.shape != H.shape or T.ndim != 2 or T.shape[0] == 0:
        raise ValueError(f"targets of shape {T.shape} and predictions of shape {H.shape} do not match")
    tp = (T & H).sum(axis=0)
    pred, true = H.sum(axis=0), T.sum(axis=0)
    prec, rec, f1 = _prf(tp, pred, true)
    mp, mr, mf = _prf(tp.sum(), pred.sum(), true.sum())
    sp, sr, sf = _prf((T & H).sum(axis=1), H.sum(axis=1), T.sum(axis=1))
    n = int(true.sum())
    averages = {"micro avg": (float(mp), float(mr), float(mf), n),
                "macro avg": (float(prec.mean()), float(rec.mean()), float(f1.mean()), n),
                "weighted avg": (*(_weighted(v, true) for v in (prec, rec, f1)), n),
                "samples avg": (float(sp.mean()), float(sr.mean()), float(sf.mean()), n)}
    return Report("multilabel", _names(names, T.shape[1]), prec, rec, f1, true,
                  float(np.mean((T == H).all(axis=1))), averages,
                  extra={"label_accuracy": float(np.mean(T == H))})


def classification_report(Y: object, P: object, kind: str, names: Sequence[object] | None = None) -> Report:
    """The report of a classifier's probabilities ``P`` against targets ``Y``, log loss included:

    * ``"multiclass"``: P (N, C) rows of probabilities; Y (N, C) one-hot or probability rows (the
      true class is the row's argmax), or (N,) class indices;
    * ``"binary"``: P (N, 1) or (N,) the probability of class 1; Y the same shape, 0/1 (or a
      probability: the true class is y >= 0.5); predicted class 1 when p >= 0.5;
    * ``"multilabel"``: P and Y (N, K); each label predicted when p >= 0.5 (no log loss).
    """
    P = np.asarray(P)
    if kind == "multilabel":
        return multilabel_report(Y, P >= 0.5, names)
    if kind == "binary":
        p = P.reshape(-1)
        y = np.asarray(Y, dtype=np.float64).reshape(-1)
        if y.shape != p.shape:
            raise ValueError(f"{y.size} targets for {p.size} predictions")
        report = label_report((y >= 0.5).astype(np.int64), (p >= 0.5).astype(np.int64), names, 2, "binary")
        report.log_loss = log_loss(y, p)
        return report
    if kind != "multiclass":
        raise ValueError(f"kind must be 'binary', 'multiclass' or 'multilabel', got {kind!r}")
    if P.ndim != 2:
        raise ValueError(f"probabilities must be (N, C), got shape {P.shape}")
    C = P.shape[1]
    Y = np.asarray(Y)
    if Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 and C > 1):
        t = _indices(Y.reshape(-1), "y_true")
        if t.size and t.max() >= C:
            raise ValueError(f"a class index is >= the {C} classes")
        onehot = np.zeros((t.size, C), dtype=P.dtype if P.dtype.kind == "f" else np.float64)
        onehot[np.arange(t.size), t] = 1
    else:
        onehot = Y
        t = np.argmax(Y, axis=1)
    if onehot.shape != P.shape:
        raise ValueError(f"targets of shape {onehot.shape} and probabilities of shape {P.shape} do not match")
    report = label_report(t, np.argmax(P, axis=1), names, C, "multiclass")
    report.log_loss = log_loss(onehot, P)
    return report
