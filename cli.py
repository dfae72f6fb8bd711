"""The ``derive`` command line: build, check, list and show models."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from derive.errors import DeriveError

DEFAULT_SPEC = "derive.toml"


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Turns every intended error (DeriveError) into one clear line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeriveError as exc:
            _fail(exc)


def _catalogue(spec: str):
    from derive.spec import load_catalogue

    return load_catalogue(spec)


spec_option = click.option("--spec", "spec", default=DEFAULT_SPEC, show_default=True,
                           type=click.Path(dir_okay=False), help="TOML catalogue of models.")


@click.group(cls=_Group)
@click.version_option(package_name="derive")
def main() -> None:
    """Derive neural-network training equations symbolically and generate Numba kernels."""


@main.command()
@spec_option
@click.option("--out", type=click.Path(file_okay=False),
              help="Output package folder [default: 'generated' beside the spec file].")
@click.option("--only", multiple=True, metavar="NAME", help="Build only this model (repeatable).")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 with a unified diff if the output differs from a fresh build.")
def build(spec: str, out: str | None, only: tuple[str, ...], check: bool) -> None:
    """Derive every model of the catalogue and write generated/<name>.py."""
    import time

    from derive.build import build as run_build
    from derive.spec import select

    start = time.perf_counter()
    models = _catalogue(spec)
    chosen = select(models, only)
    out_dir = Path(out) if out else Path(spec).resolve().parent / "generated"
    result = run_build(chosen, list(models.values()), out_dir, Path(spec).name, check=check,
                       prune=not only)
    took = time.perf_counter() - start
    if check:
        if result.diffs:
            for diff in result.diffs:
                click.echo(diff, nl=False)
            click.echo(f"{out_dir} is stale: {len(result.diffs)} file(s) differ; run `derive build`.", err=True)
            sys.exit(1)
        click.echo(f"{out_dir} is up to date ({len(result.unchanged)} files, {took:.1f} s).")
        return
    for path in result.written:
        click.echo(f"wrote {path}")
    for path in result.removed:
        click.echo(f"removed {path} (no longer in the catalogue)")
    click.echo(f"built {len(chosen)} model(s) into {out_dir} in {took:.1f} s "
               f"({len(result.written)} written, {len(result.unchanged)} unchanged).")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option("--data", metavar="FILE.csv|NAME",
              help="A CSV file with a header row, or a bundled data set: xor, moons, circles, spiral, "
                   "breast_cancer, diabetes, iris, wine, digits [default: NAME when it is one].")
@click.option("--target", metavar="COL[,COL...]", help="The CSV column(s) to predict (required with a CSV file); "
                                                        "for a softmax model one column of class labels (numbers "
                                                        "or text) or a column per class of probabilities.")
@spec_option
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Rows per step: >= the training rows is full-batch gradient descent, 1 is stochastic.")
@click.option("--lr", type=float, help="Learning rate [default: the model's]. Every other hyperparameter of the "
                                        "model is an option too: --momentum 0.9, --beta2 0.99, ...")
@click.option("--seed", type=click.IntRange(min=0),
              help="Seeds the split, the initialisation (seed + k for restart k) and the shuffles "
                   "[default: 0, or the resumed run's].")
@click.option("--val-split", type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Fraction of the rows held out for validation [default: 0.2, or the resumed run's].")
@click.option("--standardize", is_flag=True, help="Scale each input column to mean 0, std 1 (training-set statistics, "
                                                  "saved with the model).")
@click.option("--restarts", default=1, show_default=True, type=click.IntRange(min=1),
              help="Train K initialisations at once on all cores; keep the best by validation loss.")
@click.option("--init", type=click.Choice(["xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
                                           "torch_linear"]),
              help="Weight initialiser for every layer [default: He for relu-like layers, Xavier otherwise].")
@click.option("--widths", metavar="W1,W2,...",
              help="Hidden widths other than the spec's, one per hidden layer (e.g. a sweep's best: --widths 24,16); "
                   "no rebuild, the kernels read widths from the arrays. Saved with the model "
                   "[default: the spec's, or the resumed run's].")
@click.option("--save", type=click.Path(), metavar="FILE.npz", help="Save the trained model (nothing on divergence).")
@click.option("--plot", type=click.Path(), metavar="FILE.png",
              help="Loss curves, gradient norms and (2 inputs) the decision boundary (needs matplotlib).")
@click.option("--log-every", type=click.IntRange(min=1), metavar="N",
              help="Print the loss every N epochs [default: a progress bar on a terminal, 10 lines otherwise].")
@click.option("--resume", type=click.Path(), metavar="FILE.npz", help="Continue a saved run (parameters, optimizer "
                                                                       "state and standardisation).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)
@click.option("--patience", type=click.IntRange(min=1), metavar="N",
              help="Early stopping: stop when the validation loss has not improved for N epochs and restore the "
                   "parameters (and optimizer state) of the best epoch.")
@click.pass_context
def train(ctx: click.Context, name: str, data: str | None, target: str | None, spec: str, epochs: int,
          batch_size: int, lr: float | None, seed: int | None, val_split: float | None, standardize: bool,
          restarts: int,
          init: str | None, widths: str | None, save: str | None, plot: str | None, log_every: int | None,
          resume: str | None, dtype: str, patience: int | None) -> None:
    """Train model NAME on data and report: progress, the final loss, and the metrics (accuracy, log
    loss, per-class precision / recall / F1 and the confusion matrix for a classifier; RMSE, MAE,
    MAPE and R² for regression), warnings.

    Exit status 3 when the loss diverges (NaN or infinite): the message says where and what to try,
    and nothing is saved.
    """
    from derive.runtime.command import train_command

    train_command(name, data=data, target=target, spec=None if spec == DEFAULT_SPEC and not Path(spec).exists()
                  else spec, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, val_split=val_split,
                  standardize=standardize, restarts=restarts, init=init, save=save, plot=plot, log_every=log_every,
                  resume=resume, dtype=dtype, extra=list(ctx.args), patience=patience, widths=widths)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option("--data", metavar="FILE.csv|NAME",
              help="A CSV file or a bundled data set [default: NAME when it is one].")
@click.option("--target", metavar="COL[,COL...]", help="The CSV column(s) to predict (required with a CSV file).")
@spec_option
@click.option("--grid", multiple=True, metavar="NAME=V1,V2,...",
              help="Try every value (repeatable; the grid is the product): a hyperparameter (lr, beta2, ...), "
                   "batch_size, epochs, init or a hidden width (width1, ...).")
@click.option("--random", "random_", multiple=True, metavar="NAME=DIST(...)",
              help="Draw per trial (repeatable): uniform(a,b), loguniform(a,b), int(a,b), logint(a,b), choice(x,y).")
@click.option("--space", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="The space from a TOML file: [grid], [random], [fixed], [sweep] (docs/sweeps.md).")
@click.option("--search", type=click.Choice(["auto", "tpe"]),
              help="auto: the grid x the random draws [default]; tpe: Optuna's TPE (pip install 'derive[optuna]').")
@click.option("--trials", type=click.IntRange(min=1), help="Random draws (or TPE trials) [default: 20].")
@click.option("--seeds", type=click.IntRange(min=1), help="Seed replicates of every configuration [default: 1].")
@click.option("--folds", type=click.IntRange(min=1), help="Cross-validation folds (1: a --val-split holdout) "
                                                          "[default: 1].")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs of every run [default: 100].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per step [default: 32].")
@click.option("--seed", type=click.IntRange(min=0), help="The sweep's seed: the draws, the split, every run's "
                                                         "seed [default: 0].")
@click.option("--val-split", type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Held-out fraction with --folds 1 [default: 0.2].")
@click.option("--standardize/--no-standardize", default=None, help="Scale inputs per fold (training rows' statistics).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]))
@click.option("--patience", type=click.IntRange(min=1), metavar="N",
              help="Early stopping of each run (status stopped).")
@click.option("--val-every", type=click.IntRange(min=0), metavar="N",
              help="Measure the validation loss every N epochs for the curves [default: 0, at the end only].")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of the journal, results.parquet (or .csv), curves.npz and the pictures.")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: run only the runs it lacks.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: this process, every core; dask: an embedded LocalCluster (pip install 'derive[dask]').")
@click.option("--scheduler", metavar="tcp://HOST:PORT", help="Run on the Dask cluster of this scheduler.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes of the embedded LocalCluster "
                                                            "[default: one per core].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for the scheduler.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the pictures (needs matplotlib).")
@click.pass_context
def sweep(ctx: click.Context, name: str, data: str | None, target: str | None, spec: str, grid: tuple[str, ...],
          random_: tuple[str, ...], space: str | None, search: str | None, trials: int | None, seeds: int | None,
          folds: int | None, epochs: int | None, batch_size: int | None, seed: int | None, val_split: float | None,
          standardize: bool | None, dtype: str | None, patience: int | None, val_every: int | None, out: str,
          resume: bool, engine: str, scheduler: str | None, workers: int | None, timeout: float, plots: bool) -> None:
    """Train model NAME over a search space x seeds x folds, on every core or a Dask cluster; write
    one row per run and name the best configuration with a `derive train` line. Other options fix a
    hyperparameter: --momentum 0.9. See docs/sweeps.md.
    """
    from derive.sweep.command import sweep_command

    sweep_command(name, data=data, target=target, spec=None if spec == DEFAULT_SPEC and not Path(spec).exists()
                  else spec, grid=grid, random=random_, space=space, search=search, trials=trials, seeds=seeds,
                  folds=folds, epochs=epochs, batch_size=batch_size, seed=seed, val_split=val_split,
                  standardize=standardize, dtype=dtype, patience=patience, val_every=val_every, out=out,
                  resume=resume, engine=engine, scheduler=scheduler, workers=workers, timeout=timeout, plots=plots,
                  extra=list(ctx.args))


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--data", required=True, metavar="FILE.csv|NAME", help="Rows to predict (a CSV file or bundled data).")
@click.option("--target", metavar="COL[,COL...]", help="Target columns of the CSV to skip [default: as saved].")
@spec_option
@click.option("-o", "--output", "out", type=click.Path(), help="Write the predictions here as CSV [default: stdout].")
def predict(checkpoint: str, data: str, target: str | None, spec: str, out: str | None) -> None:
    """Predict with a model saved by `derive train --save FILE.npz`.

    A classifier writes each row's predicted label and a probability per class (p_<class>); a
    binary model the label and the probability of class 1.
    """
    from derive.runtime.command import predict_command

    predict_command(checkpoint, data, target, None if spec == DEFAULT_SPEC and not Path(spec).exists() else spec, out)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Time a training step side by side: derive's kernels, PyTorch, JAX, NumPy (one run).

    Options are the benchmark's own (`derive bench --help-bench` lists them): --quick,
    --configs tiny,small,medium,large,multiclass, --peers, --dtypes, --optimizers, --out FILE.md.
    Peers that are not installed are skipped with a note (`pip install -e '.[bench]'`).
    `derive bench --sweep [--K 64,512 ...]`: K runs per call, train_many against JAX/torch vmap.
    """
    from benchmarks.harness import main as bench_main

    args = ["--help" if a == "--help-bench" else a for a in ctx.args]
    if "--sweep" in args:
        from benchmarks.sweep_bench import main as sweep_main

        sys.exit(sweep_main([a for a in args if a != "--sweep"], prog="derive bench --sweep"))
    sys.exit(bench_main(args, prog="derive bench"))


@main.command(name="list")
@spec_option
def list_models(spec: str) -> None:
    """List the models of the catalogue with their layers, loss and optimizer."""
    models = _catalogue(spec)
    width = max(len(n) for n in models)
    for name, model in models.items():
        click.echo(f"{name:<{width}}  {model.summary()}")


@main.command()
@click.argument("name")
@spec_option
@click.option("--format", "fmt", type=click.Choice(["unicode", "text", "latex", "markdown"]), default="unicode",
              show_default=True,
              help="unicode: readable in a terminal; text: plain ASCII; latex: a standalone LaTeX document; "
                   "markdown: Markdown with $$ math blocks.")
def show(name: str, spec: str, fmt: str) -> None:
    """Print the derivation of model NAME: forward pass, loss, deltas, gradients, update."""
    from derive.derivation import derive_model
    from derive.spec import select

    (model,) = select(_catalogue(spec), [name])
    d = derive_model(model)
    if fmt in ("unicode", "text"):
        from derive.text import to_text

        click.echo(to_text(d, unicode=fmt == "unicode"), nl=False)
    else:
        from derive.latex import to_latex, to_markdown

        click.echo((to_latex if fmt == "latex" else to_markdown)(d), nl=False)


@main.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@spec_option
@click.option("-o", "--output", "output", type=click.Path(),
              help="FILE.tex for one model; the folder for --all [default: print one model's document].")
@click.option("--all", "all_models", is_flag=True,
              help="One document per catalogue model, written to the folder -o DIR.")
@click.option("--pdf", is_flag=True, help="Also compile each document with pdflatex (next to the .tex).")
def latex(names: tuple[str, ...], spec: str, output: str | None, all_models: bool, pdf: bool) -> None:
    """Write the derivation of NAME as a standalone LaTeX document (amsmath).

    \b
    derive latex xor -o xor.tex --pdf     # xor.tex and xor.pdf
    derive latex --all -o docs/           # docs/<name>.tex for every model
    """
    from derive.latex import LatexError, compile_pdf, to_latex, write_latex
    from derive.spec import select

    if all_models == bool(names):
        raise click.UsageError("name one or more models, or pass --all (not both)")
    if (all_models or pdf or len(names) > 1) and not output:
        raise click.UsageError("-o is required with --all, --pdf or several models "
                               "(a folder for several, FILE.tex for one)")
    models = select(_catalogue(spec), names or None)
    if output is None:
        from derive.derivation import derive_model

        click.echo(to_latex(derive_model(models[0])), nl=False)
        return
    out = Path(output)
    if all_models or len(names) > 1:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"cannot create the folder {out}: {exc.strerror or exc}")
        targets = [(m, out / f"{m.name}.tex") for m in models]
    else:
        if out.is_dir():
            _fail(f"{out} is a folder; give a file name such as {out / (models[0].name + '.tex')}")
        targets = [(models[0], out)]
    try:
        written = [write_latex(m, path) for m, path in targets]
        for path in written:
            click.echo(f"wrote {path}")
        for path in written if pdf else ():
            click.echo(f"wrote {compile_pdf(path)}")
    except LatexError as exc:
        _fail(exc)


@main.command(name="plot-surface")
@click.argument("preset", required=False, metavar="[PRESET]")
@click.option("--expr", metavar="TEXT", help="f(x, y) as text instead of a preset, e.g. 'x**2 + 10*y**2'.")
@click.option("--variables", metavar="X,Y", help="The two variable names of --expr [default: x,y].")
@click.option("--optimizers", default="sgd,momentum,rmsprop,adam", show_default=True,
              help="Comma-separated optimizers, each run from the same start.")
@click.option("--start", metavar="X,Y", help="Start point [default: the preset's; -1,1 with --expr].")
@click.option("--steps", type=click.IntRange(1, 1_000_000), help="Optimizer steps [default: the preset's; 200].")
@click.option("--lr", metavar="LR|NAME=LR,...",
              help="One learning rate for all, or per optimizer (sgd=0.001,adam=0.05) [default: the preset's].")
@click.option("--box", metavar="XMIN,XMAX,YMIN,YMAX", help="The view [default: the preset's; fitted to the paths].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The PNG file to write.")
def plot_surface_cmd(preset: str | None, expr: str | None, variables: str | None, optimizers: str, start: str | None,
                     steps: int | None, lr: str | None, box: str | None, output: str) -> None:
    """Draw optimizer paths over the contours of f(x, y): a PRESET or --expr.

    Presets: rosenbrock (the curved valley), saddle (escaping a saddle point), ravine (zig-zag
    in a narrow valley); the default is rosenbrock. The generated objective modules are cached in
    $DERIVE_CACHE_DIR/objectives (default: ~/.cache/derive/objectives).

    \b
    derive plot-surface saddle -o saddle.png
    derive plot-surface --expr 'x**2 + 10*y**2' --start=-2,1 --lr sgd=0.05,adam=0.1 -o bowl.png
    """
    from derive.runtime import surface as s

    if preset and expr is not None:
        raise click.UsageError("give a PRESET or --expr, not both")
    if variables is not None and expr is None:
        raise click.UsageError("--variables goes with --expr")
    from derive.runtime.plots import check_png_path, require_matplotlib

    require_matplotlib()  # before any work

    check_png_path(output)
    kwargs = {"optimizers": s.parse_names(optimizers), "steps": steps,
              "start": None if start is None else s.parse_point(start),
              "lr": None if lr is None else s.parse_lr(lr), "box": None if box is None else s.parse_box(box)}
    if expr is not None:
        names = tuple(v.strip() for v in variables.split(",")) if variables is not None else ("x", "y")
        comparison = s.compare(expr, variables=names, optimizers=kwargs["optimizers"],
                               start=kwargs["start"] or (-1.0, 1.0), steps=steps or 200, lr=kwargs["lr"],
                               box=kwargs["box"])
        title = ""
    else:
        name = preset or "rosenbrock"
        comparison = s.compare_preset(name, **kwargs)
        title = f"{name}: f(x, y) = {comparison.expr}"
    written = s.draw_comparison(comparison, output, title=title)
    click.echo(f"wrote {written}")
    width = max(len(r.optimizer) for r in comparison.runs)
    for run in comparison.runs:
        rate = "" if run.lr is None else f"lr {run.lr:<8g}"
        click.echo(f"  {run.optimizer:<{width}}  {rate}  {run.describe()}")


if __name__ == "__main__":
    main()
