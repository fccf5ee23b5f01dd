"""Serve the batch flow as a scheduled Prefect deployment (no work pool needed).

    export PREFECT_API_URL=http://127.0.0.1:4200/api     # a running `prefect server start --host 127.0.0.1`
    python deployments/serve.py --name nightly --cron "0 3 * * *" -- dataset=/data/scenes storage.root=/data/out

Trigger a run by hand with ``prefect deployment run 'batch/nightly'``; the schedule also creates runs.
"""

from __future__ import annotations

import argparse

from flows.batch import batch
from flows.config import load_config, resolved


def main() -> None:
    """Parse the deployment settings and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="nightly", help="deployment name")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule (cron, UTC)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run, e.g. dataset=...")
    args = parser.parse_args()
    # The deployment's parameter is the composed config, so Prefect's UI shows (and lets you edit) every key.
    cfg = resolved(load_config("batch", args.overrides))
    batch.serve(name=args.name, cron=args.cron, parameters={"cfg": cfg},
                tags=["da3", "batch"], description="Reconstruct every scene of a dataset on a schedule")


if __name__ == "__main__":
    main()
