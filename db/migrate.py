"""Schema migrations: apply ``db/migrations/*.sql`` once each, and check a database's schema.

Each migration runs in its own transaction together with its row in ``schema_migrations``, so a
migration is either wholly applied and recorded or not at all. A transaction-scoped advisory lock
serialises concurrent migrators. ``check_schema`` is what long-running processes call before
they write: it refuses a database that is behind this code or ahead of it.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import psycopg2

from pipeline.errors import SchemaError

__all__ = ["check_schema", "known_migrations", "migrate"]

# Any constant works; it only has to differ from the committer's lock key.
_MIGRATE_LOCK_KEY = 0x726F6F6D_6D696772  # "roommigr"

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT;
"""


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def known_migrations() -> list[tuple[str, str]]:
    """(name, SQL) of every migration this code ships, in the order they apply."""
    folder = resources.files("db") / "migrations"
    entries = [e for e in folder.iterdir() if e.name.endswith(".sql")]
    return [(e.name.removesuffix(".sql"), e.read_text("utf-8")) for e in sorted(entries, key=_name)]


def _name(entry: Any) -> str:
    return str(entry.name)


def migrate(database_url: str) -> list[str]:
    """Apply every migration not yet applied to ``database_url``; return the names applied.

    Re-running is a no-op that returns ``[]``.
    """
    applied: list[str] = []
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK_KEY,))
            cur.execute(_CREATE_MIGRATIONS_TABLE)
        for name, sql in known_migrations():
            # One transaction per migration, recorded with it.
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK_KEY,))
                cur.execute("SELECT 1 FROM schema_migrations WHERE name = %s", (name,))
                if cur.fetchone() is not None:
                    continue
                cur.execute(sql)
                cur.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                    (name, _checksum(sql)),
                )
            applied.append(name)
    finally:
        conn.close()
    return applied


def check_schema(conn: Any) -> None:
    """Raise SchemaError unless the database has exactly the migrations this code knows.

    Runs two read-only queries on ``conn``; the caller owns the transaction.
    """
    shipped = known_migrations()
    known = [name for name, _ in shipped]
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = cur.fetchone()
        if row is None or not row[0]:
            raise SchemaError(
                f"database {_where(conn)} has no Roomstream schema (no schema_migrations table); "
                "run `roomstream db migrate`"
            )
        # Through to_jsonb, so a table from before checksums were recorded reads as NULLs.
        cur.execute("SELECT name, to_jsonb(m) ->> 'checksum' FROM schema_migrations AS m")
        recorded = dict(cur.fetchall())
    applied = set(recorded)
    unknown = sorted(applied - set(known))
    if unknown:
        raise SchemaError(
            f"database {_where(conn)} has migrations this code does not know "
            f"({', '.join(unknown)}): the database is newer than this code; "
            "run a Roomstream release that has them"
        )
    changed = [n for n, sql in shipped if recorded.get(n) not in (None, _checksum(sql))]
    if changed:
        raise SchemaError(
            f"database {_where(conn)} was migrated with other versions of {', '.join(changed)} "
            "than this code ships, so its tables may not be the ones this code expects; "
            "run the release that migrated it, or rebuild the database"
        )
    missing = [n for n in known if n not in applied]
    if missing:
        raise SchemaError(
            f"database {_where(conn)} lacks migrations {', '.join(missing)}; "
            "run `roomstream db migrate`"
        )


def _where(conn: Any) -> str:
    try:
        params = conn.get_dsn_parameters()
        return f"{params.get('dbname')!r} on {params.get('host')}:{params.get('port')}"
    except Exception:  # a connection-like object without libpq details
        return "(unknown)"
