"""derive: declare a network, derive its training equations with SymPy, generate Numba kernels.

Python API (the same validation as a TOML catalogue)::

    import derive
    model = derive.Model("xor", inputs=2, layers=[derive.Dense(8, "tanh"), derive.Dense(1, "sigmoid")],
                         loss="bce", optimizer={"name": "sgd", "lr": 0.1})
    print(derive.show(model))                  # the derivation as text
    derive.build_models([model], "mypkg")      # writes mypkg/xor.py; then `import mypkg.xor`
"""

from __future__ import annotations

from pathlib import Path

from . import latex  # noqa: F401  (gives Derivation its Jupyter display)
from .derivation import Derivation, derive_model
from .errors import BuildError, DeriveError, SpecError
from .spec import Dense, Model, ModelSpec, load_catalogue, parse_catalogue

__version__ = "0.1.0"


def show(model: ModelSpec) -> str:
    """The derivation of ``model`` as readable text (what ``derive show`` prints)."""
    from .text import to_text

    return to_text(derive_model(model))


def build_models(models: list[ModelSpec], out: str | Path, source: str = "<python>"):
    """Generate one module per model into the package folder ``out`` (rendered in full first,
    then each file replaced atomically)."""
    from .build import build

    return build(list(models), list(models), Path(out), source, prune=False)


__all__ = ["BuildError", "Dense", "Derivation", "DeriveError", "Model", "ModelSpec", "SpecError", "build_models",
           "derive_model", "load_catalogue", "parse_catalogue", "show"]
