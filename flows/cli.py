"""The ``da3`` command line (Typer). Inference commands arrive with the CLI work; this holds the app."""

from __future__ import annotations

import typer

app = typer.Typer(help="Depth Anything 3 pipeline: feed-forward 3D reconstruction from images and video.",
                  add_completion=False, no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the versions of this package and its main dependencies."""
    from importlib.metadata import version as v

    for name in ("da3pipe", "torch", "prefect", "hydra-core", "zarr"):
        typer.echo(f"{name} {v(name)}")


if __name__ == "__main__":
    app()
