"""The scene gallery: an index of exported scenes and a page per scene with an in-browser 3D viewer.

A scene is any folder under the gallery root (at most two levels down, e.g. ``<group>/<scene>``)
that holds ``scene.glb``. The viewer (model-viewer) is bundled at install time by
``scripts/build_web.sh`` and served from ``/static``; nothing is fetched from a CDN.
"""

from __future__ import annotations

import html
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from da3core.store import SceneStore
from flows.backend.auth import TokenGate
from flows.backend.pages import untrained_banner

WEB_DIR = Path(__file__).resolve().parent / "web"
VIEWER = WEB_DIR / "vendor" / "model-viewer.min.js"
_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}
a{color:#1a5fb4}.grid{display:flex;flex-wrap:wrap;gap:1rem}.card{background:#fff;border:1px solid #ddd;
border-radius:8px;padding:.5rem;width:260px}.card img{width:100%;border-radius:4px}
model-viewer{width:100%;height:70vh;background:#111;border-radius:8px}.strip img{height:140px;margin:2px}"""


def find_scenes(root: Path) -> list[str]:
    """Relative paths (posix) of scene folders under ``root``: those holding scene.glb, up to 2 levels."""
    scenes = []
    for glb in sorted(root.glob("scene.glb")) + sorted(root.glob("*/scene.glb")) + sorted(root.glob("*/*/scene.glb")):
        rel = glb.parent.relative_to(root).as_posix()
        hidden = any(part.startswith(".") for part in PurePosixPath(rel).parts)  # e.g. a scene being saved
        if _inside(root, glb) and not hidden:  # a linked scene folder or file from elsewhere is not listed
            scenes.append("" if rel == "." else rel)
    return scenes


def _inside(root: Path, path: Path) -> bool:
    """True if ``path`` resolves (links and ``..`` included) inside ``root``; False for names no file can have."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):  # a NUL, a name too long, a link loop
        return False


def _listed(root: Path, folder: Path, pattern: str) -> list[str]:
    """Names of the files in ``folder`` matching ``pattern`` that the gallery serves (inside ``root``)."""
    if not folder.is_dir() or not _inside(root, folder):
        return []
    return sorted(p.name for p in folder.glob(pattern) if _inside(root, p))


def _safe_scene_dir(root: Path, scene: str) -> Path:
    """The scene folder, refusing anything that resolves outside the gallery root."""
    target = root / scene
    if not _inside(root, target) or not _inside(root, target / "scene.glb") or not (target / "scene.glb").is_file():
        raise HTTPException(status_code=404, detail="no such scene")
    return target.resolve()


def _weights(folder: Path) -> str | None:
    """``random`` or ``pretrained`` as the scene's ``scene.zarr`` records its model; None without a store."""
    store = SceneStore(str(folder / "scene.zarr"))
    return store.attrs().get("model", {}).get("weights") if store.exists() else None


def _page(title: str, body: str, viewer: bool = False) -> str:
    script = (
        '<script type="module" src="/static/vendor/model-viewer.min.js"></script>'
        if viewer and VIEWER.is_file()
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style>{script}</head><body>{body}</body></html>"
    )


def create_gallery_app(root: str | Path, prefix: str = "", token: str | None = None) -> FastAPI:
    """A FastAPI app serving the gallery of ``root``; ``prefix`` is where it is mounted (for links); with ``token``,
    every page and file but the bundled viewer needs it (a service that mounts the gallery guards it itself)."""
    root = Path(root).resolve()
    app = FastAPI(title="da3 gallery", docs_url=None, redoc_url=None)
    if token:
        app.add_middleware(TokenGate, token=token, open_prefixes=("/static/",))
    # check_dir=False: without scripts/build_web.sh (no npm) flows/web is absent; the pages then skip the viewer.
    app.mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static")
    # StaticFiles resolves paths and refuses those escaping the directory (../, encoded or not).
    app.mount("/files", StaticFiles(directory=root), name="files")

    def scene_info(scene: str) -> dict:
        folder = root / scene
        base = f"{prefix}/files/{quote(scene)}/" if scene else f"{prefix}/files/"
        depth, videos = _listed(root, folder / "depth_vis", "*.jpg"), _listed(root, folder / "gs_video", "*.mp4")
        return {
            "id": scene or ".",
            "title": scene or root.name,
            "model": base + "scene.glb",
            "thumbnail": base + "scene.jpg" if (folder / "scene.jpg").is_file() else None,
            "depth_images": [base + "depth_vis/" + quote(n) for n in depth],
            "videos": [base + "gs_video/" + quote(n) for n in videos],
            "weights": _weights(folder),
        }

    @app.get("/manifest.json")
    def manifest() -> JSONResponse:
        """Every scene with its GLB, thumbnail, depth images, videos and weights (random, pretrained or None)."""
        return JSONResponse({"scenes": [scene_info(s) for s in find_scenes(root)]})

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        """The list of scenes."""
        cards, infos = [], [scene_info(s) for s in find_scenes(root)]
        for info in infos:
            thumb = f"<img src='{info['thumbnail']}' alt=''>" if info["thumbnail"] else ""
            tag = " <b>(untrained weights)</b>" if info["weights"] == "random" else ""
            cards.append(
                f"<div class='card'><a href='{prefix}/scene/{quote(info['id'])}'>{thumb}"
                f"<div>{html.escape(info['title'])}{tag}</div></a></div>"
            )
        body = "".join(cards) or "<p>No scenes yet: export with <code>export=glb</code> into this folder.</p>"
        banner = untrained_banner("random" if any(info["weights"] == "random" for info in infos) else None)
        return _page(
            "da3 gallery", f"<h1>da3 gallery</h1>{banner}<p>{html.escape(root.name)}</p><div class='grid'>{body}</div>"
        )

    @app.get("/scene/{scene:path}", response_class=HTMLResponse)
    def scene_page(scene: str) -> str:
        """One scene: the GLB in the 3D viewer, depth images and Gaussian-splat videos."""
        scene = "" if scene == "." else scene
        _safe_scene_dir(root, scene)
        info = scene_info(scene)
        viewer = (
            f"<model-viewer src='{info['model']}' camera-controls touch-action='pan-y' "
            f"alt='{html.escape(info['title'])}'></model-viewer>"
            if VIEWER.is_file()
            else f"<p>3D viewer not bundled (run scripts/build_web.sh); <a href='{info['model']}'>scene.glb</a></p>"
        )
        depth = "".join(f"<img src='{u}' alt='depth'>" for u in info["depth_images"])
        videos = "".join(f"<video src='{u}' controls muted loop width='480'></video>" for u in info["videos"])
        body = (
            f"<p><a href='{prefix}/'>&larr; all scenes</a></p><h1>{html.escape(info['title'])}</h1>"
            f"{untrained_banner(info['weights'])}{viewer}"
            f"<h2>Depth</h2><div class='strip'>{depth or 'none'}</div>"
            + (f"<h2>Novel views</h2>{videos}" if videos else "")
        )
        return _page(info["title"], body, viewer=True)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        """No icon (an empty answer keeps browsers from logging a 404)."""
        return Response(status_code=204)

    return app
