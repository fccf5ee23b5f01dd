"""The Prefect task runner a config asks for (``runner``, ``concurrency``, ``dask_address``, ``dask_workers``),
shared by the batch flow (its scenes) and the streaming reconstruct flow (its chunks)."""

# Annotations stay objects (no `from __future__ import annotations`), as in the flow modules that import this.

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.schema import ReconstructConfig


def task_runner(cfg: ReconstructConfig) -> TaskRunner:
    """The Prefect task runner for ``cfg.runner``: threads, or Dask workers (one model per worker process)."""
    if cfg.runner.value == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=cfg.concurrency)
