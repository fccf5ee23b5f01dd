"""The Prefect task runner a config asks for (``runner``, ``concurrency``, ``dask_address``, ``dask_workers``),
shared by the batch flow (its scenes) and the streaming reconstruct flow (its chunks)."""

# Annotations stay objects (no `from __future__ import annotations`), as in the flow modules that import this.

import logging
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.schema import BatchConfig, EvaluateConfig, ReconstructConfig


def task_runner(cfg: ReconstructConfig | BatchConfig | EvaluateConfig) -> TaskRunner[Any]:
    """The Prefect task runner for ``cfg.runner``: threads, or Dask workers (one model per worker process)."""
    if cfg.runner.value == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        # A local cluster is this run's own: its INFO chatter (with tracebacks for comms closed at shutdown) is noise
        # on a user's terminal; warnings and errors still show.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": cfg.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": _worker_env(),
            }
        )
    return ThreadPoolTaskRunner(max_workers=cfg.concurrency)


def _worker_env() -> dict[str, str]:
    """Local workers report to this run's Prefect API and log only distributed's warnings. Without the API a run on
    Prefect's temporary server leaves each worker process to start a temporary server of its own: under load it times
    out (the task fails), and it outlives the worker when the cluster closes."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {"PREFECT_API_URL": str(client.api_url), "DASK_LOGGING__DISTRIBUTED": "warning"}
