"""The search space of a sweep: which values each swept setting takes, checked against the model.

A dimension is one setting of a run: a hyperparameter of the model's module (``module.HYPER``:
the optimizer's, the schedule's, the clipping's, the regularisation's), ``batch_size``,
``epochs``, ``init`` (the initialiser of every layer) or a hidden width ``width1`` ...
``width<L-1>`` (the kernels read widths from the arrays, so no rebuild is needed). Each
dimension is a grid or a distribution:

=========================  ========================================================
``--grid lr=1e-3,1e-2``    these values, every one (the grid is the product of all)
``uniform(a, b)``          a float drawn uniformly from [a, b]
``loguniform(a, b)``       a float whose logarithm is uniform (0 < a < b)
``int(a, b)``              a whole number from a .. b, each equally likely
``logint(a, b)``           a whole number from a .. b, its logarithm uniform
``choice(x, y, ...)``      one of the values, each equally likely
=========================  ========================================================

The configurations are the grid's product times ``trials`` random draws of the distributions
(draw t is the same for every grid point, so a grid dimension compares like with like).
Draws come from ``SeedSequence([sweep seed, 1], spawn_key=(t,))``: the same sweep seed gives
the same configurations, whatever runs them. A TOML file holds the same (``--space``)::

    [grid]
    lr = [0.001, 0.01, 0.1]
    [random]
    beta2 = "loguniform(0.9, 0.9999)"
    [fixed]            # one value, not swept (as --momentum 0.9 would)
    momentum = 0.9
    [sweep]            # defaults for the command's options
    trials = 50
    seeds = 3
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DeriveError, suggest

#: The settings of a run that are not hyperparameters of the module.
RUN_SETTINGS = ("batch_size", "epochs", "init")
#: The distributions of a random dimension.
DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice")
#: Keys of a space file's [sweep] table: defaults of sweep()'s / the command's options.
SWEEP_KEYS = ("trials", "seeds", "folds", "epochs", "batch_size", "seed", "search", "val_split", "standardize",
              "patience", "val_every", "dtype")
_CALL = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


class SweepError(DeriveError, ValueError):
    """A sweep's input is unusable (the space, the data, the output folder, the engine);
    ``where`` names the place (``--grid lr=...``, ``space.toml [random] beta2``)."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


# --------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class Dim:
    """One swept setting: ``kind`` is ``"grid"`` or one of :data:`DISTRIBUTIONS`; ``values`` the
    grid's or the choice's values, ``low``/``high`` a range's bounds; ``where`` names its origin
    for error messages (``--grid lr=...``, ``space.toml [random] beta2``)."""

    name: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    where: str = ""

    @property
    def numeric(self) -> bool:
        return all(not isinstance(v, str) for v in self.values) if self.kind in ("grid", "choice") else True

    @property
    def log(self) -> bool:
        """Whether the dimension is logarithmic: a log distribution, or a grid of positive values
        spanning a factor 4 or more (10 for two values) whose steps are closer to constant ratios
        than to constant differences (1e-3,1e-2,1e-1 and 8,16,32,64 are; 10,20,30 is not)."""
        if self.kind in ("loguniform", "logint"):
            return True
        if self.kind not in ("grid", "choice") or not self.numeric or len(self.values) < 2:
            return False
        v = np.sort(np.asarray(self.values, dtype=float))
        if v[0] <= 0 or v[-1] / v[0] < (10 if len(v) == 2 else 4):
            return False
        if len(v) == 2:
            return True
        logs, lins = np.diff(np.log(v)), np.diff(v)
        return bool(np.std(logs) / np.mean(logs) <= np.std(lins) / np.mean(lins))

    def draw(self, rng: np.random.Generator) -> object:
        """One value of a distribution."""
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.kind == "logint":
            x = math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5)))
            return int(min(max(round(x), self.low), self.high))
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        raise AssertionError(self.kind)

    def describe(self) -> str:
        if self.kind == "grid":
            return f"{self.name}={','.join(_show(v) for v in self.values)}"
        if self.kind == "choice":
            return f"{self.name}=choice({', '.join(_show(v) for v in self.values)})"
        return f"{self.name}={self.kind}({_show(self.low)}, {_show(self.high)})"


def _show(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- parsing


def _number(text: str, where: str) -> float | int:
    text = text.strip()
    if not text:
        raise SweepError("an empty value", where)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise SweepError(f"{text!r} is not a number", where) from None
    if not math.isfinite(value):
        raise SweepError(f"{text!r} is not a finite number", where)
    return value


def _value(text: str, where: str) -> object:
    """A grid or choice value: a number, or a name (an initialiser)."""
    text = text.strip().strip("'\"")
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and text.lower() not in ("inf", "nan", "infinity"):
        return text
    return _number(text, where)


def parse_grid(text: str, where: str | None = None) -> Dim:
    """``name=v1,v2,...`` (a ``--grid`` option)."""
    where = where or f"--grid {text}"
    name, values = _split(text, where)
    if _CALL.match(values):
        raise SweepError(f"a grid lists values (name=v1,v2,...); for a distribution such as {values.strip()} "
                         "use --random", where)
    parts = [p for p in values.split(",")]
    if not values.strip() or all(not p.strip() for p in parts):
        raise SweepError(f"the grid of {name} is empty: give at least one value (name=v1,v2,...)", where)
    return Dim(name, "grid", tuple(_value(p, where) for p in parts), where=where)


def parse_random(text: str, where: str | None = None) -> Dim:
    """``name=dist(args)`` (a ``--random`` option), dist one of :data:`DISTRIBUTIONS`."""
    where = where or f"--random {text}"
    name, call = _split(text, where)
    return parse_distribution(name, call, where)


def parse_distribution(name: str, call: str, where: str) -> Dim:
    m = _CALL.match(call)
    if not m:
        raise SweepError(f"{call.strip()!r} is not a distribution: write one of "
                         f"uniform(a, b), loguniform(a, b), int(a, b), logint(a, b), choice(x, y, ...)", where)
    kind, args = m.group(1), [a for a in m.group(2).split(",")]
    if kind not in DISTRIBUTIONS:
        raise SweepError(f"unknown distribution {kind!r}{suggest(kind, DISTRIBUTIONS)}", where)
    if kind == "choice":
        if not m.group(2).strip():
            raise SweepError("choice() needs at least one value", where)
        return Dim(name, "choice", tuple(_value(a, where) for a in args), where=where)
    if len(args) != 2:
        raise SweepError(f"{kind}(a, b) takes two numbers, got {len(args)}", where)
    low, high = (_number(a, where) for a in args)
    if kind in ("int", "logint") and not all(isinstance(v, int) for v in (low, high)):
        raise SweepError(f"{kind}(a, b) takes whole numbers, got {call.strip()}", where)
    if kind in ("loguniform", "logint") and low <= 0:
        raise SweepError(f"{kind}(a, b) needs 0 < a, got a = {low}", where)
    if (high <= low) if kind in ("uniform", "loguniform") else (high < low):
        raise SweepError(f"{kind}(a, b) needs a < b, got a = {low}, b = {high}", where)
    return Dim(name, kind, (), float(low) if kind in ("uniform", "loguniform") else low,
               float(high) if kind in ("uniform", "loguniform") else high, where)


def _split(text: str, where: str) -> tuple[str, str]:
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SweepError("expected name=values, e.g. lr=1e-3,1e-2 or beta2=loguniform(0.9,0.9999)", where)
    return name, rest


# --------------------------------------------------------------------------- the space


@dataclass
class Space:
    """Grid dimensions, random dimensions and fixed values (checked by :meth:`check`)."""

    grid: list[Dim] = field(default_factory=list)
    random: list[Dim] = field(default_factory=list)
    fixed: dict[str, object] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)  # a file's [sweep] table

    @property
    def dims(self) -> list[Dim]:
        return self.grid + self.random

    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def merge(self, other: Space) -> Space:
        """This space with ``other``'s dimensions added (a file, then the command's options)."""
        return Space(self.grid + other.grid, self.random + other.random, {**self.fixed, **other.fixed},
                     {**self.options, **other.options})

    def describe(self) -> str:
        parts = [d.describe() for d in self.dims] + [f"{k}={_show(v)}" for k, v in self.fixed.items()]
        return " ".join(parts) if parts else "(one configuration: the model's defaults)"

    # ---- checks

    def check(self, module) -> Space:
        """Every name known to ``module``, every value allowed; raises one :class:`SweepError`."""
        valid = valid_names(module)
        seen: dict[str, str] = {}
        for dim in self.dims:
            if dim.name in seen:
                raise SweepError(f"{dim.name} is swept twice (also in {seen[dim.name]})", dim.where)
            seen[dim.name] = dim.where
            _check_name(dim.name, valid, module, dim.where)
            _check_dim(dim, module)
        for name, value in self.fixed.items():
            where = f"fixed {name}"
            if name in seen:
                raise SweepError(f"{name} is both fixed and swept ({seen[name]})", where)
            _check_name(name, valid, module, where)
            _check_value(name, value, module, where)
        return self

    # ---- configurations

    def configurations(self, trials: int, seed: int) -> list[dict]:
        """The grid's product times ``trials`` draws of the random dimensions (see the module doc);
        a draw that repeats an earlier one (discrete dimensions) is dropped."""
        grid = [dict(zip([d.name for d in self.grid], combo))
                for combo in itertools.product(*(d.values for d in self.grid))] or [{}]
        draws, seen = [], set()
        for t in range(trials if self.random else 1):
            draw = self.draw(t, seed)
            key = tuple(sorted(draw.items()))
            if key not in seen:
                seen.add(key)
                draws.append(draw)
        return [{**self.fixed, **g, **r} for g in grid for r in draws]

    def draw(self, trial: int, seed: int) -> dict:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1], spawn_key=(trial,)))
        return {d.name: d.draw(rng) for d in self.random}

    def optuna_distributions(self) -> dict:
        """The dimensions as Optuna distributions (a grid becomes a categorical choice)."""
        import optuna.distributions as od

        out = {}
        for d in self.dims:
            if d.kind in ("grid", "choice"):
                out[d.name] = od.CategoricalDistribution(list(d.values))
            elif d.kind in ("int", "logint"):
                out[d.name] = od.IntDistribution(int(d.low), int(d.high), log=d.kind == "logint")
            else:
                out[d.name] = od.FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
        return out


def valid_names(module) -> list[str]:
    L = len(module.SPEC["layers"])
    return list(module.HYPER) + list(RUN_SETTINGS) + [f"width{l}" for l in range(1, L)]


def _check_name(name: str, valid: list[str], module, where: str) -> None:
    if name not in valid:
        what = "hidden width" if name.startswith("width") else "hyperparameter"
        raise SweepError(f"unknown {what} {name!r} for model {module.SPEC['name']!r}{suggest(name, valid)}", where)


def _integer_setting(name: str) -> bool:
    return name in ("batch_size", "epochs") or name.startswith("width")


def _check_dim(dim: Dim, module) -> None:
    name, where = dim.name, dim.where
    if dim.kind in ("grid", "choice"):
        if len(set(dim.values)) != len(dim.values):
            twice = next(v for v in dim.values if dim.values.count(v) > 1)
            raise SweepError(f"{name} lists {_show(twice)} twice", where)
        for v in dim.values:
            _check_value(name, v, module, where)
        return
    if name == "init":
        raise SweepError(f"init takes initialiser names: a grid (init=xavier_uniform,he_normal) or choice(...), "
                         f"not {dim.kind}()", where)
    if _integer_setting(name) and dim.kind in ("uniform", "loguniform"):
        raise SweepError(f"{name} takes whole numbers: use int(a, b), logint(a, b), choice(...) or a grid, "
                         f"not {dim.kind}()", where)
    for bound in (dim.low, dim.high):
        _check_value(name, int(bound) if dim.kind in ("int", "logint") else bound, module, where)


def _check_value(name: str, value: object, module, where: str) -> None:
    if name == "init":
        schemes = ("default", *module.INIT_SCHEMES)
        if value not in schemes:
            raise SweepError(f"unknown initialiser {value!r}{suggest(str(value), schemes)}", where)
        return
    if isinstance(value, str) or isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                                                    np.floating)):
        raise SweepError(f"{name} takes numbers, got {value!r}", where)
    if _integer_setting(name):
        if not float(value).is_integer() or value < 1:
            raise SweepError(f"{name} must be a whole number >= 1, got {_show(value)}", where)
        return
    if not math.isfinite(value):
        raise SweepError(f"{name} must be a finite number, got {value!r}", where)
    rng = module.HYPER_RANGES.get(name)
    if rng is not None:
        low, low_open, high, high_open, text = rng
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            raise SweepError(f"{name} must lie in {text}, got {_show(value)}", where)


# --------------------------------------------------------------------------- building a space


def build_space(grid: Sequence[str] | Mapping[str, Sequence] | None = None,
                random: Sequence[str] | Mapping[str, object] | None = None,
                fixed: Mapping[str, object] | None = None, file: str | Path | None = None) -> Space:
    """A :class:`Space` from a file (``--space``), then grid and random dimensions given as
    option strings (``"lr=1e-3,1e-2"``, ``"beta2=loguniform(0.9,0.9999)"``) or as mappings
    (``{"lr": [1e-3, 1e-2]}``, ``{"beta2": "loguniform(0.9, 0.9999)"}``)."""
    space = load_space(file) if file is not None else Space()
    extra = Space(fixed=dict(fixed or {}))
    if isinstance(grid, Mapping):
        extra.grid = [_grid_from(name, values, f"grid {name}") for name, values in grid.items()]
    else:
        extra.grid = [parse_grid(g) for g in grid or ()]
    if isinstance(random, Mapping):
        extra.random = [_random_from(name, value, f"random {name}") for name, value in random.items()]
    else:
        extra.random = [parse_random(r) for r in random or ()]
    return space.merge(extra)


def _grid_from(name: str, values: object, where: str) -> Dim:
    if isinstance(values, str):
        return parse_grid(f"{name}={values}", where)
    if not isinstance(values, (list, tuple, np.ndarray)):
        values = [values]
    values = list(values)
    if not values:
        raise SweepError(f"the grid of {name} is empty: give at least one value", where)
    out = []
    for v in values:
        if isinstance(v, (np.integer, np.floating)):
            v = v.item()
        if isinstance(v, float) and v.is_integer() and _integer_setting(name):
            v = int(v)
        if not isinstance(v, (int, float, str)) or isinstance(v, bool):
            raise SweepError(f"{name} lists {v!r}: grid values are numbers or initialiser names", where)
        out.append(v)
    return Dim(name, "grid", tuple(out), where=where)


def _random_from(name: str, value: object, where: str) -> Dim:
    if isinstance(value, Dim):
        return Dim(name, value.kind, value.values, value.low, value.high, where)
    if isinstance(value, Mapping):  # { dist = "loguniform", low = 0.9, high = 0.9999 } / { choice = [...] }
        if "choice" in value:
            return _choice(name, value["choice"], where)
        unknown = sorted(set(value) - {"dist", "low", "high"})
        if unknown or "dist" not in value:
            raise SweepError("a distribution table needs dist, low, high (or choice = [...]); got keys "
                             f"{sorted(value)}", where)
        return parse_distribution(name, f"{value['dist']}({value.get('low', '')}, {value.get('high', '')})", where)
    if isinstance(value, (list, tuple)):
        return _choice(name, value, where)
    if not isinstance(value, str):
        raise SweepError(f"expected a distribution such as 'loguniform(0.9, 0.9999)', got {value!r}", where)
    return parse_distribution(name, value, where)


def _choice(name: str, values: object, where: str) -> Dim:
    grid = _grid_from(name, values, where)
    return Dim(name, "choice", grid.values, where=where)


def load_space(path: str | Path) -> Space:
    """Read a space file: tables [grid], [random], [fixed] and [sweep] (see the module doc)."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError("space file not found", where) from None
    except OSError as exc:
        raise SweepError(f"cannot read the space file: {exc.strerror or exc}", where) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"not valid TOML: {exc}", where) from None
    unknown = sorted(set(doc) - {"grid", "random", "fixed", "sweep"})
    if unknown:
        raise SweepError(f"unknown table [{unknown[0]}]; a space file has [grid], [random], [fixed] and [sweep]", where)
    for table in ("grid", "random", "fixed", "sweep"):
        if table in doc and not isinstance(doc[table], dict):
            raise SweepError(f"{table} must be a table ([{table}])", where)
    space = Space()
    space.grid = [_grid_from(k, v, f"{where} [grid] {k}") for k, v in doc.get("grid", {}).items()]
    space.random = [_random_from(k, v, f"{where} [random] {k}") for k, v in doc.get("random", {}).items()]
    for k, v in doc.get("fixed", {}).items():
        if not isinstance(v, (int, float, str)) or isinstance(v, bool):
            raise SweepError(f"a fixed value is one number (or an initialiser name), got {v!r}", f"{where} [fixed] {k}")
        space.fixed[k] = v
    options = doc.get("sweep", {})
    for k in options:
        if k not in SWEEP_KEYS:
            raise SweepError(f"unknown option {k!r}{suggest(k, SWEEP_KEYS)}", f"{where} [sweep]")
    space.options = dict(options)
    return space
