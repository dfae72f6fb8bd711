"""Save and load training checkpoints: one ``.npz`` file, checked against the model on load.

A checkpoint is a plain ``np.savez`` archive (no pickle; read with ``allow_pickle=False``):

========================  ==================================================================
``format``, ``version``   ``"derive-checkpoint"`` and the format version (:data:`VERSION`)
``name``                  the model name, ``module.SPEC["name"]``
``spec``, ``spec_hash``   ``module.SPEC`` as JSON text, and ``module.SPEC_HASH``
``widths``                the hidden widths of the parameters (int64, one per hidden layer): the
                          spec's, or others (``derive train --widths``; the kernels read widths
                          from the arrays)
``param/<name>``          every parameter array, for each name of ``module.PARAM_NAMES``
``state/<key>``           optimizer state: ``state/t`` and ``state/epoch`` (int64 scalars) and
                          the arrays ``<state>_<param>`` (``STATE_NAMES``) and ``SCALAR_STATE``
``standardizer/mean|std`` the input standardiser (:meth:`Standardizer.to_dict`), when given
``meta``                  a JSON object: hyperparameters, seed, epochs, names, metrics, ...
``history/<key>``         training history (per-epoch losses, ...), one array per key
``best_param/<name>``,    optional (early stopping): the parameters and optimizer state of the
``best_state/<key>``      run's best epoch so far, when they are not the saved ones, so that a
                          resumed run can still go back to them
========================  ==================================================================

``meta`` may hold ``classes`` (a classifier's :meth:`ClassLabels.to_dict`) and
``early_stopping`` (the watch's record); files without them (older ones) load as before, and
so do files without ``widths`` (saved at the spec's widths).

Names without a ``.npz`` suffix get one (as ``np.savez`` does); :func:`save_checkpoint` returns
the real path, and :func:`load_checkpoint` finds ``name.npz`` when given ``name``. Writing goes
through a temporary file in the same folder and ``os.replace``: a failure never leaves a half
file, nor touches an existing one. Every problem raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from derive.data import DataError, Standardizer
from derive.errors import DeriveError
from derive.files import atomic_writer
from derive.runtime.widths import check_widths, spec_widths

FORMAT = "derive-checkpoint"
VERSION = 1
_MODULE_NAMES = ("SPEC", "SPEC_HASH", "PARAM_NAMES", "STATE_NAMES", "SCALAR_STATE", "init_params", "init_state")
_COUNTERS = ("t", "epoch")


class CheckpointError(DeriveError, ValueError):
    """A checkpoint cannot be written, read, or does not fit the model; the message names the file."""

    def __init__(self, message: str, where: str | os.PathLike | None = None):
        self.where = None if where is None else str(where)
        self.message = message
        super().__init__(f"{self.where}: {message}" if self.where else message)


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read. ``params`` and ``state`` go straight back into the
    module's ``train``/``step`` (writeable C-contiguous arrays of the saved dtype, int ``t``/``epoch``)."""

    name: str
    spec: dict
    spec_hash: str
    params: dict[str, np.ndarray]
    state: dict[str, Any]
    standardizer: Standardizer | None = None
    meta: dict = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    best: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None  # early stopping's best epoch, if saved
    widths: tuple[int, ...] | None = None  # the hidden widths saved (None: an older file, the spec's)

    def check(self, module: ModuleType) -> Checkpoint:
        """Raise :class:`CheckpointError` unless this checkpoint fits ``module``: same spec (the
        message lists what differs), parameter names, shapes (at the saved hidden widths) and
        dtype, and optimizer state keys."""
        where = self.path or "checkpoint"
        _check_module(module, where)
        now = json.loads(json.dumps(module.SPEC))
        if self.spec_hash != module.SPEC_HASH or self.spec != now:
            diffs = _spec_diff(self.spec, now)
            if not diffs and self.spec.get("name") != now.get("name"):
                diffs = ["the specs differ only in the name"]
            elif not diffs:
                diffs = [f"saved with spec hash {self.spec_hash} but the model has {module.SPEC_HASH}"]
            more = f"; and {len(diffs) - 6} more difference(s)" if len(diffs) > 6 else ""
            if self.name == now.get("name"):
                head, tail = f"model {self.name!r}: ", "the model has changed since this checkpoint was saved"
            else:
                head, tail = f"a checkpoint of model {self.name!r} does not fit model {now.get('name')!r}: ", ""
            raise CheckpointError(f"{head}{'; '.join(diffs[:6])}{more}; {tail + ': ' if tail else ''}"
                                  "load it with the module it was saved from, or retrain", where)
        widths = _hidden_widths(module, self.widths, where)
        _check_arrays(module, self.params, self.state, where, widths)
        if self.best is not None:
            _check_arrays(module, *self.best, where, widths)
        return self


def save_checkpoint(path: str | os.PathLike, module: ModuleType, params: Mapping[str, np.ndarray],
                    state: Mapping[str, Any], *, standardizer: Standardizer | None = None,
                    meta: Mapping[str, Any] | None = None, history: Mapping[str, Any] | None = None,
                    best: tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | None = None,
                    widths: Any = None) -> Path:
    """Write one checkpoint of ``module`` (a generated module) to ``path`` atomically; return the
    real path (``.npz`` appended when missing). Everything is checked before anything is written:
    params keyed ``module.PARAM_NAMES``, of the model's shapes (at hidden widths ``widths``, one
    whole number per hidden layer; None: the spec's), one float dtype, all finite; the state of
    ``module.init_state``; ``meta`` JSON-serialisable; ``history`` plain arrays; ``best`` (early
    stopping's best epoch: params and state) as params and state. The widths are saved with them."""
    path = _npz_path(path)
    _check_module(module, path)
    widths = _hidden_widths(module, widths, path)
    _check_arrays(module, params, state, path, widths)
    if best is not None:
        _check_arrays(module, *best, path, widths)
    if meta is not None and not isinstance(meta, Mapping):
        raise CheckpointError(f"meta must be a dict, got {type(meta).__name__}", path)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
        "name": np.array(str(module.SPEC["name"])), "spec": np.array(_to_json(module.SPEC, "SPEC", path)),
        "spec_hash": np.array(str(module.SPEC_HASH)),
        "widths": np.array(spec_widths(module) if widths is None else widths, dtype=np.int64),
        "meta": np.array(_to_json({} if meta is None else meta, "meta", path)),
    }
    for prefix, (ps, st) in (("", (params, state)), ("best_", best or ({}, {}))):
        for name in module.PARAM_NAMES if ps else ():
            arrays[f"{prefix}param/{name}"] = np.ascontiguousarray(ps[name])
        for key, value in st.items():
            arrays[f"{prefix}state/{key}"] = (np.array(int(value), dtype=np.int64) if key in _COUNTERS
                                              else np.asarray(value))
    if standardizer is not None:
        try:
            stats = standardizer.to_dict()
        except (DataError, AttributeError) as exc:
            raise CheckpointError(f"cannot save the standardizer: {exc}", path) from None
        arrays.update({f"standardizer/{k}": np.asarray(v, dtype=np.float64) for k, v in stats.items()})
    for key, value in (history or {}).items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"history keys must be non-empty strings, got {key!r}", path)
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufcUS":
            raise CheckpointError(f"history[{key!r}] must be numbers or strings (no objects), got {arr.dtype}", path)
        arrays[f"history/{key}"] = arr
    _write_atomic(path, arrays)
    return path


def load_checkpoint(path: str | os.PathLike, module: ModuleType | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickling anything); with
    ``module``, also :meth:`Checkpoint.check` it against that model."""
    path = Path(path)
    if not path.exists() and path.suffix != ".npz":
        if not _npz_path(path).exists():
            raise CheckpointError(f"no such checkpoint file (nor {_npz_path(path).name})", path)
        path = _npz_path(path)
    if not path.exists():
        raise CheckpointError("no such checkpoint file", path)
    if not path.is_file():
        raise CheckpointError("not a file (a checkpoint is one .npz file)", path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
            if head.startswith(b"\x93NUMPY"):
                raise CheckpointError("not a derive checkpoint: a single .npy array, not an .npz archive", path)
            if not head.startswith(b"PK"):
                raise CheckpointError(
                    f"not an .npz checkpoint ({'an empty file' if not head else 'not a zip archive'})", path)
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as archive:
                data = {key: archive[key] for key in archive.files}
        odd = [key for key, value in data.items() if not isinstance(value, np.ndarray)]
        if odd:
            raise CheckpointError(f"not a derive checkpoint: {odd[0]!r} is not a .npy array", path)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint: {exc.strerror or exc}", path) from None
    except Exception as exc:  # untrusted bytes: zip, zlib, .npy header and OS errors alike
        why = "it holds pickled objects, which derive never loads" if "allow_pickle" in str(exc) else \
            f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"not a readable .npz checkpoint (corrupt or truncated?): {why}", path) from None
    if _text(data, "format", path, required=False) != FORMAT:
        raise CheckpointError(f"not a derive checkpoint (no {FORMAT!r} marker); it holds {sorted(data)[:8]}", path)
    version = data.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError("the format version is missing or not an integer", path)
    if int(version) != VERSION:
        raise CheckpointError(f"format version {int(version)} is not supported (this derive reads version "
                              f"{VERSION}){'; upgrade derive' if int(version) > VERSION else ''}", path)
    spec, meta = _from_json(data, "spec", path), _from_json(data, "meta", path)
    params, state = _run_arrays(data, "", path)
    if not params:
        raise CheckpointError("the checkpoint holds no parameters (no 'param/...' entries)", path)
    best = _run_arrays(data, "best_", path) if any(k.startswith("best_param/") for k in data) else None
    stats = {k[13:]: v for k, v in data.items() if k.startswith("standardizer/")}
    standardizer = None
    if stats:
        try:
            standardizer = Standardizer.from_dict(stats)
        except DataError as exc:
            raise CheckpointError(f"the saved standardizer is invalid: {exc}", path) from None
    history = {k[8:]: (v.item() if v.ndim == 0 else _array(v)) for k, v in data.items() if k.startswith("history/")}
    if not isinstance(spec, dict) or not isinstance(meta, dict):
        raise CheckpointError("'spec' and 'meta' must be JSON objects", path)
    widths = None
    if "widths" in data:  # (files saved before widths were recorded have the spec's)
        w = data["widths"]
        if w.ndim != 1 or w.dtype.kind not in "iu" or (w < 1).any():
            raise CheckpointError("the entry 'widths' must be a list of whole numbers >= 1 (the hidden widths); "
                                  "the file is damaged", path)
        widths = tuple(int(v) for v in w)
    checkpoint = Checkpoint(name=_text(data, "name", path), spec=spec, spec_hash=_text(data, "spec_hash", path),
                            params=params, state=state, standardizer=standardizer, meta=meta, history=history,
                            path=path, best=best, widths=widths)
    if module is not None:
        checkpoint.check(module)
    return checkpoint


# --------------------------------------------------------------------------- helpers


def _run_arrays(data: Mapping[str, np.ndarray], prefix: str, path: Path) -> tuple[dict, dict]:
    """The ``<prefix>param/...`` and ``<prefix>state/...`` entries as params and state, the
    counters as ints, the parameters checked to be finite floats."""
    p, s = f"{prefix}param/", f"{prefix}state/"
    params = {k[len(p):]: _array(v) for k, v in data.items() if k.startswith(p)}
    state: dict[str, Any] = {k[len(s):]: _array(v) for k, v in data.items() if k.startswith(s)}
    if not params:
        return params, state
    for key in _COUNTERS:
        value = state.get(key)
        if value is None or value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
            raise CheckpointError(f"{s}{key} is missing or not an integer >= 0", path)
        state[key] = int(value)
    for name, arr in params.items():
        if arr.dtype not in (np.float32, np.float64) or not np.isfinite(arr).all():
            raise CheckpointError(f"{'best-epoch ' if prefix else ''}parameter {name!r} is not a finite "
                                  f"float32/float64 array ({arr.dtype})", path)
    return params, state


def _npz_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _check_module(module: Any, where: Any) -> None:
    missing = [n for n in _MODULE_NAMES if not hasattr(module, n)]
    if missing:
        raise CheckpointError(f"{getattr(module, '__name__', module)!r} is not a generated derive module "
                              f"(it lacks {', '.join(missing)})", where)


def _hidden_widths(module: ModuleType, widths: Any, where: Any) -> tuple[int, ...] | None:
    """``widths`` checked against the module's hidden layers (:func:`check_widths`): None where
    they are the spec's (or not given), else a tuple of whole numbers >= 1, one per hidden layer."""
    try:
        values = check_widths(module, widths)
    except DeriveError:
        hidden = spec_widths(module)
        raise CheckpointError(f"hidden widths {list(widths) if isinstance(widths, (list, tuple)) else widths!r} "
                              f"do not fit model {module.SPEC['name']!r}, which has {len(hidden)} hidden layer(s) "
                              f"({', '.join(map(str, hidden)) or 'none'}): give one whole number >= 1 per hidden "
                              "layer", where) from None
    return None if values == spec_widths(module) else values


def _check_arrays(module: ModuleType, params: Any, state: Any, where: Any,
                  widths: tuple[int, ...] | None = None) -> None:
    """params and state against what the module's own init_params/init_state make (at hidden
    widths ``widths``; None: the spec's)."""
    model = module.SPEC["name"]
    if not isinstance(params, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError("params and state must be dicts (from init_params / init_state)", where)
    names = tuple(module.PARAM_NAMES)
    if set(params) != set(names):
        raise CheckpointError(f"parameters {sorted(params)} do not match model {model!r}, which has "
                              f"{list(names)}", where)
    dtype = getattr(params[names[0]], "dtype", None)
    if dtype not in (np.float32, np.float64):
        raise CheckpointError(f"parameter {names[0]!r} must be a float32 or float64 array, got {dtype}", where)
    expected_params = module.init_params(seed=0, dtype=dtype, widths=widths)
    expected_state = module.init_state(expected_params)
    for name in names:
        _check_one(f"parameter {name!r}", params[name], expected_params[name], model, where)
    if set(state) != set(expected_state):
        missing, extra = sorted(set(expected_state) - set(state)), sorted(set(state) - set(expected_state))
        raise CheckpointError(f"the optimizer state does not fit model {model!r}: "
                              f"missing {missing}, unexpected {extra}", where)
    for key, value in state.items():
        if key in _COUNTERS:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise CheckpointError(f"state[{key!r}] must be an integer >= 0, got {value!r}", where)
        else:
            _check_one(f"state[{key!r}]", value, expected_state[key], model, where)


def _check_one(what: str, arr: Any, expected: np.ndarray, model: str, where: Any) -> None:
    if not isinstance(arr, np.ndarray):
        raise CheckpointError(f"{what} must be a numpy array, got {type(arr).__name__}", where)
    if arr.shape != expected.shape:
        raise CheckpointError(f"{what} has shape {arr.shape} but model {model!r} expects {expected.shape}", where)
    if arr.dtype != expected.dtype:
        raise CheckpointError(f"{what} has dtype {arr.dtype} but {expected.dtype} is expected", where)
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise CheckpointError(f"{what} is not finite ({arr[bad]} at index {bad}); refusing non-finite values", where)


def _spec_diff(saved: Any, now: Any, key: str = "") -> list[str]:
    """What differs between two specs, key by key: 'saved with layers [...] but the model now has [...]'."""
    if isinstance(saved, dict) and isinstance(now, dict):
        if key and "name" in saved and "name" in now and saved["name"] != now["name"]:
            return [f"saved with {key} {saved['name']!r} but the model now has {now['name']!r}"]
        out = []
        for k in [*saved, *(k for k in now if k not in saved)]:
            if not key and k == "name":  # the model name is in the message's head
                continue
            sub = f"{key}.{k}" if key else str(k)
            if k not in now:
                out.append(f"saved with {sub} {saved[k]!r} but the model now has no {sub}")
            elif k not in saved:
                out.append(f"saved without {sub} but the model now has {now[k]!r}")
            else:
                out.extend(_spec_diff(saved[k], now[k], sub))
        return out
    return [] if saved == now else [f"saved with {key} {saved!r} but the model now has {now!r}"]


def _to_json(value: Any, what: str, where: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} {obj!r}")

    try:
        return json.dumps(value, default=default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what} must be JSON-serialisable (str keys; numbers, strings, lists, "
                              f"dicts, numpy scalars/arrays): {exc}", where) from None


def _from_json(data: Mapping[str, np.ndarray], key: str, where: Any) -> Any:
    try:
        return json.loads(_text(data, key, where))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{key!r} is not valid JSON: {exc}", where) from None


def _text(data: Mapping[str, np.ndarray], key: str, where: Any, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None or value.shape != () or value.dtype.kind != "U":
        if not required:
            return None
        raise CheckpointError(f"the entry {key!r} is missing or not a string; the file is damaged", where)
    return str(value)


def _array(arr: np.ndarray) -> np.ndarray:
    return np.require(arr, requirements=("C", "W", "O"))


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if not path.parent.is_dir():
        raise CheckpointError(f"the folder {str(path.parent)!r} does not exist", path)
    if path.is_dir():
        raise CheckpointError("is a folder; give a file name", path)
    try:
        with atomic_writer(path, sync=True) as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        raise CheckpointError(f"cannot write the checkpoint: {exc}", path) from None
