"""The committer's failure sequences against the real broker and database: a change too large
for one record, garbage on the chunks topic, errors retrying cannot fix, a stale committer,
divergent replays and bounded bookkeeping."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from prometheus_client import REGISTRY

from db.chunk_marks import prune_committed
from db.fence import Fenced
from db.writer import Fence, write_batch
from pipeline.committer.errors import CommitterStopped
from pipeline.committer.loop import lock_key
from pipeline.config import Settings
from pipeline.ops.status import collect_status, render_text
from pipeline.room.chunk import Chunk
from pipeline.room.processor import RoomProcessor
from tests.integration import committer_harness as ch
from tests.integration._chunks import RoomSim, member, msg
from tests.integration.harness import wait_for
from tests.integration.tcp_proxy import TcpProxy
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_sequence_1_a_change_over_the_record_limit_is_split_and_the_committer_goes_on(
    settings: Settings,
) -> None:
    room = RoomSim("!big:example.org")
    create = room.create_chunk()
    # A mass join: 5,200 membership changes in one change, over 1 MB as one message.
    mass = room.chunk(*[member(f"@u{i:05d}:s{i % 50}.example.org") for i in range(5_200)])
    after = room.chunk(msg(room.creator))
    ch.produce(settings, [create])
    ch.produce(settings, [mass])
    ch.produce(settings, [after])
    total = 2 + 5_200 + 1
    notified: list[str] = []
    with ch.RunningCommitter(settings) as rc, ch.invalidations(settings) as inv:
        inv.add_notifier(lambda m: notified.extend(e["event_id"] for e in m["events"]))
        assert inv.wait_for_position(total, ch.WAIT_S), "the committer is stuck"
        assert rc.error is None
    assert inv.gaps == 0
    assert notified == [e.event_id for c in (create, mass, after) for e in c.events]
    records = ch.read_all(
        settings, Topic.INVALIDATIONS, ch.message_count(settings, Topic.INVALIDATIONS)
    )
    assert max(len(r) for r in records) < 1_000_000
    split = [orjson.loads(r) for r in records if orjson.loads(r)["parts"] > 1]
    assert split, "the mass join went out as numbered parts"
    assert len({m["position"] for m in split}) == 1
    assert [m["part"] for m in split] == list(range(split[0]["parts"]))


GARBAGE = [
    (b"{not json", "not JSON"),
    (b"[1, 2, 3]", "a JSON array"),
    (b'{"chunk_id": 5, "room_id": "!r:example.org"}', "wrong fields"),
    (
        orjson.dumps(
            {
                "chunk_id": "!r:example.org/1",
                "room_id": "!r:example.org",
                "room_version": "99",
                "events": [],
            }
        ),
        "unknown room version",
    ),
    (
        orjson.dumps(
            {
                "chunk_id": "whatever",
                "room_id": "!r:example.org",
                "room_version": "10",
                "events": [],
            }
        ),
        "chunk id not <room_id>/<n>",
    ),
    (b"\xff\xfe\x00", "not UTF-8"),
]


def test_sequence_3_garbage_on_the_chunks_topic_is_dead_lettered_and_the_committer_goes_on(
    settings: Settings,
) -> None:
    room = RoomSim("!r:example.org")
    ch.produce(settings, [g for g, _ in GARBAGE] + [room.create_chunk()])
    with ch.RunningCommitter(settings) as rc, ch.invalidations(settings) as inv:
        assert inv.wait_for_position(2, ch.WAIT_S)
        assert rc.error is None
        assert rc.committer.stats.dead_lettered == len(GARBAGE)
    dead = [orjson.loads(m) for m in ch.read_all(settings, "dead-letter", len(GARBAGE))]
    assert [d["source"]["offset"] for d in dead] == list(range(len(GARBAGE)))
    assert all(d["reason"].startswith("chunk could not be read: ") for d in dead)
    assert "99" in dead[3]["reason"] and "<room_id>/<n>" in dead[4]["reason"]
    assert "value_b64" in dead[5]


def test_sequence_2_an_error_retrying_cannot_fix_stops_the_committer_with_a_metric(
    settings: Settings,
) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topic(Topic.INVALIDATIONS)
    limit = ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[limit])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(30)
    room = RoomSim("!r:example.org")
    ch.produce(
        settings, [room.create_chunk(), room.chunk(*[member(f"@u{i}:x.org") for i in range(40)])]
    )
    before = sample("roomstream_committer_stopped_total", reason="publish")
    rc = ch.RunningCommitter(settings)
    err = rc.wait_ended()  # it does not retry the refused message forever
    assert isinstance(err, CommitterStopped)
    assert "MSG_SIZE_TOO_LARGE" in str(err) or "too large" in str(err).lower()
    assert sample("roomstream_committer_stopped_total", reason="publish") == before + 1
    # The rows stay committed and unsent: a committer with the topic fixed publishes them.
    assert ch.query(settings, "SELECT count(*) FROM invalidation_outbox WHERE NOT sent") != [(0,)]


def test_sequence_4_a_committer_whose_generation_was_taken_cannot_commit(
    settings: Settings,
) -> None:
    import psycopg2

    key = lock_key(settings.topic_prefix)
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO committer_fence (lock_key, generation) VALUES (%s, 7)", (key,))
        conn.commit()
        room = RoomSim("!r:example.org")
        with conn.cursor() as cur, pytest.raises(Fenced):
            write_batch(cur, [room.create_chunk()], {("t", 0): 1}, fence=Fence(key, 6))
        conn.rollback()
        assert ch.query(settings, "SELECT count(*) FROM events") == [(0,)]
        assert ch.query(settings, "SELECT count(*) FROM committer_offsets") == [(0,)]
    finally:
        conn.close()


def _through(url: str, host_port: str, proxy_port: int, tmp_path: Path) -> str:
    """``url`` through the proxy; a password file the URL names gets a line for the proxy's
    port (libpq matches its lines by host and port)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    passfile = query.get("passfile")
    if passfile and Path(passfile).is_file():
        lines = Path(passfile).read_text().splitlines()
        extra = [":".join([f.split(":", 2)[0], str(proxy_port), *f.split(":")[2:]]) for f in lines]
        mine = tmp_path / "pgpass"
        mine.write_text("\n".join(lines + extra) + "\n")
        mine.chmod(0o600)
        query["passfile"] = str(mine)
    netloc = parts.netloc.replace(host_port, f"127.0.0.1:{proxy_port}")
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


def test_sequence_4_a_committer_cut_off_from_postgres_is_replaced_and_fenced(
    settings: Settings, tmp_path: Path
) -> None:
    host_port = settings.database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    via_proxy = replace(
        settings,
        database_url=_through(settings.database_url, host_port, proxy.port, tmp_path),
    )
    room = RoomSim("!r:example.org")
    ch.produce(settings, [room.create_chunk()])
    try:
        with (
            ch.RunningCommitter(via_proxy) as stale,
            ch.invalidations(settings) as inv,
        ):
            stale.wait_active()
            assert inv.wait_for_position(2, ch.WAIT_S)
            with ch.RunningCommitter(settings) as standby:
                assert standby.standing_by.wait(ch.WAIT_S)
                proxy.freeze()  # a network partition between the active committer and Postgres
                cut_at = time.monotonic()
                standby.wait_active()
                takeover = time.monotonic() - cut_at
                assert takeover < 30, f"takeover took {takeover:.1f} s"
                ch.produce(settings, [room.chunk(msg(room.creator))])
                assert inv.wait_for_position(3, ch.WAIT_S)
                stale_batches = stale.committer.stats.batches
                proxy.thaw()  # the stale committer resumes
                ch.produce(settings, [room.chunk(msg(room.creator))])
                assert inv.wait_for_position(4, ch.WAIT_S)
                deadline = time.monotonic() + ch.WAIT_S
                while stale.committer.active and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert not stale.committer.active
                assert stale.committer.stats.batches == stale_batches
                assert standby.committer.stats.chunks == 2
    finally:
        proxy.close()
    assert inv.gaps == 0
    assert [r[0] for r in ch.query(settings, "SELECT stream_ordering FROM events ORDER BY 1")] == [
        1,
        2,
        3,
        4,
    ]
    generations = ch.query(settings, "SELECT generation FROM committer_fence")
    assert generations == [(2,)]


def test_sequence_6_a_chunk_id_committed_with_other_content_is_a_reported_divergence(
    settings: Settings,
) -> None:
    room = RoomSim("!r:example.org")
    create, chat = room.create_chunk(), room.chunk(msg(room.creator, "first run"))
    other = RoomSim("!r:example.org")
    other.create_chunk()
    replayed = other.chunk(msg(other.creator, "a replay that came out differently"))
    replayed = replace(replayed, events=(replace(replayed.events[0], event_id="$different"),))
    assert replayed.chunk_id == chat.chunk_id
    before = sample("roomstream_chunk_divergences_total")
    ch.produce(settings, [create, chat])
    with ch.RunningCommitter(settings), ch.invalidations(settings) as inv:
        assert inv.wait_for_position(3, ch.WAIT_S)
    ch.produce(settings, [replayed, create, room.chunk(msg(room.creator))])
    with ch.RunningCommitter(settings) as rc, ch.invalidations(settings) as inv:
        assert inv.wait_for_position(4, ch.WAIT_S)
        assert rc.committer.stats.divergences == 1
        assert rc.committer.stats.skipped_chunks == 1  # the create chunk: the same content
    assert sample("roomstream_chunk_divergences_total") == before + 1
    assert ch.query(settings, "SELECT chunk_id FROM chunk_divergences") == [(chat.chunk_id,)]
    assert ch.query(settings, "SELECT count(*) FROM events WHERE event_id = '$different'") == [(0,)]
    (dead,) = [orjson.loads(m) for m in ch.read_all(settings, "dead-letter", 1)]
    assert dead["reason"].startswith("divergence: chunk !r:example.org/2")
    status = collect_status(settings)
    assert status.divergences == 1
    assert "divergences      1 (newest: chunk !r:example.org/2)" in render_text(status)


def test_sequence_5_committed_chunks_are_bounded_and_a_pruned_replay_is_still_skipped(
    settings: Settings,
) -> None:
    import psycopg2

    room = RoomSim("!r:example.org")
    chunks: list[Chunk] = [room.create_chunk()] + [room.chunk(msg(room.creator)) for _ in range(30)]
    ch.produce(settings, chunks)
    with ch.RunningCommitter(settings), ch.invalidations(settings) as inv:
        assert inv.wait_for_position(32, ch.WAIT_S)
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn.cursor() as cur:
            assert prune_committed(cur, window=0) == 31
        conn.commit()
    finally:
        conn.close()
    assert ch.query(settings, "SELECT count(*) FROM committed_chunks") == [(0,)]
    assert ch.query(settings, "SELECT room_id, last_seq FROM room_chunk_marks") == [
        ("!r:example.org", 31)
    ]
    ch.produce(settings, [*chunks[:5], room.chunk(msg(room.creator))])  # a replay, then news
    with ch.RunningCommitter(settings) as rc, ch.invalidations(settings) as inv:
        assert inv.wait_for_position(33, ch.WAIT_S)
        assert rc.committer.stats.skipped_chunks == 5
    assert ch.query(settings, "SELECT count(*) FROM events") == [(33,)]


def _batched(b: RoomBuilder, batches: list[list[str]]) -> list[Chunk]:
    """The chunks one room processor makes of ``b``'s events fed in ``batches``."""
    proc = RoomProcessor(b.room_id)
    return [c for names in batches for c in proc.process(b.raws(names)).chunks]


def test_a_replay_batched_otherwise_is_skipped_not_reported_as_a_divergence(
    settings: Settings,
) -> None:
    b = RoomBuilder("10")
    names = [*b.base(), "M1", "M2"]
    b.message("M1", ALICE)
    b.message("M2", BOB)
    first_run = _batched(b, [names[:5], names[5:]])  # seq 1..5, 6..7
    replay = _batched(b, [names[:3], names[3:]])  # seq 1..3, 4..7: /7 again, other content
    assert [c.seq for c in first_run] == [(1, 5), (6, 7)]
    assert [c.seq for c in replay] == [(1, 3), (4, 7)]
    assert first_run[1].chunk_id == replay[1].chunk_id
    assert first_run[1].digest != replay[1].digest
    ch.produce(settings, first_run)
    with ch.RunningCommitter(settings), ch.invalidations(settings) as inv:
        assert inv.wait_for_position(7, ch.WAIT_S)
    ch.produce(settings, replay)
    with ch.RunningCommitter(settings) as rc:
        wait_for(lambda: rc.committer.stats.skipped_chunks == 2, ch.WAIT_S, "the replay skipped")
        assert rc.committer.stats.divergences == 0
    assert ch.query(settings, "SELECT count(*) FROM events") == [(7,)]
    assert ch.query(settings, "SELECT count(*) FROM chunk_divergences") == [(0,)]


def test_a_chunk_past_the_high_water_plus_one_is_reported_as_a_gap(settings: Settings) -> None:
    b = RoomBuilder("10")
    names = [*b.base(), "M1", "M2"]
    b.message("M1", ALICE)
    b.message("M2", BOB)
    head, lost, tail = _batched(b, [names[:5], names[5:6], names[6:]])  # seq 1..5, 6, 7
    before = sample("roomstream_chunk_gaps_total")
    ch.produce(settings, [head, tail])
    with ch.RunningCommitter(settings), ch.invalidations(settings) as inv:
        assert inv.wait_for_position(6, ch.WAIT_S)
    assert lost.seq == (6, 6)
    assert sample("roomstream_chunk_gaps_total") == before + 1
