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
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Time a training step side by side: derive's kernels, PyTorch, JAX, NumPy (one run).

    Options are the benchmark's own (`derive bench --help-bench` lists them): --quick,
    --configs tiny,small,medium,large, --peers, --dtypes, --optimizers, --out FILE.md.
    Peers that are not installed are skipped with a note (`pip install -e '.[bench]'`).
    """
    from benchmarks.harness import main as bench_main

    args = ["--help" if a == "--help-bench" else a for a in ctx.args]
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


if __name__ == "__main__":
    main()
