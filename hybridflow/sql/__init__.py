"""The hot statements of each dialect as fixed SQL through its driver: ``sqlite`` (sqlite3) and ``postgresql``
(asyncpg). Everything else, the schema and the migrations are SQLModel and SQLAlchemy Core.

``hot(conn)`` gives the module of the connection's dialect with its driver connection, or None where the Core
statements run instead (aiosqlite connections: rehearsals and reads).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from hybridflow.sql import postgresql, sqlite


class Hot(NamedTuple):
    sql: ModuleType  # hybridflow.sql.sqlite or hybridflow.sql.postgresql: the same functions, each its dialect's
    raw: Any  # its driver connection


def hot(conn: Connection) -> Hot | None:
    """The fixed statements of ``conn``'s dialect and its driver connection, when it has them."""
    if conn.dialect.name == "sqlite":
        raw = sqlite.driver(conn)
        return Hot(sqlite, raw) if raw is not None else None
    db = postgresql.driver(conn)
    return Hot(postgresql, db) if db is not None else None
