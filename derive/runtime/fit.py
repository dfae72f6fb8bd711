"""``fit``: train a generated model on data and tell its story — the function behind ``derive train``.

The steps, each with a clear error when the input is unusable:

1. the data: arrays, a CSV file or a bundled data set; targets checked against the loss
   (BCE needs [0, 1]; a softmax model takes one column of class labels, kept as a
   :class:`~derive.data.ClassLabels` and one-hot encoded, or rows of class probabilities);
   an optional standardisation fitted on the training rows only; a seeded train/validation split;
2. the parameters: ``init_params`` per restart (seed, seed + 1, ...), at the spec's hidden widths
   or at ``widths`` (the kernels read widths from the arrays), or a saved checkpoint to resume
   from (at the widths it was trained with);
3. training in chunks of epochs, each chunk one compiled call (``train``, or ``train_many`` for
   restarts, which spreads the runs over the cores); the validation loss and the progress are
   updated between chunks. Chunks never change the result: each epoch's shuffle (and dropout
   masks) depend only on the seed and the epoch number;
4. the verdict: a loss that turns NaN/inf stops the run at once, the parameters go back to the
   last finite state, and :class:`Diverged` says where and what to try; the per-layer gradient
   norms are checked for vanishing or exploding gradients; the best restart by validation loss
   is kept and the spread of the others reported; the metrics of :mod:`derive.runtime.metrics`
   (accuracy, log loss, the per-class report and the confusion matrix for a classifier; RMSE,
   MAE, MAPE and R² for regression) on the training and validation rows.

With ``patience`` the validation loss is measured after every epoch and a run stops when it has
not improved for that many epochs (:mod:`derive.runtime.early_stopping`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..data import ClassLabels, DataError, Dataset, Standardizer, check_targets, train_val_split
from ..errors import DeriveError
from . import metrics as M
from .early_stopping import Watch
from .models import load_model
from .targets import _matrix, class_names, classes_of, predicted_labels, probabilities, saved_labels, targets
from .widths import check_widths, param_widths, spec_widths

#: Ratio of the first layer's to the last layer's gradient norm beyond which fit() warns.
GRADIENT_RATIO_WARN = 100.0
#: Validation loss and progress are measured between compiled calls of at least this many seconds
#: (the number of epochs per call doubles until a call takes that long) ...
CHUNK_SECONDS = 0.02
#: ... but at least this many times per run.
MIN_CHUNKS = 100


class Diverged(DeriveError):
    """The loss became NaN or infinite; ``result`` holds the rolled-back parameters and history."""

    def __init__(self, message: str, result: FitResult):
        super().__init__(message)
        self.result = result


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained (best) run and everything measured on the way."""

    module: ModuleType
    params: dict[str, np.ndarray]
    state: dict
    standardizer: Standardizer | None
    history: dict[str, np.ndarray]  # loss, val_loss: (R, E); grad_norm: (R, E, L)
    metrics: dict[str, Any]
    best: int = 0
    seeds: tuple[int, ...] = (0,)
    warnings: list[str] = field(default_factory=list)
    diverged: str | None = None
    settings: dict = field(default_factory=dict)
    labels: ClassLabels | None = None  # the classes of a classifier trained on a column of labels
    reports: dict[str, M.Report] = field(default_factory=dict)  # "train" / "val" -> the classification report
    watches: list[Watch] | None = None  # early stopping, one per run (with patience)

    @property
    def name(self) -> str:
        return self.module.SPEC["name"]

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden widths the model was trained at (the parameters' shapes): the spec's unless
        ``widths=`` (``--widths``) or a resumed checkpoint gave others."""
        return param_widths(self.params)

    @property
    def task(self) -> str:
        """``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``"regression"``."""
        return M.task_of(self.module.SPEC)

    @property
    def classes(self) -> tuple | None:
        """A classifier's classes in output order: the labels it was trained on, else 0 ... C-1."""
        return classes_of(self.module.SPEC, self.labels)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The model's output for raw inputs X (standardised as in training), dropout off."""
        X = _matrix(X, "X", self.module.SPEC["inputs"])
        if self.standardizer is not None:
            X = self.standardizer.transform(X)
        return self.module.forward(self.params, np.ascontiguousarray(X, dtype=self.params["W1"].dtype))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, a column per class of :attr:`classes` ((N, 2) for a binary model, as
        scikit-learn's ``predict_proba``); per label for a multi-label model."""
        return probabilities(self.module.SPEC, self.predict(X))

    def predict_labels(self, X: np.ndarray) -> np.ndarray:
        """The predicted class of each row (a label of :attr:`classes`); for a multi-label model
        an (N, K) 0/1 matrix."""
        return predicted_labels(self.module.SPEC, self.predict(X), self.labels)

    def summary(self) -> str:
        m = self.metrics
        lines = [f"model {self.name}: {m['epochs']} epochs in {m['wall_time']:.2f} s "
                 f"({m['steps']} steps, {m['restarts']} run{'s' if m['restarts'] > 1 else ''}; "
                 f"compiling or loading the kernels took {m.get('compile_time', 0.0):.2f} s before)"]
        for part in ("train", "val"):
            if f"{part}_loss" in m:
                lines.append(f"  {part + ' loss':<11}{m[f'{part}_loss']:.6g}" + _headline(m, part))
        if m["restarts"] > 1:
            lines.append(f"  best of {m['restarts']} restarts: run {self.best} (seed {self.seeds[self.best]}); "
                         f"final {m['select_by']} loss min {m['spread_min']:.6g}, median {m['spread_median']:.6g}, "
                         f"max {m['spread_max']:.6g}" + (f", {m['diverged_runs']} diverged"
                                                         if m.get("diverged_runs") else "")
                         + (f", {sum(w.stopped for w in self.watches)} stopped early"
                            if self.watches and any(w.stopped for w in self.watches) else ""))
        if self.watches:
            watch = self.watches[self.best]
            if watch.stopped:
                lines.append(f"  {watch.message()}")
            else:
                lines.append(f"  no early stop (patience {watch.patience}): the validation loss was lowest at epoch "
                             f"{watch.best_epoch} ({watch.best_loss:.6g}); the final parameters are kept")
        part = "val" if "val" in self.reports else "train"
        report = self.reports.get(part)
        if report is not None:
            lines += ["", f"{'validation' if part == 'val' else 'training'} rows ({m[f'{part}_rows']}), "
                      "as scikit-learn's classification_report:", report.text().rstrip("\n")]
            if report.confusion is not None:
                lines += ["", "confusion matrix (rows: true class, columns: predicted class):",
                          report.confusion_text()]
        return "\n".join(lines)


def _headline(m: dict, part: str) -> str:
    text = ""
    if f"{part}_accuracy" in m:
        text += f"   accuracy {m[f'{part}_accuracy']:.2%}"
        if f"{part}_label_accuracy" in m:
            text = f"   subset accuracy {m[f'{part}_accuracy']:.2%}   label accuracy {m[f'{part}_label_accuracy']:.2%}"
        if f"{part}_log_loss" in m:
            text += f"   log loss {m[f'{part}_log_loss']:.4g}"
    if f"{part}_rmse" in m:
        text += (f"   RMSE {m[f'{part}_rmse']:.4g}   MAE {m[f'{part}_mae']:.4g}   "
                 f"MAPE {m[f'{part}_mape']:.4g}")
    if f"{part}_r2" in m:
        text += f"   R² {m[f'{part}_r2']:.3f}"
    return text


def _compile(module, runs, X, Y, batch_size, hyper) -> float:
    """Seconds to compile the kernels a fit calls (or load them from Numba's cache): a call of
    zero epochs on copies of the first run, so that the training time reported is training only."""
    tick = time.perf_counter()
    params = {k: v.copy() for k, v in runs[0][0].items()}
    state = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in runs[0][1].items()}
    if len(runs) > 1:
        module.train_many([params], [state], X, Y, epochs=0, batch_size=batch_size, **hyper)
    else:
        module.train(params, state, X, Y, epochs=0, batch_size=batch_size, **hyper)
    module.loss(params, X[:1], Y[:1], **hyper)
    return time.perf_counter() - tick


class Progress:
    """Receives the run's progress (see :mod:`derive.runtime.progress` for the terminal's)."""

    def start(self, total: int, first: int) -> None: ...

    def update(self, epoch: int, loss: float, val_loss: float | None) -> None: ...

    def line(self, text: str) -> None: ...

    def finish(self) -> None: ...


class ModelError(DeriveError, ValueError):
    """A generated module refused its input (a hyperparameter out of range, an initialiser name)."""


def fit(
    model: object,
    X: object = None,
    Y: object = None,
    *,
    data: Dataset | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    seed: int | None = None,
    val_split: float | None = None,
    standardize: bool = False,
    restarts: int = 1,
    init: object = None,
    dtype: object = np.float64,
    resume: object = None,
    patience: int | None = None,
    log_every: int = 0,
    progress: Progress | None = None,
    spec: str | None = None,
    hyper: Mapping[str, float] | None = None,
    widths: object = None,
) -> FitResult:
    """Train ``model`` (a catalogue name, a ``Model(...)`` spec or a generated module) on (X, Y) or
    ``data``; see the module docstring. ``hyper`` overrides hyperparameters (``{"lr": 0.01}``).
    ``resume`` is a checkpoint (a path or a loaded one) whose parameters, optimizer state and
    standardisation continue. ``patience``: stop a run when its validation loss has not improved
    for that many epochs and restore its best epoch. For a softmax model, Y may be one column
    (or a 1-D array) of class labels, integers or text. ``widths``: hidden widths other than the
    spec's, one whole number >= 1 per hidden layer (``(24, 16)``; the kernels read widths from the
    arrays, so nothing is rebuilt); None trains the spec's widths, or a resumed checkpoint's, and a
    resumed run given other widths than its checkpoint's is refused. ``result.widths`` and
    ``result.settings["widths"]`` record the widths trained. Raises :class:`Diverged` when the loss
    turns non-finite."""
    try:
        return _fit(model, X, Y, data=data, epochs=epochs, batch_size=batch_size, seed=seed, val_split=val_split,
                    standardize=standardize, restarts=restarts, init=init, dtype=dtype, resume=resume,
                    patience=patience, log_every=log_every, progress=progress, spec=spec, hyper=hyper,
                    widths=widths)
    except DeriveError:
        raise
    except ValueError as exc:  # the generated module's own checks: "<model>: <what>"
        raise ModelError(str(exc)) from None


def _fit(model, X, Y, *, data, epochs, batch_size, seed, val_split, standardize, restarts, init, dtype, resume,
         patience, log_every, progress, spec, hyper, widths) -> FitResult:
    from .checkpoint import Checkpoint, load_checkpoint

    module = load_model(model, spec)
    spec_d = module.SPEC
    hyper = dict(hyper or {})
    epochs = _count("epochs", epochs, 1)
    batch_size = _count("batch_size", batch_size, 1)
    restarts = _count("restarts", restarts, 1)
    log_every = _count("log_every", log_every, 0)
    if patience is not None:
        patience = _count("patience", patience, 1)
    if restarts > 1 and resume is not None:
        raise DeriveError("resume continues one saved run; it cannot be combined with restarts > 1")
    widths = check_widths(module, widths)
    ck = None
    if resume is not None:
        ck = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume, module)
        ck.check(module)
    widths = resume_widths(module, widths, ck)
    saved_split = split_settings(ck, None, None) if ck is not None else None
    seed, val_split = split_settings(ck, seed, val_split)
    if patience is not None and not val_split:
        raise DeriveError(f"patience {patience} (early stopping) watches the validation loss, but val_split is 0: "
                          "hold out rows for validation (val_split > 0, --val-split) or drop the patience")

    # ---- data
    if data is not None:
        X, Y, where = data.X, data.Y, data.source
    else:
        if X is None or Y is None:
            raise DataError("fit needs X and Y (or data=...)")
        where = "the data"
    X = _matrix(X, "X", spec_d["inputs"])
    Y, labels = targets(spec_d, Y, data, where, saved_labels(ck.meta) if ck is not None else None)
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    names = list(data.target_names) if data is not None and labels is None else None
    check_targets(Y, M.loss_name(spec_d), where, names)
    Xtr, Ytr, Xva, Yva = train_val_split(X, Y, val_split, seed)

    scaler = None
    if ck is not None and ck.standardizer is not None:
        scaler = ck.standardizer
    elif standardize:
        scaler = Standardizer().fit(Xtr)
    if scaler is not None:
        Xtr = scaler.transform(Xtr)
        Xva = scaler.transform(Xva) if len(Xva) else Xva
    dt = np.dtype(ck.params["W1"].dtype if ck is not None else dtype)
    Xtr, Ytr, Xva, Yva = (np.ascontiguousarray(a, dtype=dt) for a in (Xtr, Ytr, Xva, Yva))

    module._api.hyper(hyper)  # unknown names and bad values fail here, before any work

    # ---- parameters, and the kernels linked: compiled, or loaded from the cache (init_state links
    # them for fresh runs; the link call is then free), timed as the compile time
    tick = time.perf_counter()
    seeds = tuple(seed + k for k in range(restarts))
    if ck is not None:
        runs = [(ck.params, ck.state)]
    else:
        runs = []
        for s in seeds:
            p = module.init_params(seed=s, dtype=dt, init=init, widths=widths)
            runs.append((p, module.init_state(p, **hyper)))
    module._api.link(dt)
    link_time = time.perf_counter() - tick
    watches = None
    if patience is not None:
        if ck is not None and saved_split == (seed, val_split):  # the same validation rows: go on counting
            watches = [Watch.resume(patience, ck.meta.get("early_stopping"), int(ck.state["epoch"]), ck.params,
                                    ck.state, ck.best)]
        else:
            watches = [Watch(patience) for _ in runs]

    # ---- train in chunks (of one epoch with patience: every epoch's validation loss is needed)
    chunk = 1
    max_chunk = 1 if patience is not None else max(1, epochs // MIN_CHUNKS)
    if log_every:
        max_chunk = min(max_chunk, log_every)
    L = len(spec_d["layers"])
    R = len(runs)
    history = {"loss": np.full((R, epochs), np.nan), "val_loss": np.full((R, epochs), np.nan),
               "grad_norm": np.full((R, epochs, L), np.nan)}
    alive = [True] * R
    stopped: list[dict | None] = [None] * R
    first_epoch = int(runs[0][1]["epoch"])
    compile_time = link_time + _compile(module, runs, Xtr, Ytr, batch_size, hyper)
    start = time.perf_counter()
    steps = 0
    if progress:
        progress.start(epochs, first_epoch)
    done = 0
    while done < epochs:
        n = min(chunk, epochs - done)
        if log_every:  # end chunks on the epochs that are logged
            n = min(n, log_every - done % log_every)
        tick = time.perf_counter()
        live = [k for k in range(R) if alive[k] and not (watches and watches[k].stopped)]
        if len(live) > 1:
            results = module.train_many([runs[k][0] for k in live], [runs[k][1] for k in live], Xtr, Ytr,
                                        epochs=n, batch_size=batch_size, seeds=[seeds[k] for k in live], **hyper)
        else:
            k = live[0]
            results = [module.train(runs[k][0], runs[k][1], Xtr, Ytr, epochs=n, batch_size=batch_size,
                                    seed=seeds[k], **hyper)]
        for k, res in zip(live, results):
            got = len(res["loss"])
            history["loss"][k, done:done + got] = res["loss"]
            history["grad_norm"][k, done:done + got] = res["grad_norm"]
            steps += res["steps"]
            if res["status"] != "ok":
                alive[k] = False
                stopped[k] = {"epoch": first_epoch + done + res["epoch"], "batch": res["batch"]}
            elif len(Xva):
                val = module.loss(runs[k][0], Xva, Yva, **hyper)
                history["val_loss"][k, done:done + n] = val
                if watches:
                    watches[k].update(first_epoch + done + n, val, *runs[k])
        done += n
        running = [k for k in range(R) if alive[k] and not (watches and watches[k].stopped)]
        if time.perf_counter() - tick < CHUNK_SECONDS:
            chunk = min(2 * chunk, max_chunk)
        if progress and any(alive):
            k = _best(history, running or [k for k in range(R) if alive[k]], done)
            val = history["val_loss"][k, done - 1]
            progress.update(first_epoch + done, float(history["loss"][k, done - 1]),
                            None if math.isnan(val) else float(val))
            if log_every and done % log_every == 0 or done == epochs or not running:
                progress.line(_log_line(first_epoch + done, first_epoch + epochs, history, k))
        if not running:
            break
    wall = time.perf_counter() - start
    if progress:
        progress.finish()

    # ---- the verdict
    for k, watch in enumerate(watches or []):
        if watch.stopped and alive[k]:
            runs[k] = watch.best_run  # restore_best_weights, and the optimizer state that goes with them
    finals = _finals(history, alive, watches, done)
    best = _pick(finals, alive)
    params, state = runs[best]
    metrics = {"epochs": done, "wall_time": wall, "compile_time": compile_time, "steps": steps, "restarts": R,
               "select_by": "validation" if len(Xva) else "training"}
    result = FitResult(module, params, state, scaler, history, metrics, best, seeds,
                       settings={"epochs": epochs, "batch_size": batch_size, "seed": seed, "val_split": val_split,
                                 "standardize": scaler is not None, "restarts": restarts, "init": init,
                                 "patience": patience, "hyper": {**module.HYPER, **hyper}, "dtype": str(dt),
                                 "widths": list(param_widths(params))},
                       labels=labels, watches=watches)
    if not alive[best]:
        where_ = stopped[best]
        result.diverged = _divergence_message(module, where_, hyper, R)
        raise Diverged(result.diverged, result)
    _metrics(result, Xtr, Ytr, Xva, Yva, hyper, class_names(spec_d, labels, data))
    if watches:
        w = watches[best]
        metrics.update(patience=patience, best_epoch=w.best_epoch, best_val_loss=w.best_loss,
                       stopped_epoch=w.stopped_epoch, stopped_epochs=[v.stopped_epoch for v in watches])
    if R > 1:
        ok = finals[[k for k in range(R) if alive[k]]]
        metrics.update(spread_min=float(ok.min()), spread_median=float(np.median(ok)),
                       spread_max=float(ok.max()), diverged_runs=R - int(sum(alive)))
    result.warnings += gradient_warnings(history["grad_norm"][best], spec_d)
    return result


def _finals(history: dict, alive: list[bool], watches: list[Watch] | None, done: int) -> np.ndarray:
    """Each run's validation loss (training loss without validation rows) with the parameters it
    ends with: its best epoch's after an early stop, else its last epoch's; NaN if it diverged."""
    key = "val_loss" if not np.isnan(history["val_loss"][:, :done]).all() else "loss"
    out = np.full(len(alive), np.nan)
    for k in range(len(alive)):
        if not alive[k]:
            continue
        if watches and watches[k].stopped:
            out[k] = watches[k].best_loss
        else:
            out[k] = history[key][k, done - 1]
    return out


def _pick(finals: np.ndarray, alive: list[bool]) -> int:
    """The live run with the lowest final loss (the first live run when none is a number)."""
    live = [k for k in range(len(alive)) if alive[k]]
    if not live:
        return 0
    vals = finals[live]
    return live[int(np.nanargmin(vals))] if not np.isnan(vals).all() else live[0]


def split_settings(ck, seed: int | None, val_split: float | None) -> tuple[int, float]:
    """``seed`` and ``val_split``, where None means: as the resumed checkpoint ``ck`` was trained
    (so it keeps its validation rows and its shuffles), else 0 and 0.2."""
    saved = (ck.meta.get("settings") or {}) if ck is not None else {}
    seed = _count("seed", saved.get("seed", 0) if seed is None else seed, 0)
    return seed, saved.get("val_split", 0.2) if val_split is None else val_split


def resume_widths(module, widths: tuple[int, ...] | None, ck, option: str = "widths") -> tuple[int, ...] | None:
    """The hidden widths to train: ``widths`` (checked by :func:`check_widths`), else the resumed
    checkpoint ``ck``'s, else None (the spec's). Resuming at other widths than the checkpoint's is
    a :class:`DeriveError`."""
    if ck is None:
        return widths
    saved = param_widths(ck.params)
    if widths is not None and tuple(widths) != saved:
        where = f"{ck.path}" if getattr(ck, "path", None) else "the checkpoint"
        raise DeriveError(f"{where} was trained at hidden widths {','.join(map(str, saved))}, not "
                          f"{','.join(map(str, widths))} ({option}): a resumed run keeps its widths; drop {option} "
                          "(or give the checkpoint's) to continue it, or start a new run without resuming")
    return None if saved == spec_widths(module) else saved


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DeriveError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _best(history: dict, live: list[int], done: int) -> int:
    """Of the runs ``live``, the one with the lowest validation loss (training loss without a
    validation set) after epoch ``done``."""
    for key in ("val_loss", "loss"):
        vals = [history[key][k, done - 1] for k in live]
        if not all(math.isnan(v) for v in vals):
            return live[int(np.nanargmin(vals))]
    return live[0]


def _log_line(epoch: int, last: int, history: dict, k: int) -> str:
    i = np.where(~np.isnan(history["loss"][k]))[0]
    j = i[-1] if len(i) else 0
    text = f"epoch {epoch:>{len(str(last))}}/{last}  loss {history['loss'][k, j]:.6g}"
    val = history["val_loss"][k, j]
    if not math.isnan(val):
        text += f"  val {val:.6g}"
    return text


def _metrics(result: FitResult, Xtr, Ytr, Xva, Yva, hyper, names) -> None:
    """The loss and the metrics of :mod:`derive.runtime.metrics` on the training and validation
    rows, into ``result.metrics`` (flat ``train_accuracy``, ``val_rmse``, ... and, for a
    classifier, ``<part>_report`` and ``<part>_confusion``) and ``result.reports``."""
    module, params, m = result.module, result.params, result.metrics
    task = M.task_of(module.SPEC)
    for part, X, Y in (("train", Xtr, Ytr), ("val", Xva, Yva)):
        if not len(X):
            continue
        m[f"{part}_loss"] = float(module.loss(params, X, Y, **hyper))
        m[f"{part}_rows"] = len(X)
        pred = module.forward(params, X)
        if task == "regression":
            m.update({f"{part}_{k}": v for k, v in M.regression_metrics(Y, pred).items() if not math.isnan(v)})
            continue
        report = M.classification_report(Y, pred, task, names)
        result.reports[part] = report
        m.update({f"{part}_{k}": v for k, v in report.flat().items()})
        d = report.to_dict()
        confusion = d.pop("confusion", None)
        m[f"{part}_report"] = d
        if confusion is not None:
            m[f"{part}_confusion"] = confusion


def _divergence_message(module, where: dict, hyper: dict, runs: int) -> str:
    values = {**module.HYPER, **hyper}
    lr = values.get("lr")
    tips = []
    if lr is not None:
        tips.append(f"a smaller learning rate (--lr {lr / 10:g})")
    if not module.SPEC.get("clip"):
        tips.append("gradient clipping (clip = { norm = 1.0 } in the model's spec)")
    tips.append("standardised inputs (--standardize)")
    return (f"training diverged: the loss became NaN or infinite at epoch {where['epoch'] + 1}, "
            f"batch {where['batch'] + 1}{' in every restart' if runs > 1 else ''}. The parameters are back at "
            f"the last step whose loss was finite. Try " + ", ".join(tips) + ".")


def gradient_warnings(grad_norm: np.ndarray, spec: dict, ratio: float = GRADIENT_RATIO_WARN) -> list[str]:
    """Warnings when the first layer's weight-gradient norm is orders of magnitude below (vanishing)
    or above (exploding) the last layer's, judged by the median ratio over the recorded epochs."""
    g = np.asarray(grad_norm, dtype=np.float64)
    if g.ndim != 2 or g.shape[1] < 2:
        return []
    first, last = g[:, 0], g[:, -1]
    ok = np.isfinite(first) & np.isfinite(last) & (last > 0)
    if not ok.any():
        return []
    r = float(np.median(first[ok] / last[ok]))
    acts = [layer[1] for layer in spec["layers"][:-1]]
    saturating = [f"layer {l + 1} ({a})" for l, a in enumerate(acts) if a in ("sigmoid", "tanh", "softsign")]
    L = len(spec["layers"])
    if r < 1 / ratio:
        causes = []
        if saturating:
            causes.append("saturating activations in " + ", ".join(saturating) + " (sigmoid' <= 1/4, tanh' <= 1)")
        if L > 3:
            causes.append(f"depth ({L} layers multiply their derivatives)")
        causes.append("initialisation too small for the activations")
        return [f"vanishing gradients: layer 1's weight-gradient norm is {r:.2g} x layer {L}'s (median over "
                f"epochs). Likely cause: " + "; ".join(causes) + ". Try relu layers with He initialisation, "
                "fewer layers, or standardised inputs."]
    if r > ratio:
        return [f"exploding gradients: layer 1's weight-gradient norm is {r:.2g} x layer {L}'s (median over "
                f"epochs). Likely cause: weights initialised too large or a learning rate too high for the depth "
                f"({L} layers). Try Xavier/He initialisation (--init), gradient clipping, or a smaller learning rate."]
    return []
