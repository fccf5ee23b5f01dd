"""The ``da3`` command line (Typer): the seed's eight commands on top of the reconstruct flow.

``auto image images video colmap`` turn their flags into Hydra overrides and run the reconstruct
flow (see :mod:`flows.cli_run`); ``backend``/``gradio`` start those services; ``gallery`` serves
:mod:`flows.gallery`. The inference commands' options are declared once, in :data:`flows.cli_flags.FLAGS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from da3core.model.presets import DEFAULT_PRESET
from flows.backend.limits import JobLimits
from flows.cli_flags import FLAGS, Flag, InferenceOptions
from flows.cli_run import DEFAULT_MODEL_DIR, CliError, execute
from flows.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, INTERRUPTED, is_user_error, user_message
from flows.schema import Device, Weights

app = typer.Typer(
    help="Depth Anything 3 pipeline: feed-forward 3D reconstruction from images and video.",
    add_completion=False,
    no_args_is_help=True,
)


def _option(flag: Flag) -> tuple[Any, Any]:
    """(default, Annotated type) of a flag's Typer option."""
    return flag.default, Annotated[
        flag.type, typer.Option(*flag.option_decls, rich_help_panel=flag.panel, help=flag.help, **flag.extra)
    ]


def _interactive() -> bool:
    """Whether a person can answer a question (stdin and stdout are terminals)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _guarded(run: Callable[[], int | None], service: bool = False) -> None:
    """Run a command body: a user error is one line on stderr (exit 2), a bug keeps its traceback (exit 1). Ctrl-C
    stops a ``service`` (exit 0: the way to end one); it interrupts an inference command (one line, exit 130)."""
    try:
        code = run()
    except KeyboardInterrupt:  # outside a flow run (a flow's is reported by flows.errors.guarded)
        if service:
            raise typer.Exit(0) from None
        typer.echo(f"error: {INTERRUPTED}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - sorted by is_user_error; anything else is re-raised
        if not is_user_error(exc):
            raise
        typer.echo(f"error: {user_message(exc)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    if code:
        raise typer.Exit(code)


def _inference_command(name: str, summary: str, metavar: str, input_help: str) -> None:
    """Register ``da3 <name> INPUT`` with the flags of FLAGS that it takes, all running :func:`execute`."""

    def command(input: str, **flags: Any) -> None:
        values = {k: (v.value if isinstance(v, Enum) else v) for k, v in flags.items()}
        _guarded(lambda: execute(name, input, InferenceOptions(**values), _interactive(), typer.confirm))

    params = [
        inspect.Parameter(
            "input",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[str, typer.Argument(metavar=metavar, help=input_help, show_default=False)],
        )
    ]
    params += [
        inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for flag in FLAGS
        if name in flag.commands
        for default, annotation in [_option(flag)]
    ]
    # Typer reads a command's options from its signature; one signature per command, built from FLAGS.
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = summary
    command.__name__ = name
    app.command(name)(command)


_inference_command(
    "auto",
    "Reconstruct any input: image, folder of images, video or COLMAP dataset (detected).",
    "INPUT",
    "An image, a folder of images, a video or a COLMAP dataset (images/ + sparse/).",
)
_inference_command("image", "Reconstruct a single image (depth, camera, points).", "PATH", "An image file.")
_inference_command("images", "Reconstruct a folder of images (sorted by name).", "DIR", "A folder of images.")
_inference_command("video", "Reconstruct a video, sampled at --fps.", "PATH", "A video file.")
_inference_command(
    "colmap",
    "Reconstruct a COLMAP dataset, conditioned on and aligned to its poses.",
    "DIR",
    "A COLMAP dataset: images/ and a model in sparse/0 or sparse.",
)


def _load(module: str) -> Any:
    """Import a service module of this package; one line when it (or something it needs) is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        what = module if exc.name == module else f"{exc.name} (needed by {module})"
        fix = "pip install -e .[app]" if exc.name == "gradio" else "update and reinstall da3pipe (pip install -e .)"
        raise CliError(f"cannot start: {what} is not installed; {fix}") from None


# The model options the two long-running services (backend, gradio) share.
ServiceModelDir = Annotated[Optional[str], typer.Option(help="Model dir or hub id.", show_default=DEFAULT_MODEL_DIR)]
ServicePreset = Annotated[
    Optional[str],
    typer.Option(
        help="DA3 preset; from --model-dir when omitted (with --weights random too), else the default.",
        show_default=DEFAULT_PRESET,
    ),
]
ServiceWeights = Annotated[Weights, typer.Option(help="pretrained or seeded random.")]


@app.command()
def backend(
    model_dir: ServiceModelDir = None,
    preset: ServicePreset = None,
    weights: ServiceWeights = Weights.pretrained,
    device: Annotated[Device, typer.Option(help="auto = cuda, else mps, else cpu.")] = Device.auto,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8008,
    gallery_dir: Annotated[str, typer.Option(help="Gallery served under /gallery.")] = "workspace/gallery",
    token: Annotated[
        Optional[str],
        typer.Option(envvar="DA3_BACKEND_TOKEN", show_default=False, help="Bearer token clients must send."),
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Most tasks waiting at once.")] = 8,
    max_upload_mb: Annotated[int, typer.Option(help="Largest accepted upload (and its extracted size).")] = 512,
    max_files: Annotated[
        Optional[int],
        typer.Option(
            help="Most files and folders in one upload.", show_default="one per 64 KiB of --max-upload-mb, >= 1024"
        ),
    ] = None,
    max_process_res: Annotated[
        int, typer.Option(help="Highest processing.process_res a job may ask for.")
    ] = JobLimits.max_process_res,
    max_pixels: Annotated[
        int, typer.Option(help="Most processed pixels per job, summed over its views.")
    ] = JobLimits.max_pixels,
    max_input_pixels: Annotated[
        int, typer.Option(help="Most decoded input pixels per job, summed over its views.")
    ] = JobLimits.max_input_pixels,
    allowed_root: Annotated[
        Optional[list[str]], typer.Option(help="Server-side folder clients may name as input (repeatable).")
    ] = None,
) -> None:
    """Serve the reconstruct flow over HTTP (one model, a task queue) for `--use-backend` clients."""

    def run() -> None:
        limits = JobLimits(max_files, max_process_res, max_pixels, max_input_pixels)
        _load("flows.backend.server").serve(
            model_dir=model_dir,
            preset=preset,
            weights=weights.value,
            device=device.value,
            host=host,
            port=port,
            gallery_dir=gallery_dir,
            token=token,
            max_queue=max_queue,
            max_upload_mb=max_upload_mb,
            allowed_roots=list(allowed_root or []),
            limits=limits,
        )

    _guarded(run, service=True)


@app.command()
def gradio(
    model_dir: ServiceModelDir = None,
    preset: ServicePreset = None,
    weights: ServiceWeights = Weights.pretrained,
    workspace_dir: Annotated[str, typer.Option(help="Where the app keeps uploads and results.")] = "workspace/gradio",
    gallery_dir: Annotated[str, typer.Option(help="Where 'save to gallery' writes.")] = "workspace/gallery",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    share: Annotated[bool, typer.Option(help="Create a public gradio.live link.")] = False,
    debug: Annotated[bool, typer.Option(help="Gradio debug mode.")] = False,
    cache_examples: Annotated[bool, typer.Option(help="Precompute the examples at start.")] = False,
    cache_gs_tag: Annotated[str, typer.Option(help="Only cache examples whose name contains this tag (3DGS).")] = "",
    token: Annotated[
        Optional[str],
        typer.Option(
            envvar="DA3_GRADIO_TOKEN",
            show_default=False,
            help="Password the login page asks for (off loopback or with --share: needed).",
        ),
    ] = None,
) -> None:
    """Start the Gradio web app (needs the `app` extra: pip install -e .\\[app])."""

    def run() -> None:
        if importlib.util.find_spec("gradio") is None:
            raise CliError("gradio is not installed; install the app extra: pip install -e .[app]")
        _load("flows.gradio_app").launch(
            model_dir=model_dir,
            preset=preset,
            weights=weights.value,
            workspace_dir=workspace_dir,
            gallery_dir=gallery_dir,
            host=host,
            port=port,
            share=share,
            debug=debug,
            cache_examples=cache_examples,
            cache_gs_tag=cache_gs_tag,
            token=token,
        )

    _guarded(run, service=True)


@app.command()
def gallery(
    gallery_dir: Annotated[
        str, typer.Option(help="Folder of exported scenes (<group>/<scene>/scene.glb).")
    ] = "workspace/gallery",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8007,
    open_browser: Annotated[bool, typer.Option(help="Open the gallery in a web browser.")] = False,
    token: Annotated[
        Optional[str],
        typer.Option(
            envvar="DA3_GALLERY_TOKEN", show_default=False, help="Token every visitor must give (off loopback: needed)."
        ),
    ] = None,
) -> None:
    """Browse exported scenes (GLB viewer, depth images, videos) in a web page."""

    def run() -> None:
        from pathlib import Path

        from flows.backend.auth import check_exposure

        check_exposure(host, token, "gallery")
        if not Path(gallery_dir).is_dir():
            raise CliError(
                f"gallery dir {gallery_dir} does not exist; export a scene into it first "
                f"(da3 auto INPUT --export-dir {gallery_dir}/<scene>) or pass --gallery-dir"
            )
        import logging
        import threading
        import webbrowser

        import uvicorn

        from flows.backend.auth import RedactToken
        from flows.gallery import create_gallery_app

        url = f"http://{host}:{port}/"
        typer.echo(f"gallery of {Path(gallery_dir).resolve()} at {url}" + ("?token=<token>" if token else ""))
        if open_browser:  # after a moment, so the server is listening when the browser asks
            threading.Timer(1.0, webbrowser.open, args=(url + (f"?token={token}" if token else ""),)).start()
        if token:
            logging.getLogger("uvicorn.access").addFilter(RedactToken())
        uvicorn.run(create_gallery_app(gallery_dir, token=token), host=host, port=port, log_level="info")

    _guarded(run, service=True)


@app.command()
def version() -> None:
    """Print the versions of this package and its main dependencies."""
    from importlib.metadata import version as v

    for name in ("da3pipe", "torch", "prefect", "hydra-core", "zarr"):
        typer.echo(f"{name} {v(name)}")


def main() -> None:
    """The ``da3`` command: a usage mistake (unknown option or command, missing argument) is one line, exit 2."""
    import typer.core

    click = getattr(typer.core, "_click", None) or importlib.import_module("click")  # newer Typer vendors click
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
    try:
        code = app(prog_name="da3", standalone_mode=False)
    except no_args as exc:  # bare `da3` or `da3 image`: the help, as before
        exc.show()
        code = exc.exit_code
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "da3"
        typer.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
        code = exc.exit_code
    except (click.exceptions.Abort, typer.Abort):  # Ctrl-C at a prompt
        typer.echo(f"error: {INTERRUPTED}", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
