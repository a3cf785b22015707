"""Each process's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

- ``/healthz`` answers 200 while the process serves at all: a liveness probe restarts a process
  only when it hangs, never while it waits for a broker or a database.
- ``/readyz`` answers 200 when the process does its job, 503 with the reason otherwise. A worker
  is ready once it is a member of the processors' group, not rebalancing, with its tables
  recovered (caught up with their changelogs); a committer once it is active or standing by
  with a working database connection. Kubernetes uses it for rollouts and disruption budgets.

The process sets its ``Readiness`` (``WORKER`` or ``COMMITTER``); the endpoint binds to
``ROOMSTREAM_METRICS_ADDR`` (127.0.0.1 unless an operator opens it, e.g. 0.0.0.0 in a pod).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import metrics

__all__ = ["COMMITTER", "WORKER", "CommitterReadiness", "Readiness", "serve"]


class Readiness:
    """Whether the process is ready, and why not; set from any thread."""

    def __init__(self, reason: str = "starting") -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._reason = reason

    def set(self, ready: bool, reason: str) -> None:
        with self._lock:
            self._ready, self._reason = ready, reason

    def state(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._reason


class CommitterReadiness(Readiness):
    """The committer's states, each a callback of ``Committer``: active and standby are ready
    (a standby is what it should be), a lost connection is not. Also sets the active gauge."""

    def active(self) -> None:
        metrics.COMMITTER_ACTIVE.set(1)
        self.set(True, "active")

    def standby(self) -> None:
        metrics.COMMITTER_ACTIVE.set(0)
        self.set(True, "standby: another committer holds the lock")

    def lost(self, reason: str = "connection lost") -> None:
        metrics.COMMITTER_ACTIVE.set(0)
        self.set(False, reason)


WORKER = Readiness()
COMMITTER = CommitterReadiness()


def _handler(readiness: Readiness | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                ready, reason = readiness.state() if readiness else (True, "ready")
                self._reply(200 if ready else 503, f"{reason}\n".encode())
            else:
                self._reply(404, b"/metrics, /healthz or /readyz\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a probe every few seconds is not news

    return Handler


def serve(port: int, addr: str = "127.0.0.1", readiness: Readiness | None = None) -> int:
    """Serve the three paths on ``addr:port`` in a daemon thread; 0 serves nothing.

    Returns the port served (0 when none)."""
    if not port:
        return 0
    server = ThreadingHTTPServer((addr, port), _handler(readiness))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return int(server.server_address[1])
