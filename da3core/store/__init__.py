"""The zarr scene store (local paths and fsspec URLs such as s3://) and the one-writer-per-scene lock."""

from da3core.store.lock import StoreLockedError, store_lock
from da3core.store.scene_store import SceneStore, StoreError

__all__ = ["SceneStore", "StoreError", "StoreLockedError", "store_lock"]
