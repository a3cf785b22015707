"""Missing events are asked for, not just waited on: the policy of ``pipeline.room.missing``,
one test per rule, through the room processor."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import pytest

from pipeline.room.batch import BatchResult, Incoming, ProcessorConfig
from pipeline.room.missing import MissingLedger, MissingRequest, create_event_candidates
from pipeline.room.parking import ParkingLimits
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import ALICE, BOB, RoomBuilder

Row = tuple[str, tuple[str, ...], str | None, int, str, int | None]


def rows(b: RoomBuilder, requests: Iterable[MissingRequest]) -> list[Row]:
    """Requests with event names for IDs, as (status, missing, needed_by, first, room, closed)."""
    return [
        (
            r.status,
            tuple(sorted(b.name_of(m) for m in r.missing)),
            None if r.needed_by is None else b.name_of(r.needed_by),
            r.first_seen_ts,
            r.room_id,
            r.closed_ts,
        )
        for r in requests
    ]


def feed(
    proc: RoomProcessor, b: RoomBuilder, names: Sequence[str], *, at: int = 0
) -> list[BatchResult]:
    """One input per batch, each ``received_ts`` one more than the last, from ``at``."""
    return [proc.process([Incoming(b.raw(n), received_ts=at + i)]) for i, n in enumerate(names)]


def requests_of(results: Iterable[BatchResult]) -> list[MissingRequest]:
    return [r for res in results for r in res.missing_requests]


def room() -> tuple[RoomBuilder, RoomProcessor]:
    b = RoomBuilder("10")
    b.base()
    b.message("M1", ALICE)
    b.message("M2", BOB)
    b.message("M3", ALICE)
    return b, RoomProcessor(b.room_id)


def test_an_event_parked_for_an_unknown_prev_event_asks_for_it_once_with_its_first_seen_time() -> (
    None
):
    b, proc = room()
    results = feed(proc, b, ["C", "MA", "PL", "JR", "MB", "M2"], at=100)
    assert rows(b, requests_of(results)) == [
        ("open", ("M1",), "M2", 105, b.room_id, None),
    ]
    assert results[-1].open_requests == 1
    # Not asked again while it stays parked, however many inputs come meanwhile.
    b.message("X", BOB, prev=["MB"])
    assert requests_of(feed(proc, b, ["X", "M2"], at=200)) == []
    assert rows(b, proc.open_requests()) == [("open", ("M1",), "M2", 105, b.room_id, None)]


def test_a_request_is_closed_as_answered_when_the_events_arrive() -> None:
    b, proc = room()
    feed(proc, b, ["C", "MA", "PL", "JR", "MB", "M2"], at=100)
    (result,) = feed(proc, b, ["M1"], at=300)
    assert rows(b, result.missing_requests) == [
        ("answered", ("M1",), "M2", 105, b.room_id, 300),
    ]
    assert result.open_requests == 0 and proc.open_requests() == []
    assert [b.name_of(e.event_id) for c in result.chunks for e in c.events] == ["M1", "M2"]


def test_a_request_is_closed_as_expired_when_the_waiting_event_expires() -> None:
    b = RoomBuilder("10")
    b.base()
    b.message("M1", ALICE)
    b.message("M2", BOB)
    b.message("X", BOB, prev=["MB"])
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(parking=ParkingLimits(ttl_ms=1000)))
    feed(proc, b, ["C", "MA", "PL", "JR", "MB"])
    feed(proc, b, ["M2"], at=10)
    (result,) = feed(proc, b, ["X"], at=1010)
    assert len(result.dead_letters) == 1
    assert rows(b, result.missing_requests) == [("expired", ("M1",), "M2", 10, b.room_id, 1010)]


def test_events_waiting_for_parked_events_ask_nothing_the_chain_asks_once_at_its_root() -> None:
    b, proc = room()
    results = feed(proc, b, ["C", "MA", "PL", "JR", "MB", "M2", "M3"], at=0)
    # M3 waits for M2, which is here (parked): only M2's lack of M1 is asked for.
    assert rows(b, requests_of(results)) == [("open", ("M1",), "M2", 5, b.room_id, None)]
    (done,) = feed(proc, b, ["M1"], at=50)
    assert rows(b, done.missing_requests) == [("answered", ("M1",), "M2", 5, b.room_id, 50)]


def test_one_request_per_missing_set_several_events_lacking_the_same_set_share_it() -> None:
    b, proc = room()
    b.message("Y", BOB, prev=["M1"])
    results = feed(proc, b, ["C", "MA", "PL", "JR", "MB", "M2", "Y"], at=0)
    assert rows(b, requests_of(results)) == [("open", ("M1",), "M2", 5, b.room_id, None)]
    # Closed only when the last event waiting on it leaves the lot.
    (done,) = feed(proc, b, ["M1"], at=9)
    assert rows(b, done.missing_requests) == [("answered", ("M1",), "M2", 5, b.room_id, 9)]


def test_a_request_names_the_whole_missing_set_of_prev_and_auth_events() -> None:
    b = RoomBuilder("10")
    b.base()
    b.topic("T", ALICE, "one")
    b.message("M1", BOB)
    b.add("M2", "m.room.message", BOB, {"body": "x"}, prev=["M1"], auth=["C", "PL", "MB", "T"])
    proc = RoomProcessor(b.room_id)
    results = feed(proc, b, ["C", "MA", "PL", "JR", "MB", "M2"])
    assert rows(b, requests_of(results)) == [("open", ("M1", "T"), "M2", 5, b.room_id, None)]


@pytest.mark.parametrize(
    ("version", "asks"),
    [
        # v1-v11: the create event is among the auth events every other event cites.
        ("10", ("C", "MA")),
        ("1", ("C", "MA")),
        # v12: the room ID is the create event's ID with "!" for "$".
        ("12", ("C",)),
    ],
)
def test_input_waiting_for_the_create_event_asks_for_it(
    version: str, asks: tuple[str, ...]
) -> None:
    b = RoomBuilder(version)
    b.base()
    proc = RoomProcessor(b.room_id)
    (parked,) = feed(proc, b, ["PL"], at=7)
    # A v1/v2 PDU carries its ID, so the request names it; later ones cannot be named yet.
    needed_by = "PL" if version == "1" else None
    assert rows(b, parked.missing_requests) == [("open", asks, needed_by, 7, b.room_id, None)]
    # The create event arrives: PL goes on (its other auth event, MA, is asked for anew).
    (founded,) = feed(proc, b, ["C"], at=8)
    got = rows(b, founded.missing_requests)
    assert got[0] == ("answered", asks, needed_by, 7, b.room_id, 8)
    assert [r[1] for r in got[1:]] == [("MA",)]
    assert [r[2] for r in got[1:]] == ["PL"]


def test_replaying_the_same_inputs_yields_the_same_requests_whatever_the_batching() -> None:
    b, _ = room()
    b.message("X", BOB, prev=["MB"])
    names = ["M3", "PL", "C", "MA", "M2", "JR", "MB", "X", "M1"]
    one_by_one = requests_of(feed(RoomProcessor(b.room_id), b, names, at=10))
    batched = RoomProcessor(b.room_id)
    at_once = batched.process([Incoming(b.raw(n), received_ts=10 + i) for i, n in enumerate(names)])
    assert list(at_once.missing_requests) == one_by_one
    assert one_by_one  # the case asks for something
    # And a processor restored mid-way asks as the original did.
    first = RoomProcessor(b.room_id)
    head = requests_of(feed(first, b, names[:5], at=10))
    restored = RoomProcessor.from_dict(orjson.loads(orjson.dumps(first.to_dict())))
    assert restored.open_requests() == first.open_requests()
    tail = requests_of(feed(restored, b, names[5:], at=15))
    assert head + tail == one_by_one


def test_the_ledger_refuses_a_second_request_from_one_parked_input() -> None:
    ledger = MissingLedger("!r:x")
    assert ledger.ask(1, ["$a"], "$n", 0) is not None
    with pytest.raises(ValueError, match="asked already"):
        ledger.ask(1, ["$b"], "$n", 0)
    assert ledger.ask(2, [], "$n", 0) is None
    assert ledger.ask(3, ["$n"], "$n", 0) is None  # an event never asks for itself


@pytest.mark.parametrize(
    ("room_id", "pdu", "expected"),
    [
        ("!hash", {}, ["$hash"]),
        ("!r:x", {"auth_events": ["$c", "$p", "$c"]}, ["$c", "$p"]),
        ("!r:x", {"auth_events": [["$c", {"sha256": "h"}], "bad", 5, []]}, ["$c"]),
        ("!r:x", {"auth_events": "nope"}, []),
    ],
)
def test_create_event_candidates_follow_the_room_id_or_the_cited_auth_events(
    room_id: str, pdu: dict[str, object], expected: list[str]
) -> None:
    assert create_event_candidates(room_id, pdu) == expected
