"""``derive train`` and ``derive predict``: the command-line side of :func:`derive.runtime.fit.fit`.

Exit status: 0 when training finished, 1 for an error in the input (a clear ``error: ...``
line), 3 when the loss diverged (nothing is saved or plotted then).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from ..data import DATASETS, ClassLabels, DataError, Dataset, load_csv, load_dataset
from ..errors import DeriveError, suggest
from . import metrics as M
from .fit import Diverged, FitResult, fit, resume_widths, split_settings
from .models import load_model
from .progress import TerminalProgress
from .targets import classes_of, predicted_labels, saved_labels
from .widths import check_widths, spec_widths

EXIT_DIVERGED = 3


def read_data(data: str | None, target: str | None, name: str) -> Dataset:
    """``--data`` as a bundled data set name or a CSV file (``--target`` naming its target columns)."""
    if data is None:
        if name in DATASETS:
            data = name
        else:
            raise DataError("--data is required: a CSV file (with --target COL) or a bundled data set "
                            f"({', '.join(DATASETS)})")
    if data in DATASETS and not Path(data).exists():
        if target:
            raise DataError(f"--target is for CSV files; the bundled data set {data!r} has its target")
        return load_dataset(data)
    if not Path(data).exists() and not data.endswith(".csv") and "/" not in data:
        raise DataError(f"no file {data!r} and no bundled data set of that name{suggest(data, DATASETS)}")
    if not target:
        raise DataError("--target COL[,COL...] is required with a CSV file: the column(s) to predict", data)
    return load_csv(data, [t.strip() for t in target.split(",")])


def parse_hyper(module, extra: list[str], lr: float | None) -> dict[str, float]:
    """``--lr 0.1 --momentum 0.9 --beta2=0.99``: the model's hyperparameters as options."""
    hyper: dict[str, float] = {}
    if lr is not None:
        hyper["lr"] = lr
    known = sorted(module.HYPER)
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            raise DeriveError(f"unexpected argument {arg!r}")
        key, _, value = arg[2:].partition("=")
        if not _:
            if i + 1 >= len(extra):
                raise DeriveError(f"option {arg} needs a value")
            i += 1
            value = extra[i]
        name = key.replace("-", "_")
        if name not in module.HYPER:
            raise DeriveError(f"no option {arg.split('=')[0]}{suggest(name, known)}; model "
                              f"{module.SPEC['name']!r} has the hyperparameters "
                              + ", ".join(f"--{k.replace('_', '-')}" for k in known))
        try:
            hyper[name] = float(value)
        except ValueError:
            raise DeriveError(f"--{key} needs a number, got {value!r}") from None
        i += 1
    return hyper


def parse_widths(module, text: str | None) -> tuple[int, ...] | None:
    """``--widths 24,16``: one whole number >= 1 per hidden layer of ``module`` (None: the spec's)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    values: list[object] = []
    for p in parts:
        try:
            values.append(int(p))
        except ValueError:
            values.append(p)  # check_widths names it
    try:
        return check_widths(module, values, "--widths")
    except DeriveError as exc:
        raise DeriveError(str(exc).replace("invalid value for --widths:", f"invalid value for --widths {text!r}:")
                          ) from None


def train_command(name: str, *, data: str | None, target: str | None, spec: str | None, epochs: int,
                  batch_size: int, lr: float | None, seed: int | None, val_split: float | None, standardize: bool,
                  restarts: int, init: str | None, save: str | None, plot: str | None, log_every: int | None,
                  resume: str | None, dtype: str, extra: list[str], patience: int | None = None,
                  widths: str | None = None) -> None:
    module = load_model(name, spec)
    spec_d = module.SPEC
    widths_ = parse_widths(module, widths)
    hyper = parse_hyper(module, extra, lr)
    dataset = read_data(data, target, name)
    if plot:  # say it before training, not after
        from .plots import check_png_path, require_matplotlib

        check_png_path(plot)
        require_matplotlib()
    if save and Path(save).is_dir():
        raise DeriveError(f"--save {save} is a folder; give a file name such as {Path(save) / (name + '.npz')}")
    ck = None
    if resume:
        from .checkpoint import load_checkpoint

        ck = load_checkpoint(resume, module)
    widths_ = resume_widths(module, widths_, ck, "--widths")
    seed, val_split = split_settings(ck, seed, val_split)
    if patience is not None and not val_split:
        raise DeriveError(f"--patience {patience} watches the validation loss: it needs --val-split > 0")
    module_file = getattr(module, "__file__", "?")
    echo = click.echo
    shown = widths_ or spec_widths(module)
    other = shown != spec_widths(module)
    echo(f"model      {name}: {_summary(spec_d, shown)}"
         + (f" (hidden widths {','.join(map(str, shown))}{' of the resumed run' if widths is None else ''}; "
            f"the spec's are {','.join(map(str, spec_widths(module)))})" if other else ""))
    echo(f"derivation {_rel(module_file)} lists every equation its kernels compute; `derive show {name}` "
         f"prints the derivation, `derive latex {name} -o {name}.tex` typesets it")
    classes = f" ({len(dataset.classes)} classes)" if dataset.classes is not None else ""
    echo(f"data       {_rel(dataset.source)}: {dataset.n_samples} samples, {dataset.n_inputs} inputs -> "
         f"{', '.join(dataset.target_names)}{classes}; {val_split:.0%} held out for validation"
         + ("; inputs standardised" if standardize or (ck is not None and ck.standardizer is not None) else ""))
    hv = {**module.HYPER, **hyper}
    echo(f"training   {spec_d['optimizer']['name']}({', '.join(f'{k}={v:g}' for k, v in hv.items())}), "
         f"{epochs} epochs, batch {batch_size}, seed {seed}"
         + (f", {restarts} restarts on all cores" if restarts > 1 else "")
         + (f", early stopping with patience {patience}" if patience is not None else "")
         + (f", resuming {resume}" if resume else ""))
    out = sys.stdout
    tty = out.isatty()
    every = log_every if log_every is not None else (0 if tty else max(1, epochs // 10))
    try:
        result = fit(module, data=dataset, epochs=epochs, batch_size=batch_size, seed=seed, val_split=val_split,
                     standardize=standardize, restarts=restarts, init=init, dtype=np.dtype(dtype), resume=ck,
                     patience=patience, log_every=every, progress=TerminalProgress(out, tty), hyper=hyper,
                     widths=widths_)
    except Diverged as exc:
        click.echo(f"error: {exc}", err=True)
        if save:
            click.echo(f"nothing saved: {save} was not written", err=True)
        sys.exit(EXIT_DIVERGED)
    echo(result.summary())
    for w in result.warnings:
        echo(f"warning: {w}", err=True)
    if save:
        path = save_result(result, save, dataset)
        echo(f"saved      {path} (parameters, optimizer state, standardisation, spec"
             + (f", hidden widths {','.join(map(str, result.widths))}" if other else "") + "; `derive predict`)")
    if plot:
        path = plot_result(result, plot, dataset)
        echo(f"plot       {path}")


def _summary(spec: dict, widths: tuple[int, ...] | None = None) -> str:
    """``2 -> 16 tanh -> 16 tanh -> 1 sigmoid; loss bce``, at hidden widths ``widths`` when given."""
    units = [layer[0] for layer in spec["layers"]]
    if widths is not None:
        units = [*widths, units[-1]]
    layers = " -> ".join([str(spec["inputs"])] + [f"{u} {layer[1]}" for u, layer in zip(units, spec["layers"])])
    return f"{layers}; loss {M.loss_name(spec)}"


def _rel(path: str) -> str:
    if not Path(path).is_absolute():
        return path
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def save_result(result: FitResult, path: str, dataset: Dataset | None = None) -> Path:
    from .checkpoint import save_checkpoint

    meta = {"settings": result.settings, "metrics": result.metrics, "best_run": result.best,
            "seeds": list(result.seeds), "warnings": result.warnings}
    if dataset is not None:
        meta.update(data=dataset.source, features=list(dataset.feature_names), targets=list(dataset.target_names))
    if result.labels is not None:
        meta["classes"] = result.labels.to_dict()
    best_run = None
    if result.watches:
        watch = result.watches[result.best]
        meta["early_stopping"] = watch.record()
        if not watch.stopped and watch.best_epoch is not None and watch.best_epoch != result.state["epoch"]:
            best_run = watch.best_run  # not the saved parameters: kept so that a resumed run can go back
    best = result.best
    history = {k: v[best] for k, v in result.history.items()}
    return save_checkpoint(path, result.module, result.params, result.state, standardizer=result.standardizer,
                           meta=meta, history=history, best=best_run, widths=result.widths)


def plot_result(result: FitResult, path: str, dataset: Dataset | None = None) -> Path:
    from .plots import plot_training

    if result.task == "multiclass":
        return _plot_classifier(result, path, dataset)
    two_d = result.module.SPEC["inputs"] == 2 and result.task == "binary" and dataset is not None
    h = result.history
    return plot_training(path, loss=h["loss"], val_loss=h["val_loss"], grad_norms=h["grad_norm"], best=result.best,
                         predict=result.predict if two_d else None,
                         X=dataset.X if two_d else None, Y=dataset.Y if two_d else None,
                         title=f"{result.name}: {_summary(result.module.SPEC, result.widths)}")


def _plot_classifier(result: FitResult, path: str, dataset: Dataset | None) -> Path:
    """A softmax classifier's picture: the training curves, for 2 inputs the decision regions of its
    classes with the points, and the confusion matrix of the validation rows (else the training rows)."""
    from .plots import plot_training
    from .targets import targets

    part = "val" if "val" in result.reports else "train"
    report = result.reports.get(part)
    regions = result.module.SPEC["inputs"] == 2 and dataset is not None
    y = None
    if regions:  # each row's class index, as the model's outputs number them
        onehot, _ = targets(result.module.SPEC, dataset.Y, dataset, dataset.source, result.labels)
        y = np.argmax(onehot, axis=1)
    h = result.history
    return plot_training(path, loss=h["loss"], val_loss=h["val_loss"], grad_norms=h["grad_norm"], best=result.best,
                         predict=result.predict_proba if regions else None, X=dataset.X if regions else None, Y=y,
                         classes=[str(c) for c in result.classes],
                         confusion=None if report is None else report.confusion,
                         confusion_rows="validation" if part == "val" else "training",
                         title=f"{result.name}: {_summary(result.module.SPEC, result.widths)}")


def predict_command(checkpoint: str, data: str, target: str | None, spec: str | None, out: str | None) -> None:
    """Load a saved model and write its predictions for the rows of a CSV file (or bundled data):
    for a regression model its outputs; for a classifier the predicted label and the probability
    of each class (``p_<class>``; one probability, of class 1, for a binary model); for a
    multi-label model each label's 0/1 and its probability. When the rows have their targets,
    a class label the model was not trained on is an error naming the row."""
    from .checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    module = load_model(ck.name, spec)
    ck.check(module)
    if data in DATASETS and not Path(data).exists():
        dataset = load_dataset(data)
    else:
        dataset = load_csv(data, _present(data, target, ck), ck.meta.get("features"))
    from .fit import _matrix

    X = _matrix(dataset.X, "X", module.SPEC["inputs"])
    if ck.standardizer is not None:
        X = ck.standardizer.transform(X)
    pred = module.forward(ck.params, np.ascontiguousarray(X, dtype=ck.params["W1"].dtype))
    labels = saved_labels(ck.meta)
    names = ck.meta.get("targets") or [f"y{j + 1}" for j in range(pred.shape[1])]
    task = M.task_of(module.SPEC)
    if task == "regression":
        lines = [",".join(names)] + [",".join(f"{v:.9g}" for v in row) for row in pred]
    else:
        if labels is not None and dataset.n_outputs == 1:  # the rows have their labels: all must be known
            from .targets import label_column

            labels.encode(label_column(None, dataset), f"{dataset.source}, target {dataset.target_names[0]!r}")
        lines = _classifier_rows(module.SPEC, pred, labels, names)
    text = "\n".join(lines) + "\n"
    if out:
        from ..files import write_atomic

        write_atomic(Path(out), text)
        click.echo(f"wrote {len(pred)} predictions to {out}", err=True)
    else:
        click.echo(text, nl=False)


def _classifier_rows(spec: dict, pred: np.ndarray, labels: ClassLabels | None, names: list[str]) -> list[str]:
    """The CSV lines of a classifier's predictions: header, then a row per sample."""
    task = M.task_of(spec)
    chosen = predicted_labels(spec, pred, labels)
    if task == "multilabel":
        header = list(names) + [f"p_{n}" for n in names]
        return [",".join(header)] + [",".join([*(str(int(v)) for v in c), *(f"{v:.9g}" for v in p)])
                                     for c, p in zip(chosen, pred)]
    classes = classes_of(spec, labels)
    label_name = names[0] if len(names) == 1 else "label"
    if task == "binary":
        header = [label_name, f"p_{classes[1]}"]
    else:
        header = [label_name] + [f"p_{c}" for c in classes]
    return [",".join(_csv_cell(h) for h in header)] + [
        ",".join([_csv_cell(c), *(f"{v:.9g}" for v in p)]) for c, p in zip(chosen.tolist(), pred)]


def _csv_cell(value: object) -> str:
    """A CSV cell: quoted (with doubled quotes) when it holds a comma, a quote or a line break."""
    text = str(value)
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _present(data: str, target: str | None, ck) -> list[str]:
    """The target columns to skip: --target, else the saved targets that the file has (none when
    it holds the inputs only, which needs the saved feature names)."""
    if target:
        return [t.strip() for t in target.split(",")]
    saved = ck.meta.get("targets") or []
    if not ck.meta.get("features"):
        raise DataError("give --target (the CSV's target columns, which are skipped): this checkpoint does "
                        "not record the feature names (save it with `derive train --save`)", data)
    try:
        with open(data, encoding="utf-8-sig") as fh:
            header = [c.strip() for c in fh.readline().split(",")]
    except OSError:
        return saved  # load_csv says what is wrong with the file
    return [t for t in saved if t in header]
