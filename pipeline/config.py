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
| ROOMSTREAM_PARK_MAX_TOTAL | 100000 | parked events a worker may hold |
| ROOMSTREAM_PARK_EXPIRY_S | 300 | seconds before a parked event is dead-lettered |
| ROOMSTREAM_COMMIT_BATCH_MAX | 500 | chunks per committer transaction at most |
| ROOMSTREAM_METRICS_PORT | 0 | Prometheus port of a process (0: none) |
| ROOMSTREAM_KAFKA_HEAP | -Xms256m -Xmx768m | JVM heap options of the local stack's broker |
| ROOMSTREAM_PG_BINDIR | (found) | PostgreSQL's bin directory (initdb, pg_ctl) for the local stack |
| JAVA_HOME | (found) | the JVM's own variable: the local stack's broker runs its ``bin/java`` |
| ROOMSTREAM_WORKER_STORE | rocksdb:// | a worker's rooms table: rocksdb:// (on disk) or memory:// |
| ROOMSTREAM_WORKER_DATA_DIR | <stack dir>/workers | a worker's RocksDB goes in ``<dir>/<id>`` |
| ROOMSTREAM_WORKER_SESSION_TIMEOUT_S | 10 | a worker silent this long loses its partitions |
| ROOMSTREAM_WORKER_STANDBY_REPLICAS | 0 | warm copies of each rooms table partition |
| ROOMSTREAM_WORKER_STATIC_MEMBERSHIP | 1 | ``worker --id X`` joins as static member X (0: no) |
| ROOMSTREAM_DEBUG_SLOW_ROOM | (none) | a room whose every state resolution a worker makes slower |
| ROOMSTREAM_DEBUG_SLOW_S | 5 | ... by this many seconds of CPU (isolation tests and benchmarks) |
| ROOMSTREAM_VERIFY_SIGNATURES | false | check PDU signatures (keys from ``<prefix>.server-keys``) |
| ROOMSTREAM_SERVER_KEYS_WAIT_S | 5 | how long a check waits for that topic when a key is unknown |

Only this module reads the environment; everything else takes a ``Settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

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
    park_expiry_s: float = 300.0
    commit_batch_max: int = 500
    metrics_port: int = 0
    kafka_heap: str = "-Xms256m -Xmx768m"  # bounded: the broker shares 2 cores with the workers
    pg_bindir: Path | None = None
    java_home: Path | None = field(default=None, metadata={"env": "JAVA_HOME"})
    worker_store: str = "rocksdb://"
    worker_data_dir: Path | None = None
    worker_session_timeout_s: float = 10.0
    worker_standby_replicas: int = 0
    worker_static_membership: int = 1
    debug_slow_room: str | None = None
    debug_slow_s: float = 5.0
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
        name = f.metadata.get("env", ENV_PREFIX + f.name.upper())
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            if f.type == "int":
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
    values.setdefault("database_url", f"postgresql://roomstream@127.0.0.1:{pg_port}/roomstream")
    settings = Settings(**values).with_overrides(**overrides)
    if settings.pdu_partitions < 1:
        raise ConfigError(
            f"{ENV_PREFIX}PDU_PARTITIONS must be at least 1, not {settings.pdu_partitions}"
        )
    return settings
