"""Health endpoints and the operator's gauges, scraped from running processes.

A worker runs as a subprocess with its endpoint on a configured address (127.0.0.2, to show the
address is the setting's, not a default), over rooms whose forward extremities and parked events
are known; a committer runs in this process with the readiness object its callbacks set.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import pytest

from pipeline import health
from pipeline.committer.loop import Committer
from pipeline.config import Settings
from pipeline.dev.workload_builder import RoomBuilder
from tests.integration.harness import Processes, produce, wait_for
from tests.integration.rooms import ALICE, BOB, chat_room
from tests.integration.test_metrics import Samples, free_port, sample, scrape

pytestmark = pytest.mark.integration

WAIT_S = 90.0


def get(url: str) -> tuple[int, str]:
    """Status and body of ``url``; (0, reason) while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError) as e:
        return 0, str(e)


def forked_room(tag: str, branches: int) -> RoomBuilder:
    """A room left with ``branches`` forward extremities: messages on one extremity, unmerged."""
    room = chat_room(tag, messages=0)
    base = room.forward_extremities
    for i in range(branches):
        room.message(ALICE if i % 2 else BOB, f"branch {i}", prev=base)
    return room


def test_worker_health_readiness_and_room_gauges(settings: Settings, procs: Processes) -> None:
    port = free_port()
    base = f"http://127.0.0.2:{port}"
    worker = procs.worker(
        "w1", ROOMSTREAM_METRICS_PORT=str(port), ROOMSTREAM_METRICS_ADDR="127.0.0.2"
    )
    wait_for(lambda: get(f"{base}/healthz") == (200, "ok\n"), 60, "/healthz", processes=[worker])
    # The configured address only: nothing answers on 127.0.0.1.
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 0
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, WAIT_S, "/readyz 200", processes=[worker])
    assert "assigned" in get(f"{base}/readyz")[1]

    # Twelve rooms with 1..12 forward extremities; only the top ten get a series each.
    rooms = {f"f{n}": forked_room(f"f{n}", n) for n in range(1, 13)}
    # A room whose last message arrives before the one it follows: parked until then.
    parked = chat_room("parked", messages=0)
    held = parked.message(ALICE, "first")
    parked.message(BOB, "second", prev=[held.event_id])
    before = time.time()
    produce(settings, [e.line for r in rooms.values() for e in r.events])
    produce(settings, [e.line for e in parked.events if e is not held])

    def at_worker() -> Samples:
        return scrape(port, "127.0.0.2")

    wait_for(
        lambda: (
            sample(at_worker(), "roomstream_forward_extremities_max") == 12
            and sample(at_worker(), "roomstream_oldest_parked_event_timestamp_seconds") > 0
        ),
        WAIT_S,
        "the room gauges",
        processes=[worker],
    )
    samples = at_worker()
    per_room = {
        dict(labels)["room_id"]: value
        for (name, labels), value in samples.items()
        if name == "roomstream_forward_extremities"
    }
    want = {rooms[f"f{n}"].room_id: float(n) for n in range(3, 13)}
    assert per_room == want
    oldest = sample(samples, "roomstream_oldest_parked_event_timestamp_seconds")
    assert before - 1 <= oldest <= time.time()
    # The parked room asks for the event it waits for.
    assert sample(samples, "roomstream_missing_event_requests_open") == 1

    # The missing event arrives: nothing is parked any more.
    produce(settings, [held.line])
    wait_for(
        lambda: sample(at_worker(), "roomstream_oldest_parked_event_timestamp_seconds") == 0,
        WAIT_S,
        "the parked event released",
        processes=[worker],
    )


def test_committer_readiness_follows_its_active_and_standby_callbacks(
    settings: Settings,
) -> None:
    port = free_port()
    readiness = health.CommitterReadiness()
    assert health.serve(port, "127.0.0.1", readiness) == port
    url = f"http://127.0.0.1:{port}"
    assert get(f"{url}/readyz") == (503, "starting\n")
    assert get(f"{url}/healthz") == (200, "ok\n")
    stop = threading.Event()
    standby_readiness = health.CommitterReadiness()
    active = Committer(settings, stop, on_active=readiness.active, on_standby=readiness.standby)
    standby = Committer(
        settings,
        stop,
        on_active=standby_readiness.active,
        on_standby=standby_readiness.standby,
    )
    threads = [threading.Thread(target=c.run, daemon=True) for c in (active, standby)]
    threads[0].start()
    try:
        wait_for(lambda: get(f"{url}/readyz") == (200, "active\n"), 60, "the active committer")
        assert sample(scrape(port), "roomstream_committer_active") == 1
        threads[1].start()
        wait_for(lambda: standby_readiness.state()[0], 60, "the standby committer")
        assert standby_readiness.state() == (True, "standby: another committer holds the lock")
        # The gauge is the process's: this one process holds both committers, and the standby
        # set it last.
        assert sample(scrape(port), "roomstream_committer_active") == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    readiness.lost()
    assert get(f"{url}/readyz") == (503, "connection lost\n")
    assert sample(scrape(port), "roomstream_committer_active") == 0
