"""A token holder attacking a real backend on loopback: crafted COLMAP names, path overrides in every Hydra
syntax, sparse tar bombs and special members, jobs over the size caps, malformed bodies. A file planted on the
server outside every upload never shows up in any response, error or downloaded result byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import zarr
from live import backend_server
from PIL import Image, PngImagePlugin

from da3core.io.inputs import InputError, discover_scene
from da3core.synthetic import make_capture, write_colmap
from flows.backend.archive import ArchiveError, pack, safe_extract
from flows.backend.limits import JobLimits
from flows.backend.server import create_app

pytestmark = pytest.mark.slow  # servers, subprocesses and kills: seconds each

MODEL = dict(model_dir=None, preset="da3-small", weights="random", device="cpu")
LIMITS = JobLimits(max_files=40, max_process_res=112, max_pixels=80_000, max_input_pixels=500_000)
TAR = {"Content-Type": "application/x-tar"}
JSON = {"Content-Type": "application/json"}
SMALL = ["export=npz", "processing.process_res=56"]
MAGENTA = np.array([255, 0, 255], dtype=np.uint8)  # the planted image's colour; the synthetic scenes never use it


@dataclass
class Adversary:
    """A running backend, the secret planted beside it, and every byte the attacker has received."""

    url: str
    root: Path
    secret: Path  # a magenta PNG outside every upload, carrying ``token`` in a text chunk
    token: str
    server_model: Path  # a COLMAP model on the server, outside every upload
    seen: list[bytes] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # ids of the jobs this module got queued

    def post(self, **kwargs) -> httpx.Response:
        response = httpx.post(self.url + "/jobs", timeout=120, **kwargs)
        self.seen.append(response.content)
        if response.status_code == 202:
            self.accepted.append(response.json()["id"])
        return response

    def upload(self, path: Path | None, overrides: list[str] = (), archive: bytes | None = None) -> httpx.Response:
        """POST a tar of ``path`` (or the given ``archive``) with ``overrides``."""
        if archive is None:
            buffer = io.BytesIO()
            pack(path, buffer)
            archive = buffer.getvalue()
        return self.post(params=[("override", o) for o in overrides], content=archive, headers=TAR)

    def get(self, path: str) -> httpx.Response:
        response = httpx.get(self.url + path, timeout=60)
        self.seen.append(response.content)
        return response

    def finished(self, job_id: str) -> dict:
        deadline = time.time() + 180
        while (job := self.get(f"/jobs/{job_id}").json())["status"] not in ("completed", "failed"):
            assert time.time() < deadline, job
            time.sleep(0.2)
        return job

    def result(self, job_id: str, dest: Path, record: bool = True) -> Path:
        """Download and extract a completed job's outputs (recorded among the bytes seen unless told otherwise)."""
        archive = httpx.get(f"{self.url}/jobs/{job_id}/result", timeout=60).content
        if record:
            self.seen.append(archive)
        safe_extract(io.BytesIO(archive), dest)
        return dest


def _plant_secret(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True)
    token = "SECRET-" + hashlib.sha256(str(folder).encode()).hexdigest()[:24]
    info = PngImagePlugin.PngInfo()
    info.add_text("owner", token)
    secret = folder / "secret.png"
    Image.new("RGB", (64, 48), tuple(MAGENTA.tolist())).save(secret, pnginfo=info)
    (folder / "secret.txt").write_text(token)
    return secret, token


def _colmap(root: Path, seed: int = 2, names: dict[str, str] | None = None) -> Path:
    """A 4-view 64x48 COLMAP dataset with a text model; ``names`` renames images in images.txt only."""
    model = write_colmap(make_capture(4, 64, 48, seed=seed), root, text=True, n_points=50)
    text = (model / "images.txt").read_text()
    for old, new in (names or {}).items():
        assert f" {old}\n" in text
        text = text.replace(f" {old}\n", f" {new}\n")
    (model / "images.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def adversary(tmp_path_factory):
    """A backend with small caps, an allowed root holding linked datasets, and a secret planted outside both."""
    root = tmp_path_factory.mktemp("adversarial")
    secret, token = _plant_secret(root / "server_secret")
    server_model = _colmap(root / "server_model", names={"frame_0000.png": str(secret)}) / "sparse" / "0"
    allowed = root / "allowed"
    linked = _colmap(allowed / "linked")
    (linked / "images" / "frame_0001.png").unlink()
    (linked / "images" / "frame_0001.png").symlink_to(secret)
    linked_sparse = _colmap(allowed / "linked_sparse")
    shutil.rmtree(linked_sparse / "sparse")
    (linked_sparse / "sparse").symlink_to(server_model.parent, target_is_directory=True)
    app = create_app(
        **MODEL,
        max_queue=8,
        max_upload_mb=2,
        allowed_roots=[str(allowed)],
        workspace_dir=str(root / "workspace"),
        limits=LIMITS,
    )
    with backend_server(app) as url:
        yield Adversary(url, root, secret, token, server_model)


def _refused(response: httpx.Response, *fragments: str) -> str:
    """The one-line reason of a 400, which must name every fragment."""
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and all(f in detail for f in fragments), detail
    return detail


def test_crafted_colmap_names_refused_alike_whether_or_not_the_file_exists(adversary, tmp_path):
    secret = adversary.secret
    up = "../" * 64  # more than enough to reach / from the job's images/ folder
    names = {
        "absolute": str(secret),
        "dotdot": up + str(secret)[1:],
        "absolute missing": str(secret) + ".gone",
        "dotdot missing": up + str(secret)[1:] + ".gone",
        "one level up": "../secret.png",
    }
    details = {}
    for case, name in names.items():
        dataset = _colmap(tmp_path / case.replace(" ", "_") / "scene", names={"frame_0000.png": name})
        details[case] = _refused(adversary.upload(dataset, SMALL), "points outside", "images/", name)
        assert str(adversary.root / "workspace") not in details[case]  # upload paths are shown relative to it
    # The same sentence for an existing and a missing target: the error is no oracle for the server's files.
    for case in ("absolute", "dotdot"):
        shown = names[case], names[f"{case} missing"]
        assert details[case].replace(shown[0], "NAME") == details[f"{case} missing"].replace(shown[1], "NAME")


def test_linked_server_datasets_refused(adversary):
    allowed = adversary.root / "allowed"
    linked = adversary.post(json={"path": str(allowed / "linked"), "overrides": SMALL})
    _refused(linked, "COLMAP image name 'frame_0001.png'", "points outside")
    linked_sparse = adversary.post(json={"path": str(allowed / "linked_sparse"), "overrides": SMALL})
    _refused(linked_sparse, "is outside the dataset", "input.sparse_subdir")


def test_local_datasets_cannot_name_files_outside(tmp_path):
    """The same confinement protects a local user from a crafted dataset (no backend involved)."""
    secret, _ = _plant_secret(tmp_path / "home")
    for name in (str(secret), "../../home/secret.png"):
        dataset = _colmap(tmp_path / f"ds{len(name)}", names={"frame_0002.png": name})
        with pytest.raises(InputError, match="points outside .*images; image names must be files inside images/"):
            discover_scene(dataset)
    linked = _colmap(tmp_path / "linked")
    (linked / "images" / "frame_0003.png").unlink()
    (linked / "images" / "frame_0003.png").symlink_to(secret)
    with pytest.raises(InputError, match="'frame_0003.png' in .* points outside"):
        discover_scene(linked)
    with pytest.raises(InputError, match="'../home' is outside the dataset"):
        discover_scene(linked, sparse_subdir="../home")
    # Names inside images/ stay valid, sub-folders included.
    nested = _colmap(tmp_path / "nested", names={"frame_0001.png": "sub/frame_0001.png"})
    (nested / "images" / "sub").mkdir()
    (nested / "images" / "frame_0001.png").rename(nested / "images" / "sub" / "frame_0001.png")
    scene = discover_scene(nested)
    assert scene.kind == "colmap" and str(nested / "images" / "sub" / "frame_0001.png") in scene.paths


def test_path_overrides_in_every_syntax_are_confined(adversary, tmp_path):
    dataset = _colmap(tmp_path / "mine")
    model = str(adversary.server_model)
    deep = "../" * 40 + model[1:]
    attempts = {
        f"input={{sparse_subdir:{model}}}": "must name a folder inside the job's input",  # the reported hole
        f"input.sparse_subdir={model}": "must name a folder inside",
        f"input.sparse_subdir='{model}'": "must name a folder inside",
        f"++input.sparse_subdir={model}": "must name a folder inside",
        f"input.sparse_subdir={deep}": "must name a folder inside",
        "input.sparse_subdir=sparse/../../..": "must name a folder inside",
        f"input={{sparse_subdir:'{deep}',fps:2}}": "must name a folder inside",
        f"input.image_extensions=[png,'{adversary.secret}']": "looks like a path",
        "export=${oc.env:HOME}": "interpolations are not accepted",
        "export='\\${oc.env:HOME}'": "interpolations are not accepted",
        "input.sparse_subdir=${oc.env:HOME}": "interpolations are not accepted",
        "processing={process_res:'${oc.decode:\"56\"}'}": "interpolations are not accepted",
        "+exporters.npz.seed=${oc.env:HOME}": "interpolations are not accepted",
        f"hydra.searchpath=[file://{adversary.secret.parent}]": "fixed by the backend",
        "hydra/job_logging=disabled": "config-group and package (@) overrides",
        "local=../../etc": "fixed by the backend",
        "+local=x": "fixed by the backend",
        "input@_global_=x": "config-group and package (@) overrides",
        "model@input=da3-small": "config-group and package (@) overrides",
        "model=../../server_model": "cannot switch models",
        "~model": "cannot switch models",
        f"model.path={model}": "cannot switch models",
        f"storage={{root:{adversary.root}}}": "fixed by the backend",
        f"scenes={{x:{model}}}": "fixed by the backend",
        "~storage": "fixed by the backend",
    }
    for override, reason in attempts.items():
        _refused(adversary.upload(dataset, [*SMALL, override]), reason)
    # A model folder inside the upload is fine in the same syntax (the dotted form runs in the last test).
    accepted = adversary.upload(dataset, [*SMALL, "input={sparse_subdir:sparse/0}"])
    assert accepted.status_code == 202, accepted.text
    assert adversary.finished(accepted.json()["id"])["status"] == "completed"


def _gnu_sparse_tar(tmp_path: Path, fmt: str) -> bytes:
    """A tar written by GNU tar --sparse of an 8 GiB file that is all hole but one byte (about 10 KiB)."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write sparse archives")
    scene = tmp_path / f"bomb_{fmt}"
    scene.mkdir()
    with open(scene / "big.png", "wb") as f:
        f.truncate(8 << 30)
        f.seek((8 << 30) - 1)
        f.write(b"x")
    out = tmp_path / f"bomb_{fmt}.tar"
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", str(out), "-C", str(tmp_path), scene.name], check=True)
    (scene / "big.png").unlink()
    assert out.stat().st_size < 64 * 1024
    return out.read_bytes()


def _allocated(folder: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*"))


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_tar_bomb_refused_within_a_second(adversary, tmp_path, fmt):
    archive = _gnu_sparse_tar(tmp_path, fmt)
    workspace = adversary.root / "workspace"
    before = sorted(workspace.iterdir())
    started = time.perf_counter()
    response = adversary.upload(None, archive=archive)
    elapsed = time.perf_counter() - started
    _refused(response, "big.png", "is a sparse file")
    assert elapsed < 1.0, elapsed
    assert sorted(workspace.iterdir()) == before and not list(workspace.rglob("big.png"))
    assert max((p.stat().st_size for p in workspace.rglob("*") if p.is_file()), default=0) < (8 << 20)


def _tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, None)
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.devmajor, info.devminor = kind, link, 1, 3
    return info


def test_device_fifo_and_link_members_refused(adversary):
    image = io.BytesIO()
    Image.new("RGB", (32, 24)).save(image, format="PNG")
    good = (tarfile.TarInfo("scene/a.png"), image.getvalue())
    cases = {
        "character device": _member("scene/null.png", tarfile.CHRTYPE),
        "block device": _member("scene/disk.png", tarfile.BLKTYPE),
        "fifo": _member("scene/pipe.png", tarfile.FIFOTYPE),
        "hard link": _member("scene/b.png", tarfile.LNKTYPE, "scene/a.png"),
        "symbolic link": _member("scene/c.png", tarfile.SYMTYPE, str(adversary.secret)),
    }
    for kind, member in cases.items():
        _refused(adversary.upload(None, archive=_tar([good, member])), f"is a {kind}")
    outside = _member("scene/d.png", tarfile.LNKTYPE, str(adversary.secret))
    _refused(adversary.upload(None, archive=_tar([good, outside])), "is a hard link")


def test_too_many_entries_refused(adversary):
    entries = [(tarfile.TarInfo(f"scene/{i:03d}.png"), b"") for i in range(LIMITS.max_files + 1)]
    _refused(adversary.upload(None, archive=_tar(entries)), f"more than {LIMITS.max_files} entries")


def test_extraction_caps_are_checked_before_writing(tmp_path):
    files = [(tarfile.TarInfo(f"scene/{i}.bin"), b"x" * 1000) for i in range(4)]
    archive = _tar(files)  # 4 files + nothing else: 4 entries, 4000 bytes
    assert safe_extract(io.BytesIO(archive), tmp_path / "exact", max_bytes=4000, max_files=4) == ["scene"]
    assert len(list((tmp_path / "exact" / "scene").iterdir())) == 4
    with pytest.raises(ArchiveError, match="more than 3999 bytes"):
        safe_extract(io.BytesIO(archive), tmp_path / "bytes", max_bytes=3999)
    with pytest.raises(ArchiveError, match="more than 3 entries"):
        safe_extract(io.BytesIO(archive), tmp_path / "files", max_files=3)
    assert not list((tmp_path / "bytes").iterdir()) and not list((tmp_path / "files").iterdir())
    assert JobLimits().files_for(512 << 20) == 8192 and JobLimits().files_for(1 << 20) == 1024


def test_jobs_over_the_caps_are_400(adversary, image_folder, video_file, tmp_path):
    _refused(adversary.upload(image_folder, ["processing.process_res=126"]), "process_res=126", "--max-process-res")
    _refused(adversary.upload(image_folder, ["processing={process_res:140}"]), "--max-process-res")
    # Views x pixels: 60 frames at 112 are 564,480 pixels, each frame under the resolution cap.
    _refused(adversary.upload(video_file, ["processing.process_res=112", "input.fps=0"]), "60 views", "--max-pixels")
    # A 2000x20 strip resized so its short side is 112 is 11,200 pixels wide: one view, over the pixel cap.
    strip = tmp_path / "strip"
    strip.mkdir()
    Image.new("RGB", (2000, 20)).save(strip / "strip.png")
    _refused(
        adversary.upload(strip, ["processing.process_res=112", "processing.method=lower_bound_resize"]), "--max-pixels"
    )
    # A small file that decodes to a million pixels: over the input-pixel cap before anything is decoded.
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (1000, 1000)).save(flat / "flat.png")
    assert (flat / "flat.png").stat().st_size < 20_000
    _refused(adversary.upload(flat, SMALL), "1,000,000 pixels", "--max-input-pixels")
    # At the caps: 8 views at 112x84 are 75,264 processed pixels.
    at_cap = adversary.upload(image_folder, ["export=mini_npz", "processing.process_res=112"])
    assert at_cap.status_code == 202, at_cap.text
    assert adversary.finished(at_cap.json()["id"])["status"] == "completed"
    assert adversary.get("/status").json()["limits"]["max_pixels"] == LIMITS.max_pixels


def test_malformed_bodies_are_400(adversary):
    allowed = str(adversary.root / "allowed" / "linked")
    bodies = {
        "overrides a number": json.dumps({"path": allowed, "overrides": 5}),
        "overrides a dict": json.dumps({"path": allowed, "overrides": {"export": "npz"}}),
        "override not a string": json.dumps({"path": allowed, "overrides": [1]}),
        "overrides null": json.dumps({"path": allowed, "overrides": None}),
        "path with NUL": json.dumps({"path": allowed + "\x00/x", "overrides": []}),
        "path a number": json.dumps({"path": 7}),
        "path missing": json.dumps({"overrides": []}),
        "unknown field": json.dumps({"path": allowed, "token": "x"}),
        "body a list": json.dumps([allowed]),
        "body a string": json.dumps(allowed),
        "body null": "null",
        "huge path": json.dumps({"path": "a" * 100_000}),
        "huge override": json.dumps({"path": allowed, "overrides": ["export=" + "n" * 100_000]}),
        "many overrides": json.dumps({"path": allowed, "overrides": ["force=true"] * 10_000}),
        "override with newline": json.dumps({"path": allowed, "overrides": ["export=npz\nforce=true"]}),
        "not an override": json.dumps({"path": allowed, "overrides": ["=="]}),
        "unknown home": json.dumps({"path": "~no_such_user_da3/x"}),
        "not JSON": "{'path': 1",
        "not UTF-8": b"\xff\xfe{}",
        "deeply nested": "[" * 200_000,
    }
    for case, body in bodies.items():
        response = adversary.post(content=body, headers=JSON)
        assert response.status_code == 400, (case, response.status_code, response.text[:300])
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and len(detail) < 600, (case, detail)
    for override in ("export=npz\x00", "export=npz\nforce=true", "x" * 5000, "=="):
        response = adversary.upload(adversary.root / "allowed" / "linked", [override])
        assert response.status_code == 400 and "\n" not in response.json()["detail"], (override, response.text[:300])


def _magenta(folder: Path) -> int:
    """Magenta pixels in the downloaded store's processed images and in every RGB array of its npz exports."""
    arrays = [zarr.open_group(folder / "scene.zarr", mode="r")["images"][...]]
    for npz in folder.rglob("*.npz"):
        with np.load(npz) as data:
            arrays += [data[k] for k in data.files if data[k].dtype == np.uint8 and data[k].shape[-1:] == (3,)]
    # Within 3 levels: normalising for the network and back can move a channel by one.
    return int(sum(np.all(np.abs(a.astype(int) - MAGENTA) <= 3, axis=-1).sum() for a in arrays))


def test_no_byte_from_outside_the_upload(adversary, tmp_path):
    """Every response and result byte this module received is free of the secret; a control proves the checks see it."""
    dataset = _colmap(tmp_path / "nested", names={"frame_0001.png": "sub/frame_0001.png"})
    (dataset / "images" / "sub").mkdir()
    (dataset / "images" / "frame_0001.png").rename(dataset / "images" / "sub" / "frame_0001.png")
    legit = adversary.upload(dataset, [*SMALL, "input.sparse_subdir=sparse/0"])
    control_copy = tmp_path / "mine.png"  # the client's own copy of the secret: its bytes may come back
    shutil.copy(adversary.secret, control_copy)
    control = adversary.upload(control_copy, SMALL)
    assert legit.status_code == control.status_code == 202, (legit.text, control.text)
    assert adversary.finished(legit.json()["id"])["status"] == "completed"
    assert adversary.finished(control.json()["id"])["status"] == "completed"
    control_out = adversary.result(control.json()["id"], tmp_path / "control", record=False)
    sha = hashlib.sha256(adversary.secret.read_bytes()).hexdigest()
    # Its 56x42 view comes back twice (store and npz export), and the manifest names its hash.
    assert _magenta(control_out) == 2 * 56 * 42 and sha in (control_out / "scene.zarr" / "zarr.json").read_text()

    for page in ("/status", "/dashboard", "/jobs?limit=100"):
        adversary.get(page)
    others = [adversary.finished(i) for i in adversary.accepted if i != control.json()["id"]]
    completed = [j for j in others if j["status"] == "completed"]
    assert completed and all(j["status"] != "failed" for j in others), others
    for job in completed:
        assert _magenta(adversary.result(job["id"], tmp_path / job["id"])) == 0, job
    # The secret's path is the attacker's own words (echoed in refusals); its bytes and its hash are not.
    for blob in adversary.seen:
        assert adversary.token.encode() not in blob and sha.encode() not in blob, blob[:300]
