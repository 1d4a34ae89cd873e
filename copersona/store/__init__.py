"""The store: every stage's typed records in one SQLite file or PostgreSQL database."""

from copersona.store.database import StoreError, is_postgres
from copersona.store.store import SCHEMA_VERSION, Store

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "is_postgres"]
