"""Prefect flows and the `da3` command line."""
