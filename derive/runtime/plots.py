"""Pictures of a training run: loss curves, gradient norms per layer, the decision boundary.

matplotlib is an optional extra (``pip install 'derive[plot]'``): it is imported only when a
plot is drawn, with the non-interactive Agg canvas and no pyplot global state, so plotting works
on a headless machine and from several threads. Every PNG is written atomically (a temporary file
in the same folder, then :func:`os.replace`), so a reader never sees half a file.

>>> plot_training("run.png", loss=history, val_loss=val_history, grad_norms=norms, best=2,
...               predict=lambda P: module.forward(params, P), X=X, Y=Y)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DeriveError
from ..files import atomic_writer

__all__ = ["PlotError", "plot_training", "plot_losses", "plot_grad_norms", "plot_decision_boundary",
           "plot_confusion", "plot_decision_regions"]

#: Data spanning more than this ratio (max / min, all positive) gets a log-scaled axis.
LOG_SPAN = 100.0
#: Resolution of the decision-boundary grid (points per axis).
GRID = 160


class PlotError(DeriveError, ValueError):
    """Plot data of the wrong shape or type, or matplotlib missing."""


# ------------------------------------------------------------------------------------------
# matplotlib, lazily


def require_matplotlib():
    """Import matplotlib (Agg canvas only) or raise a PlotError that says how to install it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise PlotError("plotting needs matplotlib, which is not installed: "
                        f"pip install 'derive[plot]' (or pip install matplotlib) [{exc}]") from None
    return matplotlib


def new_figure(width: float, height: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global state)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_png_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it can name a PNG file to write (checked before any work is done)."""
    if not isinstance(path, (str, os.PathLike)):
        raise PlotError(f"the output path must be a file name ending in .png, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise PlotError(f"{path} is a folder; give a file name such as {path / 'plot.png'}")
    if path.suffix.lower() != ".png":
        raise PlotError(f"the output file must end in .png, got {str(path)!r}")
    return path


def save_png(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` as PNG through a temporary file in the same folder."""
    path = check_png_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as fh:
            fig.savefig(fh, format="png", dpi=dpi)
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


# ------------------------------------------------------------------------------------------
# input checks


def _array(value, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PlotError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if arr.ndim not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise PlotError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise PlotError(f"{name} is empty (shape {arr.shape})")
    return arr


def check_losses(loss, val_loss=None, best: int = 0) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``loss`` as (restarts, epochs) (a 1-D array is one run), ``val_loss`` of the same shape."""
    L = _array(loss, "loss", (1, 2))
    L = L[None, :] if L.ndim == 1 else L
    V = None
    if val_loss is not None:
        V = _array(val_loss, "val_loss", (1, 2))
        V = V[None, :] if V.ndim == 1 else V
        if V.shape != L.shape:
            raise PlotError(f"val_loss has shape {V.shape} but loss has {L.shape}; "
                            "both are (restarts, epochs)")
        if not np.isfinite(V).any():  # no validation split: nothing to draw or to label
            V = None
    return L, V, _check_best(best, L.shape[0])


def _check_best(best, restarts: int) -> int:
    if isinstance(best, bool) or not isinstance(best, (int, np.integer)):
        raise PlotError(f"best must be an integer (the index of the best restart), got {best!r}")
    if not 0 <= best < restarts:
        raise PlotError(f"best={best} is out of range: loss has {restarts} restart(s), indices 0..{restarts - 1}")
    return int(best)


def check_grad_norms(grad_norms, restarts: int, epochs: int, layer_names: Sequence[str] | None = None):
    """``grad_norms`` as (restarts, epochs, layers) (2-D allowed for one run); layer labels."""
    G = _array(grad_norms, "grad_norms", (2, 3))
    if G.ndim == 2:
        if restarts != 1:
            raise PlotError(f"grad_norms has shape {G.shape} (epochs, layers) but loss has {restarts} restarts; "
                            "give (restarts, epochs, layers)")
        G = G[None]
    if G.shape[:2] != (restarts, epochs):
        raise PlotError(f"grad_norms has shape {G.shape} but loss has {restarts} restart(s) x {epochs} epoch(s); "
                        "grad_norms is (restarts, epochs, layers)")
    n_layers = G.shape[2]
    if layer_names is None:
        names = [f"layer {i + 1}" for i in range(n_layers)]
    else:
        if isinstance(layer_names, str):
            raise PlotError("layer_names must be a sequence of names, not one string")
        names = [str(n) for n in layer_names]
        if len(names) != n_layers:
            raise PlotError(f"layer_names has {len(names)} name(s) but grad_norms has {n_layers} layer(s)")
    return G, names


def check_points(X, Y=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs (N, d) and optional targets (N,) or (N, 1)."""
    X = _array(X, "X", (2,))
    if not np.isfinite(X).all():
        raise PlotError("X contains NaN or infinite values")
    if Y is None:
        return X, None
    Y = _array(Y, "Y", (1, 2))
    if Y.ndim == 2:
        if Y.shape[1] != 1:
            raise PlotError(f"Y must be (N,) or (N, 1) with one target per row of X, got shape {Y.shape}")
        Y = Y[:, 0]
    if Y.shape[0] != X.shape[0]:
        raise PlotError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    if not np.isfinite(Y).all():
        raise PlotError("Y contains NaN or infinite values")
    return X, Y


# ------------------------------------------------------------------------------------------
# panels (each draws into a given matplotlib Axes)


def _finite_positive(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a) & (a > 0)]


def _wants_log(*arrays: np.ndarray | None) -> bool:
    vals = [a[np.isfinite(a)] for a in arrays if a is not None]
    vals = np.concatenate(vals) if vals else np.empty(0)
    if vals.size == 0 or (vals <= 0).any():
        return False
    return float(vals.max()) / float(vals.min()) > LOG_SPAN


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def draw_losses(ax, loss: np.ndarray, val_loss: np.ndarray | None = None, best: int = 0) -> None:
    """Loss per epoch: the best restart solid (validation dashed), the others faint."""
    R, E = loss.shape
    epochs = np.arange(1, E + 1)
    arr = [loss] if val_loss is None else [loss, val_loss]
    finite = lambda a: np.where(np.isfinite(a), a, np.nan)  # noqa: E731 - inf is not drawn either
    for r in range(R):
        if r == best:
            continue
        label = "other restarts" if r == (1 if best == 0 else 0) else None
        ax.plot(epochs, finite(loss[r]), color="0.55", lw=0.7, alpha=0.6, label=label)
        if val_loss is not None:
            ax.plot(epochs, finite(val_loss[r]), color="0.55", lw=0.7, alpha=0.45, ls="--")
    which = f" (best of {R} restarts: #{best + 1})" if R > 1 else ""
    ax.plot(epochs, finite(loss[best]), color="C0", lw=1.8, label=f"train{which}")
    if val_loss is not None:
        ax.plot(epochs, finite(val_loss[best]), color="C1", lw=1.8, ls="--", label="validation")
    track = val_loss[best] if val_loss is not None else loss[best]
    ok = np.isfinite(track)
    if ok.any():
        k = int(np.nanargmin(np.where(ok, track, np.nan)))
        what = "validation" if val_loss is not None else "train"
        ax.plot([k + 1], [track[k]], "o", color="C3", ms=6, zorder=5,
                label=f"lowest {what}: {track[k]:.4g} (epoch {k + 1})")
    if not np.isfinite(loss[best]).any():
        _no_data(ax, "no finite loss in the best restart")
    if _wants_log(*arr):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    if E <= 12:
        ax.set_xticks(epochs)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def draw_grad_norms(ax, grad_norms: np.ndarray, names: Sequence[str], best: int = 0) -> None:
    """‖∂L/∂W_l‖ per layer per epoch of the best restart on a log scale."""
    G = grad_norms[best]
    E, n_layers = G.shape
    epochs = np.arange(1, E + 1)
    shown = np.where(np.isfinite(G) & (G > 0), G, np.nan)  # log scale: zeros and NaN are not drawn
    cmap = _layer_colours(n_layers)
    for i in range(n_layers):
        ax.plot(epochs, shown[:, i], color=cmap[i], lw=1.5, label=names[i], marker="." if E <= 30 else None)
    if np.isfinite(shown).any():
        ax.set_yscale("log")
    else:
        _no_data(ax, "no positive finite gradient norm")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"gradient norm $\Vert\partial L / \partial W_l\Vert$")
    ax.set_title("Gradient norm per layer" + (f" (restart #{best + 1})" if grad_norms.shape[0] > 1 else ""))
    if E <= 12:
        ax.set_xticks(epochs)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="best", ncol=2 if n_layers > 6 else 1)


def _layer_colours(n: int) -> list:
    require_matplotlib()
    from matplotlib import colormaps

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(i / (n - 1)) for i in range(n)]


def draw_decision_boundary(ax, predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                           Y: np.ndarray | None = None, grid: int = GRID):
    """P(y = 1) over a grid covering the data, the 0.5 contour and the points coloured by Y."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, hi = lo - 0.15 * span, hi + 0.15 * span
    gx, gy = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
    XX, YY = np.meshgrid(gx, gy)
    P = np.ascontiguousarray(np.column_stack([XX.ravel(), YY.ravel()]), dtype=np.float64)
    try:
        out = predict(P)
    except DeriveError:
        raise
    except Exception as exc:
        raise PlotError(f"predict failed on a ({P.shape[0]}, 2) grid of points: {type(exc).__name__}: {exc}") from exc
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        raise PlotError(f"predict must return an array of numbers, got {type(out).__name__}") from None
    if out.shape not in ((P.shape[0], 1), (P.shape[0],)):
        raise PlotError(f"predict returned shape {out.shape} for {P.shape[0]} points; expected "
                        f"({P.shape[0]}, 1) probabilities")
    Z = out.reshape(grid, grid)
    Z = np.clip(np.where(np.isfinite(Z), Z, np.nan), 0.0, 1.0)
    levels = np.linspace(0.0, 1.0, 11)
    filled = ax.contourf(XX, YY, Z, levels=levels, cmap="RdBu_r", alpha=0.75)
    fig = ax.get_figure()
    bar = fig.colorbar(filled, ax=ax, shrink=0.9)
    bar.set_label("P(y = 1)")
    if np.nanmin(Z) < 0.5 < np.nanmax(Z):
        ax.contour(XX, YY, Z, levels=[0.5], colors="k", linewidths=1.8)
        ax.plot([], [], color="k", lw=1.8, label="P = 0.5")
    if Y is None:
        ax.scatter(X[:, 0], X[:, 1], s=22, c="k", edgecolors="w", linewidths=0.6, label="data", zorder=3)
    else:
        pos = Y >= 0.5
        ax.scatter(X[~pos, 0], X[~pos, 1], s=28, c="#2166ac", edgecolors="w", linewidths=0.7, label="y = 0",
                   zorder=3)
        ax.scatter(X[pos, 0], X[pos, 1], s=28, c="#b2182b", edgecolors="w", linewidths=0.7, marker="s",
                   label="y = 1", zorder=3)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("Decision boundary")
    ax.legend(fontsize="small", loc="best", framealpha=0.85)
    return Z


# ------------------------------------------------------------------------------------------
# entry points


def plot_training(path: str | os.PathLike, *, loss, val_loss=None, grad_norms=None, best: int = 0,
                  layer_names: Sequence[str] | None = None, predict: Callable[[np.ndarray], np.ndarray] | None = None,
                  X=None, Y=None, title: str = "", classes: Sequence | None = None, confusion=None,
                  confusion_rows: str = "") -> Path:
    """Write one PNG with the story of a training run; returns its path.

    * ``loss`` (restarts R, epochs E): the training loss per restart and epoch (R = 1 without
      restarts; a 1-D array is one run). ``val_loss``: the same shape, or None. NaN entries (a run
      stopped early) are not drawn. The restart ``best`` is drawn solid, the others faint.
    * ``grad_norms`` (R, E, L): ‖∂L/∂W_l‖ per layer and epoch; the best restart's curves are drawn
      on a log scale, labelled ``layer 1 … layer L`` or ``layer_names``.
    * ``predict`` (with ``X`` (N, 2) and ``Y`` (N,) of 0/1): maps a (M, 2) float64 array of points to
      (M, 1) probabilities; its 0.5 contour is the decision boundary. With another number of input
      columns, or no ``predict``, this panel is left out.
    * ``classes`` (C class names) makes it a classifier's picture: ``predict`` then gives (M, C)
      class probabilities (or (M, 1) for a sigmoid and 2 classes), ``Y`` each row's class index,
      and the panel shows the decision regions of every class (:func:`draw_decision_regions`).
    * ``confusion`` (C, C) counts, rows = true class: a confusion-matrix panel, its axes named by
      ``classes`` (or 0 ... C-1); ``confusion_rows`` says which rows it counts ("validation").
    """
    check_png_path(path)
    L, V, best = check_losses(loss, val_loss, best)
    G = names = None
    if grad_norms is not None:
        G, names = check_grad_norms(grad_norms, *L.shape, layer_names)
    elif layer_names is not None:
        raise PlotError("layer_names was given without grad_norms")
    class_names = None if classes is None else check_classes(classes)
    M = None
    if confusion is not None:
        M, confusion_names = check_confusion(confusion, class_names if class_names is not None
                                             else [str(k) for k in range(np.shape(confusion)[0])])
    boundary = False
    if predict is not None:
        if not callable(predict):
            raise PlotError(f"predict must be a function of a (M, 2) array of points, got {type(predict).__name__}")
        if X is None:
            raise PlotError("predict was given without X (the inputs, (N, 2), to draw the boundary around)")
        Xa, Ya = check_points(X) if class_names is not None else check_points(X, Y)
        boundary = Xa.shape[1] == 2
        if boundary and class_names is not None:
            Xa, Ya = check_class_points(Xa, Y, class_names)
    elif X is not None:
        Xa, Ya = check_points(X, Y)  # validated, but there is nothing to draw without predict
    regions = boundary and class_names is not None
    widths = [5.4] + [5.4] * (G is not None)
    if boundary:
        widths.append(6.2 + (1.5 if regions and len(class_names) > 6 else 0.0))
    height = 4.4
    if M is not None:
        C = M.shape[0]
        height = float(np.clip(0.45 * C + 1.6, 4.4, 10.0))
        widths.append(height + 0.3)  # a square matrix, its labels and the colour bar
    fig = new_figure(sum(widths), height)
    axes = fig.subplots(1, len(widths), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    draw_losses(axes[0], L, V, best)
    if G is not None:
        draw_grad_norms(axes[1], G, names, best)
    if regions:
        draw_decision_regions(axes[1 + (G is not None)], predict, Xa, Ya, class_names)
    elif boundary:
        draw_decision_boundary(axes[1 + (G is not None)], predict, Xa, Ya)
    if M is not None:
        draw_confusion(axes[-1], M, confusion_names, cell_inches=(widths[-1] - 1.8) / M.shape[0],
                       rows=confusion_rows)
    if title:
        fig.suptitle(title, fontsize="large")
    return save_png(fig, path)


def plot_losses(path: str | os.PathLike, loss, val_loss=None, *, best: int = 0, title: str = "") -> Path:
    """Only the loss panel of :func:`plot_training`."""
    return plot_training(path, loss=loss, val_loss=val_loss, best=best, title=title)


def plot_grad_norms(path: str | os.PathLike, grad_norms, *, best: int = 0,
                    layer_names: Sequence[str] | None = None, title: str = "") -> Path:
    """Only the gradient-norm panel: ``grad_norms`` (R, E, L) or (E, L)."""
    G = _array(grad_norms, "grad_norms", (2, 3))
    G = G[None] if G.ndim == 2 else G
    best = _check_best(best, G.shape[0])
    G, names = check_grad_norms(G, G.shape[0], G.shape[1], layer_names)
    fig = new_figure(6.0, 4.4)
    draw_grad_norms(fig.subplots(), G, names, best)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def plot_decision_boundary(path: str | os.PathLike, predict: Callable[[np.ndarray], np.ndarray], X, Y=None, *,
                           title: str = "") -> Path:
    """Only the decision-boundary panel; ``X`` must have exactly 2 columns here."""
    if not callable(predict):
        raise PlotError(f"predict must be a function of a (M, 2) array of points, got {type(predict).__name__}")
    X, Y = check_points(X, Y)
    if X.shape[1] != 2:
        raise PlotError(f"a decision boundary needs exactly 2 input columns; X has {X.shape[1]}")
    fig = new_figure(6.4, 5.0)
    draw_decision_boundary(fig.subplots(), predict, X, Y)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)



# ------------------------------------------------------------------------------------------
# classifiers: the confusion matrix and the decision regions of K classes


#: Markers for the classes' points (a second cue beside colour, for readers who see few colours),
#: each with a size factor that makes them look equally large.
MARKERS = (("o", 1.0), ("s", 0.9), ("^", 1.2), ("D", 0.75), ("v", 1.2), ("P", 1.3), ("X", 1.3), ("*", 1.9),
           ("p", 1.2), ("h", 1.1))


def check_classes(classes, n: int | None = None, what: str = "classes") -> list[str]:
    """The class names as strings (``n`` of them when given)."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)):
        raise PlotError(f"{what} must be a sequence of class names, got {type(classes).__name__}")
    names = [str(c) for c in (classes.tolist() if isinstance(classes, np.ndarray) else classes)]
    if not names:
        raise PlotError(f"{what} is empty")
    if len(set(names)) != len(names):
        twice = next(c for c in names if names.count(c) > 1)
        raise PlotError(f"{what}: the class {twice!r} is named twice")
    if n is not None and len(names) != n:
        raise PlotError(f"{len(names)} class name(s) for {n} classes")
    return names


def check_confusion(matrix, classes, normalize=None) -> tuple[np.ndarray, list[str]]:
    """A (C, C) matrix of counts (rows = true class) and its C class names."""
    M = _array(matrix, "the confusion matrix", (2,))
    if M.shape[0] != M.shape[1]:
        raise PlotError(f"the confusion matrix must be square (C, C), got shape {M.shape}")
    if not np.isfinite(M).all() or (M < 0).any():
        raise PlotError("the confusion matrix must hold counts: finite numbers >= 0")
    if normalize not in (None, "true"):
        raise PlotError(f"normalize must be None or 'true' (each row divided by its sum), got {normalize!r}")
    return M, check_classes(classes, M.shape[0])


def class_colours(n: int) -> list:
    """``n`` distinct RGBA colours: tab10 up to 10 classes, tab20 up to 20, then a hue circle."""
    require_matplotlib()
    from matplotlib import colormaps

    if n <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["hsv"]
    return [cmap(i / n) for i in range(n)]


def _tick_labels(ax, names: Sequence[str], cell_inches: float) -> None:
    """Class names on both axes; the x labels turned 45 degrees when they would not fit a cell."""
    ticks = np.arange(len(names))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    points = 10 if len(names) <= 12 else 8 if len(names) <= 24 else 6.5
    longest = max(len(n) for n in names)
    if longest * points * 0.62 / 72 > 0.9 * cell_inches:  # ~0.62 em per character
        ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor", fontsize=points)
    else:
        ax.set_xticklabels(names, fontsize=points)
    ax.set_yticklabels(names, fontsize=points)


def draw_confusion(ax, matrix: np.ndarray, names: Sequence[str], normalize=None,
                   cell_inches: float = 0.6, rows: str = "") -> np.ndarray:
    """The confusion matrix as coloured cells, rows = true class, with the numbers written in.

    ``normalize='true'`` divides each row by its sum (the recall of each class on the diagonal);
    a row with no samples stays blank. The colour scale is a square root, so that a few errors
    still show beside a diagonal of hundreds. ``rows`` says which rows were counted (for the
    title: "validation"). Returns the values drawn.
    """
    require_matplotlib()
    from matplotlib.colors import PowerNorm

    C = matrix.shape[0]
    total = matrix.sum()
    shown = matrix
    if normalize == "true":
        sums = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, sums, out=np.full_like(matrix, np.nan), where=sums > 0)
    top = 1.0 if normalize == "true" else max(float(np.nanmax(shown)), 1.0)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=top)
    image = ax.imshow(np.nan_to_num(shown), cmap="Blues", norm=norm, interpolation="nearest")
    bar = ax.get_figure().colorbar(image, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label("fraction of the true class" if normalize == "true" else "samples")
    integral = normalize is None and np.array_equal(matrix, np.round(matrix))
    if C <= 30:
        size = 10.5 if C <= 6 else 9 if C <= 12 else 7 if C <= 20 else 5.5
        for i in range(C):
            for j in range(C):
                v = shown[i, j]
                if not np.isfinite(v):
                    continue
                text = (f"{v:.2f}" if normalize == "true" else f"{int(v)}" if integral else f"{v:.3g}")
                if v == 0:
                    colour, text = "0.6", "0"
                else:
                    colour = "white" if norm(v) > 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=size,
                        fontweight="bold" if i == j and v > 0 else "normal")
    _tick_labels(ax, names, cell_inches)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    # thin white lines between the cells
    ax.set_xticks(np.arange(C + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(C + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    right = float(np.trace(matrix))
    accuracy = f"\naccuracy {right / total:.1%} of {int(total) if integral else f'{total:g}'}" if total > 0 else ""
    norm = ", rows normalised" if normalize == "true" else ""
    which = f" ({rows} rows)" if rows else ""
    ax.set_title(f"Confusion matrix{which}{norm}{accuracy}")
    return shown


def plot_confusion(matrix, classes: Sequence, path: str | os.PathLike, normalize=None, *, title: str = "") -> Path:
    """Write the confusion matrix ``matrix`` (C, C) (``[i, j]`` = samples of true class ``i``
    predicted as ``j``) as a PNG, the ``classes`` (C names) along both axes; returns the path.
    ``normalize='true'`` shows each row as fractions of its sum."""
    check_png_path(path)
    M, names = check_confusion(matrix, classes, normalize)
    C = M.shape[0]
    side = float(np.clip(0.45 * C + 2.8, 4.6, 13.0))
    fig = new_figure(side + 1.0, side)
    draw_confusion(fig.subplots(), M, names, normalize, cell_inches=(side - 1.6) / C)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def check_class_points(X, y, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs (N, 2) and each row's true class index (N,) (y given as indices or as class names)."""
    X = _array(X, "X", (2,))
    if X.shape[1] != 2:
        raise PlotError(f"decision regions need exactly 2 input columns; X has {X.shape[1]}")
    if not np.isfinite(X).all():
        raise PlotError("X contains NaN or infinite values")
    if y is None:
        return X, None
    raw = np.asarray(y)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise PlotError(f"y must be (N,) or (N, 1): one class per row of X, got shape {raw.shape}")
    if raw.shape[0] != X.shape[0]:
        raise PlotError(f"X has {X.shape[0]} rows but y has {raw.shape[0]}")
    if raw.dtype.kind in "biuf":
        idx = raw.astype(np.float64)
        bad = ~np.isfinite(idx) | (idx != np.round(idx)) | (idx < 0) | (idx >= len(names))
        if bad.any():
            i = int(np.argmax(bad))
            raise PlotError(f"y at row {i + 1} is {raw[i].item()!r}, not a class index 0 ... {len(names) - 1}")
        return X, idx.astype(np.int64)
    lookup = {n: k for k, n in enumerate(names)}
    out = np.empty(raw.shape[0], dtype=np.int64)
    for i, v in enumerate(raw.tolist()):
        if str(v) not in lookup:
            raise PlotError(f"y at row {i + 1} is {v!r}, not one of the classes {list(names)}")
        out[i] = lookup[str(v)]
    return X, out


def _class_probabilities(predict_proba, P: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (M, C), predicted class (M,)) for the rows of ``P``: the argmax of (M, C)
    probabilities, or for one sigmoid output p (M, 1) the columns [1 - p, p] and class 1 when
    p >= 0.5. Non-finite outputs count as probability 0."""
    try:
        out = predict_proba(P)
    except DeriveError:
        raise
    except Exception as exc:
        raise PlotError(f"predict_proba failed on a ({P.shape[0]}, 2) array of points: "
                        f"{type(exc).__name__}: {exc}") from exc
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        raise PlotError(f"predict_proba must return an array of numbers, got {type(out).__name__}") from None
    M = P.shape[0]
    if out.shape in ((M,), (M, 1)):
        if n_classes != 2:
            raise PlotError(f"predict_proba returned one column (a sigmoid) but there are {n_classes} classes; "
                            "one output column means 2 classes")
        p = np.where(np.isfinite(out), out, 0.0).reshape(M)
        return np.column_stack([1.0 - p, p]), (p >= 0.5).astype(np.int64)
    if out.shape != (M, n_classes):
        raise PlotError(f"predict_proba returned shape {out.shape} for {M} points; expected ({M}, {n_classes}) "
                        f"class probabilities (or ({M}, 1) for 2 classes)")
    out = np.where(np.isfinite(out), out, 0.0)
    return out, np.argmax(out, axis=1)


def draw_decision_regions(ax, predict_proba: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                          y: np.ndarray | None, names: Sequence[str], grid: int = GRID) -> np.ndarray:
    """The plane coloured by the predicted class (paler where the model is less sure), the
    boundaries between classes as lines, and the points coloured (and shaped) by their true
    class; misclassified points are ringed in black. Returns the (grid, grid) predicted classes."""
    require_matplotlib()
    from matplotlib.lines import Line2D

    C = len(names)
    colours = np.array(class_colours(C))[:, :3]
    lo, hi = X.min(axis=0), X.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, hi = lo - 0.12 * span, hi + 0.12 * span
    gx, gy = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
    XX, YY = np.meshgrid(gx, gy)
    P = np.ascontiguousarray(np.column_stack([XX.ravel(), YY.ravel()]), dtype=np.float64)
    prob, k = _class_probabilities(predict_proba, P, C)
    K = k.reshape(grid, grid)
    conf = np.take_along_axis(prob, k[:, None], axis=1)[:, 0]
    # pale class colour, stronger where the winning probability is high (chance 1/C -> 0, sure -> 1)
    sure = np.clip((conf - 1.0 / C) / (1.0 - 1.0 / C), 0.0, 1.0).reshape(grid, grid, 1)
    alpha = 0.18 + 0.32 * sure
    rgb = (1.0 - alpha) + alpha * colours[K]
    ax.imshow(rgb, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", interpolation="nearest")
    # the border of each class's region: where its probability equals the best of the others
    # (a contour of that margin is smooth, where one of the 0/1 region mask would be a staircase)
    for c in range(C):
        if not (K == c).any() or (K == c).all():
            continue
        others = np.delete(prob, c, axis=1).max(axis=1) if C > 1 else np.zeros(len(prob))
        margin = (prob[:, c] - others).reshape(grid, grid)
        ax.contour(XX, YY, margin, levels=[0.0], colors=[(0.15, 0.15, 0.15)], linewidths=0.9)
    handles = []
    wrong = 0
    if y is None:  # the legend names the regions' colours
        ax.scatter(X[:, 0], X[:, 1], s=18, c="k", edgecolors="w", linewidths=0.5, zorder=3)
        handles = [Line2D([], [], ls="", marker="s", color=colours[c], markersize=9, label=names[c])
                   for c in range(C)]
    else:
        _, pk = _class_probabilities(predict_proba, np.ascontiguousarray(X, dtype=np.float64), C)
        miss = pk != y
        wrong = int(miss.sum())
        size = 28 if X.shape[0] <= 400 else 16 if X.shape[0] <= 2000 else 7
        for c in range(C):
            sel = y == c
            marker, scale = MARKERS[c % len(MARKERS)]
            if sel.any():
                ax.scatter(X[sel, 0], X[sel, 1], s=size * scale, color=colours[c], marker=marker,
                           edgecolors="white", linewidths=0.5, zorder=3)
            handles.append(Line2D([], [], ls="", marker=marker, color=colours[c], markeredgecolor="white",
                                  markersize=7 * np.sqrt(scale), label=names[c]))
        if wrong:
            ax.scatter(X[miss, 0], X[miss, 1], s=size * 2.4, facecolors="none", edgecolors="black",
                       linewidths=0.7, zorder=4)
            handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="black",
                                  markersize=9, label="misclassified"))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    title = "Decision regions (argmax)" if C > 2 else "Decision regions"
    if y is not None:
        title += f": {wrong} of {len(y)} points misclassified"
    ax.set_title(title)
    legend_title = "class" if y is None else "true class"
    if handles:
        if C <= 6:
            ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.9, title=legend_title,
                      title_fontsize="small")
        else:  # many classes: beside the plot, not over the data
            ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0.0, framealpha=0.9, title=legend_title, title_fontsize="small",
                      ncol=1 if C <= 14 else 2)
    return K


def plot_decision_regions(predict_proba: Callable[[np.ndarray], np.ndarray], X, y, classes: Sequence,
                          path: str | os.PathLike, *, title: str = "") -> Path:
    """Write the decision regions of a classifier with 2 inputs as a PNG; returns the path.

    ``predict_proba`` maps a (M, 2) float64 array of points to (M, C) class probabilities (any C),
    or to (M, 1) probabilities of class 1 for one sigmoid output (class 1 where p >= 0.5).
    ``X`` (N, 2); ``y`` each row's true class, as an index 0 ... C-1 or as one of ``classes``
    (or None: points in black); ``classes`` the C class names, in output order.
    """
    check_png_path(path)
    if not callable(predict_proba):
        raise PlotError(f"predict_proba must be a function of a (M, 2) array of points, "
                        f"got {type(predict_proba).__name__}")
    names = check_classes(classes)
    X, y = check_class_points(X, y, names)
    many = len(names) > 6
    fig = new_figure(6.6 + (1.6 if many else 0.0), 5.4)
    draw_decision_regions(fig.subplots(), predict_proba, X, y, names)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)
