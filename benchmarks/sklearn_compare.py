"""derive's scikit-learn estimators against ``MLPClassifier`` / ``MLPRegressor`` and a PyTorch loop.

    python -m benchmarks.sklearn_compare [--seeds 20] [--datasets iris,wine] [--no-torch]

For each data set and seed: a held-out split (30 %, stratified for classes), the inputs
standardised on the training rows (a ``Pipeline`` of ``StandardScaler`` and the estimator; for
diabetes the target too, through ``TransformedTargetRegressor``), and the same network trained
by three implementations with matching settings (:data:`SETTINGS`: one hidden layer of 64 ReLU
units, Adam, learning rate 1e-3, batch 32, 200 epochs, L2 alpha 1e-4, every epoch run):

* derive: :class:`derive.sklearn.DeriveClassifier` / ``DeriveRegressor`` with ``init="sklearn"``
  (scikit-learn's initialisation);
* scikit-learn: ``MLPClassifier`` / ``MLPRegressor`` with ``tol=0`` and ``n_iter_no_change`` =
  the epochs, so that it runs every epoch as the others do;
* PyTorch: ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` in float64, ``torch.optim.Adam``
  with ``weight_decay`` = derive's L2 weight, a fresh ``randperm`` each epoch, PyTorch's own
  initialisation.

Every implementation runs on one thread (``--threads``: BLAS through threadpoolctl, PyTorch's
intra-op pool), which is what a network this small runs best on. It prints, per data set, the
mean held-out accuracy (R² for diabetes) over the seeds, derive's difference from scikit-learn in
points, and the mean time of one ``fit`` (derive's kernels are compiled or loaded once before the
timed fits; that time is printed apart). The table in
docs/sklearn.md comes from this script; tests/test_sklearn_accuracy.py runs :func:`compare` on
iris and breast cancer.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

#: The settings every implementation gets (scikit-learn's names).
SETTINGS = {"hidden_layer_sizes": (64,), "activation": "relu", "solver": "adam", "alpha": 1e-4, "batch_size": 32,
            "learning_rate_init": 1e-3, "max_iter": 200}
DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
PEERS = ("derive", "sklearn", "torch")


def load(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(X, y, is_regression) of one of scikit-learn's bundled data sets."""
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return X, y, name == "diabetes"


def split(X: np.ndarray, y: np.ndarray, regression: bool, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=0.3, random_state=seed, stratify=None if regression else y)


def estimator(peer: str, regression: bool, settings: dict, seed: int):
    """The pipeline of ``peer`` ("derive" or "sklearn") with ``settings``."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from derive.sklearn import DeriveClassifier, DeriveRegressor

    if peer == "derive":
        est = (DeriveRegressor if regression else DeriveClassifier)(**settings, init="sklearn", random_state=seed)
    else:
        every_epoch = {"tol": 0.0, "n_iter_no_change": settings["max_iter"]}
        est = (MLPRegressor if regression else MLPClassifier)(**settings, **every_epoch, random_state=seed)
    est = make_pipeline(StandardScaler(), est)
    return TransformedTargetRegressor(est, transformer=StandardScaler()) if regression else est


def torch_fit_score(Xtr, ytr, Xte, yte, regression: bool, settings: dict, seed: int) -> tuple[float, float]:
    """(held-out score, seconds to train) of the same network as a plain PyTorch loop."""
    import torch
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.preprocessing import StandardScaler

    tick = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xs = StandardScaler().fit(Xtr)
    X = torch.tensor(xs.transform(Xtr), dtype=torch.float64)
    classes = None
    if regression:
        ys = StandardScaler().fit(ytr.reshape(-1, 1))
        Y = torch.tensor(ys.transform(ytr.reshape(-1, 1)), dtype=torch.float64)
        out, loss_fn, per_output = 1, torch.nn.MSELoss(), 2.0
    else:
        classes = np.unique(ytr)
        idx = np.searchsorted(classes, ytr)
        if len(classes) == 2:
            Y = torch.tensor(idx[:, None], dtype=torch.float64)
            out, loss_fn, per_output = 1, torch.nn.BCEWithLogitsLoss(), 1.0
        else:
            Y = torch.tensor(idx, dtype=torch.int64)
            out, loss_fn, per_output = len(classes), torch.nn.CrossEntropyLoss(), 1.0
    n = X.shape[0]
    B = min(settings["batch_size"], n)
    layers, width = [], X.shape[1]
    for h in settings["hidden_layer_sizes"]:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, out)).double()
    l2 = settings["alpha"] * per_output / B  # derive's mapping of alpha (docs/sklearn.md)
    opt = torch.optim.Adam(model.parameters(), lr=settings["learning_rate_init"], weight_decay=l2)
    for _ in range(settings["max_iter"]):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, B):
            rows = perm[s:s + B]
            opt.zero_grad()
            loss_fn(model(X[rows]), Y[rows]).backward()
            opt.step()
    seconds = time.perf_counter() - tick
    with torch.no_grad():
        z = model(torch.tensor(xs.transform(Xte), dtype=torch.float64)).numpy()
    if regression:
        return float(r2_score(yte, ys.inverse_transform(z)[:, 0])), seconds
    pred = classes[(z[:, 0] > 0).astype(int)] if out == 1 else classes[np.argmax(z, axis=1)]
    return float(accuracy_score(yte, pred)), seconds


@dataclass
class Row:
    """One data set's results: per peer, the held-out scores and fit seconds of every seed."""

    name: str
    regression: bool
    n_train: int
    scores: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    load_seconds: float = 0.0  # derive: compiling or loading the kernels, before the timed fits

    def mean(self, peer: str) -> float:
        return float(np.mean(self.scores[peer]))

    def diff(self, other: str = "sklearn") -> float:
        """derive's mean score minus ``other``'s, in points (percent)."""
        return 100.0 * (self.mean("derive") - self.mean(other))


@contextlib.contextmanager
def threads(n: int | None, torch_too: bool):
    """BLAS (and PyTorch's pool, with ``torch_too``) limited to ``n`` threads; None: as they are."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = None
    if torch_too:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        if before is not None:
            torch.set_num_threads(before)


def compare(name: str, seeds: range | list[int] = range(20), settings: dict | None = None,
            peers: tuple[str, ...] = PEERS, n_threads: int | None = 1) -> Row:
    """Train every peer on data set ``name`` once per seed (on ``n_threads`` threads each); the
    held-out scores and fit times."""
    with threads(n_threads, "torch" in peers):
        return _compare(name, seeds, {**SETTINGS, **(settings or {})}, peers)


def _compare(name: str, seeds, settings: dict, peers: tuple[str, ...]) -> Row:
    from sklearn.exceptions import ConvergenceWarning

    X, y, regression = load(name)
    row = Row(name, regression, len(split(X, y, regression, 0)[0]))
    if "derive" in peers:  # compile (or load) the kernels outside the timed fits
        Xtr, _, ytr, _ = split(X, y, regression, 0)
        tick = time.perf_counter()
        estimator("derive", regression, {**settings, "max_iter": 1}, 0).fit(Xtr, ytr)
        row.load_seconds = time.perf_counter() - tick
    if "torch" in peers:  # PyTorch's first call in a process (its thread pool, first kernels) is slow too
        Xtr, Xte, ytr, yte = split(X, y, regression, 0)
        torch_fit_score(Xtr, ytr, Xte, yte, regression, {**settings, "max_iter": 1}, 0)
    for peer in peers:
        row.scores[peer], row.seconds[peer] = [], []
    for seed in seeds:
        Xtr, Xte, ytr, yte = split(X, y, regression, seed)
        for peer in peers:
            if peer == "torch":
                score, seconds = torch_fit_score(Xtr, ytr, Xte, yte, regression, settings, seed)
            else:
                est = estimator(peer, regression, settings, seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    tick = time.perf_counter()
                    est.fit(Xtr, ytr)
                    seconds = time.perf_counter() - tick
                score = float(est.score(Xte, yte))
            row.scores[peer].append(score)
            row.seconds[peer].append(seconds)
    return row


def table(rows: list[Row], peers: tuple[str, ...] = PEERS) -> str:
    """The Markdown table of :func:`compare`'s rows."""
    names = {"derive": "derive", "sklearn": "MLP", "torch": "PyTorch"}
    head = ["data set", "train rows", "metric"] + [f"{names[p]} score" for p in peers] + ["derive − MLP"]
    head += [f"{names[p]} fit" for p in peers] + ["MLP / derive time"] + (["PyTorch / derive time"]
                                                                        if "torch" in peers else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms = {p: 1000 * float(np.mean(r.seconds[p])) for p in peers}
        cells = [r.name, str(r.n_train), "R²" if r.regression else "accuracy"]
        cells += [f"{100 * r.mean(p):.2f}" for p in peers] + [f"{r.diff():+.2f}"]
        cells += [f"{ms[p]:.0f} ms" if ms[p] >= 10 else f"{ms[p]:.1f} ms" for p in peers]
        cells += [f"{ms['sklearn'] / ms['derive']:.0f}x"] + ([f"{ms['torch'] / ms['derive']:.0f}x"]
                                                            if "torch" in peers else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="splits and initialisations per data set (20)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (all five)")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch loop")
    parser.add_argument("--threads", type=int, default=1, help="threads for each implementation (1; 0: as they are)")
    args = parser.parse_args(argv)
    peers = tuple(p for p in PEERS if not (p == "torch" and args.no_torch))
    rows = []
    for name in args.datasets.split(","):
        rows.append(compare(name, range(args.seeds), peers=peers, n_threads=args.threads or None))
        print(f"{name}: done", file=sys.stderr, flush=True)
    import sklearn

    versions = f"scikit-learn {sklearn.__version__}"
    if "torch" in peers:
        import torch

        versions += f", PyTorch {torch.__version__}"
    print(f"{args.seeds} seeds per data set; settings {SETTINGS}; float64; "
          f"{args.threads or 'default'} thread(s) each; {versions}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print(table(rows, peers))
    print("\nderive compiled or loaded its kernels before the timed fits: "
          + ", ".join(f"{r.name} {r.load_seconds:.1f} s" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
