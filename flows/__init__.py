"""Prefect flows and the `da3` command line."""

import os

# Every entry point imports this package before Prefect, which reads these at its import: Prefect's usage analytics
# (the client's, DO_NOT_TRACK; the API server's) stay off unless the user sets them. On a machine without internet
# the server's would also log "Failed to send telemetry" on every run.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
