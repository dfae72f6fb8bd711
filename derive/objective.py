"""Minimise a symbolic objective of a few variables with the generated optimizer kernels.

The classic demonstrations — a parabola, Rosenbrock's ravine, the saddle ``x**2 - y**2`` —
use the same ``_update_one`` kernel that trains networks: the gradient is derived by SymPy and
printed into a small module, the update equations come from the optimizer's rule.

>>> obj = Objective("rosenbrock", "(1 - x)**2 + 100*(y - x**2)**2", ("x", "y"), {"name": "adam", "lr": 0.02})
>>> module = obj.load("/tmp/objectives")                    # doctest: +SKIP
>>> path, values = module.minimize([-1.2, 1.0], steps=5000)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import pprint
import sys
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from .codegen.render import (
    RUNTIME_NAME,
    _Emitter,
    _environment,
    _hyper_ranges,
    describe,
    runtime_text,
    runtime_version,
    update_context,
)
from .derivation import Derivation, update_equations
from .errors import SpecError
from .expr import parse
from .files import write_atomic
from .spec import OptimizerSpec, ScheduleSpec, TrainingSettings, check_name, make_optimizer, make_schedule

RESERVED_VARIABLES = frozenset({"f", "d", "theta", "g", "t", "epoch", "k", "p", "gr", "clip_coef", "steps",
                                "path", "values", "G", "x0"})


@dataclass(frozen=True)
class Objective:
    """``f(variables)`` given as text (parsed safely) and the optimizer that minimises it."""

    name: str
    expr: str
    variables: tuple[str, ...]
    optimizer: object = "sgd"
    schedule: object = None

    def spec(self) -> _ObjectiveSpec:
        check_name(self.name, f"objective {self.name!r}", "objective")
        if not self.variables or len(self.variables) > 16:
            raise SpecError("an objective needs 1 to 16 variables", f"objective {self.name!r}")
        for v in self.variables:
            check_name(v, f"objective {self.name!r}", "variable")
            if v in RESERVED_VARIABLES:
                raise SpecError(f"variable name {v!r} is reserved inside the kernels; choose another",
                                f"objective {self.name!r}")
        where = f"objective {self.name!r}"
        return _ObjectiveSpec(self.name, make_optimizer(self.optimizer, f"{where}: optimizer"),
                              make_schedule(self.schedule or "constant", f"{where}: schedule"))

    def symbols(self) -> dict[str, sp.Symbol]:
        return {v: sp.Symbol(v, real=True) for v in self.variables}

    def render(self) -> str:
        spec = self.spec()
        f = parse(self.expr, self.symbols(), where=f"objective {self.name!r}")
        d = Derivation(spec, tuple(update_equations(spec)))  # type: ignore[arg-type]
        em = _Emitter(d)
        upd = update_context(d, em)
        rule_eqs = d.optimizer_equations
        syms = self.symbols()
        hyper = spec.hyper()
        context = {
            "spec": spec, "template": "objective.py.j2", "variables": list(self.variables), "expr_text": self.expr,
            "spec_repr": pprint.pformat({"name": self.name, "expr": self.expr, "variables": list(self.variables),
                                         "optimizer": spec.optimizer.to_dict(), "schedule": spec.schedule.to_dict()},
                                        sort_dicts=False, width=96),
            "variables_repr": repr(tuple(self.variables)), "hyper_repr": repr(hyper),
            "state_names_repr": repr(tuple(rule_eqs.state)), "scalar_state_repr": repr(tuple(rule_eqs.scalar_state)),
            "state_inits": [(n, em.printer.doprint(v)) for n, v in rule_eqs.state.items()],
            "scalar_inits": [(n, em.printer.doprint(v)) for n, v in rule_eqs.scalar_state.items()],
            "init_hyper": sorted({s.name for v in [*rule_eqs.state.values(), *rule_eqs.scalar_state.values()]
                                  for s in v.free_symbols}),
            "state_names": list(rule_eqs.state), "scalar_names": list(rule_eqs.scalar_state),
            "hyper_args": "".join(f", {h}" for h in hyper),
            "value_lines": em.lines("f", f),
            "grad_lines": [em.lines("d", sp.diff(f, syms[v])) for v in self.variables],
            "equation_lines": [f"f = {sp.sstr(f)}"]
            + [f"df/d{v} = {sp.sstr(sp.diff(f, syms[v]))}" for v in self.variables]
            + [describe(e) for e in d.equations],
            "hyper_ranges_repr": _hyper_ranges(spec.hyper_rules()),
            "runtime_abi": runtime_version()[0], "runtime_sha": runtime_version()[1],
            **upd,
        }
        return _environment().get_template("objective.py.j2").render(**context)

    def load(self, folder: str | Path):
        """Write ``<folder>/<name>.py`` and the kernel runtime beside it (atomically) and import it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.py"
        runtime = folder / RUNTIME_NAME
        text = runtime_text()
        if not runtime.exists() or runtime.read_text(encoding="utf-8") != text:
            write_atomic(runtime, text)
        write_atomic(path, self.render())
        mod_name = f"derive_objective_{self.name}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return module


@dataclass(frozen=True)
class _ObjectiveSpec(TrainingSettings):
    """The part of a model spec the update equations read (no clipping or regularisation)."""

    name: str
    optimizer: OptimizerSpec
    schedule: ScheduleSpec = ScheduleSpec()
    clip: tuple = ()
    regularization: tuple = ()
