"""Serve a flow as a scheduled Prefect deployment (no work pool needed): the batch flow over a dataset, or the
evaluation flow over the benchmark.

    export PREFECT_API_URL=http://127.0.0.1:4200/api     # a running `prefect server start --host 127.0.0.1`
    python deployments/serve.py --name nightly --cron "0 3 * * *" -- dataset=/data/scenes storage.root=/data/out
    python deployments/serve.py --flow evaluate --name weekly --cron "0 4 * * 0" -- benchmark=[eth3d,hiroom] \
        bench_root=s3://bucket/DA3-BENCH model=da3-large modes=[pose,recon_unposed]

Trigger a run by hand with ``prefect deployment run 'batch/nightly'`` (``'evaluate/weekly'``); the schedule also
creates runs. An evaluation rerun reuses the predictions already stored, so a schedule after new data only infers
the new scenes.
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import Flow

from flows.batch import batch
from flows.config import load_config, resolved
from flows.evaluate import evaluate

# flow name -> (flow, tags, description); the flow name is also its config's name in conf/
FLOWS: dict[str, tuple[Flow[..., Any], list[str], str]] = {
    "batch": (batch, ["da3", "batch"], "Reconstruct every scene of a dataset on a schedule"),
    "evaluate": (evaluate, ["da3", "evaluate"], "Evaluate a model on the DA3 benchmark on a schedule"),
}


def main() -> None:
    """Parse the deployment settings and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flow", choices=sorted(FLOWS), default="batch", help="which flow to deploy")
    parser.add_argument("--name", default="nightly", help="deployment name")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule (cron, UTC)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run, e.g. dataset=...")
    args = parser.parse_args()
    flow, tags, description = FLOWS[args.flow]
    # The deployment's parameter is the composed config, so Prefect's UI shows (and lets you edit) every key.
    cfg = resolved(load_config(args.flow, args.overrides))
    flow.serve(name=args.name, cron=args.cron, parameters={"cfg": cfg}, tags=tags, description=description)


if __name__ == "__main__":
    main()
