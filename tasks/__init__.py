"""Prefect tasks: thin wrappers around da3core that hand each other zarr locations."""
