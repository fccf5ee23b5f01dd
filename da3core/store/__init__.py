"""The zarr scene store (local paths and fsspec URLs such as s3://)."""

from da3core.store.scene_store import SceneStore, StoreError, join_url

__all__ = ["SceneStore", "StoreError", "join_url"]
