"""A sweep's results: the journal written as runs finish, the table, the curves, the summary.

Files in the output folder::

    sweep.json        what was swept and on what (model, data fingerprint, settings), for --resume
    runs.jsonl        the journal: one JSON line per finished run (its row and its loss curves),
                      appended and flushed to disk after every chunk; nothing else is needed to resume
    results.parquet   one row per run (results.csv when pyarrow is not installed), written at the end
                      (also after Ctrl-C or an error, with the runs done so far)
    curves.npz        run_id, number, loss (runs x epochs, training loss per epoch as the batches
                      saw it) and val_loss (NaN where it was not measured), padded with NaN

A run is known by its id, a hash of everything that decides its result (model, data, settings,
configuration, seed, fold), so a resumed sweep runs exactly the ids its journal lacks, even
after the space has grown.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_writer, write_atomic
from ..runtime.widths import spec_widths
from .space import SweepError

META = "sweep.json"
JOURNAL = "runs.jsonl"
CURVES = "curves.npz"
#: Columns every table starts with, then the configuration's, then :data:`RESULT_COLUMNS`, the
#: metrics (sorted) and :data:`TAIL_COLUMNS`.
PLAN_COLUMNS = ("number", "run_id", "config", "replicate", "fold", "seed")
RESULT_COLUMNS = ("status", "train_loss", "val_loss", "best_epoch", "epochs_run", "steps")
TAIL_COLUMNS = ("wall_time", "worker", "message")
_CURVE_KEYS = ("loss_curve", "val_curve")


def run_id(base: dict, values: dict, seed: int, fold: int) -> str:
    """The id of a run: a hash of the sweep's base (model, data, settings), its configuration,
    seed and fold."""
    text = json.dumps({"base": base, "values": values, "seed": seed, "fold": fold}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fingerprint(*arrays: np.ndarray) -> str:
    """A hash of the data's values and shapes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- the folder and its journal


class Journal:
    """The append-only record of finished runs (``runs.jsonl``); None folder: kept in memory only."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.path = folder / JOURNAL if folder is not None else None
        self.rows: dict[str, dict] = {}
        self.torn = 0

    def read(self) -> dict[str, dict]:
        """The runs already recorded, by run id. A line cut short by a crash is skipped (its run is
        done again); the first record of a run wins."""
        if self.path is None or not self.path.exists():
            return self.rows
        with open(self.path, "rb") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    self.torn += 1
                    continue
                if isinstance(row, dict) and "run_id" in row:
                    self.rows.setdefault(row["run_id"], row)
        return self.rows

    def append(self, rows: list[dict]) -> list[dict]:
        """Record ``rows`` (those whose run is not recorded yet), flushed to disk at once; returns them."""
        new = [r for r in rows if r["run_id"] not in self.rows]
        if not new:
            return new
        if self.path is not None:
            text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in new)
            with open(self.path, "ab") as fh:
                if fh.tell() and not _ends_with_newline(self.path):
                    fh.write(b"\n")  # after a torn line: start a new one
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        for r in new:
            self.rows[r["run_id"]] = r
        return new


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def prepare_folder(out: str | os.PathLike | None, meta: dict, resume: bool) -> Path | None:
    """Check the output folder before anything is written: a fresh folder, or (``resume``) one
    holding a sweep of the same model, data and settings. Returns its path (None: no folder)."""
    if out is None:
        if resume:
            raise SweepError("resume needs the output folder of the sweep to continue (out=..., --out DIR)")
        return None
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SweepError(f"--out {folder} is a file; give a folder")
    meta_path = folder / META
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SweepError(f"{meta_path} is unreadable ({exc}); choose another --out") from None
        if not resume:
            done = _count_lines(folder / JOURNAL)
            raise SweepError(f"{folder} already holds a sweep ({done} runs recorded): pass --resume to continue it, "
                             "or choose another --out")
        for key in ("model", "spec_hash", "data", "settings"):
            if old.get(key) != meta.get(key):
                raise SweepError(f"{folder} holds a sweep with another {key.replace('_', ' ')} ({_short(old.get(key))} "
                                 f"there, {_short(meta.get(key))} now): resume it with the same model, data and "
                                 "settings, or choose another --out")
    elif folder.exists() and any(folder.iterdir()):
        raise SweepError(f"{folder} is not empty and holds no sweep ({META} is missing): choose an empty or new "
                         "folder for --out")
    return folder


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def write_meta(folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- the table and the curves


def columns(rows: list[dict], config_names: list[str]) -> list[str]:
    """The table's columns, in a fixed order (see :data:`PLAN_COLUMNS`)."""
    known = set(PLAN_COLUMNS) | set(config_names) | set(RESULT_COLUMNS) | set(TAIL_COLUMNS) | set(_CURVE_KEYS)
    metrics = sorted({k for r in rows for k in r} - known)
    return [*PLAN_COLUMNS, *config_names, *RESULT_COLUMNS, *metrics, *TAIL_COLUMNS]


def table_rows(rows: list[dict], config_names: list[str]) -> tuple[list[str], list[dict]]:
    cols = columns(rows, config_names)
    return cols, [{c: r.get(c) for c in cols} for r in rows]


def has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def dataframe(rows: list[dict], config_names: list[str]):
    """The rows as a pandas DataFrame, one row per run (pandas must be installed)."""
    import pandas as pd

    cols, table = table_rows(rows, config_names)
    return pd.DataFrame(table, columns=cols)


def write_table(folder: Path, rows: list[dict], config_names: list[str]) -> Path:
    """``results.parquet`` (pandas and pyarrow installed) or ``results.csv``, written atomically."""
    if has_pandas() and has_pyarrow():
        path = folder / "results.parquet"
        buf = io.BytesIO()
        dataframe(rows, config_names).to_parquet(buf, index=False)
        with atomic_writer(path) as fh:
            fh.write(buf.getvalue())
        return path
    path = folder / "results.csv"
    cols, table = table_rows(rows, config_names)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in r.items()})
    write_atomic(path, text.getvalue())
    return path


def read_table(folder: str | os.PathLike):
    """A saved sweep's table: a DataFrame (parquet or CSV) with pandas, else a list of dicts from
    the CSV file."""
    folder = Path(folder)
    parquet, csv_path = folder / "results.parquet", folder / "results.csv"
    if has_pandas():
        import pandas as pd

        if parquet.exists() and has_pyarrow():
            return pd.read_parquet(parquet)
        if csv_path.exists():
            return pd.read_csv(csv_path)
    elif csv_path.exists():
        with open(csv_path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    raise SweepError(f"{folder} holds no results table (results.parquet needs pandas and pyarrow; results.csv "
                     "needs pandas or the csv module)")


def write_curves(folder: Path, rows: list[dict]) -> Path:
    """``curves.npz``: run_id, number, loss and val_loss (runs x the longest run's epochs, NaN-padded)."""
    E = max((len(r.get("loss_curve") or []) for r in rows), default=0)
    loss = np.full((len(rows), E), np.nan)
    val = np.full((len(rows), E), np.nan)
    for i, r in enumerate(rows):
        for arr, key in ((loss, "loss_curve"), (val, "val_curve")):
            curve = np.asarray(r.get(key) or [], dtype=np.float64)
            arr[i, :len(curve)] = curve
    path = folder / CURVES
    buf = io.BytesIO()
    np.savez(buf, run_id=np.array([r["run_id"] for r in rows], dtype=str),
             number=np.array([r["number"] for r in rows], dtype=np.int64), loss=loss, val_loss=val)
    with atomic_writer(path) as fh:
        fh.write(buf.getvalue())
    return path


# --------------------------------------------------------------------------- the summary


@dataclass
class ConfigStats:
    """One configuration's runs summed up: its values, and its loss over seeds and folds."""

    config: int
    values: dict
    losses: list[float]
    runs: int
    diverged: int
    metrics: dict

    @property
    def mean(self) -> float:
        return float(np.mean(self.losses)) if self.losses else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.losses, ddof=1)) if len(self.losses) > 1 else 0.0


def loss_key(rows: list[dict]) -> str:
    """``val_loss`` when the runs had validation rows, else ``train_loss``."""
    return "val_loss" if any(_finite(r.get("val_loss")) for r in rows) else "train_loss"


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def config_stats(rows: list[dict], config_names: list[str]) -> list[ConfigStats]:
    """The configurations, best first: lowest mean loss over the runs that finished; configurations
    with a diverged run come after those without."""
    key = loss_key(rows)
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["config"], []).append(r)
    out = []
    for config, runs in groups.items():
        ok = [r for r in runs if r["status"] != "diverged" and _finite(r.get(key))]
        names = sorted({k for r in ok for k in r if k.startswith(("val_", "train_")) and k not in
                        ("val_loss", "train_loss", "val_curve")})
        metrics = {}
        for m in names:  # (plain sums: numpy's mean costs more than the numbers, a few per configuration)
            values = [r[m] for r in ok if _finite(r.get(m))]
            if values:
                metrics[m] = float(sum(values) / len(values))
        out.append(ConfigStats(config, {n: runs[0].get(n) for n in config_names}, [float(r[key]) for r in ok],
                               len(runs), sum(r["status"] == "diverged" for r in runs), metrics))
    out.sort(key=lambda s: (s.diverged > 0, not s.losses, s.mean if s.losses else math.inf, s.config))
    return out


def _value_text(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "default" if v is None else str(v)


def train_command(name: str, values: dict, module, *, data: str | None, target: str | None, spec: str | None,
                  seed: int, val_split: float, standardize: bool, dtype: str, patience: int | None) -> str:
    """The ``derive train`` command line that trains configuration ``values`` (the data's split as
    the sweep's holdout: the sweep seed and val_split), with ``--widths`` when its hidden widths
    (``width1`` ...) are not the spec's."""
    parts = ["derive", "train", name]
    if spec:
        parts += ["--spec", spec]
    if data:
        parts += ["--data", data]
    if target:
        parts += ["--target", target]
    parts += ["--epochs", str(values["epochs"]), "--batch-size", str(values["batch_size"]), "--seed", str(seed),
              "--val-split", repr(float(val_split))]
    if values.get("init") not in (None, "default"):
        parts += ["--init", str(values["init"])]
    hidden = list(spec_widths(module))
    widths = [int(values.get(f"width{l}", w)) for l, w in enumerate(hidden, 1)]
    if widths != hidden:
        parts += ["--widths", ",".join(map(str, widths))]
    if standardize:
        parts.append("--standardize")
    if dtype != "float64":
        parts += ["--dtype", dtype]
    if patience:
        parts += ["--patience", str(patience)]
    for k, default in module.HYPER.items():
        v = values.get(k, default)
        if v != default:
            parts.append(f"--{k.replace('_', '-')}={float(v)!r}")
    return " ".join(_quote(p) for p in parts)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def summary_lines(rows: list[dict], config_names: list[str], swept: list[str], top: int = 5,
                  stats: list[ConfigStats] | None = None) -> list[str]:
    """The summary's lines: counts, the best configuration with its spread, the next ones.
    ``stats``: :func:`config_stats` of ``rows``, when the caller has them already."""
    stats = config_stats(rows, config_names) if stats is None else stats
    key = loss_key(rows)
    what = "validation" if key == "val_loss" else "training"
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "diverged", "stopped")}
    lines = [f"{len(rows)} runs of {len(stats)} configuration{'s' if len(stats) != 1 else ''}: "
             f"{counts['ok']} ok, {counts['diverged']} diverged, {counts['stopped']} stopped early"]
    if not stats or not stats[0].losses:
        lines.append("no run finished with a finite loss: try smaller learning rates or gradient clipping")
        return lines
    best = stats[0]
    shown = [n for n in swept if n in best.values] or list(best.values)
    lines.append(f"best configuration (config {best.config}): "
                 + " ".join(f"{n}={_value_text(best.values[n])}" for n in shown))
    spread = (f"{what} loss {best.mean:.6g} ± {best.std:.3g} (mean ± std over {len(best.losses)} run"
              f"{'s' if len(best.losses) > 1 else ''} of seeds x folds; min {min(best.losses):.6g}, max "
              f"{max(best.losses):.6g})")
    lines.append("  " + spread + (f", {best.diverged} diverged" if best.diverged else ""))
    extra = [f"{k} {v:.4g}" for k, v in best.metrics.items() if k.endswith(("accuracy", "r2", "rmse", "macro_f1"))]
    if extra:
        lines.append("  " + ", ".join(extra))
    if len(stats) > 1:
        lines.append(f"next best ({what} loss, mean ± std):")
        for s in stats[1:top]:
            loss = f"{s.mean:.6g} ± {s.std:.3g}" if s.losses else "no finite loss"
            lines.append(f"  config {s.config}: {loss}" + (f" ({s.diverged} diverged)" if s.diverged else "")
                         + "  " + " ".join(f"{n}={_value_text(s.values[n])}" for n in shown))
    return lines
