"""Model weights for both families (DA3 and Video Depth Anything): hub lookup, strict loading, the random stamp.

Checkpoints are ``.safetensors`` (read tensor by tensor, memory-mapped) or ``.pth`` state dicts. Random weights
are only ever written on request and are stamped: ``.safetensors`` files carry ``da3pipe_weights=random`` in
their metadata, ``.pth`` files get a sidecar ``<file>.json`` holding the stamp and the file's size (so a
checkpoint later saved over it is not taken for random). Loaders report the stamp; nothing here substitutes
random weights for missing ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from da3core.errors import UserError

if TYPE_CHECKING:  # torch loads with the first checkpoint read or written: checks of a model source need none
    import torch
    from torch import nn

HUB_HOST = "huggingface.co"
HUB_CHECK_SECONDS = 1.5
RANDOM_STAMP = "da3pipe_weights"
CHECKPOINT_SUFFIXES = (".pth", ".safetensors")


class WeightsError(UserError, RuntimeError):
    """Weights that cannot be found, fetched or loaded; the message says how to supply them."""


def hub_reachable(timeout: float = HUB_CHECK_SECONDS) -> bool:
    """Whether huggingface.co answers within ``timeout`` seconds (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout):
                result.append(True)
        except Exception:  # noqa: BLE001 - any failure to connect means "unreachable"
            result.append(False)

    # A hanging DNS lookup is not covered by the socket timeout, so the probe runs in a thread we stop waiting for.
    thread = threading.Thread(target=probe, name="da3-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.2)
    return bool(result and result[0])


def hub_file(repo_id: str, filename: str, local_dir: str | os.PathLike | None = None, guidance: str = "") -> Path:
    """``filename`` of hub repo ``repo_id``: from the local cache, else downloaded when the hub answers.

    ``guidance`` (how to supply the file by hand) ends the offline error message.
    """
    from huggingface_hub import hf_hub_download

    token = os.environ.get("HF_HUB_TOKEN") or None
    cached = hub_cached(repo_id, filename) if local_dir is None else None
    if cached is not None:
        return cached
    check_hub_file(repo_id, filename, guidance, cache=False)
    try:
        return Path(
            hf_hub_download(repo_id, filename, token=token, local_dir=None if local_dir is None else str(local_dir))
        )
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean the same to the user
        raise WeightsError(
            f"cannot download {repo_id}/{filename} from the Hugging Face Hub: {exc}. {_by_hand(repo_id, guidance)}"
        ) from exc


def hub_cached(repo_id: str, filename: str) -> Path | None:
    """``filename`` of hub repo ``repo_id`` in the local Hugging Face cache, else None (never downloads)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(repo_id, filename, local_files_only=True, token=os.environ.get("HF_HUB_TOKEN") or None)
        )
    except Exception:  # noqa: BLE001 - any cache miss means "not available locally"
        return None


def check_hub_file(repo_id: str, filename: str, guidance: str = "", cache: bool = True) -> None:
    """Raise WeightsError unless :func:`hub_file` can supply the file: cached (when ``cache``) or the hub answers.

    Downloads nothing, so a run can be refused before any work when its weights cannot be had.
    """
    if cache and hub_cached(repo_id, filename) is not None:
        return
    if not hub_reachable():
        raise WeightsError(
            f"cannot download {repo_id}/{filename}: the Hugging Face Hub is unreachable "
            f"(offline or HF_HUB_OFFLINE=1). {_by_hand(repo_id, guidance)}"
        )


def _by_hand(repo_id: str, guidance: str) -> str:
    """How to supply a hub file without the hub: ``guidance``, else the generic download-and-pass-the-dir."""
    return guidance or (
        f"Download it on a connected machine (huggingface-cli download {repo_id} --local-dir DIR) and pass that DIR"
    )


@contextmanager
def _open_safetensors(file: Path) -> Iterator[Any]:
    """``safe_open`` with a damaged or cut-short file reported as a :class:`WeightsError` (the header is checked
    against the file's size when it opens)."""
    try:
        handle = safe_open(str(file), framework="pt")
    except SafetensorError as exc:
        raise WeightsError(f"cannot read {file}: {exc} (damaged or incomplete download); download it again") from None
    with handle as f:
        yield f


@contextmanager
def open_checkpoint(file: Path) -> Iterator[Mapping[str, torch.Tensor]]:
    """A read-only mapping of a checkpoint's tensors; safetensors are read lazily, one tensor per lookup."""
    if file.suffix == ".safetensors":
        with _open_safetensors(file) as f:
            yield _LazyTensors(f)
        return
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors alike mean an unreadable file
        raise WeightsError(f"cannot read {file} as a PyTorch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{file} does not hold a state dict (found {type(state).__name__})")
    yield state


class _LazyTensors(Mapping):
    """safetensors' handle as a Mapping, so both formats share one loading path."""

    def __init__(self, handle) -> None:  # noqa: ANN001 - safetensors' handle has no public type
        self._handle, self._keys = handle, list(handle.keys())
        self._key_set = set(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        """A tensor's shape without reading its values."""
        return tuple(self._handle.get_slice(key).get_shape())


def load_strict(module: nn.Module, file: Path, prefix: str = "", what: str = "the model") -> None:
    """Copy a checkpoint's tensors (keys ``prefix + name``) into ``module``; a missing, extra or misshapen one fails.

    ``module`` may live on the meta device: its tensors are then materialised from the file.
    """
    targets = module.state_dict()
    with open_checkpoint(file) as stored:
        expected = {prefix + k for k in targets}
        missing, unexpected = sorted(expected - set(stored)), sorted(set(stored) - expected)
        shape_of = stored.shape if isinstance(stored, _LazyTensors) else (lambda k: tuple(stored[k].shape))
        wrong = sorted(
            prefix + k for k in targets if prefix + k in stored and shape_of(prefix + k) != tuple(targets[k].shape)
        )
        problems = [
            f"{label} {len(keys)} tensors: {_show(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong))
            if keys
        ]
        if problems:
            raise WeightsError(f"{file} does not match {what}: {'; '.join(problems)}")
        module.load_state_dict({k: stored[prefix + k].float() for k in targets}, strict=True, assign=True)


def _show(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def write_checkpoint(state: Mapping[str, torch.Tensor], path: str | os.PathLike, stamp: Mapping[str, str]) -> Path:
    """Write ``state`` as ``.safetensors`` or ``.pth`` (by suffix) with ``stamp``, atomically (temp file + rename).

    The temporary name is the writer's own: processes writing one checkpoint at once (Dask workers making the same
    random weights) each rename a whole file into place.
    """
    path = Path(path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"checkpoint path must end in .pth or .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    needed, free = sum(t.numel() * t.element_size() for t in state.values()), shutil.disk_usage(path.parent).free
    if free < needed:
        raise WeightsError(
            f"not enough free space to write {path}: {free / 2**20:.0f} MiB free, the weights need "
            f"{needed / 2**20:.0f} MiB; free space there or write elsewhere"
        )
    tmp = path.with_name(f"{path.name}.partial-{uuid.uuid4().hex[:12]}")
    import torch
    from safetensors.torch import save_file

    try:
        if path.suffix == ".safetensors":
            try:
                save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt", **stamp})
            except SafetensorError as exc:  # its I/O errors carry the OS error only as text: "(os error 28)"
                code = re.search(r"\(os error (\d+)\)", str(exc))
                if code is None:
                    raise
                raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from exc
        else:
            torch.save(dict(state), tmp)
            _sidecar(path).write_text(json.dumps({**stamp, "bytes": tmp.stat().st_size}, indent=2))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write failed
    return path


def random_stamp(seed: int, **info: str) -> dict[str, str]:
    """The metadata that marks a checkpoint as seeded random weights."""
    return {RANDOM_STAMP: "random", "seed": str(seed), **info}


def read_stamp(file: Path) -> dict[str, str]:
    """A checkpoint's da3pipe stamp (empty for official files)."""
    if file.suffix == ".safetensors":
        with _open_safetensors(file) as f:
            return dict(f.metadata() or {})
    sidecar = _sidecar(file)
    stamp = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return stamp if stamp.get("bytes") == file.stat().st_size else {}


def is_random(stamp: Mapping[str, str]) -> bool:
    """Whether a stamp marks seeded random (untrained) weights."""
    return stamp.get(RANDOM_STAMP) == "random"


def _sidecar(file: Path) -> Path:
    return file.with_name(file.name + ".json")
