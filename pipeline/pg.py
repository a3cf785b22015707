"""Every PostgreSQL connection's settings, in one place: the URL, TLS and the password file.

``ROOMSTREAM_DATABASE_URL`` names the server, user and database; ``ROOMSTREAM_PG_SSLMODE``,
``ROOMSTREAM_PG_SSLROOTCERT`` and ``ROOMSTREAM_PG_PASSFILE`` are added to it as libpq's own
parameters by ``database_dsn``, so whatever takes a libpq URL (psycopg2, psql, the migrations)
gets them. libpq also reads ``PGPASSWORD``, ``PGPASSFILE`` and ``PGSSLMODE`` itself.

A password never goes into the URL given on a command line: other users of the machine read
every process's arguments. ``refuse_password_in_argv`` says so before anything connects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg2

from pipeline.config import Settings
from pipeline.errors import ConfigError

__all__ = [
    "RetriedReads",
    "ThreadConnections",
    "connect",
    "database_dsn",
    "refuse_password_in_argv",
    "url_with_database",
]


def url_with_database(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` on the same server, its parameters kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def database_dsn(settings: Settings, dbname: str | None = None) -> str:
    """The libpq URL to connect with: the database URL (or its server's ``dbname``), plus the
    TLS and password-file settings as parameters. Parameters already in the URL win."""
    url = (
        settings.database_url
        if dbname is None
        else url_with_database(settings.database_url, dbname)
    )
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    extra = {
        "sslmode": settings.pg_sslmode,
        "sslrootcert": settings.pg_sslrootcert,
        "passfile": settings.pg_passfile,
    }
    for key, value in extra.items():
        if value is not None:
            params.setdefault(key, str(value))
    return urlunsplit(parts._replace(query=urlencode(params)))


def connect(settings: Settings, dbname: str | None = None, **kwargs: Any) -> Any:
    """A psycopg2 connection with ``database_dsn``'s settings."""
    return psycopg2.connect(database_dsn(settings, dbname), **kwargs)


class ThreadConnections:
    """One connection per thread with ``connect``'s settings: opened on first use, and again
    after ``drop`` (a failed statement may have left it broken)."""

    def __init__(self, settings: Settings, *, autocommit: bool, connect_timeout: int) -> None:
        self.settings = settings
        self.autocommit = autocommit
        self.connect_timeout = connect_timeout
        self._local = threading.local()

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.settings, connect_timeout=self.connect_timeout)
            conn.autocommit = self.autocommit
            self._local.conn = conn
        return conn

    def drop(self) -> None:
        self._local.conn = None


T = TypeVar("T")


class RetriedReads:
    """Reads over one connection per thread (``ThreadConnections``), each tried ``attempts``
    times: a failed try drops the thread's connection, calls ``on_retry`` (error, try number)
    and sleeps 0.2 s times the try number; the last failure is raised for the caller to say
    what it means (skip, or stop)."""

    def __init__(
        self,
        settings: Settings,
        *,
        autocommit: bool,
        connect_timeout: int,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conns = ThreadConnections(
            settings, autocommit=autocommit, connect_timeout=connect_timeout
        )
        self.attempts = attempts
        self.sleep = sleep

    def conn(self) -> Any:
        return self.conns.get()

    def read(
        self,
        read: Callable[[], T],
        on_retry: Callable[[BaseException, int], None],
        retryable: tuple[type[BaseException], ...] = (psycopg2.Error,),
    ) -> T:
        for n in range(1, self.attempts + 1):
            try:
                return read()
            except retryable as e:
                self.conns.drop()
                on_retry(e, n)
                if n == self.attempts:
                    raise
                self.sleep(0.2 * n)
        raise AssertionError("unreachable")  # pragma: no cover


def refuse_password_in_argv(url: str | None) -> None:
    """Refuse a database URL given as a command-line flag when it carries a password."""
    if url is None:
        return
    parts = urlsplit(url)
    if parts.password is not None or "password" in dict(parse_qsl(parts.query)):
        raise ConfigError(
            "--database-url carries a password, which every user of this machine can read in "
            "the process list; drop it from the URL and put it in a libpq password file "
            "(ROOMSTREAM_PG_PASSFILE or PGPASSFILE) or in PGPASSWORD"
        )
