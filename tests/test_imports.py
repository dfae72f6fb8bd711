"""The package's layering: imports run one way, as the design's data flow does.

    errors, symbolic  <-  names, expr  <-  blocks/*  <-  userblocks  <-  spec  <-  derivation  <-  codegen, ...

* Loaded: each module of derive/blocks, imported alone in a fresh interpreter, loads none of
  spec, userblocks, derivation, codegen (nor the documents, the build or the runtime); spec and
  userblocks load neither derivation nor codegen. ``derive/__init__.py`` imports the public API
  from every layer, so the probe installs the package without running it: what is measured is
  what each module itself imports.
* Static: every import of a derive module in the layered modules points to a lower layer, and
  none is deferred into a function to dodge a cycle; the deferred imports that remain are listed
  in :data:`DEFERRED` with their reason.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "derive"

#: Layer of each module (a module may import only lower layers; blocks/* may also import one another).
RANK = {"derive.errors": 0, "derive.symbolic": 0, "derive.names": 1, "derive.expr": 1, "derive.blocks": 2,
        "derive.userblocks": 3, "derive.spec": 4, "derive.derivation": 5}
#: Modules above all of these (rank 6): codegen, the documents, the build, the runtime, ...
ABOVE = 6
BLOCKS = sorted(f"derive.blocks.{p.stem}" for p in (PACKAGE / "blocks").glob("*.py") if p.stem != "__init__")
LAYERED = ["derive.errors", "derive.symbolic", "derive.names", "derive.expr", "derive.blocks", *BLOCKS,
           "derive.userblocks", "derive.spec", "derive.derivation"]
#: Deferred (function-level) imports of derive modules that are allowed, with the reason. None
#: of them breaks a cycle (derive.codegen.printer imports only derive.symbolic; checked below).
DEFERRED = {
    ("derive.blocks.activations", "derive.codegen.printer"):
        "a declared activation's output form is used only if the kernel printer can print it; the "
        "printer belongs to codegen (downstream), so blocks loads it only when a user block needs it",
    ("derive.userblocks", "derive.codegen.printer"):
        "user blocks are checked at load time by printing and evaluating them as kernel code; "
        "deferred so that loading a spec (which imports userblocks) never loads codegen",
}
#: What each module, imported alone, must not load.
UPPER = ("derive.spec", "derive.userblocks", "derive.derivation", "derive.codegen", "derive.latex", "derive.text",
         "derive.build", "derive.objective", "derive.runtime", "derive.data")
FORBIDDEN = {
    **{m: UPPER for m in ["derive.blocks", *BLOCKS]},
    "derive.userblocks": tuple(u for u in UPPER if u != "derive.userblocks"),
    "derive.spec": tuple(u for u in UPPER if u not in ("derive.spec", "derive.userblocks")),
}

#: Imports each module in turn, alone (derive.* dropped from sys.modules in between), into a
#: derive package whose __init__ is not run; prints {module: [derive modules loaded]}.
PROBE = r"""
import importlib, importlib.util, json, sys
root = sys.argv[1]
loaded = {}
for name in sys.argv[2:]:
    for m in [m for m in sys.modules if m == "derive" or m.startswith("derive.")]:
        del sys.modules[m]
    spec = importlib.util.spec_from_file_location("derive", root + "/__init__.py", submodule_search_locations=[root])
    sys.modules["derive"] = importlib.util.module_from_spec(spec)
    importlib.import_module(name)
    loaded[name] = sorted(m for m in sys.modules if m.startswith("derive."))
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(PACKAGE), *FORBIDDEN], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_alone_loads_no_upper_layer(module, loaded):
    assert module in loaded[module]
    upper = sorted(m for m in loaded[module] if any(_under(m, u) for u in FORBIDDEN[module]))
    assert not upper, f"importing {module} loads {upper}"


def test_the_probe_sees_what_a_module_loads(loaded):
    """The probe is not vacuous: spec loads the blocks and userblocks, blocks.joint the activations."""
    assert {"derive.userblocks", "derive.blocks.optimizers", "derive.names"} <= set(loaded["derive.spec"])
    assert {"derive.blocks.activations", "derive.blocks.losses"} <= set(loaded["derive.blocks.joint"])


# ----------------------------------------------------------------------------- static


def _file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _rank(module: str) -> int:
    for prefix in sorted(RANK, key=len, reverse=True):
        if _under(module, prefix):
            return RANK[prefix]
    return ABOVE


def derive_imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported derive module, deferred into a function?, line) for every import in ``module``."""
    tree = ast.parse(_file(module).read_text(encoding="utf-8"))
    package = module if _file(module).name == "__init__.py" else module.rpartition(".")[0]
    deferred_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the submodule pkg.sub where one exists
            targets = [f"{base}.{a.name}" if _file(f"{base}.{a.name}").exists() else base for a in node.names]
        else:
            continue
        out += [(t, id(node) in deferred_nodes, node.lineno) for t in dict.fromkeys(targets) if _under(t, "derive")]
    return out


def test_derive_imports_resolve():
    """The resolver finds the imports the layering rests on (so the checks below see them)."""
    assert ("derive.codegen.printer", True) in [(t, d) for t, d, _ in derive_imports("derive.blocks.activations")]
    assert ("derive.blocks.optimizers", False) in [(t, d) for t, d, _ in derive_imports("derive.spec")]
    assert ("derive.userblocks", False) in [(t, d) for t, d, _ in derive_imports("derive.spec")]


@pytest.mark.parametrize("module", LAYERED)
def test_imports_point_down(module):
    for target, deferred, line in derive_imports(module):
        if deferred:
            continue
        if _under(module, "derive.blocks") and _under(target, "derive.blocks"):
            continue  # blocks use one another (schedules -> optimizers, joint -> activations)
        assert _rank(target) < _rank(module), f"{module}:{line} imports {target}, which is not below it"


@pytest.mark.parametrize("module", LAYERED)
def test_no_import_is_deferred_to_dodge_a_cycle(module):
    for target, deferred, line in derive_imports(module):
        if deferred:
            assert (module, target) in DEFERRED, (
                f"{module}:{line} imports {target} inside a function: import a lower layer at the top, move what "
                "an upper layer offers down (derive/names.py, derive/blocks), or list it in DEFERRED with the reason")


def test_every_allowed_deferred_import_still_exists():
    for module, target in DEFERRED:
        assert (target, True) in [(t, d) for t, d, _ in derive_imports(module)], f"{module} -> {target}: drop it"
        package = target.rpartition(".")[0]
        back = [t for t, _, _ in derive_imports(target) if not _under(t, package) and _rank(t) >= _rank(module)]
        assert not back, f"{target} imports {back}: the deferred import from {module} would close a cycle"
