"""``derive sweep``: the command-line side of :func:`derive.sweep.sweep`.

Exit status: 0 when the sweep finished (diverged runs are rows, not failures), 1 for an error in
the input (one ``error: ...`` line, nothing written), 130 after Ctrl-C (the runs finished so far
are in the journal and the table; ``--resume`` continues).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..runtime.command import _rel, _summary, parse_hyper
from ..runtime.models import load_model
from . import results as R
from .driver import run_sweep
from .progress import TerminalSweepProgress
from .space import SweepError, build_space

EXIT_INTERRUPTED = 130


def sweep_command(name: str, *, data: str | None, target: str | None, spec: str | None, grid: tuple[str, ...],
                  random: tuple[str, ...], space: str | None, search: str | None, trials: int | None,
                  seeds: int | None, folds: int | None, epochs: int | None, batch_size: int | None,
                  seed: int | None, val_split: float | None, standardize: bool | None, dtype: str | None,
                  patience: int | None, val_every: int | None, out: str, resume: bool, engine: str,
                  scheduler: str | None, workers: int | None, timeout: float, plots: bool, extra: list[str]) -> None:
    module = load_model(name, spec)
    fixed = parse_hyper(module, extra, None)
    if plots:
        try:
            from ..runtime.plots import require_matplotlib

            require_matplotlib()
        except Exception:  # noqa: BLE001 - pictures are optional here: say so and go on
            click.echo("pictures   skipped: matplotlib is not installed (pip install 'derive[plot]')")
            plots = False
    from ..runtime.command import read_data

    dataset = read_data(data, target, name)
    echo = click.echo
    echo(f"model      {name}: {_summary(module.SPEC)}")
    folds_text = f"{folds}-fold cross-validation" if folds and folds > 1 else "a holdout split"
    echo(f"data       {_rel(dataset.source)}: {dataset.n_samples} samples, {dataset.n_inputs} inputs -> "
         f"{', '.join(dataset.target_names)}; {folds_text}")
    sp = build_space(grid, random, fixed, space).check(module)
    echo(f"space      {sp.describe()}")
    out_stream = sys.stdout
    progress = TerminalSweepProgress(out_stream, out_stream.isatty())
    try:
        result = run_sweep(module, data=dataset, space=sp, trials=trials,
                           seeds=seeds, folds=folds, epochs=epochs, batch_size=batch_size, search=search, seed=seed,
                           val_split=val_split, standardize=standardize, dtype=dtype, patience=patience,
                           val_every=val_every, engine=engine, scheduler=scheduler, workers=workers,
                           timeout=timeout, out=out, resume=resume, plots=plots, progress=progress)
    except KeyboardInterrupt:
        journal = R.Journal(Path(out))
        done = len(journal.read())
        click.echo(f"\ninterrupted: {done} finished runs are recorded in {out} (runs.jsonl and the results table); "
                   "run the same command with --resume to finish the sweep", err=True)
        sys.exit(EXIT_INTERRUPTED)
    s = result["settings"]
    for line in result["summary"]:
        echo(line)
    best = result["stats"]
    if best and best[0].losses:
        values = best[0].values
        cmd = R.train_command(name, values, module, data=data, target=target,
                              spec=spec if spec not in (None, "derive.toml") else None, seed=s["seed"],
                              val_split=s["val_split"] if s["folds"] == 1 else 0.2, standardize=s["standardize"],
                              dtype=s["dtype"], patience=s["patience"])
        echo(f"train it   {cmd}")
        if s["folds"] > 1:
            echo(f"note       the sweep scored {s['folds']}-fold cross-validation; derive train holds out "
                 "--val-split rows instead")
    for path in result["files"]:
        echo(f"wrote      {_rel(str(path))}")


__all__ = ["sweep_command", "SweepError"]
