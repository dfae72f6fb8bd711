"""Names a model, objective or block may take: the rules every layer checks names by.

A leaf module (it imports only :mod:`derive.errors`), so that the blocks, the user blocks and
the spec can all check a name without importing one another; :mod:`derive.spec` re-exports
:func:`check_name` and its tables.
"""

from __future__ import annotations

import keyword
import re
import sys

from .errors import SpecError

#: Names a model may not take: they would shadow the generated package's own names.
RESERVED_NAMES = frozenset({"generated", "derive", "numpy", "numba", "math", "np"})
#: Further names a model (or objective) may not take, because it becomes a module file: the
#: package attribute MODELS (``import pkg.MODELS`` would replace it), the modules the generated
#: code and its dependencies import (shadowed whenever the output folder itself is on sys.path,
#: e.g. when a generated file is run as a script) and names Windows reserves for devices.
MODULE_RESERVED = (frozenset({"MODELS", "scipy", "llvmlite", "jinja2", "sympy", "click", "cli", "tests"})
                   | frozenset(sys.stdlib_module_names))
WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)$", re.I)


def check_name(name: object, where: str, what: str = "model") -> str:
    """A model/block name must be a lowercase-friendly Python identifier that shadows nothing.

    Models become modules of the output package, so their names must also not shadow a module the
    generated code imports (the standard library, numpy, numba, ...: shadowed whenever the output
    folder itself is on sys.path) or the package's ``MODELS``. Objectives are loaded from their
    file path, and their names become file names: they get the length and device-name rules.
    """
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise SpecError(f"{what} name {name!r} is not a Python identifier "
                        "(use letters, digits and '_', not starting with a digit)", where)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SpecError(f"{what} name {name!r} is a Python keyword", where)
    if name.startswith("_") or name in RESERVED_NAMES:
        raise SpecError(f"{what} name {name!r} is reserved (it would shadow a module name or a "
                        "private name of the generated package)", where)
    if what in ("model", "objective"):
        if len(name) > 100:
            raise SpecError(f"{what} name {name[:20]!r}... is too long (at most 100 characters: it becomes a "
                            "file name)", where)
        if WINDOWS_DEVICES.match(name):
            raise SpecError(f"{what} name {name!r} is reserved: Windows reserves {name}.py for a device", where)
        if what == "model" and name in MODULE_RESERVED:
            raise SpecError(f"{what} name {name!r} is reserved: the module {name}.py would shadow a module the "
                            "generated code imports (or the package's MODELS)", where)
    return name


__all__ = ["MODULE_RESERVED", "RESERVED_NAMES", "WINDOWS_DEVICES", "check_name"]
