"""All configuration, in one place: ``ROOMSTREAM_*`` environment variables, CLI flags over them.

| variable | default | meaning |
|---|---|---|
| ROOMSTREAM_KAFKA_BOOTSTRAP | 127.0.0.1:19092 | Kafka bootstrap servers |
| ROOMSTREAM_DATABASE_URL | postgresql://roomstream@127.0.0.1:15432/roomstream | libpq URL |
| ROOMSTREAM_TOPIC_PREFIX | roomstream | topics are ``<prefix>.<name>`` |
| ROOMSTREAM_PDU_PARTITIONS | 12 | partitions of ``<prefix>.pdus`` |
| ROOMSTREAM_STACK_DIR | ./.stack | the local stack's data (a checkout: its own ``.stack``) |
| ROOMSTREAM_KAFKA_PORT | 19092 | local stack broker port (controller: port + 1) |
| ROOMSTREAM_PG_PORT | 15432 | local stack PostgreSQL port |
| ROOMSTREAM_PARK_MAX_PER_ROOM | 1000 | parked events a room may hold |
| ROOMSTREAM_PARK_MAX_TOTAL | 100000 | parked events a worker holds before it pauses intake |
| ROOMSTREAM_PARK_MAX_TOTAL_BYTES | 268435456 | the same in bytes, as received |
| ROOMSTREAM_PARK_EXPIRY_S | 300 | seconds before a parked event is dead-lettered |
| ROOMSTREAM_COMMIT_BATCH_MAX | 2000 | chunks per committer transaction at most |
| ROOMSTREAM_COMMIT_BATCH_BYTES | 8388608 | bytes of chunks per committer transaction at most |
| ROOMSTREAM_METRICS_PORT | 0 | Prometheus port of a process (0: none) |
| ROOMSTREAM_KAFKA_HEAP | -Xms256m -Xmx768m | JVM heap options of the local stack's broker |
| ROOMSTREAM_PG_BINDIR | (found) | PostgreSQL's bin directory (initdb, pg_ctl) for the local stack |
| JAVA_HOME | (found) | the JVM's own variable: the local stack's broker runs its ``bin/java`` |
| ROOMSTREAM_WORKER_STORE | rocksdb:// | a worker's rooms table: rocksdb:// (on disk) or memory:// |
| ROOMSTREAM_WORKER_DATA_DIR | <stack dir>/workers | a worker's RocksDB goes in ``<dir>/<id>`` |
| ROOMSTREAM_WORKER_SESSION_TIMEOUT_S | 10 | a worker silent this long loses its partitions |
| ROOMSTREAM_WORKER_STANDBY_REPLICAS | 0 | warm copies of each rooms table partition |
| ROOMSTREAM_WORKER_STATIC_MEMBERSHIP | 1 | ``worker --id X`` joins as static member X (0: no) |
| ROOMSTREAM_WORKER_FETCH_WAIT_MS | 20 | ms the broker may hold a worker's fetch for more inputs |
| ROOMSTREAM_WORKER_FETCH_MIN_BYTES | 65536 | ... unless this many bytes of inputs are there |
| ROOMSTREAM_WORKER_FETCH_GATHER_FROM | 80 | inputs/s from which fetches wait so (below: none) |
| ROOMSTREAM_WORKER_KNOWN_EVENTS | 100000 | events a room's index holds (0: all); more: from PG |
| ROOMSTREAM_WORKER_STATE_ROWS | 200000 | state group rows a room holds (0: all); more: from PG |
| ROOMSTREAM_WORKER_ROOM_CACHE_MB | 256 | memory of the room processors a worker keeps cached |
| ROOMSTREAM_REPLICATION_FACTOR | 0 (auto) | replicas per topic; auto: 3, fewer on fewer brokers |
| ROOMSTREAM_MIN_INSYNC_REPLICAS | 0 (auto) | ``min.insync.replicas``; auto: RF - 1, at least 1 |
| ROOMSTREAM_RETENTION_DAYS | 7 | retention of pdus, chunks, invalidations, missing-events |
| ROOMSTREAM_DEAD_LETTER_RETENTION_DAYS | 30 | retention of the dead-letter topic |
| ROOMSTREAM_KAFKA_SECURITY_PROTOCOL | (derived) | PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL |
| ROOMSTREAM_KAFKA_SASL_MECHANISM | SCRAM-SHA-512 | SASL mechanism when a user is set |
| ROOMSTREAM_KAFKA_SASL_USERNAME | (none) | SASL user; setting it turns SASL on |
| ROOMSTREAM_KAFKA_SASL_PASSWORD | (none) | its password (prefer the file below) |
| ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE | (none) | a file holding the password |
| ROOMSTREAM_KAFKA_CA_FILE | (none) | PEM CA the brokers' certificates chain to; turns TLS on |
| ROOMSTREAM_KAFKA_CERT_FILE | (none) | PEM client certificate (mutual TLS) |
| ROOMSTREAM_KAFKA_KEY_FILE | (none) | PEM key of that certificate |
| ROOMSTREAM_PG_SSLMODE | (libpq's) | libpq ``sslmode`` (e.g. verify-full) |
| ROOMSTREAM_PG_SSLROOTCERT | (libpq's) | CA of the database server's certificate |
| ROOMSTREAM_PG_PASSFILE | (libpq's) | libpq password file (the local stack's is in its URL) |
| ROOMSTREAM_METRICS_ADDR | 127.0.0.1 | address the metrics and health endpoints bind to |
| ROOMSTREAM_DEBUG_SLOW_ROOM | (none) | a room whose every state resolution a worker makes slower |
| ROOMSTREAM_DEBUG_SLOW_S | 5 | ... by this many seconds of CPU (isolation tests and benchmarks) |
| ROOMSTREAM_DEBUG_DROP_INPUTS | 0 | first inputs a worker lets vanish before taking them (tests) |
| ROOMSTREAM_VERIFY_SIGNATURES | false | check PDU signatures (keys from ``<prefix>.server-keys``) |
| ROOMSTREAM_SERVER_KEYS_WAIT_S | 5 | how long a check waits for that topic when a key is unknown |

Only this module reads the environment; everything else takes a ``Settings``. Passwords never
travel in a URL or on a command line: Kafka's comes from a file or a variable, PostgreSQL's from
a libpq password file (or libpq's own ``PGPASSWORD``, which libpq reads itself).
"""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.errors import ConfigError

ENV_PREFIX = "ROOMSTREAM_"


def _default_stack_dir() -> Path:
    """The ``.stack`` of the source checkout the code runs from (so every command of a checkout
    shares one stack wherever it is started), else ``./.stack`` of the working directory: an
    installed package keeps no data beside itself."""
    root = Path(str(resources.files("pipeline"))).resolve().parent
    if (root / "pyproject.toml").is_file() and (root / "deploy" / "kafka" / "pom.xml").is_file():
        return root / ".stack"
    return Path.cwd() / ".stack"


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://roomstream@127.0.0.1:15432/roomstream"
    topic_prefix: str = "roomstream"
    pdu_partitions: int = 12
    stack_dir: Path = field(default_factory=_default_stack_dir)
    kafka_port: int = 19092
    pg_port: int = 15432
    park_max_per_room: int = 1000
    park_max_total: int = 100_000
    park_max_total_bytes: int = 256 * 1024 * 1024
    park_expiry_s: float = 300.0
    commit_batch_max: int = 2000
    commit_batch_bytes: int = 8 << 20
    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"
    # 0 resolves against the cluster (topics.definitions.replication): a single-broker stack
    # keeps working, a cluster gets 3 replicas and 2 in sync.
    replication_factor: int = 0
    min_insync_replicas: int = 0
    retention_days: float = 7.0
    dead_letter_retention_days: float = 30.0
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_sasl_password_file: Path | None = None
    kafka_ca_file: Path | None = None
    kafka_cert_file: Path | None = None
    kafka_key_file: Path | None = None
    pg_sslmode: str | None = None
    pg_sslrootcert: Path | None = None
    pg_passfile: Path | None = None
    kafka_heap: str = "-Xms256m -Xmx768m"  # bounded: the broker shares 2 cores with the workers
    pg_bindir: Path | None = None
    java_home: Path | None = field(default=None, metadata={"env": "JAVA_HOME"})
    worker_store: str = "rocksdb://"
    worker_data_dir: Path | None = None
    worker_session_timeout_s: float = 10.0
    worker_standby_replicas: int = 0
    worker_static_membership: int = 1
    worker_fetch_wait_ms: int = 20
    worker_fetch_min_bytes: int = 64 * 1024
    # Above what one sender waiting for each event before the next reaches (1 / latency, about
    # 50/s here): a wait would only slow such a sender down, gathering nothing.
    worker_fetch_gather_from: float = 80.0
    worker_known_events: int = 100_000
    worker_state_rows: int = 200_000
    worker_room_cache_mb: int = 256
    debug_slow_room: str | None = None
    debug_slow_s: float = 5.0
    debug_drop_inputs: int = 0
    verify_signatures: bool = False
    server_keys_wait_s: float = 5.0

    @property
    def workers_dir(self) -> Path:
        """Where workers keep their local data, one directory per worker id."""
        return self.worker_data_dir or self.stack_dir / "workers"

    def topic(self, name: str) -> str:
        """The full name of topic ``name`` (a ``topics.definitions.Topic``)."""
        return f"{self.topic_prefix}.{name}"

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _boolean(raw: str) -> bool:
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ValueError(raw)


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``ROOMSTREAM_*`` variables, then ``overrides`` (CLI flags) over them.

    The stack ports also move the default bootstrap and database URL, so one variable is enough
    to run a second stack beside the first.
    """
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = variable(f)
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            if f.type in ("int", "int | None"):
                values[f.name] = int(raw)
            elif f.type == "float":
                values[f.name] = float(raw)
            elif f.type == "bool":
                values[f.name] = _boolean(raw)
            elif f.type in ("Path", "Path | None"):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a valid {f.type}; fix or unset it") from None
    kafka_port = int(values.get("kafka_port", Settings.kafka_port))
    pg_port = int(values.get("pg_port", Settings.pg_port))
    values.setdefault("kafka_bootstrap", f"127.0.0.1:{kafka_port}")
    stack_dir = Path(values.get("stack_dir") or _default_stack_dir())
    values.setdefault("database_url", local_database_url(stack_dir, pg_port))
    settings = Settings(**values).with_overrides(**overrides)
    _check(settings)
    return settings


def local_database_url(stack_dir: Path, pg_port: int) -> str:
    """The local stack's database, with the password file ``stack up`` makes (libpq's
    ``passfile`` parameter: a path in the URL, never the password). Named whether or not it
    exists yet: settings are often read before ``stack up`` writes it, and libpq skips a
    password file that is not there."""
    url = f"postgresql://roomstream@127.0.0.1:{pg_port}/roomstream"
    passfile = stack_dir / "pg" / "pgpass"
    return f"{url}?passfile={quote(str(passfile), safe='/')}"


# A longer fetch wait only adds latency: the gain per event is nearly all there at 100 ms.
MAX_FETCH_WAIT_MS = 1000

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _check(settings: Settings) -> None:
    if settings.pdu_partitions < 1:
        raise ConfigError(
            f"{ENV_PREFIX}PDU_PARTITIONS must be at least 1, not {settings.pdu_partitions}"
        )
    if settings.replication_factor < 0 or settings.min_insync_replicas < 0:
        raise ConfigError(
            f"{ENV_PREFIX}REPLICATION_FACTOR and {ENV_PREFIX}MIN_INSYNC_REPLICAS must be 0 "
            "(resolved against the cluster) or a positive count"
        )
    if settings.replication_factor and settings.min_insync_replicas > settings.replication_factor:
        raise ConfigError(
            f"{ENV_PREFIX}MIN_INSYNC_REPLICAS={settings.min_insync_replicas} exceeds "
            f"{ENV_PREFIX}REPLICATION_FACTOR={settings.replication_factor}: no write could succeed"
        )
    if not 0 <= settings.worker_fetch_wait_ms <= MAX_FETCH_WAIT_MS:
        raise ConfigError(
            f"{ENV_PREFIX}WORKER_FETCH_WAIT_MS must be from 0 to {MAX_FETCH_WAIT_MS} (every input "
            f"may wait that long), not {settings.worker_fetch_wait_ms}"
        )
    if settings.worker_fetch_min_bytes < 1:
        raise ConfigError(
            f"{ENV_PREFIX}WORKER_FETCH_MIN_BYTES must be at least 1, not "
            f"{settings.worker_fetch_min_bytes}"
        )
    if settings.worker_fetch_gather_from < 0:
        raise ConfigError(
            f"{ENV_PREFIX}WORKER_FETCH_GATHER_FROM must be 0 (always) or a rate in inputs/s, not "
            f"{settings.worker_fetch_gather_from}"
        )
    if settings.worker_room_cache_mb < 1:
        raise ConfigError(
            f"{ENV_PREFIX}WORKER_ROOM_CACHE_MB must be at least 1 (MiB), not "
            f"{settings.worker_room_cache_mb}"
        )
    if settings.debug_drop_inputs < 0:
        raise ConfigError(
            f"{ENV_PREFIX}DEBUG_DROP_INPUTS must be 0 (drop none) or more, not "
            f"{settings.debug_drop_inputs}"
        )
    protocol = settings.kafka_security_protocol
    if protocol is not None and protocol.upper() not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={protocol!r} is none of "
            f"{', '.join(SECURITY_PROTOCOLS)}"
        )
    if settings.kafka_sasl_password and settings.kafka_sasl_password_file:
        raise ConfigError(
            f"both {ENV_PREFIX}KAFKA_SASL_PASSWORD and {ENV_PREFIX}KAFKA_SASL_PASSWORD_FILE are "
            "set; keep one"
        )
    if bool(settings.kafka_cert_file) != bool(settings.kafka_key_file):
        raise ConfigError(
            f"{ENV_PREFIX}KAFKA_CERT_FILE and {ENV_PREFIX}KAFKA_KEY_FILE go together (mutual "
            "TLS); set both or neither"
        )


def variable(f: Field[Any]) -> str:
    """The environment variable of a ``Settings`` field."""
    return str(f.metadata.get("env", ENV_PREFIX + f.name.upper()))


def settings_environ(settings: Settings) -> dict[str, str]:
    """``settings`` as the variables that make a child process load the same settings."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[variable(f)] = str(value)
    return env
