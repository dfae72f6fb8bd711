"""``sweep``: many runs of one model over a search space, seeds and folds — the function behind
``derive sweep``.

1. The space (:mod:`.space`) is checked against the model's module; the data are split into
   folds (``folds=1``: one holdout of ``val_split`` rows, the split ``derive train --seed S
   --val-split V`` makes), standardised per fold when asked.
2. The plan: configuration c (the grid's product times the random draws, or Optuna's asks), seed
   replicate r, fold f is run ``number = (c * seeds + r) * folds + f``; its seed comes from
   ``SeedSequence([sweep seed, 0], spawn_key=(r, f))``, the same for every configuration (common
   random numbers: configurations differ by their settings, not by the luck of the draw), and
   never from the engine, the worker count or the order.
3. Runs of the same fold, widths, batch size and epochs (and, when the module's ``train_many``
   takes one value per hyperparameter for all its runs, the same hyperparameters) are cut into
   chunks sized from the time the previous chunk took, so one compiled call lasts about
   ``chunk_seconds``; the engine (:mod:`.engine`) runs them; each finished chunk goes to the
   journal at once (:mod:`.results`).
4. The table, the curves, the pictures and the summary.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from ..data import DataError, Dataset, Standardizer, check_targets, train_val_split
from ..runtime import metrics as M
from ..runtime.models import load_model
from ..runtime.targets import _matrix, targets
from ..runtime.widths import spec_widths
from . import results as R
from .engine import CONNECT_TIMEOUT, make_engine
from .progress import SweepProgress
from .space import Space, SweepError, build_space
from .worker import Chunk, warm

#: Optuna's trials asked (and told) per batch: fixed, so that a seeded search is reproducible.
TPE_BATCH = 8
#: The most runs one chunk holds.
MAX_CHUNK = 8192
_DEFAULTS = {"trials": None, "seeds": 1, "folds": 1, "epochs": 100, "batch_size": 32, "seed": 0, "search": "auto",
             "val_split": 0.2, "standardize": False, "patience": None, "val_every": 0, "dtype": "float64"}


class Sweep:
    """A planned sweep: the module, the space, the folds, the settings; runs configurations."""

    def __init__(self, module: ModuleType, space: Space, folds: list[tuple[np.ndarray, ...]], settings: dict,
                 base: dict):
        self.module, self.space, self.folds, self.settings, self.base = module, space, folds, settings, base
        L = len(module.SPEC["layers"])
        self.width_names = [f"width{l}" for l in range(1, L)]
        self.config_names = list(module.HYPER) + ["batch_size", "epochs", "init"] + self.width_names
        self.per_run = warm(module, folds[0][0], folds[0][1])

    def resolve(self, config: Mapping[str, object]) -> dict:
        """Every setting of a configuration: its values, else the sweep's, else the model's."""
        s = self.settings
        values = {k: float(config.get(k, v)) for k, v in self.module.HYPER.items()}
        values["batch_size"] = int(config.get("batch_size", s["batch_size"]))
        values["epochs"] = int(config.get("epochs", s["epochs"]))
        values["init"] = str(config.get("init") or "default")
        for name, width in zip(self.width_names, spec_widths(self.module)):
            values[name] = int(config.get(name, width))
        return values

    def plan(self, configs: list[Mapping[str, object]], first: int = 0) -> list[dict]:
        """The runs of configurations ``first``, ``first + 1``, ...: one per seed replicate and fold."""
        s = self.settings
        runs = []
        for c, config in enumerate(configs, start=first):
            values = self.resolve(config)
            for r in range(s["seeds"]):
                for f in range(s["folds"]):
                    seed = run_seed(s["seed"], r, f)
                    runs.append({"number": (c * s["seeds"] + r) * s["folds"] + f,
                                 "run_id": R.run_id(self.base, values, seed, f), "config": c, "replicate": r,
                                 "fold": f, "seed": seed, **values})
        return runs

    def group_key(self, run: dict) -> tuple:
        key = (run["fold"], tuple(run[w] for w in self.width_names), run["batch_size"], run["epochs"])
        if not self.per_run:
            key += tuple(run[k] for k in self.module.HYPER)
        return key

    def chunk(self, runs: list[dict], key: str) -> Chunk:
        first = runs[0]
        n = len(self.folds[first["fold"]][0])
        B = min(first["batch_size"], n)
        s = self.settings
        return Chunk(key, first["fold"], tuple(first[w] for w in self.width_names), first["batch_size"],
                     first["epochs"], [(r["number"], r["seed"], None if r["init"] == "default" else r["init"],
                                        {k: r[k] for k in self.module.HYPER})
                                       for r in runs],
                     dtype=s["dtype"], patience=s["patience"], val_every=s["val_every"], per_run=self.per_run,
                     steps_per_epoch=-(-n // B))


def run_seed(sweep_seed: int, replicate: int, fold: int) -> int:
    """The seed of the runs of replicate ``replicate`` on fold ``fold`` (below 2**32)."""
    return int(np.random.SeedSequence([sweep_seed, 0], spawn_key=(replicate, fold)).generate_state(1)[0])


# --------------------------------------------------------------------------- data


def make_folds(X: np.ndarray, Y: np.ndarray, folds: int, val_split: float, seed: int, standardize: bool,
               dtype: np.dtype) -> list[tuple[np.ndarray, ...]]:
    """(Xtr, Ytr, Xva, Yva) per fold: ``folds`` = 1 is train_val_split(X, Y, val_split, seed) (as
    ``derive train`` splits); k > 1 cuts a seeded permutation of the rows into k parts, each the
    validation rows of one fold. Standardised on each fold's training rows when asked."""
    n = X.shape[0]
    if folds == 1:
        parts = [train_val_split(X, Y, val_split, seed)]
    else:
        if folds > n:
            raise SweepError(f"folds={folds} needs at least {folds} rows; the data have {n}")
        perm = np.random.default_rng(seed).permutation(n)
        chunks = np.array_split(perm, folds)
        parts = []
        for f in range(folds):
            tr = np.concatenate([c for g, c in enumerate(chunks) if g != f])
            va = chunks[f]
            parts.append((X[tr], Y[tr], X[va], Y[va]))
    out = []
    for Xtr, Ytr, Xva, Yva in parts:
        if standardize:
            scaler = Standardizer().fit(Xtr)
            Xtr = scaler.transform(Xtr)
            Xva = scaler.transform(Xva) if len(Xva) else Xva
        out.append(tuple(np.ascontiguousarray(a, dtype=dtype) for a in (Xtr, Ytr, Xva, Yva)))
    return out


def _data(module: ModuleType, X, Y, data, target) -> tuple[np.ndarray, np.ndarray, str]:
    spec = module.SPEC
    if isinstance(data, str):
        from ..runtime.command import read_data

        data = read_data(data, target, spec["name"])
    if data is not None:
        if not isinstance(data, Dataset):
            raise SweepError(f"data must be a Dataset, a bundled data set's name or a CSV file, got "
                             f"{type(data).__name__}")
        X, Y, where = data.X, data.Y, data.source
    else:
        if X is None or Y is None:
            raise DataError("sweep needs X and Y (or data=...)")
        where = "the data"
    X = _matrix(X, "X", spec["inputs"])
    Y, _ = targets(spec, Y, data if isinstance(data, Dataset) else None, where)
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    check_targets(Y, M.loss_name(spec), where, list(data.target_names) if isinstance(data, Dataset) else None)
    return X, Y, where


# --------------------------------------------------------------------------- settings


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise SweepError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def settings_of(given: dict, space: Space, module: ModuleType) -> dict:
    """The sweep's settings: the arguments given, else the space file's [sweep] table, else the defaults."""
    s = {}
    for key, default in _DEFAULTS.items():
        value = given.get(key)
        s[key] = value if value is not None else space.options.get(key, default)
    for key in ("seeds", "folds", "epochs", "batch_size"):
        s[key] = _int(key, s[key], 1)
    s["seed"] = _int("seed", s["seed"], 0)
    s["val_every"] = _int("val_every", s["val_every"], 0)
    if s["patience"] is not None:
        s["patience"] = _int("patience", s["patience"], 1)
    if s["trials"] is not None:
        s["trials"] = _int("trials", s["trials"], 1)
    if s["search"] not in ("auto", "tpe"):
        raise SweepError(f"search must be 'auto' (the grid and random draws of the space) or 'tpe' (Optuna), "
                         f"got {s['search']!r}")
    if s["search"] == "tpe" and not space.dims:
        raise SweepError("search 'tpe' needs dimensions to search: give --grid or --random")
    if s["trials"] is not None and s["search"] == "auto" and not space.random:
        raise SweepError(f"trials={s['trials']} draws the random dimensions, but the space has none: add --random "
                         "name=dist(...) or use --search tpe")
    if s["trials"] is None:
        s["trials"] = 20 if s["search"] == "tpe" or space.random else 1
    v = s["val_split"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise SweepError(f"val_split must be a fraction in [0, 1), got {v!r}")
    s["val_split"] = float(v)
    if s["dtype"] not in ("float64", "float32"):
        raise SweepError(f"dtype must be float64 or float32, got {s['dtype']!r}")
    s["standardize"] = bool(s["standardize"])
    if s["folds"] > 1:
        if given.get("val_split") is not None:
            raise SweepError(f"val_split={given['val_split']} is for one holdout (folds=1); with folds={s['folds']} "
                             "every row is a validation row once")
        s["val_split"] = 0.0  # the folds hold the validation rows
    has_val = s["folds"] > 1 or s["val_split"] > 0
    if s["patience"] is not None and not has_val:
        raise SweepError(f"patience {s['patience']} watches the validation loss: it needs folds > 1 or val_split > 0")
    for name in ("epochs", "batch_size"):
        if given.get(name) is not None and name in space.names():
            raise SweepError(f"{name} is swept ({next(d.where for d in space.dims if d.name == name)}) and also given "
                             f"as {name}={given[name]}: give one")
    return s


# --------------------------------------------------------------------------- running


class _Runner:
    """Feeds the engine chunks and writes what comes back (the loop both searches share)."""

    def __init__(self, sweep: Sweep, engine, journal: R.Journal, progress, total: int):
        self.sweep, self.engine, self.journal, self.progress = sweep, engine, journal, progress
        self.per_step: float | None = None  # seconds x threads per (run x step), from the last chunk
        self.total = total
        self.best = math.nan
        self.diverged = 0
        self.chunks = 0
        self.running = 0
        self.completed = 0

    def done(self, rows: list[dict]) -> None:
        """Count finished runs: diverged ones, and the lowest loss so far."""
        for r in rows:
            self.diverged += r["status"] == "diverged"
            loss = r.get("val_loss") if R._finite(r.get("val_loss")) else r.get("train_loss")
            if r["status"] != "diverged" and R._finite(loss) and not loss >= self.best:
                self.best = float(loss)

    def run(self, runs: list[dict]) -> None:
        """Run every run of ``runs`` not in the journal yet."""
        ids = {r["run_id"]: r for r in reversed(runs)}  # a configuration Optuna asked twice runs once
        todo = [r for r in runs if r["run_id"] not in self.journal.rows and ids[r["run_id"]] is r]
        old = [self.journal.rows[r["run_id"]] for r in runs if r["run_id"] in self.journal.rows]
        if old:  # recorded before (a resumed sweep)
            self.completed += len(old)
            self.done(old)
            if self.progress is not None:
                self.progress.skip(len(old))
        groups: dict[tuple, deque] = {}
        for r in todo:
            groups.setdefault(self.sweep.group_key(r), deque()).append(r)
        queue = deque(groups.values())
        plan = {r["number"]: r for r in todo}
        remaining = len(todo)
        engine = self.engine
        while queue or engine.in_flight():
            while queue and engine.in_flight() < engine.slots:
                group = queue[0]
                size = self._size(group[0], len(group), remaining)
                taken = [group.popleft() for _ in range(min(size, len(group)))]
                if not group:
                    queue.popleft()
                remaining -= len(taken)
                self.running += len(taken)
                self.chunks += 1
                engine.submit(self.sweep.chunk(taken, f"c{self.chunks}-{taken[0]['number']}"))
            self._report()  # what is running now
            chunk, result = engine.wait()
            self.running -= len(chunk.runs)
            steps = max(1, chunk.steps)
            self.per_step = result["wall"] * engine.threads / steps
            rows = [{**plan[row["number"]], **row} for row in result["rows"]]
            new = self.journal.append(rows)
            self.completed += len(new)
            self.done(new)
            self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress.update(self.completed, self.running, self.diverged,
                                 None if math.isnan(self.best) else self.best)

    def _size(self, run: dict, group: int, remaining: int) -> int:
        engine = self.engine
        if self.per_step is None:
            return max(1, min(group, 2 * engine.threads))
        n = len(self.sweep.folds[run["fold"]][0])
        steps = run["epochs"] * -(-n // min(run["batch_size"], n))
        size = int(engine.chunk_seconds * engine.threads / max(self.per_step * steps, 1e-12))
        if engine.slots > 1:  # keep every worker busy: no chunk takes more than a share of what is left
            size = min(size, max(engine.threads, -(-remaining // engine.slots)))
        return max(1, min(size, MAX_CHUNK, group))


def _tpe(sweep: Sweep, runner: _Runner, trials: int, seed: int, all_runs: list[dict]) -> None:
    """Optuna's TPE asked ``TPE_BATCH`` configurations at a time from this process, told in trial
    order (the mean loss over the configuration's runs; inf when one diverged); the runs planned
    go to ``all_runs`` as they are asked (:func:`run_sweep` has checked that Optuna is installed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    dists = sweep.space.optuna_distributions()
    for start in range(0, trials, TPE_BATCH):
        asked = [study.ask(dists) for _ in range(min(TPE_BATCH, trials - start))]
        configs = [{**sweep.space.fixed, **t.params} for t in asked]
        runs = sweep.plan(configs, first=start)
        all_runs += runs
        runner.run(runs)
        for c, trial in enumerate(asked, start=start):
            rows = [runner.journal.rows[r["run_id"]] for r in runs if r["config"] == c]
            key = R.loss_key(rows)
            ok = [r[key] for r in rows if r["status"] != "diverged" and R._finite(r.get(key))]
            # a configuration with a diverged run is the worst there is (Optuna takes inf as a value)
            study.tell(trial, float(np.mean(ok)) if ok and len(ok) == len(rows) else math.inf)


# --------------------------------------------------------------------------- the function


def sweep(model: object, X: object = None, Y: object = None, *, data: Dataset | str | None = None,
          target: str | None = None, grid: Sequence[str] | Mapping[str, Sequence] | None = None,
          random: Sequence[str] | Mapping[str, object] | None = None, fixed: Mapping[str, object] | None = None,
          space: str | Path | Space | None = None, trials: int | None = None, seeds: int | None = None,
          folds: int | None = None, epochs: int | None = None, batch_size: int | None = None,
          search: str | None = None, seed: int | None = None, val_split: float | None = None,
          standardize: bool | None = None, dtype: str | None = None, patience: int | None = None,
          val_every: int | None = None, engine: str = "local", scheduler: str | None = None,
          workers: int | None = None, timeout: float = CONNECT_TIMEOUT, out: str | Path | None = None,
          resume: bool = False, plots: bool = False, progress: SweepProgress | None = None,
          spec: str | None = None):
    """Train ``model`` once per configuration of the space, seed replicate and fold; return one row
    per run as a pandas DataFrame (a list of dicts, with a warning, when pandas is not installed).

    ``grid`` (``["lr=1e-3,1e-2"]`` or ``{"lr": [1e-3, 1e-2]}``), ``random``
    (``["beta2=loguniform(0.9,0.9999)"]`` or ``{"beta2": "loguniform(0.9, 0.9999)"}``), ``fixed``
    (``{"momentum": 0.9}``) and ``space`` (a TOML file, see :mod:`derive.sweep.space`) give the
    space; ``trials`` random draws (or Optuna asks with ``search="tpe"``); ``seeds`` replicates and
    ``folds`` cross-validation folds of each configuration (``folds=1``: a ``val_split`` holdout).
    ``engine="dask"`` runs the chunks on an embedded LocalCluster of ``workers`` processes, or on
    the cluster at ``scheduler`` (waiting ``timeout`` seconds for it). ``out``: the folder of the
    journal, the table, the curves (and the pictures with ``plots``); ``resume`` continues the
    sweep there, running only the runs it lacks. See docs/sweeps.md."""
    result = run_sweep(**{k: v for k, v in locals().items()})
    return result["table"]


def run_sweep(model, X=None, Y=None, *, data=None, target=None, grid=None, random=None, fixed=None, space=None,
              trials=None, seeds=None, folds=None, epochs=None, batch_size=None, search=None, seed=None,
              val_split=None, standardize=None, dtype=None, patience=None, val_every=None, engine="local",
              scheduler=None, workers=None, timeout=CONNECT_TIMEOUT, out=None, resume=False, plots=False,
              progress=None, spec=None) -> dict:
    """:func:`sweep`, returning everything the command line prints too: ``table``, ``rows``,
    ``summary`` (lines), ``files``, ``settings``, ``module``, ``space``, ``where``, ``stats``
    (:func:`~derive.sweep.results.config_stats` of the rows, best first)."""
    module = load_model(model, spec)
    sp = space if isinstance(space, Space) else build_space(grid, random, fixed, space)
    if isinstance(space, Space) and (grid or random or fixed):
        sp = sp.merge(build_space(grid, random, fixed))
    sp.check(module)
    given = {"trials": trials, "seeds": seeds, "folds": folds, "epochs": epochs, "batch_size": batch_size,
             "seed": seed, "search": search, "val_split": val_split, "standardize": standardize,
             "patience": patience, "val_every": val_every, "dtype": dtype}
    s = settings_of(given, sp, module)
    if s["search"] == "tpe":
        try:
            import optuna  # noqa: F401
        except ImportError as exc:
            raise SweepError(f"search 'tpe' needs Optuna, which is not installed: pip install 'derive[optuna]' "
                             f"[{exc}]") from None
    if plots:
        from ..runtime.plots import require_matplotlib

        require_matplotlib()
    Xa, Ya, where = _data(module, X, Y, data, target)
    folds_data = make_folds(Xa, Ya, s["folds"], s["val_split"], s["seed"], s["standardize"], np.dtype(s["dtype"]))
    base = {"model": module.SPEC["name"], "spec_hash": module.SPEC_HASH, "data": R.fingerprint(Xa, Ya),
            "settings": {k: s[k] for k in ("folds", "val_split", "standardize", "dtype", "seed", "patience",
                                           "val_every")}}
    meta = {**base, "source": where, "space": sp.describe(), "search": s["search"], "trials": s["trials"],
            "seeds": s["seeds"], "version": 1}
    folder = R.prepare_folder(out, meta, resume)
    eng = make_engine(engine, scheduler, workers, timeout)
    if hasattr(eng, "connect"):
        eng.connect()  # an unreachable scheduler fails here, before any file is written
    try:
        sw = Sweep(module, sp, folds_data, s, base)
        configs = sp.configurations(s["trials"], s["seed"]) if s["search"] == "auto" else None
        total = (len(configs) if configs is not None else s["trials"]) * s["seeds"] * s["folds"]
        if folder is not None:
            R.write_meta(folder, {**meta, "runs": total})
        journal = R.Journal(folder)
        journal.read()
        eng.start(module, folds_data)
        runner = _Runner(sw, eng, journal, progress, total)
        planned: list[dict] = []
        try:
            if progress is not None:
                n = len(configs) if configs is not None else s["trials"]
                progress.start(total, f"{n} configuration{'s' if n != 1 else ''} x {s['seeds']} seed"
                               f"{'s' if s['seeds'] != 1 else ''} x {s['folds']} fold{'s' if s['folds'] != 1 else ''}"
                               f", {'epochs swept' if 'epochs' in sp.names() else str(s['epochs']) + ' epochs'}, "
                               f"on {eng.where}")
            if configs is not None:
                planned += sw.plan(configs)
                runner.run(planned)
            else:
                _tpe(sw, runner, s["trials"], s["seed"], planned)
        finally:
            if progress is not None:
                progress.finish()
            # the journal's result, the current plan's number, configuration and values (a
            # configuration Optuna asks twice is one configuration: its first number)
            rows, seen = [], set()
            for p in planned:
                if p["run_id"] in journal.rows and p["run_id"] not in seen:
                    seen.add(p["run_id"])
                    rows.append({**journal.rows[p["run_id"]], **p})
            files = []
            if folder is not None and rows:
                files = [R.write_table(folder, rows, sw.config_names), R.write_curves(folder, rows)]
    finally:
        eng.close()
    swept = sp.names()
    stats = R.config_stats(rows, sw.config_names)
    summary = R.summary_lines(rows, sw.config_names, swept, stats=stats)
    if journal.torn:  # (a crash in the middle of an append: those runs were done again)
        summary.insert(1, f"the journal had {journal.torn} line{'s' if journal.torn != 1 else ''} cut short by a "
                          "crash: skipped, and their runs done again")
    if plots and folder is not None:
        from .plots import plot_sweep

        files += plot_sweep(folder, rows, sp, sw.config_names, stats)
    if R.has_pandas():
        table = R.dataframe(rows, sw.config_names)
    else:
        warnings.warn("pandas is not installed: sweep() returns a list of dicts (pip install 'derive[sweep]' for a "
                      "DataFrame)", stacklevel=3)
        table = R.table_rows(rows, sw.config_names)[1]
    return {"table": table, "rows": rows, "summary": summary, "files": files, "settings": s, "module": module,
            "space": sp, "where": where, "config_names": sw.config_names, "folder": folder,
            "engine": eng.name, "stats": stats}


def best_config(table) -> dict | None:
    """The best configuration of a sweep's table (a DataFrame or a list of row dicts, as
    :func:`sweep` returns it): its settings, by the summary's ranking; None when no run finished."""
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    if not rows:
        return None
    cols = list(rows[0])
    names = cols[cols.index("seed") + 1:cols.index("status")]
    stats = R.config_stats(rows, names)
    return stats[0].values if stats and stats[0].losses else None
