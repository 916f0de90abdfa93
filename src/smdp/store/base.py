"""The storage interface every backend implements.

The SQLite backend (``sqlite.py``) is the reference; a PostgreSQL backend
implements the same methods with the same transaction semantics. The domain
core only ever sees this interface and the records of ``records.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smdp.store.sqlite import SqliteStore as Store
else:  # at run time the name only needs to exist for annotations
    Store = object

__all__ = ["Store"]
