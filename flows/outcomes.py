"""What a run reports to Prefect besides its logs: an artifact naming its outputs and key figures, and its final
state (``Cached`` when a complete result was reused, so the UI tells skipped work from done work)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed

from da3core.store import SceneStore

if TYPE_CHECKING:
    from flows.batch import BatchReport
    from flows.reconstruct import SceneResult
    from flows.video_depth import VideoDepthResult


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from free-form names."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:100]


def final_state(result: Any, status: str) -> Any:
    """What a flow or task returns: ``result``, or a ``Cached`` completed state around it when it was skipped
    (Prefect records the state and hands callers ``result`` either way)."""
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


def _publish(title: str, key: str, result: Any, figures: dict[str, Any], outputs: dict[str, list[str]]) -> Any:
    """One run's markdown artifact (key figures, then the files) and its final state."""
    rows = {"status": result.status, "seconds": f"{result.seconds:.2f}", "store": f"`{result.store_url}`", **figures}
    create_markdown_artifact(
        f"# {title}\n\n{_table(rows)}\n\n## Outputs\n\n{_files(outputs)}\n",
        key=key,
        description=f"{title}: {result.status}",
    )
    return final_state(result, result.status)


def _stage_seconds(attrs: dict[str, Any]) -> str:
    return ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in attrs.get("timings", {}).items())


def scene_outcome(result: SceneResult, storage_options: dict[str, Any]) -> Any:
    """Publish one scene's artifact (store, exports, views, model, timings) and return its final state."""
    attrs = SceneStore(result.store_url, storage_options).attrs()
    model = attrs.get("model", {})
    figures = {
        "views": attrs.get("n_frames"),
        "model": f"{model.get('preset')} ({model.get('weights')} weights)",
        "metric depth": bool(attrs.get("is_metric")),
        "reference view": attrs.get("ref_view_idx"),
        "stage seconds": _stage_seconds(attrs),
    }
    return _publish(f"Scene {result.name}", artifact_key("scene", result.name), result, figures, result.exports)


def batch_outcome(dataset: str, report: BatchReport) -> None:
    """Publish a batch's table artifact: one row per scene (status, seconds, store or failure)."""
    rows = [
        {"scene": r.name, "status": r.status, "seconds": round(r.seconds, 2), "store": r.store_url}
        for r in report.results
    ]
    rows += [
        {"scene": name, "status": "failed", "seconds": None, "store": reason}
        for name, reason in report.failures.items()
    ]
    summary = f"{len(report.results)} scenes finished, {len(report.failures)} failed"
    create_table_artifact(rows, key=artifact_key("batch", dataset), description=f"{dataset}: {summary}")


def video_outcome(result: VideoDepthResult, storage_options: dict[str, Any]) -> Any:
    """Publish one video's artifact (outputs, frames, depth kind and range, timings) and return its final state."""
    attrs = SceneStore(result.store_url, storage_options).attrs()
    lo, hi = (attrs.get("depth_range", {}).get(end, float("nan")) for end in ("min", "max"))
    model = attrs.get("model", {})
    figures = {
        "frames": attrs.get("n_frames"),
        "depth": attrs.get("depth_kind"),
        "depth range": f"{lo:.4g} .. {hi:.4g}",
        "model": f"{model.get('encoder')} ({model.get('weights')} weights)",
        "stage seconds": _stage_seconds(attrs),
    }
    return _publish(
        f"Video depth {result.video}", artifact_key("video-depth", result.video), result, figures, result.outputs
    )
