"""Storage: one interface (``smdp.store.base.Store``), backends beside it."""

from smdp.store.base import Store
from smdp.store.sqlite import SqliteStore, StoreError

__all__ = ["SqliteStore", "Store", "StoreError", "open_store"]


def open_store(path: str) -> Store:
    """Open (and migrate) the store named in the configuration."""
    store = SqliteStore(path)
    store.migrate()
    return store
