"""``fit``: train a generated model on data and tell its story — the function behind ``derive train``.

The steps, each with a clear error when the input is unusable:

1. the data: arrays, a CSV file or a bundled data set; targets checked against the loss
   (BCE needs [0, 1]); an optional standardisation fitted on the training rows only;
   a seeded train/validation split;
2. the parameters: ``init_params`` per restart (seed, seed + 1, ...), or a saved checkpoint to
   resume from;
3. training in chunks of epochs, each chunk one compiled call (``train``, or ``train_many`` for
   restarts, which spreads the runs over the cores); the validation loss and the progress are
   updated between chunks. Chunks never change the result: each epoch's shuffle (and dropout
   masks) depend only on the seed and the epoch number;
4. the verdict: a loss that turns NaN/inf stops the run at once, the parameters go back to the
   last finite state, and :class:`Diverged` says where and what to try; the per-layer gradient
   norms are checked for vanishing or exploding gradients; the best restart by validation loss
   is kept and the spread of the others reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from ..data import DataError, Dataset, Standardizer, check_targets, train_val_split
from ..errors import DeriveError
from .models import load_model

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
    metrics: dict[str, float]
    best: int = 0
    seeds: tuple[int, ...] = (0,)
    warnings: list[str] = field(default_factory=list)
    diverged: str | None = None
    settings: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.module.SPEC["name"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The model's output for raw inputs X (standardised as in training), dropout off."""
        X = _matrix(X, "X", self.module.SPEC["inputs"])
        if self.standardizer is not None:
            X = self.standardizer.transform(X)
        return self.module.forward(self.params, np.ascontiguousarray(X, dtype=self.params["W1"].dtype))

    def summary(self) -> str:
        m = self.metrics
        lines = [f"model {self.name}: {m['epochs']} epochs in {m['wall_time']:.2f} s "
                 f"({m['steps']} steps, {m['restarts']} run{'s' if m['restarts'] > 1 else ''}; "
                 f"compiling or loading the kernels took {m.get('compile_time', 0.0):.2f} s before)"]
        for part in ("train", "val"):
            if f"{part}_loss" in m:
                text = f"  {part + ' loss':<11}{m[f'{part}_loss']:.6g}"
                if f"{part}_accuracy" in m:
                    text += f"   accuracy {m[f'{part}_accuracy']:.2%}"
                if f"{part}_r2" in m:
                    text += f"   R² {m[f'{part}_r2']:.3f}"
                lines.append(text)
        if m["restarts"] > 1:
            lines.append(f"  best of {m['restarts']} restarts: run {self.best} (seed {self.seeds[self.best]}); "
                         f"final {m['select_by']} loss min {m['spread_min']:.6g}, median {m['spread_median']:.6g}, "
                         f"max {m['spread_max']:.6g}" + (f", {m['diverged_runs']} diverged"
                                                         if m.get("diverged_runs") else ""))
        return "\n".join(lines)


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
    log_every: int = 0,
    progress: Progress | None = None,
    spec: str | None = None,
    hyper: Mapping[str, float] | None = None,
) -> FitResult:
    """Train ``model`` (a catalogue name, a ``Model(...)`` spec or a generated module) on (X, Y) or
    ``data``; see the module docstring. ``hyper`` overrides hyperparameters (``{"lr": 0.01}``).
    ``resume`` is a checkpoint (a path or a loaded one) whose parameters, optimizer state and
    standardisation continue. Raises :class:`Diverged` when the loss turns non-finite."""
    try:
        return _fit(model, X, Y, data=data, epochs=epochs, batch_size=batch_size, seed=seed, val_split=val_split,
                    standardize=standardize, restarts=restarts, init=init, dtype=dtype, resume=resume,
                    log_every=log_every, progress=progress, spec=spec, hyper=hyper)
    except DeriveError:
        raise
    except ValueError as exc:  # the generated module's own checks: "<model>: <what>"
        raise ModelError(str(exc)) from None


def _fit(model, X, Y, *, data, epochs, batch_size, seed, val_split, standardize, restarts, init, dtype, resume,
         log_every, progress, spec, hyper) -> FitResult:
    from .checkpoint import Checkpoint, load_checkpoint

    module = load_model(model, spec)
    spec_d = module.SPEC
    hyper = dict(hyper or {})
    epochs = _count("epochs", epochs, 1)
    batch_size = _count("batch_size", batch_size, 1)
    restarts = _count("restarts", restarts, 1)
    log_every = _count("log_every", log_every, 0)
    if restarts > 1 and resume is not None:
        raise DeriveError("resume continues one saved run; it cannot be combined with restarts > 1")
    ck = None
    if resume is not None:
        ck = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume, module)
        ck.check(module)
    seed, val_split = split_settings(ck, seed, val_split)

    # ---- data
    if data is not None:
        X, Y, where = data.X, data.Y, data.source
    else:
        if X is None or Y is None:
            raise DataError("fit needs X and Y (or data=...)")
        where = "the data"
    X = _matrix(X, "X", spec_d["inputs"])
    Y = _matrix(Y, "Y", spec_d["layers"][-1][0])
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    check_targets(Y, spec_d["loss"], where, data.target_names if data is not None else None)
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

    # ---- parameters
    seeds = tuple(seed + k for k in range(restarts))
    if ck is not None:
        runs = [(ck.params, ck.state)]
    else:
        runs = []
        for s in seeds:
            p = module.init_params(seed=s, dtype=dt, init=init)
            runs.append((p, module.init_state(p, **hyper)))

    # ---- train in chunks
    chunk = 1
    max_chunk = max(1, epochs // MIN_CHUNKS)
    if log_every:
        max_chunk = min(max_chunk, log_every)
    L = len(spec_d["layers"])
    R = len(runs)
    history = {"loss": np.full((R, epochs), np.nan), "val_loss": np.full((R, epochs), np.nan),
               "grad_norm": np.full((R, epochs, L), np.nan)}
    alive = [True] * R
    stopped: list[dict | None] = [None] * R
    first_epoch = int(runs[0][1]["epoch"])
    compile_time = _compile(module, runs, Xtr, Ytr, batch_size, hyper)
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
        live = [k for k in range(R) if alive[k]]
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
                history["val_loss"][k, done:done + n] = module.loss(runs[k][0], Xva, Yva, **hyper)
        done += n
        if not any(alive):
            break
        if time.perf_counter() - tick < CHUNK_SECONDS:
            chunk = min(2 * chunk, max_chunk)
        if progress:
            k = _best(history, alive, done)
            val = history["val_loss"][k, done - 1]
            progress.update(first_epoch + done, float(history["loss"][k, done - 1]),
                            None if math.isnan(val) else float(val))
            if log_every and done % log_every == 0 or done == epochs:
                progress.line(_log_line(first_epoch + done, first_epoch + epochs, history, k))
    wall = time.perf_counter() - start
    if progress:
        progress.finish()

    # ---- the verdict
    best = _best(history, alive, epochs)
    params, state = runs[best]
    metrics = {"epochs": done, "wall_time": wall, "compile_time": compile_time, "steps": steps, "restarts": R,
               "select_by": "validation" if len(Xva) else "training"}
    result = FitResult(module, params, state, scaler, history, metrics, best, seeds,
                       settings={"epochs": epochs, "batch_size": batch_size, "seed": seed, "val_split": val_split,
                                 "standardize": scaler is not None, "restarts": restarts, "init": init,
                                 "hyper": {**module.HYPER, **hyper}, "dtype": str(dt)})
    if not alive[best]:
        where_ = stopped[best]
        result.diverged = _divergence_message(module, where_, hyper, R)
        raise Diverged(result.diverged, result)
    _metrics(result, Xtr, Ytr, Xva, Yva, hyper)
    if R > 1:
        key = "val_loss" if len(Xva) else "loss"
        finals = np.array([history[key][k, epochs - 1] for k in range(R) if alive[k]])
        metrics.update(spread_min=float(finals.min()), spread_median=float(np.median(finals)),
                       spread_max=float(finals.max()), diverged_runs=R - int(sum(alive)))
    result.warnings += gradient_warnings(history["grad_norm"][best], spec_d)
    return result


def split_settings(ck, seed: int | None, val_split: float | None) -> tuple[int, float]:
    """``seed`` and ``val_split``, where None means: as the resumed checkpoint ``ck`` was trained
    (so it keeps its validation rows and its shuffles), else 0 and 0.2."""
    saved = (ck.meta.get("settings") or {}) if ck is not None else {}
    seed = _count("seed", saved.get("seed", 0) if seed is None else seed, 0)
    return seed, saved.get("val_split", 0.2) if val_split is None else val_split


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DeriveError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _best(history: dict, alive: list[bool], done: int) -> int:
    """The live run with the lowest validation loss (training loss without a validation set)."""
    live = [k for k in range(len(alive)) if alive[k]] or list(range(len(alive)))
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


def _metrics(result: FitResult, Xtr, Ytr, Xva, Yva, hyper) -> None:
    module, params, m = result.module, result.params, result.metrics
    for part, X, Y in (("train", Xtr, Ytr), ("val", Xva, Yva)):
        if not len(X):
            continue
        m[f"{part}_loss"] = float(module.loss(params, X, Y, **hyper))
        pred = module.forward(params, X)
        if module.SPEC["loss"] == "bce":
            m[f"{part}_accuracy"] = float(np.mean((pred >= 0.5) == (Y >= 0.5)))
        elif len(X) > 1:  # coefficient of determination, averaged over the outputs
            sst = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
            sse = ((Y - pred) ** 2).sum(axis=0)
            m[f"{part}_r2"] = float(np.mean(1.0 - sse / np.where(sst > 0, sst, np.nan)))


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
