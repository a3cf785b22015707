"""The Prometheus endpoints of a running worker and committer count what they did.

A worker and a committer run as subprocesses, each serving /metrics on its own port
(``ROOMSTREAM_METRICS_PORT``); rooms with known outcomes go through, and the scraped counters
must equal those outcomes: accepted, rejected and soft-failed events at the worker, events
committed and the stream position at the committer.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Settings
from pipeline.dev.workload_builder import ACCEPTED, REJECTED, SOFT_FAILED
from tests.integration.harness import Processes, produce, wait_for
from tests.integration.rooms import busy_room, lines_of

pytestmark = pytest.mark.integration

WAIT_S = 90.0  # an upper bound; the rooms go through in seconds

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample of the endpoint, by name and sorted labels; empty while it is not up."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_and_committer_counters_equal_the_outcomes_of_the_rooms_run(
    settings: Settings, procs: Processes
) -> None:
    rooms = [busy_room(f"m{i}", messages=3) for i in range(3)]
    lines = [line for r in rooms for line in lines_of(r)]
    outcomes = [e.outcome for r in rooms for e in r.events]
    total = len(outcomes)
    worker_port, committer_port = free_port(), free_port()
    worker = procs.worker("w1", ROOMSTREAM_METRICS_PORT=str(worker_port))
    committer = procs.start(
        "committer", name="committer", ROOMSTREAM_METRICS_PORT=str(committer_port)
    )
    produce(settings, lines)
    scraped: dict[str, Samples] = {}

    def committed_everything() -> bool:
        scraped["committer"] = scrape(committer_port)
        at = scraped["committer"]
        # Caught up: every event committed and nothing left to read on the chunks topic (the
        # worker may send a last chunk with nothing new after the one that completes the rooms).
        # Invalidations are counted once their delivery is confirmed, which may be a cycle after
        # the commit that moved the stream position: wait for that too.
        return (
            sample(at, "roomstream_committed_events_total") >= total
            and sample(at, "roomstream_consumer_lag", stage="committer", partition="0") == 0
            and sample(at, "roomstream_invalidations_sent_total") > 0
        )

    wait_for(committed_everything, WAIT_S, "every event committed", processes=[worker, committer])
    at_worker = scrape(worker_port)
    at_committer = scraped["committer"]

    processed = "roomstream_events_processed_total"
    assert sample(at_worker, processed, outcome="accepted") == outcomes.count(ACCEPTED)
    assert sample(at_worker, processed, outcome="rejected") == outcomes.count(REJECTED) > 0
    assert sample(at_worker, processed, outcome="soft_failed") == outcomes.count(SOFT_FAILED) > 0
    assert sample(at_worker, processed, outcome="duplicate") == 0
    assert sample(at_worker, "roomstream_dead_lettered_total") == 0
    assert sample(at_worker, "roomstream_parked_events") == 0
    assert sample(at_worker, "roomstream_process_seconds_count") > 0
    assert sample(at_worker, "roomstream_process_seconds_sum") > 0
    assert sample(at_worker, "roomstream_process_seconds_bucket", le="+Inf") == sample(
        at_worker, "roomstream_process_seconds_count"
    )
    # The worker's figures are its own: the committer's counters are not served by it.
    assert sample(at_worker, "roomstream_committed_events_total") == 0

    assert sample(at_committer, "roomstream_committed_events_total") == total
    assert sample(at_committer, "roomstream_stream_position") == total
    assert sample(at_committer, "roomstream_invalidations_sent_total") > 0
    assert sample(at_committer, "roomstream_commit_seconds_count") > 0
    # Every chunk the worker sent was committed once, and each transaction that stored events
    # published one invalidation message (none of this run's is large enough to be split).
    assert sample(at_committer, "roomstream_commit_batch_chunks_sum") == sample(
        at_worker, "roomstream_chunk_events_count"
    )
    assert (
        1
        <= sample(at_committer, "roomstream_invalidations_sent_total")
        <= sample(at_committer, "roomstream_commit_batch_chunks_count")
    )
    assert sample(at_committer, "roomstream_consumer_lag", stage="committer", partition="0") == 0
    # Every process also serves the client library's own process figures.
    assert sample(at_committer, "process_cpu_seconds_total") > 0
    assert sample(at_worker, "process_resident_memory_bytes") > 0


def exported_names(port: int) -> set[str]:
    """Every metric name the endpoint declares or samples (a labelled gauge with no child yet is
    declared, not sampled)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_the_alerts_and_the_dashboard_query_is_served(
    settings: Settings, procs: Processes
) -> None:
    from tests.unit.test_deploy import metrics_named

    worker_port, committer_port = free_port(), free_port()
    worker = procs.worker("w1", ROOMSTREAM_METRICS_PORT=str(worker_port))
    committer = procs.start(
        "committer", name="committer", ROOMSTREAM_METRICS_PORT=str(committer_port)
    )
    wait_for(
        lambda: bool(scrape(worker_port)) and bool(scrape(committer_port)),
        WAIT_S,
        "both endpoints",
        processes=[worker, committer],
    )
    served = exported_names(worker_port) | exported_names(committer_port)
    named = metrics_named()
    assert len(named) >= 10
    assert named <= served, f"queried but not served: {sorted(named - served)}"
