"""Train one chunk of a sweep: runs of one shape, batch size, epoch count and fold, in one
``train_many`` call (several when the validation loss is measured between epochs).

This is what both engines run: in the sweep's own process (local) or as a Dask task on a
worker, which imports the generated module by name (so Numba's on-disk cache is used, and no
compiled code is pickled). What comes back is small: a row of numbers and the loss curves of
each run; the parameters stay where they were trained.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from ..runtime import metrics as M
from ..runtime.early_stopping import Watch
from .space import SweepError

#: One compiled sweep call at a time per process: a Dask worker with several threads gives the
#: call all of them (Numba's threading layers need not allow parallel kernels launched from
#: several threads at once).
_CALL_LOCK = threading.Lock()
_PER_RUN: dict[tuple[str, str], bool] = {}


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds the generated module: its import name, the folder to put on sys.path
    when that import fails, and the spec hash it must have."""

    name: str
    path: str
    spec_hash: str

    @classmethod
    def of(cls, module: ModuleType) -> ModelRef:
        file = Path(module.__file__).resolve()
        return cls(module.__name__, str(file.parents[module.__name__.count(".")]), module.SPEC_HASH)


@dataclass
class Chunk:
    """Runs that share one compiled call. ``runs``: (number, seed, init, hyper) per run, hyper
    holding every hyperparameter of the module."""

    key: str
    fold: int
    widths: tuple[int, ...]
    batch_size: int
    epochs: int
    runs: list[tuple[int, int, str | None, dict]]
    dtype: str = "float64"
    patience: int | None = None
    val_every: int = 0
    per_run: bool = True
    steps_per_epoch: int = 1

    @property
    def steps(self) -> int:
        return len(self.runs) * self.epochs * self.steps_per_epoch


def import_model(ref: ModelRef | ModuleType) -> ModuleType:
    """The generated module of ``ref``, imported by name (the worker's own copy, checked)."""
    if isinstance(ref, ModuleType):
        return ref
    try:
        module = importlib.import_module(ref.name)
    except ModuleNotFoundError:
        if ref.path not in sys.path:
            sys.path.insert(0, ref.path)
        importlib.invalidate_caches()
        try:
            module = importlib.import_module(ref.name)
        except ModuleNotFoundError:
            raise SweepError(f"this worker cannot import the model module {ref.name!r} (looked in {ref.path} too): "
                             "install the project on the workers, or start them where its folder is") from None
    if module.SPEC_HASH != ref.spec_hash:
        raise SweepError(f"this worker's {ref.name} was built from another spec (hash {module.SPEC_HASH}, the sweep "
                         f"has {ref.spec_hash}): give every worker the same generated models")
    return module


def supports_per_run(module: ModuleType, X: np.ndarray, Y: np.ndarray) -> bool:
    """Whether ``module.train_many`` takes a value per run for each hyperparameter (one call for
    runs with different learning rates, ...). Asked once per module and process, with a call of
    zero epochs on one row."""
    key = (module.__name__, module.SPEC_HASH)
    if key not in _PER_RUN:
        if not module.HYPER:
            _PER_RUN[key] = True
        else:
            p = module.init_params(seed=0, dtype=X.dtype)
            s = module.init_state(p)
            name, value = next(iter(module.HYPER.items()))
            try:
                module.train_many([p], [s], X[:1], Y[:1], epochs=0, batch_size=1, **{name: [value]})
                _PER_RUN[key] = True
            except ValueError:
                _PER_RUN[key] = False
    return _PER_RUN[key]


def warm(module: ModuleType, X: np.ndarray, Y: np.ndarray) -> bool:
    """Compile (or load from Numba's cache) every kernel a chunk calls, on one row, before the
    first chunk: the sweep's process does it first, so that workers starting together load the
    cache instead of compiling the same code at once. Returns :func:`supports_per_run`."""
    per_run = supports_per_run(module, X, Y)
    params = module.init_params(seed=0, dtype=X.dtype)
    module.loss(params, X[:1], Y[:1])
    module.forward(params, X[:1])
    return per_run


def _train_many(module, params, states, X, Y, epochs, batch_size, seeds, hypers, per_run):
    names = list(module.HYPER)
    hyper = {}
    for name in names:
        values = [h[name] for h in hypers]
        if all(v == values[0] for v in values):
            hyper[name] = values[0]
        elif per_run:
            hyper[name] = values
        else:  # the driver groups runs by their hyperparameters when train_many takes one value for all
            raise AssertionError(f"runs of one call differ in {name} but train_many takes one value for all")
    return module.train_many(params, states, X, Y, epochs=epochs, batch_size=batch_size, seeds=seeds,
                             grad_norms=False, **hyper)


def _worker_name() -> tuple[str, int | None]:
    """(this process's name in the results, the threads it may use): a Dask worker's address and
    thread count, else "local"."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return "local", None
    return str(worker.address), int(worker.state.nthreads)


def run_chunk(ref: ModelRef | ModuleType, fold: tuple[np.ndarray, ...], chunk: Chunk) -> dict:
    """Train the runs of ``chunk`` on ``fold`` = (Xtr, Ytr, Xva, Yva); a dict with one row per
    run (``rows``), the wall time and the worker. Each run is what ``train`` gives alone: the
    same parameters from its seed, the same shuffles, the same arithmetic (see the tests)."""
    module = import_model(ref)
    worker, threads = _worker_name()
    with _CALL_LOCK:
        if threads is not None:
            import numba

            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        tick = time.perf_counter()
        rows = _train(module, fold, chunk)
        wall = time.perf_counter() - tick
    for row in rows:
        row["wall_time"] = wall / len(rows)
        row["worker"] = worker
    return {"key": chunk.key, "rows": rows, "wall": wall, "worker": worker, "steps": sum(r["steps"] for r in rows)}


def _train(module: ModuleType, fold: tuple[np.ndarray, ...], chunk: Chunk) -> list[dict]:
    Xtr, Ytr, Xva, Yva = fold
    dtype = np.dtype(chunk.dtype)
    K, E = len(chunk.runs), chunk.epochs
    numbers = [r[0] for r in chunk.runs]
    seeds = [r[1] for r in chunk.runs]
    hypers = [r[3] for r in chunk.runs]
    params = [module.init_params(seed=seed, dtype=dtype, init=init, widths=chunk.widths)
              for _, seed, init, _ in chunk.runs]
    states = [module.init_state(p, **h) for p, h in zip(params, hypers)]
    has_val = len(Xva) > 0
    every = (1 if chunk.patience else chunk.val_every) if has_val else 0
    watches = [Watch(chunk.patience) for _ in range(K)] if chunk.patience and has_val else None
    loss_curve = np.full((K, E), np.nan)
    val_curve = np.full((K, E), np.nan)
    alive = [True] * K
    steps = [0] * K
    where: list[tuple[int, int] | None] = [None] * K
    done = 0
    while done < E:
        n = min(every or E, E - done)
        live = [k for k in range(K) if alive[k] and not (watches and watches[k].stopped)]
        if not live:
            break
        results = _train_many(module, [params[k] for k in live], [states[k] for k in live], Xtr, Ytr, n,
                              chunk.batch_size, [seeds[k] for k in live], [hypers[k] for k in live], chunk.per_run)
        for k, res in zip(live, results):
            got = len(res["loss"])
            loss_curve[k, done:done + got] = res["loss"]
            steps[k] += res["steps"]
            if res["status"] != "ok":
                alive[k] = False
                where[k] = (done + res["epoch"], res["batch"])
            elif every:
                val = module.loss(params[k], Xva, Yva, **hypers[k])
                val_curve[k, done + n - 1] = val
                if watches:
                    watches[k].update(done + n, val, params[k], states[k])
        done += n
    task = M.task_of(module.SPEC)
    rows = []
    for k in range(K):
        row = {"number": numbers[k], "steps": steps[k], "loss_curve": loss_curve[k].tolist(),
               "val_curve": val_curve[k].tolist()}
        if not alive[k]:
            epoch, batch = where[k]
            row.update(status="diverged", train_loss=math.nan, val_loss=math.nan, epochs_run=epoch,
                       message=f"the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}")
            rows.append(row)
            continue
        p, status, epochs_run = params[k], "ok", E
        if watches and watches[k].stopped:
            p, status, epochs_run = watches[k].best_run[0], "stopped", watches[k].stopped_epoch
        if watches:
            row["best_epoch"] = watches[k].best_epoch
        train_loss = float(module.loss(p, Xtr, Ytr, **hypers[k]))
        val_loss = float(module.loss(p, Xva, Yva, **hypers[k])) if has_val else math.nan
        row.update(status=status, train_loss=train_loss, val_loss=val_loss, epochs_run=epochs_run, message="")
        if not math.isfinite(train_loss) or (has_val and not math.isfinite(val_loss)):
            row.update(status="diverged", message="the final loss is NaN or infinite")
        else:
            part, X, Y = ("val", Xva, Yva) if has_val else ("train", Xtr, Ytr)
            row.update({f"{part}_{name}": value for name, value in _metrics(module, task, p, X, Y).items()})
        rows.append(row)
    return rows


def _metrics(module: ModuleType, task: str, params: dict, X: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """The task's headline metrics (derive.runtime.metrics) of ``params`` on the rows (X, Y)."""
    pred = module.forward(params, X)
    with np.errstate(all="ignore"):  # a run far off (huge outputs) gets huge or infinite metrics, not warnings
        if task == "regression":
            values = M.regression_metrics(Y, pred)
        else:
            values = M.classification_report(Y, pred, task).flat()
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
