"""What a run reports to Prefect besides its logs: an artifact naming its outputs and key figures, and its final
state (``Cached`` when a complete result was reused, so the UI tells skipped work from done work)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, State

from da3core.store import SceneStore

if TYPE_CHECKING:
    from flows.batch import BatchReport
    from flows.reconstruct import SceneResult
    from flows.video_depth import VideoDepthResult


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from free-form names."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:100]


def final_state(result: Any, status: str) -> Any:
    """The value a flow or task returns: a ``Cached`` completed state around ``result`` when it was skipped."""
    if status == "skipped":
        return Completed(data=result, name="Cached", message="a complete result for this config and input exists")
    return result


def _table(rows: dict[str, Any]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows.items())])


def _files(outputs: dict[str, list[str]], shown: int = 5) -> str:
    lines = []
    for kind, paths in outputs.items():
        more = f" (+{len(paths) - shown} more)" if len(paths) > shown else ""
        lines.append(f"- **{kind}**: " + ", ".join(f"`{p}`" for p in paths[:shown]) + more)
    return "\n".join(lines) or "- nothing new written (skipped)"


def scene_outcome(result: SceneResult, storage_options: dict[str, Any]) -> State | SceneResult:
    """Publish one scene's artifact (store, exports, frames, model, timings) and return its final state."""
    attrs = SceneStore(result.store_url, storage_options).attrs()
    model = attrs.get("model", {})
    figures = {"status": result.status, "seconds": f"{result.seconds:.2f}", "store": f"`{result.store_url}`",
               "views": attrs.get("n_frames"), "model": f"{model.get('preset')} ({model.get('weights')} weights)",
               "metric depth": bool(attrs.get("is_metric")), "reference view": attrs.get("ref_view_idx"),
               "stage seconds": ", ".join(f"{k} {v:.2f}" for k, v in attrs.get("timings", {}).items())}
    markdown = f"# Scene {result.name}\n\n{_table(figures)}\n\n## Exports\n\n{_files(result.exports)}\n"
    create_markdown_artifact(markdown, key=artifact_key("scene", result.name),
                             description=f"scene {result.name}: {result.status}")
    return final_state(result, result.status)


def batch_outcome(dataset: str, report: BatchReport) -> None:
    """Publish a batch's table artifact: one row per scene (status, seconds, store or failure)."""
    rows = [{"scene": r.name, "status": r.status, "seconds": round(r.seconds, 2), "store": r.store_url}
            for r in report.results]
    rows += [{"scene": name, "status": "failed", "seconds": None, "store": reason}
             for name, reason in report.failures.items()]
    create_table_artifact(rows, key=artifact_key("batch", dataset),
                          description=f"{dataset}: {len(report.results)} scenes finished, {len(report.failures)} failed")


def video_outcome(result: VideoDepthResult, storage_options: dict[str, Any]) -> State | VideoDepthResult:
    """Publish one video's artifact (outputs, frames, depth kind and range, timings) and return its final state."""
    attrs = SceneStore(result.store_url, storage_options).attrs()
    depth_range = attrs.get("depth_range", {})
    figures = {"status": result.status, "seconds": f"{result.seconds:.2f}", "store": f"`{result.store_url}`",
               "frames": attrs.get("n_frames"), "depth": attrs.get("depth_kind"),
               "depth range": f"{depth_range.get('min', float('nan')):.4g} .. {depth_range.get('max', float('nan')):.4g}",
               "model": f"{attrs.get('model', {}).get('encoder')} ({attrs.get('model', {}).get('weights')} weights)",
               "stage seconds": ", ".join(f"{k} {v:.2f}" for k, v in attrs.get("timings", {}).items())}
    markdown = f"# Video depth: {result.video}\n\n{_table(figures)}\n\n## Outputs\n\n{_files(result.outputs)}\n"
    create_markdown_artifact(markdown, key=artifact_key("video-depth", result.video),
                             description=f"video {result.video}: {result.status}")
    return final_state(result, result.status)
