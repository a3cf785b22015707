"""The local stack: a real Apache Kafka broker (KRaft, from Maven Central jars) and a PostgreSQL
cluster of the project's own, both on 127.0.0.1, both under ``.stack/``.

Layout of ``<stack_dir>``::

    kafka/pom.xml        the broker's pom (deploy/kafka/pom.xml, shipped in the package)
    kafka/libs/          the broker's runtime jars (resolved by Maven from that pom)
    kafka/data/          the KRaft log dir, formatted on first start
    kafka/server.properties, kafka/log4j2.properties, kafka/kafka.log, kafka/kafka.pid
    kafka/node-N/        node N of a cluster (``stack up --brokers 3``): its own data and files
    kafka/cluster-id     the KRaft cluster id every node is formatted with
    secrets/             the secured stack's CA, broker keystore and SCRAM passwords (--secure)
    stack.json           what ``up`` built (brokers, secured), for down, status and env
    pg/data/             the PostgreSQL cluster (initdb'd as a non-root user), scram-sha-256
    pg/pgpass            the password of its user ``roomstream``, libpq's format (mode 0600)
    pg/run/              its Unix socket
    pg/postgres.log

``up`` is idempotent: a service whose pid file names a live process answering on its port is
reused. ``down`` stops both and waits until their processes are gone.

A cluster of N brokers runs N combined broker+controller nodes (a quorum of N voters), node i
on ``ROOMSTREAM_KAFKA_PORT + 2 (i - 1)`` (clients) and the port above it (controllers): three
JVMs survive the loss of any one, which is what the broker-kill test needs, with one JVM less
than separate controllers would cost on a shared machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.config import Settings, local_database_url
from pipeline.dev.secure import StackSecurity
from pipeline.dev.tools import run_tool
from pipeline.errors import MissingBinary, PortInUse, StackError, StartTimeout

# deploy/kafka/pom.xml, through a link in this package that the wheel carries as a file.
POM = resources.files("pipeline.dev") / "kafka" / "pom.xml"
KAFKA_START_TIMEOUT_S = 120.0
PG_START_TIMEOUT_S = 60.0

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    detail: str = ""

    def line(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"{self.name:<10} {state:<22} {self.address}" + (
            f"  {self.detail}" if self.detail else ""
        )


# --------------------------------------------------------------------------- helpers


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_holder(port: int) -> str:
    """Best effort: the process listening on ``port``, for the error message."""
    ss = shutil.which("ss")
    if not ss:
        return ""
    out = subprocess.run(
        [ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    for part in out.split():
        if part.startswith("users:"):
            return part
    return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _which(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise MissingBinary(f"'{name}' was not found on PATH; {hint}")
    return found


# --------------------------------------------------------------------------- Kafka


class KafkaNode:
    """One KRaft node (broker and controller in one JVM) of the local cluster.

    Node 1 lives in ``kafka/`` itself (a single-node stack has always been laid out so), node N
    in ``kafka/node-N/``; every node shares ``kafka/libs``. Node ``i`` listens for clients on
    ``kafka_port + 2 (i - 1)`` and for its controller quorum on the port above that.
    """

    def __init__(self, settings: Settings, node_id: int, nodes: int) -> None:
        self.settings = settings
        self.node_id = node_id
        self.nodes = nodes
        self.port = settings.kafka_port + 2 * (node_id - 1)
        self.controller_port = self.port + 1
        self.root = settings.stack_dir / "kafka"
        self.dir = self.root if node_id == 1 else self.root / f"node-{node_id}"
        self.libs = self.root / "libs"
        self.data = self.dir / "data"
        self.log = self.dir / "kafka.log"
        self.pid_file = self.dir / "kafka.pid"
        self.properties = self.dir / "server.properties"
        self.name = "kafka" if nodes == 1 else f"kafka-{node_id}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def java(self) -> str:
        java_home = self.settings.java_home
        if java_home and (java_home / "bin" / "java").exists():
            return str(java_home / "bin" / "java")
        return _which("java", "install Java 17 or later (apt-get install openjdk-17-jre-headless)")

    def ensure_jars(self, progress: Progress = _quiet) -> None:
        """Resolve the broker's runtime closure with Maven, once per version of the pom."""
        stamp = self.libs / ".pom-sha256"
        pom = POM.read_bytes()
        digest = hashlib.sha256(pom).hexdigest()
        if stamp.exists() and stamp.read_text() == digest:
            return
        mvn = _which("mvn", "install Maven (apt-get install maven) to fetch the Kafka broker jars")
        progress("fetching the Kafka broker and its dependencies from Maven Central ...")
        tmp = self.root / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # Maven reads a copy beside the jars: the package's own may be read-only.
        pom_file = self.root / "pom.xml"
        pom_file.write_bytes(pom)
        proc = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom_file),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
            raise StackError(
                "Maven could not resolve the Kafka broker from deploy/kafka/pom.xml "
                f"(exit {proc.returncode}); check that Maven Central is reachable.\n"
                + (proc.stdout + proc.stderr)[-3000:]
            )
        shutil.rmtree(self.libs, ignore_errors=True)
        tmp.rename(self.libs)
        stamp.write_text(digest)

    def _voters(self) -> str:
        base = self.settings.kafka_port
        return ",".join(f"{i}@127.0.0.1:{base + 2 * (i - 1) + 1}" for i in range(1, self.nodes + 1))

    def _write_config(self, security: StackSecurity | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # The cluster's own topics get every broker up to three, and survive one broker down.
        internal_rf = str(min(3, self.nodes))
        internal_isr = str(max(1, min(3, self.nodes) - 1))
        client = "SASL_SSL" if security else "PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self._voters(),
            "listeners": f"{client}://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{client}://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": "1",
            "default.replication.factor": internal_rf,
            "offsets.topic.replication.factor": internal_rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": internal_rf,
            "transaction.state.log.min.isr": internal_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": internal_rf,
            "share.coordinator.state.topic.min.isr": internal_isr,
            "group.initial.rebalance.delay.ms": "0",
            # faust creates its changelog and repartition topics itself through the admin API.
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "num.io.threads": "2",
            "num.network.threads": "2",
        }
        if security is not None:
            props.update(security.broker_properties(client))
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.out.type = Console\nappender.out.name = STDOUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = STDOUT\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
            "logger.apache.name = org.apache.kafka\nlogger.apache.level = WARN\n"
            "logger.started.name = kafka.server.KafkaRaftServer\nlogger.started.level = INFO\n"
        )

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            self.java(),
            *self.settings.kafka_heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _format(self, cluster_id: str, security: StackSecurity | None) -> None:
        if (self.data / "meta.properties").exists():
            return
        extra = security.format_args() if security is not None else []
        run_tool(
            self._java_cmd(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties),
                *extra,
            ),
            f"formatting Kafka storage of node {self.node_id} failed",
        )

    def pid(self) -> int | None:
        pid = _read_pid(self.pid_file)
        return pid if pid is not None and _pid_alive(pid) else None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(
            self.name, pid is not None and _port_open(self.port), pid, self.address
        )

    def check_ports(self) -> None:
        for port in (self.port, self.controller_port):
            if not _port_free(port):
                raise PortInUse("kafka", port, _port_holder(port))

    def prepare(self, cluster_id: str, security: StackSecurity | None) -> None:
        self._write_config(security)
        self._format(cluster_id, security)

    def spawn(self) -> int:
        pid = _spawn_detached(self._java_cmd("kafka.Kafka", str(self.properties)), self.log)
        self.pid_file.write_text(str(pid))
        return pid

    def kill9(self) -> None:
        """Kill the node without letting it shut down (a crashed machine), for tests."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait(lambda: not _pid_alive(pid), 10.0)
        self.pid_file.unlink(missing_ok=True)

    def down(self) -> bool:
        pid = _read_pid(self.pid_file)
        stopped = False
        if pid is not None and _pid_alive(pid):
            _terminate(pid, timeout=30.0)
            stopped = True
        self.pid_file.unlink(missing_ok=True)
        return stopped


class Kafka:
    """The local Kafka cluster: one node, or several (``stack up --brokers N``).

    The cluster id is kept in ``kafka/cluster-id`` so a node restarted on its own (or a node
    whose data was lost) formats into the same cluster.
    """

    def __init__(
        self, settings: Settings, brokers: int = 1, security: StackSecurity | None = None
    ) -> None:
        self.settings = settings
        self.security = security
        self.nodes = [KafkaNode(settings, i, brokers) for i in range(1, brokers + 1)]
        self.dir = settings.stack_dir / "kafka"
        self.port = settings.kafka_port

    @property
    def address(self) -> str:
        """The bootstrap list of every node."""
        return ",".join(n.address for n in self.nodes)

    def java(self) -> str:
        return self.nodes[0].java()

    def pid(self) -> int | None:
        return self.nodes[0].pid()

    def pids(self) -> list[int]:
        return [pid for n in self.nodes if (pid := n.pid()) is not None]

    def status(self) -> ServiceStatus:
        states = [n.status() for n in self.nodes]
        return ServiceStatus(
            "kafka",
            all(s.running for s in states),
            states[0].pid,
            self.address,
            "" if len(states) == 1 else f"{sum(s.running for s in states)}/{len(states)} nodes",
        )

    def statuses(self) -> list[ServiceStatus]:
        return [n.status() for n in self.nodes]

    def _cluster_id(self) -> str:
        path = self.dir / "cluster-id"
        if path.exists():
            return path.read_text().strip()
        cluster_id = new_cluster_id()
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(cluster_id)
        return cluster_id

    def up(self, progress: Progress = _quiet) -> bool:
        """Start every node that does not run; True when this call started any."""
        down = [n for n in self.nodes if not n.status().running]
        if not down:
            return False
        self.java()
        for node in down:
            node.check_ports()
        self.nodes[0].ensure_jars(progress)
        layout = Layout(len(self.nodes), self.security is not None)
        if layout != Layout():
            layout.write(self.settings)
        cluster_id = self._cluster_id()
        if self.security is not None:
            self.security.ensure(progress)
        for node in down:
            node.prepare(cluster_id, self.security)
        progress(f"starting Kafka on {self.address} ...")
        pids = {node.node_id: node.spawn() for node in down}
        if not _wait(
            lambda: any(not _pid_alive(p) for p in pids.values()) or self._ready(down),
            KAFKA_START_TIMEOUT_S,
            0.5,
        ):
            self.down()
            raise StartTimeout(
                f"Kafka did not answer on {self.address} within {KAFKA_START_TIMEOUT_S:.0f} s; "
                + "".join(f"last lines of {n.log}:\n{_tail(n.log)}\n" for n in down)
            )
        for node in down:
            if not _pid_alive(pids[node.node_id]):
                raise StartTimeout(
                    f"Kafka node {node.node_id} exited while starting; last lines of "
                    f"{node.log}:\n{_tail(node.log)}"
                )
        return True

    def _ready(self, nodes: list[KafkaNode]) -> bool:
        """Every node in ``nodes`` answers and the cluster's metadata lists all of them."""
        if not all(_port_open(n.port) for n in nodes):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            config = self.client_config(nodes[0].address)
            md = AdminClient(config).list_topics(timeout=2)
        except Exception:
            return False
        return len(md.brokers) >= len(self.nodes)

    def client_config(self, bootstrap: str | None = None) -> dict[str, Any]:
        """librdkafka settings of an administrator's client of this cluster."""
        config: dict[str, Any] = {"bootstrap.servers": bootstrap or self.address}
        if self.security is not None:
            config.update(self.security.admin_client_config())
        return config

    def down(self) -> bool:
        stopped = [n.down() for n in self.nodes]
        return any(stopped)


def _spawn_detached(cmd: list[str], log: Path) -> int:
    """Start ``cmd`` in a session of its own, owned by init rather than by us, and return its pid.

    A service outlives the command that started it; detaching through a shell that exits at once
    leaves no child of ours to reap.
    """
    proc = subprocess.run(
        [
            "setsid",
            "sh",
            "-c",
            f"{shlex.join(cmd)} >>{shlex.quote(str(log))} 2>&1 </dev/null & echo $!",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.strip())


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, then SIGKILL it if it is still there after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait(lambda: not _pid_alive(pid), timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _pid_alive(pid), 5.0)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bindir(given: Path | None) -> Path:
    """Where initdb and pg_ctl live: ``given`` (ROOMSTREAM_PG_BINDIR) when set, else Debian's
    newest."""
    if given is not None:
        if (given / "initdb").exists() and (given / "pg_ctl").exists():
            return given
        raise MissingBinary(
            f"ROOMSTREAM_PG_BINDIR={given} holds no initdb and pg_ctl; point it at PostgreSQL's "
            "bin directory (e.g. /usr/lib/postgresql/15/bin) or unset it"
        )
    root = Path("/usr/lib/postgresql")
    versions = [p for p in root.glob("*/bin") if p.parent.name.isdigit()] if root.is_dir() else []
    for c in sorted(versions, key=lambda p: int(p.parent.name), reverse=True):
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    raise MissingBinary(
        "the PostgreSQL server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql "
        "or on PATH; install them with `apt-get install postgresql` (`make setup` does this), "
        "or set ROOMSTREAM_PG_BINDIR"
    )


class Postgres:
    USER = "roomstream"
    DATABASE = "roomstream"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.pg_port
        self.dir = settings.stack_dir / "pg"
        self.data = self.dir / "data"
        self.run_dir = self.dir / "run"
        self.log = self.dir / "postgres.log"
        # The password of the cluster's one user, in libpq's format; clients find it through
        # the URL's passfile parameter (or PGPASSFILE), never in an argument.
        self.passfile = self.dir / "pgpass"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return local_database_url(self.settings.stack_dir, self.port)

    def _write_passfile(self) -> str:
        """A new random password for the cluster's user, in the password file; returns it."""
        password = secrets.token_urlsafe(24)
        self.passfile.unlink(missing_ok=True)
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:{self.port}:*:{self.USER}:{password}\n")
            f.write(f"localhost:{self.port}:*:{self.USER}:{password}\n")
        return password

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSFILE": str(self.passfile)}

    def _os_user(self) -> str | None:
        """PostgreSQL refuses to run as root: as root, run it as the 'postgres' system user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
            return "postgres"
        except KeyError:
            pass
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "roomstream-pg",
            ],
            check=False,
            capture_output=True,
        )
        return "roomstream-pg"

    def _run(self, cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        user = self._os_user()
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]

    def _client(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, capture_output=True, text=True, check=False, env=self._client_env()
        )

    def pid(self) -> int | None:
        pid = _read_pid(self.data / "postmaster.pid")
        return pid if pid is not None and _pid_alive(pid) else None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(
            "postgres", pid is not None and _port_open(self.port), pid, self.address
        )

    def up(self, progress: Progress = _quiet) -> bool:
        if self.status().running:
            return False
        bindir = _pg_bindir(self.settings.pg_bindir)
        if not _port_free(self.port):
            raise PortInUse("postgres", self.port, _port_holder(self.port))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        user = self._os_user()
        if user:
            # The cluster's files belong to the unprivileged user; every parent must let it in.
            for p in (self.dir, self.run_dir):
                shutil.chown(p, user)
            for parent in self.dir.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        if not (self.data / "PG_VERSION").exists():
            progress("initialising the PostgreSQL cluster ...")
            shutil.rmtree(self.data, ignore_errors=True)
            # scram-sha-256 for every connection, local socket included: the password is read
            # by initdb from a file that exists only while it runs.
            pwfile = self.dir / "initdb.pw"
            pwfile.write_text(self._write_passfile() + "\n")
            os.chmod(pwfile, 0o600)
            if user:
                shutil.chown(pwfile, user)
            try:
                proc = self._run(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        self.USER,
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if proc.returncode != 0:
                raise StackError(f"initdb failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# roomstream local stack\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "max_connections = 200\n"
                    "shared_buffers = 256MB\n"
                    "wal_buffers = 16MB\n"
                    "max_wal_size = 2GB\n"
                    "checkpoint_timeout = 15min\n"
                )
        progress(f"starting PostgreSQL on {self.address} ...")
        if user:
            shutil.chown(self.log, user) if self.log.exists() else None
            if not self.log.exists():
                self.log.touch()
                shutil.chown(self.log, user)
        proc = self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(int(PG_START_TIMEOUT_S)),
                "-o",
                f"-p {self.port} -k {self.run_dir}",
                "start",
            ],
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise StartTimeout(
                f"PostgreSQL did not start on {self.address} (pg_ctl exit {proc.returncode}); "
                f"last lines of {self.log}:\n{_tail(self.log)}"
            )
        if not _wait(lambda: _port_open(self.port), PG_START_TIMEOUT_S):
            raise StartTimeout(
                f"PostgreSQL did not answer on {self.address}; "
                f"last lines of {self.log}:\n{_tail(self.log)}"
            )
        self._ensure_database(bindir)
        return True

    def _ensure_database(self, bindir: Path) -> None:
        # Clients, run as ourselves: the password file is ours alone.
        def client(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
            where = ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER]
            return self._client([str(bindir / tool), *where, *args])

        exists = f"SELECT 1 FROM pg_database WHERE datname='{self.DATABASE}'"
        if client("psql", "-d", "postgres", "-tAc", exists).stdout.strip() == "1":
            return
        proc = client("createdb", self.DATABASE)
        if proc.returncode != 0:
            raise StackError(f"createdb {self.DATABASE} failed: {proc.stderr.strip()}")

    def down(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        bindir = _pg_bindir(self.settings.pg_bindir)
        proc = self._run([str(bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        if proc.returncode != 0 or not _wait(lambda: not _pid_alive(pid), 30.0):
            _terminate(pid, 10.0)
        return True


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class Layout:
    """What ``stack up`` built in a stack directory, so ``down``, ``status`` and ``env`` (and a
    later ``up``) know without being told again: ``<stack_dir>/stack.json``."""

    brokers: int = 1
    secure: bool = False

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.stack_dir / "stack.json"

    @classmethod
    def read(cls, settings: Settings) -> Layout | None:
        try:
            raw = json.loads(cls.path(settings).read_text())
        except FileNotFoundError:
            return None
        return cls(int(raw.get("brokers", 1)), bool(raw.get("secure", False)))

    def write(self, settings: Settings) -> None:
        settings.stack_dir.mkdir(parents=True, exist_ok=True)
        self.path(settings).write_text(json.dumps(asdict(self)) + "\n")


def _layout(settings: Settings, brokers: int | None, secure: bool | None) -> Layout:
    """The layout asked for, checked against the one a stack directory already holds."""
    recorded = Layout.read(settings)
    if recorded is None:
        # A stack made before layouts were recorded is a single plain node.
        formatted = (settings.stack_dir / "kafka" / "data" / "meta.properties").exists()
        recorded = Layout() if formatted else None
    wanted = Layout(
        brokers if brokers is not None else (recorded.brokers if recorded else 1),
        secure if secure is not None else (recorded.secure if recorded else False),
    )
    if wanted.brokers < 1:
        raise StackError(f"--brokers {wanted.brokers}: a cluster needs at least one broker")
    if recorded is not None and recorded != wanted:
        raise StackError(
            f"{settings.stack_dir} holds a stack of {recorded.brokers} broker(s)"
            f"{', secured' if recorded.secure else ''}; `roomstream stack down` it and delete "
            "the directory, or use another ROOMSTREAM_STACK_DIR (and ports) for "
            f"{wanted.brokers} broker(s){', secured' if wanted.secure else ''}"
        )
    return wanted


class Stack:
    def __init__(
        self, settings: Settings, *, brokers: int | None = None, secure: bool | None = None
    ) -> None:
        self.settings = settings
        self.layout = _layout(settings, brokers, secure)
        self.security = StackSecurity(settings) if self.layout.secure else None
        self.kafka = Kafka(settings, self.layout.brokers, self.security)
        self.postgres = Postgres(settings)

    def up(self, progress: Progress = _quiet) -> list[str]:
        """Start what is not running; returns the names of the services this call started.

        Both prerequisites are checked before anything starts, so a missing binary or a taken
        port fails fast without leaving one service half up.
        """
        started: list[str] = []
        if not self.postgres.status().running:
            _pg_bindir(self.settings.pg_bindir)
        if not self.kafka.status().running:
            self.kafka.java()
        if self.postgres.up(progress):
            started.append("postgres")
        if self.kafka.up(progress):
            started.append("kafka")
        return started

    def down(self) -> list[str]:
        stopped = []
        if self.kafka.down():
            stopped.append("kafka")
        if self.postgres.down():
            stopped.append("postgres")
        return stopped

    def status(self) -> list[ServiceStatus]:
        kafka = self.kafka.statuses() if len(self.kafka.nodes) > 1 else [self.kafka.status()]
        return [*kafka, self.postgres.status()]

    def env_lines(self) -> Iterator[str]:
        s = self.settings
        yield f"export ROOMSTREAM_KAFKA_BOOTSTRAP={self.kafka.address}"
        yield f"export ROOMSTREAM_DATABASE_URL={self.postgres.url}"
        yield f"export ROOMSTREAM_TOPIC_PREFIX={s.topic_prefix}"
        if self.security is not None:
            yield from (f"export {k}={shlex.quote(v)}" for k, v in self.security.client_env())
        if self.postgres.passfile.exists():
            yield f"export ROOMSTREAM_PG_PASSFILE={self.postgres.passfile}"
            yield f"export PGPASSFILE={self.postgres.passfile}"
        # For third-party clients: psql reads these; kcat takes -b "$KAFKA_BOOTSTRAP".
        yield f"export KAFKA_BOOTSTRAP={self.kafka.address}"
        yield "export PGHOST=127.0.0.1"
        yield f"export PGPORT={self.postgres.port}"
        yield f"export PGUSER={Postgres.USER}"
        yield f"export PGDATABASE={Postgres.DATABASE}"


def new_cluster_id() -> str:
    """A KRaft cluster ID: 16 random bytes, URL-safe base64. One that starts with "-" would be
    read as an option by the storage tool's ``-t`` (as Kafka's own Uuid.randomUuid, draw again)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
