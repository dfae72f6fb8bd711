"""Pictures of a sweep (matplotlib, as :mod:`derive.runtime.plots` draws them: Agg canvas, no
pyplot state, PNGs written atomically):

* ``loss_vs_params.png`` — the loss against each swept setting, one point per seed replicate of
  each configuration (the mean over its folds), the best configuration at each grid value joined
  by a line, diverged runs as red crosses along the top; log axes for logarithmic dimensions;
* ``heatmap.png`` — two grid dimensions: each cell the best configuration's mean loss there;
* ``best_curves.png`` — the training (and measured validation) loss per epoch of the best
  configurations: each run faint, their mean bold.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ..runtime.plots import _wants_log, new_figure, save_png
from . import results as R
from .space import Dim, Space

#: Configurations drawn in best_curves.png.
BEST_CURVES = 5
#: A log loss axis shows at most this many decades above the lowest loss (runs far off are marked
#: along the top instead).
DECADES = 4
#: A configuration with more runs than this is drawn as a band in best_curves.png.
SPREAD_RUNS = 5


def plot_sweep(folder: Path, rows: list[dict], space: Space, config_names: list[str],
               stats: list[R.ConfigStats] | None = None) -> list[Path]:
    """Write the pictures that the sweep's dimensions allow; returns their paths. ``stats``:
    :func:`~derive.sweep.results.config_stats` of ``rows``, when the caller has them already."""
    stats = R.config_stats(rows, config_names) if stats is None else stats
    written = []
    dims = [d for d in space.dims if len({_key(r.get(d.name)) for r in rows}) > 1]
    if dims:
        written.append(plot_loss_vs_params(folder / "loss_vs_params.png", rows, dims, stats))
    grids = [d for d in space.grid if len(d.values) > 1]
    if len(grids) >= 2:
        written.append(plot_heatmap(folder / "heatmap.png", rows, grids[0], grids[1], stats))
    if any(r.get("loss_curve") for r in rows):
        written.append(plot_best_curves(folder / "best_curves.png", rows, stats, space.names()))
    return written


def _key(v: object) -> object:
    return round(v, 12) if isinstance(v, float) else v


def _loss(r: dict, key: str) -> float:
    v = r.get(key)
    return float(v) if r.get("status") != "diverged" and R._finite(v) else math.nan


def _per_replicate(rows: list[dict], key: str) -> list[tuple[dict, float, bool]]:
    """(a row of the configuration, its mean loss over folds, whether a fold diverged) per
    configuration and seed replicate."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["replicate"]), []).append(r)
    out = []
    for runs in groups.values():
        losses = [_loss(r, key) for r in runs]
        diverged = any(r.get("status") == "diverged" for r in runs)
        out.append((runs[0], float(np.mean(losses)) if not diverged and all(map(math.isfinite, losses)) else math.nan,
                    diverged))
    return out


def _label(key: str) -> str:
    return "validation loss" if key == "val_loss" else "training loss"


def _y_range(values: np.ndarray) -> tuple[float, float, bool]:
    """(low, high, log) of a loss axis: log when the losses span more than LOG_SPAN, and then at most
    :data:`DECADES` decades above the lowest, so that a few runs far off (finite but huge losses)
    do not squash the interesting ones into a line."""
    v = values[np.isfinite(values)]
    if not v.size:
        return 0.0, 1.0, False
    lo, hi = float(v.min()), float(v.max())
    if not _wants_log(v):
        pad = 0.06 * (hi - lo) or 0.1 * abs(hi) or 1.0
        return lo - pad, hi + pad, False
    hi = min(hi, lo * 10.0**DECADES)
    return lo / 1.4, hi * 1.4, True


def plot_loss_vs_params(path: Path, rows: list[dict], dims: list[Dim], stats: list[R.ConfigStats]) -> Path:
    key = R.loss_key(rows)
    points = _per_replicate(rows, key)
    replicates = sorted({r["replicate"] for r, _, _ in points})
    folds = max((r["fold"] for r in rows), default=0) + 1
    by_config = {s.config: s for s in stats}
    best = next((c for c, s in by_config.items() if s.losses), None)
    cols = min(3, len(dims))
    nrows = -(-len(dims) // cols)
    fig = new_figure(4.6 * cols, 3.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    lo, hi, logy = _y_range(np.array([v for _, v, _ in points]))
    for ax, dim in zip(axes, dims):
        cats = None if dim.numeric else sorted({str(r[dim.name]) for r, _, _ in points})

        def x_of(r, cats=cats, dim=dim):
            return cats.index(str(r[dim.name])) if cats is not None else float(r[dim.name])

        for i, rep in enumerate(replicates):
            shown = [(x_of(r), v) for r, v, _ in points if r["replicate"] == rep and math.isfinite(v) and v <= hi]
            xs, ys = [x for x, _ in shown], [v for _, v in shown]
            if cats is not None:  # spread the points of one category a little
                xs = [x + 0.08 * (i - (len(replicates) - 1) / 2) for x in xs]
            what = f"seed replicate {rep}" if len(replicates) > 1 else "one run"
            ax.plot(xs, ys, "o", ms=4, alpha=0.7, color=f"C{i % 10}",
                    label=what + (f" (mean over {folds} folds)" if folds > 1 and i == 0 else ""))
        if dim.kind == "grid" or cats is not None:  # the best configuration at each value, joined
            best_at: dict = {}
            for s in by_config.values():
                if s.losses and not s.diverged:
                    x = x_of(s.values)
                    best_at[x] = min(best_at.get(x, math.inf), s.mean)
            if best_at:
                xs = sorted(best_at)
                ax.plot(xs, [best_at[x] for x in xs], "-", color="0.2", lw=1.4, label="best at this value", zorder=4)
        if best is not None:
            ax.plot([x_of(by_config[best].values)], [by_config[best].mean], "*", color="C3", ms=13, zorder=6,
                    label=f"best: {by_config[best].mean:.4g}")
        if logy:
            ax.set_yscale("log")
        xs_all = sorted({x_of(r) for r, _, _ in points})
        logx = cats is None and dim.log and xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 10  # within a decade: linear
        if cats is None:
            _value_ticks(ax, xs_all if dim.kind == "grid" else [], logx)
        top = ax.get_xaxis_transform()  # x in data, y in axes: markers along the top edge
        off = [x_of(r) for r, v, _ in points if math.isfinite(v) and v > hi]
        if off:
            ax.plot(off, [0.97] * len(off), "^", color="0.35", ms=6, transform=top, clip_on=False,
                    label=f"off the scale ({len(off)})")
        bad = [x_of(r) for r, _, d in points if d]
        if bad:
            ax.plot(bad, [1.0] * len(bad), "x", color="red", ms=7, mew=1.5, transform=top, clip_on=False,
                    label=f"diverged ({len(bad)})")
        ax.set_ylim(lo, hi)
        if cats is not None:
            ax.set_xticks(range(len(cats)), cats, rotation=20, ha="right")
        ax.set_xlabel(dim.name + (" (log)" if logx else ""))
        ax.set_ylabel(_label(key))
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(f"{_label(key)} against {dim.name}", fontsize="medium")
    for ax in axes[len(dims):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small", loc="best")
    return save_png(fig, path)


def _value_ticks(ax, values: list[float], log: bool) -> None:
    """A log axis for a logarithmic dimension; ticks at a grid's ``values`` when they are few;
    written as plain numbers (2, 4, 8; 0.001, 0.01), never 2 x 10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 2, 5, 10, 20: labels in any decade
    if 0 < len(values) <= 8:
        ax.set_xticks(values)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_heatmap(path: Path, rows: list[dict], a: Dim, b: Dim, stats: list[R.ConfigStats]) -> Path:
    key = R.loss_key(rows)
    av, bv = list(a.values), list(b.values)
    if a.numeric:
        av.sort()
    if b.numeric:
        bv.sort()
    M = np.full((len(bv), len(av)), np.nan)
    for s in stats:
        if not s.losses or s.diverged:
            continue
        i, j = bv.index(s.values[b.name]), av.index(s.values[a.name])
        M[i, j] = s.mean if math.isnan(M[i, j]) else min(M[i, j], s.mean)
    fig = new_figure(1.2 + 1.0 * len(av) + 1.4, 1.4 + 0.6 * len(bv) + 0.6)
    ax = fig.subplots()
    finite = M[np.isfinite(M)]
    norm = None
    if finite.size and _wants_log(finite):  # at most DECADES decades of colour: beyond is the darkest
        from matplotlib.colors import LogNorm

        norm = LogNorm(vmin=finite.min(), vmax=min(finite.max(), finite.min() * 10.0**DECADES), clip=True)
    from matplotlib import colormaps

    image = ax.imshow(np.ma.masked_invalid(M), cmap=colormaps["viridis_r"].with_extremes(bad="0.85"), norm=norm,
                      aspect="auto")
    lo, hi = (norm.vmin, norm.vmax) if norm is not None else (finite.min(), finite.max()) if finite.size else (0, 1)
    for i in range(len(bv)):
        for j in range(len(av)):
            v = M[i, j]
            if math.isnan(v):
                ax.text(j, i, "diverged" if _any_diverged(rows, a, b, av[j], bv[i]) else "-", ha="center",
                        va="center", fontsize="small", color="0.3")
                continue
            t = (math.log(min(v, hi)) - math.log(lo)) / (math.log(hi) - math.log(lo)) if norm is not None and hi > lo \
                else (v - lo) / (hi - lo) if hi > lo else 0.0
            ax.text(j, i, _cell(v), ha="center", va="center", fontsize="small",
                    color="white" if t > 0.6 else "black", fontweight="bold" if v == lo else None)
    ax.set_xticks(range(len(av)), [_tick(v) for v in av])
    ax.set_yticks(range(len(bv)), [_tick(v) for v in bv])
    ax.set_xlabel(a.name)
    ax.set_ylabel(b.name)
    others = len(stats) > len(av) * len(bv)
    ax.set_title(f"{_label(key)}: mean over seeds x folds" + (",\nbest over the other dimensions" if others else ""),
                 fontsize="medium")
    fig.colorbar(image, ax=ax, label=_label(key))
    return save_png(fig, path)


def _cell(v: float) -> str:
    """A heatmap cell's number: 2,866 and 22,160 rather than 2.87e+03; 0.0123 and 0.456."""
    return f"{v:,.0f}" if 100 <= abs(v) < 1e7 else f"{v:.3g}"


def _any_diverged(rows: list[dict], a: Dim, b: Dim, x: object, y: object) -> bool:
    return any(r.get("status") == "diverged" and r.get(a.name) == x and r.get(b.name) == y for r in rows)


def _tick(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_best_curves(path: Path, rows: list[dict], stats: list[R.ConfigStats], swept: list[str]) -> Path:
    stats = [s for s in stats if s.losses][:BEST_CURVES]
    fig = new_figure(7.8, 4.8)
    ax = fig.subplots()
    arrays = []
    measured = banded = False
    for i, s in enumerate(stats):
        runs = [r for r in rows if r["config"] == s.config and r.get("status") != "diverged"]
        L = _stack([r.get("loss_curve") or [] for r in runs])
        V = _stack([r.get("val_curve") or [] for r in runs])
        epochs = np.arange(1, L.shape[1] + 1)
        colour = f"C{i}"
        if i > 0:
            pass  # the others: their mean only (their runs would hide each other)
        elif len(L) > SPREAD_RUNS:  # many runs: the band of their middle 80 %, not a tangle of lines
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # epochs no run reached
                low, high = np.nanpercentile(L, 10, axis=0), np.nanpercentile(L, 90, axis=0)
            ax.fill_between(epochs, low, high, color=colour, alpha=0.15, lw=0)
            banded = True
        else:
            for row in L:
                ax.plot(epochs, row, color=colour, lw=0.6, alpha=0.3)
        text = " ".join(f"{n}={_tick(s.values[n])}" for n in swept if n in s.values) or f"config {s.config}"
        ax.plot(epochs, np.nanmean(L, axis=0), color=colour, lw=2.0,
                label=f"#{i + 1} {text} ({s.mean:.4g})")
        arrays.append(L)
        if np.isfinite(V).any():
            seen = np.isfinite(V).any(axis=0)
            ax.plot(epochs[seen], np.nanmean(V[:, seen], axis=0), "o--", color=colour, ms=3.5, lw=1.0)
            arrays.append(V)
            measured = True
    if arrays and _wants_log(*[a[np.isfinite(a)] for a in arrays]):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    spread = "shaded: 10-90 % of #1's runs" if banded else "thin: #1's runs"
    ax.set_title(f"the {len(stats)} best configurations: the mean training loss of their runs per epoch\n({spread}"
                 + ("; circles, dashed: validation loss where measured" if measured else "") + ")", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    if stats:
        ax.legend(fontsize="small", loc="best")
    return save_png(fig, path)


def _stack(curves: list[list[float]]) -> np.ndarray:
    E = max((len(c) for c in curves), default=0)
    out = np.full((max(len(curves), 1), E), np.nan)
    for i, c in enumerate(curves):
        out[i, :len(c)] = np.asarray(c, dtype=float)
    return out
