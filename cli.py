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
def show(name: str, spec: str) -> None:
    """Print the derivation of model NAME: forward pass, loss, deltas, gradients, update."""
    from derive.derivation import derive_model
    from derive.spec import select
    from derive.text import to_text

    (model,) = select(_catalogue(spec), [name])
    click.echo(to_text(derive_model(model)), nl=False)


if __name__ == "__main__":
    main()
