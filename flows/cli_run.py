"""What a ``da3`` inference command does: flags → Hydra overrides → the reconstruct flow, locally or on a backend.

Every inference command goes through :func:`execute`: resolve the model, build the overrides
(:func:`overrides_for`, pure), validate config and input, check the export dir, then run
``flows.reconstruct.main`` (exactly what ``python -m flows.reconstruct <overrides>`` runs) or hand the
same overrides to the backend client. Older files in the export dir are removed only after the new result
is written (``--auto-cleanup`` or a confirmation). Heavy modules (torch, Prefect) are imported only when a command runs,
so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from da3core.errors import DeviceError, UserError
from da3core.model.presets import DEFAULT_PRESET, PRESETS
from flows.cli_flags import FLAGS, INFERENCE_COMMANDS, InferenceOptions, OverrideContext, hydra_value, split_list

if TYPE_CHECKING:
    from flows.schema import ReconstructConfig

# The default preset's model card; used when neither --model-dir nor --preset is given.
DEFAULT_MODEL_DIR = PRESETS[DEFAULT_PRESET].hub_id
DOWNLOAD_PREFIX = ".da3-download-"  # + host-pid-random: where --use-backend downloads beside older contents


class CliError(UserError):
    """A user mistake the CLI reports as one line (problem and fix), with a non-zero exit."""


def export_formats(spec: str) -> list[str]:
    """``--export-format`` (``glb-npz``, ``glb+npz`` or ``glb,npz``) as format names; unknown ones are a CliError."""
    from da3core.export import parse_formats

    try:
        return parse_formats(spec)
    except ValueError as exc:
        raise CliError(f"--export-format {spec}: {exc}") from None


def overrides_for(command: str, input: str | Path, options: InferenceOptions, backend: bool = False) -> list[str]:
    """The Hydra overrides of the reconstruct flow for one command (``options.preset`` must be resolved).

    With ``backend=True`` the overrides describe only the work: no ``scene``/``output_dir``/``storage.root``
    (the backend places them), no ``model.path``/``model.device`` (paths and devices of this machine), and the
    model only when asked for (``options.preset`` set, ``--weights random``); else the server's own model runs.
    Every other flag turns into overrides as its declaration in :data:`flows.cli_flags.FLAGS` says.
    """
    if command not in INFERENCE_COMMANDS:
        raise ValueError(f"not an inference command: {command}")
    if options.preset is None and not backend:
        raise ValueError("options.preset must be resolved first (resolve_model)")
    export_dir = str(Path(options.export_dir).expanduser().absolute())
    out = (
        []
        if backend
        else [
            f"scene={hydra_value(str(Path(input).expanduser().absolute()))}",
            f"output_dir={hydra_value(export_dir)}",
            f"storage.root={hydra_value(export_dir)}",
        ]
    )
    formats = export_formats(options.export_format)
    out.append(f"export={'+'.join(formats)}")
    if options.preset is not None:
        out.append(f"model={options.preset}")
    if not backend or options.weights != "pretrained":
        out.append(f"model.weights={options.weights}")
    if options.model_dir is not None and options.weights == "pretrained" and not backend:
        out.append(f"model.path={hydra_value(options.model_dir)}")
    context = OverrideContext(formats, backend)
    for flag in FLAGS:
        value = getattr(options, flag.name)
        if flag.overrides is not None and value is not None:
            out += flag.overrides(value, context)
    return out


def resolve_model(model_dir: str | None, preset: str | None, weights: str) -> tuple[str, str | None]:
    """(preset, model dir or hub id or None); the preset is --preset, else the model dir's config.json or hub id,
    else :data:`DEFAULT_PRESET`. The model dir names the preset whatever the weights; returned for pretrained ones."""
    from da3core.model.presets import preset_of_hub_id

    if preset is not None and preset not in PRESETS:
        raise CliError(f"unknown preset '{preset}'; use one of: {', '.join(PRESETS)}")
    source = model_dir if model_dir is not None else (None if preset else DEFAULT_MODEL_DIR)
    inferred, weights_file = None, None
    if source is not None:
        path = Path(source).expanduser()
        if path.is_dir():
            config, weights_file = path / "config.json", path / "model.safetensors"
            if not config.is_file():
                raise CliError(
                    f"--model-dir {source} has no config.json; a DA3 model dir holds config.json and "
                    "model.safetensors (huggingface-cli download <repo> --local-dir DIR)"
                )
            inferred = preset_in_config(config, explicit=preset is not None)
        elif source.count("/") != 1 or source.startswith((".", "/", "~")):
            raise CliError(
                f"--model-dir {source} not found; give a local model dir or a hub id such as "
                "depth-anything/DA3-LARGE-1.1"
            )
        else:
            inferred = preset_of_hub_id(source)
    if preset is not None and inferred is not None and preset != inferred:
        raise CliError(
            f"--preset {preset} does not match --model-dir {source}, which holds {inferred}; "
            "drop --preset or pass the matching model dir"
        )
    if weights == "pretrained" and weights_file is not None and not weights_file.is_file():
        raise CliError(
            f"--model-dir {source} has no model.safetensors; download the checkpoint into it "
            f"(huggingface-cli download <repo> --local-dir {source}) or pass --weights random"
        )
    chosen = preset or inferred
    if chosen is None:
        raise CliError(f"cannot tell which preset {source} is; pass --preset (one of: {', '.join(PRESETS)})")
    return chosen, (source if weights == "pretrained" else None)


def preset_in_config(config: Path, explicit: bool) -> str | None:
    """The known preset that a model dir's ``config.json`` names as ``model_name``. A file that names none is a
    CliError, unless --preset was given (``explicit``): then the file is not needed and None is returned."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:  # ValueError: broken JSON or not UTF-8
        problem = f"is not readable JSON ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})"
    else:
        name = data.get("model_name") if isinstance(data, dict) else None
        if isinstance(name, str) and name in PRESETS:
            return name
        if isinstance(name, str):
            problem = f"names model_name '{name}', which is not a DA3 preset"
        elif isinstance(data, dict) and "model_name" in data:
            problem = f"has model_name {json.dumps(name)}, not a preset name"
        else:
            problem = 'does not name its preset (an object with "model_name": "<preset>")'
    if explicit:
        return None
    raise CliError(f"{config} {problem}; fix the file or pass --preset (one of: {', '.join(PRESETS)})")


def check_input(command: str, input: Path, options: InferenceOptions) -> str:
    """Classify the input as the flow will (``discover_scene``); it must suit ``command``. Returns a summary."""
    from da3core.io.inputs import IMAGE_EXTENSIONS, InputError, discover_scene
    from da3core.io.video import VideoError

    exts = (
        tuple(e.lstrip(".").lower() for e in split_list(options.image_extensions))
        if options.image_extensions is not None
        else IMAGE_EXTENSIONS
    )
    try:
        scene = discover_scene(
            input, exts, options.sparse_subdir or "", options.fps if options.fps is not None else 1.0, hash_files=False
        )  # the flow hashes
    except (InputError, VideoError) as exc:
        raise CliError(str(exc)) from None
    if command != "auto" and scene.kind != command:
        hint = {
            "image": "an image file",
            "images": "a folder of images",
            "video": "a video file",
            "colmap": "a COLMAP dataset (images/ + sparse/)",
        }
        raise CliError(
            f"`da3 {command}` needs {hint[command]} but {input} is {hint[scene.kind]}; "
            f"use `da3 {scene.kind}` or `da3 auto`"
        )
    return f"{len(scene)} view{'s' * (len(scene) != 1)} ({scene.kind})"


def plan_export_dir(
    export_dir: Path, input: Path, auto_cleanup: bool, interactive: bool, confirm: Callable[[str], bool]
) -> bool:
    """Check ``export_dir`` can take the result; True when it holds older files that the user agreed to replace.

    Nothing is deleted here: :func:`replace_old_contents` removes the old files once the new result is written.
    """
    export_dir = export_dir.expanduser().resolve()
    if export_dir.exists() and not export_dir.is_dir():
        raise CliError(f"--export-dir {export_dir} is a file; choose a folder")
    parent = next(p for p in export_dir.parents if p.exists())  # the one the run would create the folder in
    if not export_dir.exists() and not parent.is_dir():
        raise CliError(f"--export-dir {export_dir} cannot be created: {parent} is a file; choose another --export-dir")
    if not export_dir.exists() or not any(export_dir.iterdir()):
        return False
    check_replaceable(export_dir, input)
    if not auto_cleanup:
        if not interactive:
            raise CliError(
                f"--export-dir {export_dir} is not empty; pass --auto-cleanup to replace its contents "
                "or choose another --export-dir"
            )
        if not confirm(f"{export_dir} is not empty. Replace its contents with the new result?"):
            raise CliError(f"cancelled; {export_dir} left as it was")
    return True


def discard_dead_downloads(export_dir: Path) -> None:
    """Remove the download folders that killed ``--use-backend`` runs of this machine left in ``export_dir`` (a
    live run's, or another machine's, stay)."""
    if not export_dir.expanduser().is_dir():
        return
    here = f"{DOWNLOAD_PREFIX}{socket.gethostname()}-"
    for folder in export_dir.expanduser().glob(f"{DOWNLOAD_PREFIX}*"):
        pid = folder.name.removeprefix(here).split("-")[0]
        if folder.name.startswith(here) and pid.isdigit() and not _alive(int(pid)) and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def check_replaceable(folder: Path, input: Path) -> None:
    """Refuse a folder whose contents must never be deleted: a filesystem root or mount point, one that is or
    holds $HOME or the working directory, and one that is, holds or lies inside the input (paths resolved)."""
    folder, input = folder.expanduser().resolve(), input.expanduser().resolve()
    fix = "choose a dedicated export folder"
    if folder == Path(folder.anchor) or os.path.ismount(folder):
        raise CliError(f"--export-dir {folder} is a filesystem root; {fix}")
    for what, path in (("your home folder", Path.home().resolve()), ("the current folder", Path.cwd().resolve())):
        if path.is_relative_to(folder):
            raise CliError(f"--export-dir {folder} is or holds {what} ({path}); {fix}")
    if input.is_relative_to(folder) or folder.is_relative_to(input):
        raise CliError(f"--export-dir {folder} holds the input or lies inside it ({input}); {fix}")


def replace_old_contents(export_dir: Path, download: Path | None = None) -> None:
    """After a successful run, leave only the new result in ``export_dir``: the store and the files it lists as its
    exports (or, for a backend run, what was downloaded into ``download``: the old store is unmarked, the files
    moved over, then the new store, marked, swapped in). Holds the scene lock, so no other run is writing there
    meanwhile; a kill at any point leaves the old result, an unmarked store, or the new result."""
    from da3core.store import SceneStore, store_lock
    from flows.reconstruct import STORE_NAME

    export_dir = export_dir.expanduser().resolve()
    store = SceneStore(str(export_dir / STORE_NAME))
    with store_lock(store):
        if download is None:
            keep = set(store.attrs().get("export_files", []))
        else:
            new = download / STORE_NAME
            if store.is_complete():  # its files are about to be replaced: it no longer describes them
                store.update_attrs(complete=None)
            keep = set()
            for path in sorted(p for p in download.rglob("*") if not p.is_dir() and not p.is_relative_to(new)):
                rel = path.relative_to(download)
                (export_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, export_dir / rel)
                keep.add(rel.as_posix())
            store.replace_with(SceneStore(str(new)))  # marked, and every file it lists is in place
            shutil.rmtree(download)
        print(f"removing older files from {export_dir}", file=sys.stderr)
        _remove_all_but(export_dir, keep, STORE_NAME)


def _remove_all_but(folder: Path, keep: set[str], store_name: str, prefix: str = "") -> None:
    """Delete everything under ``folder`` except ``keep`` (relative paths) and the store with its lock; links are
    removed, never followed."""
    for entry in folder.iterdir():
        rel = prefix + entry.name
        if rel in keep or (not prefix and entry.name.startswith(store_name)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if any(k.startswith(rel + "/") for k in keep):
                _remove_all_but(entry, keep, store_name, rel + "/")
            else:
                shutil.rmtree(entry)
        else:
            entry.unlink()


# Fixes the config layer words in override terms, said here in flag terms.
_FLAG_TERMS = {
    "config error at export: ": "--export-format: ",
    "infer_gs=True": "--infer-gs",
    "export_feat_layers=[...] to inference": "--export-feat LAYERS",
    "model=": "--preset ",
}


def in_flag_terms(message: str) -> str:
    """A config error's fix in ``da3`` flags rather than Hydra overrides."""
    for config_words, flag in _FLAG_TERMS.items():
        message = message.replace(config_words, flag)
    return message


def execute(
    command: str, input: str, options: InferenceOptions, interactive: bool, confirm: Callable[[str], bool]
) -> int:
    """Run one inference command; returns the exit code. Nothing is deleted before the new result is written."""
    if "://" in options.export_dir:
        raise CliError(
            f"--export-dir {options.export_dir} must be a local folder; for object storage run "
            "python -m flows.reconstruct storage.root=s3://bucket/prefix ..."
        )
    explicit_model = options.preset is not None or options.model_dir is not None
    preset, model_dir = resolve_model(options.model_dir, options.preset, options.weights)
    local = replace(options, preset=preset, model_dir=model_dir)
    overrides = overrides_for(command, input, local)
    cfg = _compose(overrides)
    summary = check_input(command, Path(input), options)
    if not options.use_backend:
        _check_device(options.device)
    export_dir = Path(options.export_dir)
    discard_dead_downloads(export_dir)
    replacing = plan_export_dir(export_dir, Path(input), options.auto_cleanup, interactive, confirm)
    if options.use_backend:
        # The server runs its own model unless this command named one (--preset / --model-dir).
        return _run_on_backend(command, input, replace(options, preset=preset if explicit_model else None), replacing)
    if replacing:  # a fresh result, not one reused from the old contents
        overrides.append("force=true")
        cfg.force = True
    print(
        f"da3 {command}: {summary}, {preset} ({options.weights} weights) -> {export_dir.absolute()}\n"
        f"  same as: python -m flows.reconstruct {shlex.join(overrides)}",
        file=sys.stderr,
    )
    from flows.errors import guarded, run_flows
    from flows.reconstruct import run

    code = guarded(lambda: run_flows(run, cfg))
    if code == 0 and replacing:
        replace_old_contents(export_dir)
    return code


def _compose(overrides: list[str]) -> ReconstructConfig:
    """The run's config, composed once from the command's overrides; config errors in flag terms."""
    from flows.config import ConfigError, load_config

    try:
        return load_config("reconstruct", overrides)
    except ConfigError as exc:
        raise CliError(in_flag_terms(str(exc))) from None


def _check_device(device: str) -> None:
    """An explicitly requested device must exist here (``auto`` always resolves)."""
    from flows.preflight import check_device

    try:
        check_device(device)
    except DeviceError as exc:
        raise CliError(str(exc).replace("model.device=", "--device ")) from None


def _run_on_backend(command: str, input: str, options: InferenceOptions, replacing: bool) -> int:
    """Send the work to a da3 backend through its client; the outputs land in the export dir (when it holds older
    files, first in a folder inside it, then moved over by :func:`replace_old_contents`)."""
    try:
        from flows.backend.client import run_on_backend
    except ImportError as exc:
        raise CliError(f"the backend client is not available ({exc}); run without --use-backend") from None
    token = options.backend_token or os.environ.get("DA3_BACKEND_TOKEN") or None
    overrides = overrides_for(command, input, options, backend=True)
    export_dir = Path(options.export_dir).expanduser().absolute()
    dest = export_dir / f"{DOWNLOAD_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    dest = dest if replacing else export_dir
    print(f"da3 {command}: sending {input} to {options.backend_url}", file=sys.stderr)
    try:
        result = run_on_backend(
            options.backend_url,
            overrides,
            str(Path(input).expanduser().absolute()),
            str(dest),
            token=token,
            progress=True,
        )
    except Exception as exc:  # the client's errors (HTTP, connection, task failure) all end the command the same way
        if replacing:
            shutil.rmtree(dest, ignore_errors=True)
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise CliError(f"backend {options.backend_url}: {message}") from None
    if replacing:
        replace_old_contents(export_dir, download=dest)
    print(
        f"da3 {command}: done on {options.backend_url} -> {Path(options.export_dir).absolute()} "
        f"({', '.join(f'{k}={v}' for k, v in result.items() if isinstance(v, (str, int, float)))})"
    )
    return 0
