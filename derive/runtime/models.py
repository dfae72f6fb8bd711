"""Find the generated module of a model: by name in a catalogue, from a spec object, or as given.

``derive train NAME`` and :func:`derive.runtime.fit.fit` accept a model as

* a name of the catalogue (``derive.toml`` by default): its module under the catalogue's output
  folder is used when it is current (same spec hash), and (re)built there when it is missing or
  stale, as ``derive build --only NAME`` would;
* a :class:`~derive.spec.ModelSpec` (``Model(...)``): built into the package ``derive_models`` of
  the cache folder (``$DERIVE_CACHE_DIR`` or ``~/.cache/derive``), where Numba's cache of it
  survives between runs;
* an already imported generated module.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from ..errors import SpecError, suggest
from ..spec import ModelSpec, load_catalogue

DEFAULT_SPEC = "derive.toml"
_HASH = re.compile(r"^# derive: .* spec-hash=([0-9a-f]+) runtime=([0-9a-f]+) generator=([0-9a-f]+)$", re.M)


def cache_dir() -> Path:
    """Where models built from Python specs (and other derived files) are kept."""
    root = os.environ.get("DERIVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "derive")
    return Path(root)


def is_module(obj: object) -> bool:
    return isinstance(obj, ModuleType) and all(hasattr(obj, k) for k in ("SPEC", "SPEC_HASH", "train", "forward"))


def load_model(model: object, spec: str | os.PathLike | None = None, out: str | os.PathLike | None = None
               ) -> ModuleType:
    """The generated module of ``model`` (a name, a ModelSpec or a module), built if needed."""
    if is_module(model):
        return model  # type: ignore[return-value]
    if isinstance(model, ModelSpec):
        return _current(model, Path(out) if out else cache_dir() / "derive_models", "<python>", [model])
    if not isinstance(model, str):
        raise SpecError(f"a model must be a name, a Model(...) spec or a generated module, got {type(model).__name__}")
    spec_path = Path(spec) if spec else Path(DEFAULT_SPEC)
    if not spec_path.exists():
        if spec is None:  # no catalogue here: the models that ship with derive
            return _bundled(model)
        raise SpecError("spec file not found", str(spec_path))
    models = load_catalogue(spec_path)
    if model not in models:
        raise SpecError(f"no model {model!r} in the catalogue{suggest(model, models)}", str(spec_path))
    out_dir = Path(out) if out else spec_path.resolve().parent / "generated"
    return _current(models[model], out_dir, spec_path.name, list(models.values()))


def _bundled(name: str) -> ModuleType:
    import generated

    if name not in generated.MODELS:
        raise SpecError(f"no model {name!r} among the bundled models{suggest(name, generated.MODELS)} "
                        f"(and no {DEFAULT_SPEC} here; pass --spec FILE)")
    return importlib.import_module(f"generated.{name}")


def _current(model: ModelSpec, out_dir: Path, source: str, all_models: list[ModelSpec]) -> ModuleType:
    """Import ``out_dir/<name>.py``, building it first when it is missing or was built from another spec."""
    from ..build import build
    from ..codegen.render import RUNTIME_NAME, generator_hash, runtime_text, runtime_version, spec_hash

    path = out_dir / f"{model.name}.py"
    want = spec_hash(model)
    runtime = out_dir / RUNTIME_NAME
    stale_runtime = not runtime.exists() or runtime.read_text(encoding="utf-8") != runtime_text()
    if _file_hash(path) != (want, runtime_version()[1], generator_hash()) or stale_runtime:
        out_dir.mkdir(parents=True, exist_ok=True)
        build([model], all_models, out_dir, source, prune=False)
    return _import(out_dir, model.name, want)


def _import(out_dir: Path, name: str, want: str) -> ModuleType:
    """``import <package>.<name>`` for the package folder ``out_dir``, the name a user imports it by.

    One name per file matters: Numba's cache beside the file records the module name of the
    functions it holds, so a file imported under two names would read back entries it cannot use.
    """
    package = out_dir.name
    loaded = sys.modules.get(package)
    here = out_dir.resolve()
    if loaded is not None and here not in [Path(p).resolve() for p in getattr(loaded, "__path__", [])]:
        raise SpecError(f"cannot import {out_dir}/{name}.py as {package}.{name}: another package named {package!r} "
                        f"is already imported (from {list(getattr(loaded, '__path__', []))}); build into a folder "
                        "with another name (derive build --out)")
    if loaded is None and str(here.parent) not in [str(Path(p).resolve()) for p in sys.path if p]:
        sys.path.insert(0, str(here.parent))
    importlib.invalidate_caches()
    module = importlib.import_module(f"{package}.{name}")
    if Path(module.__file__).resolve() != here / f"{name}.py":
        raise SpecError(f"{package}.{name} resolves to {module.__file__}, not to {here / (name + '.py')}; "
                        "build into a folder with another name (derive build --out)")
    if module.SPEC_HASH != want:  # rebuilt since it was imported in this process
        module = importlib.reload(module)
    return module


def _file_hash(path: Path) -> tuple[str, str, str] | None:
    """(spec hash, runtime hash, generator hash) from a module's header; None without one."""
    try:
        head = path.read_text(encoding="utf-8")[:20000]
    except OSError:
        return None
    m = _HASH.search(head)
    return (m.group(1), m.group(2), m.group(3)) if m else None
