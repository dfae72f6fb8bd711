"""Optimizers side by side on a function of two variables: ``derive plot-surface``.

Each optimizer minimises ``f(x, y)`` with the same generated kernels that train networks (see
:mod:`derive.objective`): SymPy derives the gradient, the optimizer's update rule becomes a Numba
kernel. The picture shows the contours of ``f``, the field of ``-∇f`` (arrows of equal length)
and every optimizer's path from the same start.

The objective modules are generated into a cache folder that outlives the process, so Numba's
own cache makes the second run fast: ``$DERIVE_CACHE_DIR/objectives`` when that variable is set,
else ``$XDG_CACHE_HOME/derive/objectives`` or ``~/.cache/derive/objectives``. One module per
optimizer and expression (the name holds a short hash of the expression); learning rates are
run-time arguments and need no new module.

>>> plot_surface("rosenbrock.png", "(1 - x)**2 + 100*(y - x**2)**2", start=(-1.2, 1.0), steps=2000,
...              lr={"sgd": 1e-3, "momentum": 2e-4, "rmsprop": 1e-2, "adam": 5e-2})   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import suggest
from .plots import PlotError, check_png_path, new_figure, require_matplotlib, save_png

__all__ = ["PRESETS", "Preset", "Run", "Comparison", "plot_surface", "plot_preset", "compare", "draw_comparison",
           "cache_dir", "parse_point", "parse_lr", "parse_names", "parse_box"]

DEFAULT_OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")
#: Learning rates for an expression without a preset (an optimizer not listed keeps its own default).
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "rmsprop": 0.01, "adagrad": 0.1, "adam": 0.05,
              "adamw": 0.05, "nadam": 0.05, "adadelta": 1.0}
MAX_STEPS = 1_000_000
#: A path is cut when it leaves the view box enlarged by this many box widths on every side.
FAR = 2.0


class SurfaceError(PlotError):
    """A bad argument to plot_surface or ``derive plot-surface``."""


@dataclass(frozen=True)
class Preset:
    """A classic objective with a start, a view box and learning rates that give readable paths."""

    expr: str
    start: tuple[float, float]
    box: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax
    steps: int
    lr: Mapping[str, float]
    minima: tuple[tuple[float, float], ...] = ()
    about: str = ""


PRESETS: dict[str, Preset] = {
    "rosenbrock": Preset(
        "(1 - x)**2 + 100*(y - x**2)**2", (-1.2, 1.0), (-2.0, 2.0, -1.0, 3.0), 2000,
        {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 3e-3, "adagrad": 0.05, "adam": 0.02,
         "adamw": 0.02, "nadam": 0.02},
        ((1.0, 1.0),),
        "Rosenbrock's banana: the descent into the curved valley is quick, the walk along its flat floor "
        "to the minimum (1, 1) is slow."),
    "saddle": Preset(
        "x**2 - y**2 + y**4/4", (1.5, 1e-3), (-2.0, 2.0, -2.2, 2.2), 200,
        {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "rmsprop": 0.01, "adagrad": 0.1, "adam": 0.02,
         "adamw": 0.02, "nadam": 0.02},
        ((0.0, math.sqrt(2.0)), (0.0, -math.sqrt(2.0))),
        "A saddle at the origin between two minima (0, ±√2). Started almost on the ridge y = 0, plain "
        "gradient descent slides into the saddle and stalls there; momentum and the adaptive methods escape."),
    "ravine": Preset(
        "x**2/100 + y**2", (-9.0, 2.0), (-10.0, 10.0, -2.5, 2.5), 100,
        {"sgd": 0.8, "momentum": 0.1, "nesterov": 0.1, "rmsprop": 0.1, "adagrad": 1.0, "adam": 0.3,
         "adamw": 0.3, "nadam": 0.3},
        ((0.0, 0.0),),
        "A long narrow valley (curvatures 0.02 and 2): the largest stable step of gradient descent makes it "
        "zig-zag across the steep direction and crawl along the flat one; momentum builds up speed along the "
        "valley, RMSprop and Adam scale each coordinate's step and go straight down."),
}


# ------------------------------------------------------------------------------------------
# parsing helpers (shared with the CLI: each raises SurfaceError naming the option)


def parse_point(text: str, what: str = "--start") -> tuple[float, float]:
    """'X,Y' -> (x, y), two finite numbers."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
        raise SurfaceError(f"{what} must be two finite numbers 'X,Y' such as -1.2,1; got {text!r}")
    return vals  # type: ignore[return-value]


def parse_box(text: str, what: str = "--box") -> tuple[float, float, float, float]:
    """'XMIN,XMAX,YMIN,YMAX' -> a box."""
    try:
        vals = tuple(float(p) for p in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise SurfaceError(f"{what} must be four numbers 'XMIN,XMAX,YMIN,YMAX' such as -2,2,-1,3; got {text!r}")
    return _check_box(vals, what)


def parse_names(text: str, what: str = "--optimizers") -> tuple[str, ...]:
    """'sgd,adam' -> ('sgd', 'adam')."""
    names = tuple(p.strip() for p in str(text).split(",") if p.strip())
    if not names:
        raise SurfaceError(f"{what} must name at least one optimizer, e.g. sgd,adam; got {text!r}")
    return names


def parse_lr(text: str, what: str = "--lr") -> float | dict[str, float]:
    """'0.01' -> 0.01 for every optimizer; 'sgd=0.001,adam=0.05' -> a dict."""
    text = str(text).strip()
    if "=" not in text:
        try:
            return float(text)
        except ValueError:
            raise SurfaceError(f"{what} must be a number or NAME=VALUE pairs such as sgd=0.001,adam=0.05; "
                               f"got {text!r}") from None
    out = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if name.strip() in out:
            raise SurfaceError(f"{what} gives {name.strip()} twice")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq or not name.strip():
            raise SurfaceError(f"{what}: {part.strip()!r} is not NAME=VALUE (e.g. adam=0.05)")
    return out


def _check_box(box, what: str = "box") -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise SurfaceError(f"{what} must be (xmin, xmax, ymin, ymax), got {box!r}") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise SurfaceError(f"{what} must be four finite numbers (xmin, xmax, ymin, ymax), got {box!r}")
    if not (vals[0] < vals[1] and vals[2] < vals[3]):
        raise SurfaceError(f"{what} must have xmin < xmax and ymin < ymax, got {box!r}")
    return vals  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# objective modules, generated once into a persistent cache


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where objective modules live: ``override``, ``$DERIVE_CACHE_DIR/objectives``,
    ``$XDG_CACHE_HOME/derive/objectives`` or ``~/.cache/derive/objectives``."""
    from .models import cache_dir as root

    return Path(override) if override is not None else root() / "objectives"


_LOADED: dict[tuple[str, str], object] = {}


def _objective_name(expr: str, variables: Sequence[str], optimizer: str) -> str:
    digest = hashlib.sha256(f"{expr}\0{','.join(variables)}".encode()).hexdigest()[:10]
    return f"{optimizer}_{digest}"


def load_objective(expr: str, variables: Sequence[str], optimizer: str, folder: str | os.PathLike | None = None):
    """The generated module minimising ``expr`` with ``optimizer`` (default hyperparameters).

    The file is rewritten only when its text changes, so Numba's cache (beside it, keyed by the
    file's time stamp) stays valid between runs; within a process the module is imported once.
    """
    from ..codegen.render import RUNTIME_NAME, runtime_text
    from ..files import write_atomic
    from ..objective import Objective

    folder = cache_dir(folder)
    obj = Objective(_objective_name(expr, variables, optimizer), expr, tuple(variables), optimizer)
    text = obj.render()  # raises SpecError for a bad expression or optimizer
    path = folder / f"{obj.name}.py"
    key = (str(path.absolute()), hashlib.sha256(text.encode()).hexdigest())
    if key in _LOADED:
        return _LOADED[key]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        runtime = folder / RUNTIME_NAME  # the kernel runtime the module loads from beside it
        if not runtime.is_file() or runtime.read_text(encoding="utf-8") != runtime_text():
            write_atomic(runtime, runtime_text())
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
    except OSError as exc:
        raise SurfaceError(f"cannot write the objective module {path}: {exc.strerror or exc} "
                           "(set DERIVE_CACHE_DIR to a writable folder)") from None
    mod_name = f"derive_objective_{obj.name}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    _LOADED[key] = module
    return module


# ------------------------------------------------------------------------------------------
# running the optimizers


@dataclass
class Run:
    """One optimizer's path: ``path`` (k+1, 2) and ``values`` (k+1,), cut where it diverged."""

    optimizer: str
    lr: float | None
    path: np.ndarray
    values: np.ndarray
    steps: int
    diverged_at: int | None = None

    @property
    def final(self) -> tuple[float, float]:
        return float(self.path[-1, 0]), float(self.path[-1, 1])

    @property
    def final_value(self) -> float:
        return float(self.values[-1])

    def describe(self) -> str:
        x, y = self.final
        if self.diverged_at is not None:
            return f"diverged at step {self.diverged_at} (last point ({x:.4g}, {y:.4g}), f = {self.final_value:.4g})"
        return f"final ({x:.4g}, {y:.4g}), f = {self.final_value:.4g} after {self.steps} steps"


@dataclass
class Comparison:
    """Everything the picture shows: the objective, the view box and one Run per optimizer."""

    expr: str
    variables: tuple[str, str]
    start: tuple[float, float]
    box: tuple[float, float, float, float]
    runs: list[Run]
    module: object = field(repr=False, default=None)
    minima: tuple[tuple[float, float], ...] = ()


def _check_optimizers(optimizers) -> tuple[str, ...]:
    from ..blocks import optimizers as registry

    if isinstance(optimizers, str):
        optimizers = parse_names(optimizers, "optimizers")
    names = tuple(optimizers)
    if not names:
        raise SurfaceError("optimizers is empty; name at least one, e.g. ('sgd', 'adam')")
    for name in names:
        if not isinstance(name, str) or name not in registry.REGISTRY:
            raise SurfaceError(f"unknown optimizer {name!r}{suggest(str(name), registry.REGISTRY)}")
    if len(set(names)) != len(names):
        raise SurfaceError(f"optimizers names one optimizer twice: {', '.join(names)}")
    return names


def _learning_rates(lr, names: Sequence[str], preset_lr: Mapping[str, float] | None) -> dict[str, float | None]:
    from ..blocks import optimizers as registry

    table = dict(DEFAULT_LR if preset_lr is None else preset_lr)
    if lr is None:
        given = {}
    elif isinstance(lr, Mapping):
        unknown = sorted(set(lr) - set(names))
        if unknown:
            raise SurfaceError(f"lr names {unknown[0]!r}, which is not among the optimizers ({', '.join(names)})")
        given = dict(lr)
    else:
        given = dict.fromkeys(names, lr)
    out = {}
    for name in names:
        hyper = registry.get(name, "lr").hyper
        if "lr" not in hyper:
            if name in given:
                raise SurfaceError(f"optimizer {name} has no learning rate 'lr'")
            out[name] = None
            continue
        value = given.get(name, table.get(name, hyper["lr"].default))
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value) or value <= 0:
            raise SurfaceError(f"the learning rate of {name} must be a positive finite number, got {value!r}")
        out[name] = float(value)
    return out


def _cut(path: np.ndarray, values: np.ndarray, far: tuple[float, float, float, float]) -> int | None:
    """The first index where the path is non-finite or far outside the box (None: never)."""
    x0, x1, y0, y1 = far
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & np.isfinite(path).all(axis=1)
                & (path[:, 0] >= x0) & (path[:, 0] <= x1) & (path[:, 1] >= y0) & (path[:, 1] <= y1))
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def _auto_box(start, runs_raw) -> tuple[float, float, float, float]:
    """A view box around the start and the paths (points farther than 10x the start's scale are ignored)."""
    sx, sy = start
    limit = 10.0 * (1.0 + max(abs(sx), abs(sy)))
    pts = [np.asarray([start], dtype=np.float64)]
    for path, _ in runs_raw:
        ok = np.isfinite(path).all(axis=1) & (np.abs(path) <= limit).all(axis=1)
        pts.append(path[ok])
    P = np.concatenate(pts)
    lo, hi = P.min(axis=0), P.max(axis=0)
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2 * 1.25, 0.5)
    half = np.maximum(half, half.max() / 4)  # not a sliver
    return (float(centre[0] - half[0]), float(centre[0] + half[0]), float(centre[1] - half[1]),
            float(centre[1] + half[1]))


def _check_variables(variables) -> tuple[str, str]:
    from ..objective import RESERVED_VARIABLES

    if isinstance(variables, str):
        variables = tuple(v.strip() for v in variables.split(","))
    variables = tuple(variables)
    if len(variables) != 2:
        raise SurfaceError(f"a surface needs exactly 2 variables, got {len(variables)}: {variables!r}")
    for v in variables:
        if not isinstance(v, str) or not v.isidentifier() or not v.isascii() or v.startswith("_"):
            raise SurfaceError(f"variable name {v!r} is not a plain identifier (letters, digits, '_')")
        if v in RESERVED_VARIABLES:
            raise SurfaceError(f"variable name {v!r} is reserved inside the generated kernels; choose another")
    if variables[0] == variables[1]:
        raise SurfaceError(f"the two variables must differ, got {variables!r}")
    return variables  # type: ignore[return-value]


def _parse(expr: str, variables: Sequence[str]):
    """The expression as SymPy (SpecError, naming the column, if it is not valid)."""
    import sympy as sp

    from ..expr import parse

    return parse(expr, {v: sp.Symbol(v, real=True) for v in variables}, where="expr")


def compare(expr: str, *, variables: Sequence[str] = ("x", "y"), optimizers=DEFAULT_OPTIMIZERS,
            start: Sequence[float], steps: int, lr=None, box=None, cache: str | os.PathLike | None = None,
            preset_lr: Mapping[str, float] | None = None, minima=()) -> Comparison:
    """Run every optimizer from ``start`` for ``steps`` steps; paths are cut where they diverge."""
    if not isinstance(expr, str):
        raise SurfaceError(f"expr must be a string such as 'x**2 + 3*y**2', got {type(expr).__name__}")
    variables = _check_variables(variables)
    _parse(expr, variables)
    try:
        sx, sy = (float(v) for v in start)
    except (TypeError, ValueError):
        raise SurfaceError(f"start must be two numbers (x, y), got {start!r}") from None
    if not (math.isfinite(sx) and math.isfinite(sy)):
        raise SurfaceError(f"start must be finite, got {start!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise SurfaceError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    names = _check_optimizers(optimizers)
    rates = _learning_rates(lr, names, preset_lr)
    if box is not None:
        box = _check_box(box)
        if not (box[0] <= sx <= box[1] and box[2] <= sy <= box[3]):
            raise SurfaceError(f"the start ({sx:g}, {sy:g}) lies outside the box {box}")
    modules = {name: load_objective(expr, variables, name, cache) for name in names}
    module = modules[names[0]]
    f0 = module.value([sx, sy])
    if not math.isfinite(f0):
        raise SurfaceError(f"f is not finite at the start ({sx:g}, {sy:g}): f = {f0}")
    raw = []
    for name in names:
        hyper = {} if rates[name] is None else {"lr": rates[name]}
        path, values = modules[name].minimize([sx, sy], int(steps), **hyper)
        raw.append((np.asarray(path, dtype=np.float64), np.asarray(values, dtype=np.float64)))
    if box is None:
        box = _auto_box((sx, sy), raw)
    w, h = box[1] - box[0], box[3] - box[2]
    far = (box[0] - FAR * w, box[1] + FAR * w, box[2] - FAR * h, box[3] + FAR * h)
    runs = []
    for name, (path, values) in zip(names, raw):
        k = _cut(path, values, far)
        if k is None and len(values) < steps + 1:  # the kernel stopped at a non-finite value
            k = len(values) - 1
        if k is not None:
            path, values = path[:k], values[:k]
        runs.append(Run(name, rates[name], path, values, int(steps), k))
    return Comparison(expr, variables, (sx, sy), box, runs, module, tuple(minima))


# ------------------------------------------------------------------------------------------
# the picture


def _grid_values(module, box, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = np.linspace(box[0], box[1], n), np.linspace(box[2], box[3], n)
    XX, YY = np.meshgrid(xs, ys)
    kernel = getattr(module, "_value", None)
    Z = np.empty_like(XX)
    point = np.empty(2)
    for idx in np.ndindex(XX.shape):
        point[0], point[1] = XX[idx], YY[idx]
        Z[idx] = kernel(point) if kernel is not None else module.value(point)
    return XX, YY, Z


def _levels(Z: np.ndarray):
    """Contour levels and a norm: log-spaced when f >= 0 spans decades, else linear (top 2 % clipped)."""
    from matplotlib.colors import LogNorm, Normalize

    finite = Z[np.isfinite(Z)]
    if finite.size == 0:
        raise SurfaceError("f is not finite anywhere in the box")
    lo, hi = float(finite.min()), float(np.percentile(finite, 99))
    if hi <= lo:
        hi = float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    if lo >= 0:
        floor = max(float(finite[finite > 0].min()) if (finite > 0).any() else hi * 1e-6, hi * 1e-6)
        if hi / floor > 1e3:
            levels = np.logspace(math.log10(floor), math.log10(hi), 24)
            return levels, LogNorm(levels[0], levels[-1]), True
    from matplotlib.ticker import MaxNLocator

    levels = MaxNLocator(24).tick_values(lo, hi)
    return levels, Normalize(levels[0], levels[-1]), False


#: One colour per optimizer, the same in every picture.
_COLOURS = {"sgd": "#d62728", "momentum": "#ff7f0e", "rmsprop": "#2ca02c", "adam": "#9467bd", "nesterov": "#8c564b",
            "adagrad": "#e377c2", "adadelta": "#bcbd22", "adamw": "#17becf", "nadam": "#7f7f7f"}
_PALETTE = ["#1f77b4", "#000000", "#aa6600", "#ff00aa", "#00aa88", *_COLOURS.values()]


def _lr_text(lr: float | None) -> str:
    return "" if lr is None else f" (lr {lr:g})"


def draw_comparison(comparison: Comparison, path: str | os.PathLike, *, title: str = "") -> Path:
    """Write the picture of a :class:`Comparison` as PNG; returns the path."""
    require_matplotlib()
    from matplotlib.lines import Line2D

    c = comparison
    box = c.box
    fig = new_figure(8.6, 6.6)
    ax = fig.subplots()
    XX, YY, Z = _grid_values(c.module, box, 220)
    levels, norm, logscale = _levels(Z)
    Zc = np.clip(np.where(np.isfinite(Z), Z, levels[-1]), levels[0], levels[-1])
    filled = ax.contourf(XX, YY, Zc, levels=levels, norm=norm, cmap="Blues_r", alpha=0.9)
    ax.contour(XX, YY, Zc, levels=levels, norm=norm, colors="k", linewidths=0.3, alpha=0.25)
    bar = fig.colorbar(filled, ax=ax, shrink=0.92, pad=0.02)
    bar.set_label(f"f({', '.join(c.variables)})" + (" (log scale)" if logscale else ""))
    if logscale:
        from matplotlib.ticker import LogFormatterSciNotation

        lo, hi = math.ceil(math.log10(levels[0])), math.floor(math.log10(levels[-1]))
        step = max(1, (hi - lo + 1) // 8)
        bar.set_ticks([10.0**k for k in range(lo, hi + 1, step)])
        bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation())
        bar.ax.minorticks_off()
    # the field of -grad f, as arrows of equal length
    n = 17
    qx, qy = np.linspace(box[0], box[1], n + 2)[1:-1], np.linspace(box[2], box[3], n + 2)[1:-1]
    QX, QY = np.meshgrid(qx, qy)
    U, V = np.zeros_like(QX), np.zeros_like(QY)
    for idx in np.ndindex(QX.shape):
        g = c.module.gradient([QX[idx], QY[idx]])
        norm_g = math.hypot(g[0], g[1])
        if math.isfinite(norm_g) and norm_g > 0:
            U[idx], V[idx] = -g[0] / norm_g, -g[1] / norm_g
    # equal-length arrows: the direction is normalised in axes units, so every arrow is as long on screen
    w, h = box[1] - box[0], box[3] - box[2]
    ua, va = U / w, V / h
    length = np.hypot(ua, va)
    length[length == 0] = 1.0
    arrow = 0.55 / n  # a fraction of the axes
    ax.quiver(QX, QY, ua / length * w * arrow, va / length * h * arrow, angles="xy", scale_units="xy", scale=1,
              color="0.25", alpha=0.45, pivot="mid", width=0.0025, headwidth=4, headlength=4.5, zorder=2)
    spare = [col for col in _PALETTE if col not in {_COLOURS.get(r.optimizer) for r in c.runs}]
    handles = []
    for i, run in enumerate(c.runs):
        colour = _COLOURS.get(run.optimizer) or (spare.pop(0) if spare else "k")  # user-declared: a spare one
        every = max(1, (len(run.path) - 1) // 20)
        width = 3.6 - 2.2 * i / max(1, len(c.runs) - 1)  # later paths thinner and on top: overlaps stay visible
        ax.plot(run.path[:, 0], run.path[:, 1], "-", color=colour, lw=width, marker="o", ms=1.2 + width,
                markevery=every, mec="w", mew=0.5, zorder=4 + 0.01 * i)
        ax.plot([run.path[-1, 0]], [run.path[-1, 1]], "o", ms=8, color=colour, mec="k", mew=1.0, zorder=5)
        if run.diverged_at is not None:
            note = f"diverged at step {run.diverged_at}"
        else:
            note = f"f = {run.final_value:.3g} after {run.steps} steps"
        handles.append(Line2D([], [], color=colour, lw=2, marker="o", ms=5, mec="w", mew=0.5,
                              label=f"{run.optimizer}{_lr_text(run.lr)}: {note}"))
    sx, sy = c.start
    ax.plot([sx], [sy], "*", ms=17, color="gold", mec="k", mew=1.0, zorder=6)
    handles.append(Line2D([], [], ls="", marker="*", ms=12, color="gold", mec="k", label=f"start ({sx:g}, {sy:g})"))
    if c.minima:
        mx, my = zip(*c.minima)
        ax.plot(mx, my, "x", ms=11, color="k", mew=2.0, zorder=6)
        handles.append(Line2D([], [], ls="", marker="x", ms=9, color="k", mew=2.0, label="minimum"))
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_xlabel(c.variables[0])
    ax.set_ylabel(c.variables[1])
    ax.set_title(title or f"f({', '.join(c.variables)}) = {c.expr}", fontsize="medium")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize="small",
                       frameon=False)
    return save_png(fig, path)


def plot_surface(path: str | os.PathLike, expr: str, *, variables: Sequence[str] = ("x", "y"),
                 optimizers=DEFAULT_OPTIMIZERS, start: Sequence[float], steps: int, lr=None, box=None,
                 title: str = "", cache: str | os.PathLike | None = None, minima=()) -> Path:
    """Minimise ``expr`` with each optimizer from ``start`` and write the paths over the contours as PNG.

    ``lr``: one learning rate for all, a dict per optimizer (the others get :data:`DEFAULT_LR`), or
    None. ``box``: (xmin, xmax, ymin, ymax), or None to fit the paths. ``cache``: the folder of the
    generated objective modules (default: :func:`cache_dir`). Returns the path of the PNG.
    """
    check_png_path(path)
    c = compare(expr, variables=variables, optimizers=optimizers, start=start, steps=steps, lr=lr, box=box,
                cache=cache, minima=minima)
    return draw_comparison(c, path, title=title)


def preset(name: str) -> Preset:
    """The preset called ``name`` (SurfaceError naming the valid ones otherwise)."""
    if name not in PRESETS:
        hint = "" if str(name).isidentifier() else " (give an expression with --expr)"
        raise SurfaceError(f"unknown preset {name!r}{hint}{suggest(str(name), PRESETS)}")
    return PRESETS[name]


def compare_preset(name: str, *, optimizers=DEFAULT_OPTIMIZERS, start=None, steps=None, lr=None, box=None,
                   cache=None) -> Comparison:
    """:func:`compare` on a preset; each argument given replaces the preset's."""
    p = preset(name)
    return compare(p.expr, optimizers=optimizers, start=p.start if start is None else start,
                   steps=p.steps if steps is None else steps, lr=lr, box=p.box if box is None else box,
                   cache=cache, preset_lr=p.lr, minima=p.minima)


def plot_preset(name: str, path: str | os.PathLike, *, title: str = "", **overrides) -> Path:
    """Write the picture of a preset (``rosenbrock``, ``saddle``, ``ravine``); see :func:`compare_preset`."""
    check_png_path(path)
    c = compare_preset(name, **overrides)
    return draw_comparison(c, path, title=title or f"{name}: f(x, y) = {c.expr}")

