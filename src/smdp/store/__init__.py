"""Storage: one interface (``smdp.store.base.Store``), backends beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smdp.store.base import Store, StoreError
from smdp.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from smdp.config import Config

__all__ = ["SqliteStore", "Store", "StoreError", "open_store"]


def open_store(target: Config | str) -> Store:
    """Open (and migrate) the store a configuration names, or a SQLite file.

    Several nodes sharing one PostgreSQL database may all call this at start:
    ``PostgresStore.migrate`` serialises them.
    """
    if isinstance(target, str):
        store: Store = SqliteStore(target)
    elif target.store_backend == "sqlite":
        store = SqliteStore(target.store_path)
    elif target.store_backend == "postgresql":
        # Imported here so a SQLite deployment never needs psycopg installed
        # (nor pays for importing it).
        from smdp.store.postgres import PostgresStore

        store = PostgresStore(target.store_dsn)
    else:
        raise StoreError(f"store backend {target.store_backend!r} is not available")
    store.migrate()
    if not isinstance(target, str):
        store.half_life = target.quality.half_life
    return store
