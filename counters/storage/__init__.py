"""Durable storage behind one interface (`interface.py`), a module per backend.

interface.py     Storage (a backend) and HostStore (one host's data), with their contract
sqlite.py        one SQLite file per host, fenced by an epoch in every commit
storage_dir.py   the SQLite backend: a directory of those files, the locks for one writer
"""

from .interface import (
    Applied,
    Change,
    HostStore,
    IdsAlreadyRecorded,
    Oldest,
    ServiceId,
    Storage,
    StoredObject,
)
from .sqlite import MIGRATIONS, SqliteStore
from .storage_dir import StorageDir

__all__ = [
    "MIGRATIONS",
    "Applied",
    "Change",
    "HostStore",
    "IdsAlreadyRecorded",
    "Oldest",
    "ServiceId",
    "SqliteStore",
    "Storage",
    "StorageDir",
    "StoredObject",
]
