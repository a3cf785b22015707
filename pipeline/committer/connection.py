"""The committer's PostgreSQL connection: how a dead peer or a stalled session is noticed.

Client side, TCP keepalives and ``tcp_user_timeout`` end a connection whose peer vanished
(a host crash, a half-open socket) within about half a minute instead of hours. Server side,
``statement_timeout`` bounds any one statement and ``idle_in_transaction_session_timeout`` /
``idle_session_timeout`` end the session of a committer that stopped talking (paused, cut off
behind a proxy that stopped forwarding): the server then releases its advisory lock, so a
standby takes over, and the fencing generation (db.fence) keeps the stale one from committing
if it ever comes back. An active committer therefore talks to the database at least every
``PING_S`` seconds, idle or not.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from psycopg2.extensions import connection

from pipeline import pg
from pipeline.config import Settings

PgConnection: TypeAlias = connection

__all__ = [
    "APPLICATION_NAME",
    "IDLE_SESSION_S",
    "PING_S",
    "STATEMENT_TIMEOUT_S",
    "PgConnection",
    "connect",
]

APPLICATION_NAME = "roomstream-committer"  # how operators find it in pg_stat_activity
STATEMENT_TIMEOUT_S = 60  # far above the seconds a batch of the largest size takes
IDLE_SESSION_S = 15  # the server ends a committer session silent for this long
PING_S = 4.0  # an active committer's longest silence towards the database
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms: unacknowledged data this long ends the connection
    "connect_timeout": 10,
}


def connect(settings: Settings, *, idle_session_s: int = IDLE_SESSION_S) -> PgConnection:
    options = (
        f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000} "
        f"-c idle_in_transaction_session_timeout={idle_session_s * 1000} "
        f"-c idle_session_timeout={idle_session_s * 1000}"
    )
    conn: PgConnection = pg.connect(
        settings, application_name=APPLICATION_NAME, options=options, **_KEEPALIVE
    )
    return conn
