"""build_invalidation and build_message: DESIGN.md's shape, every touched cache once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import MalformedMessage
from pipeline.invalidations import (
    build_invalidation,
    decode_invalidation,
    encode_parts,
    format_for_tail,
)
from pipeline.room.chunk import (
    Chunk,
    ChunkEvent,
    CurrentStateRow,
    Membership,
    Redaction,
)

ROOM = "!r:example.org"


def pdu(eid: str, etype: str, sender: str, state_key: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event_id": eid,
        "room_id": ROOM,
        "type": etype,
        "sender": sender,
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 0,
    }
    if state_key is not None:
        d["state_key"] = state_key
    return d


def ev(
    eid: str,
    etype: str = "m.room.message",
    sender: str = "@a:example.org",
    state_key: str | None = None,
    *,
    rejected: str | None = None,
    soft_failed: bool = False,
    outlier: bool = False,
) -> ChunkEvent:
    return ChunkEvent(
        event_id=eid,
        format_version=3,
        pdu=pdu(eid, etype, sender, state_key),
        rejected=rejected,
        soft_failed=soft_failed,
        state_group=None,
        outlier=outlier,
    )


def chunk(*events: ChunkEvent, **changes: Any) -> Chunk:
    return Chunk(chunk_id=f"{ROOM}/1", room_id=ROOM, room_version="10", events=events, **changes)


def caches(msg: dict[str, Any]) -> dict[str, list[list[Any]]]:
    names = [i["cache"] for i in msg["invalidate"]]
    assert len(names) == len(set(names)), "each cache appears once in a message"
    return {i["cache"]: i["keys"] for i in msg["invalidate"]}


def test_message_has_the_design_fields_and_position() -> None:
    c = chunk(ev("$a"), ev("$b"))
    msg = build_invalidation(c, {"$a": 11, "$b": 12}, 12, 10)
    assert msg["position"] == 12
    assert msg["prev_position"] == 10
    assert msg["rooms"] == [ROOM]
    assert [e["stream_ordering"] for e in msg["events"]] == [11, 12]
    assert msg["events"][0] == {
        "event_id": "$a",
        "room_id": ROOM,
        "stream_ordering": 11,
        "type": "m.room.message",
        "state_key": None,
        "sender": "@a:example.org",
    }
    # It survives the wire, as one part.
    (data,) = encode_parts(msg)
    assert decode_invalidation(data) == {**msg, "part": 0, "parts": 1}


@pytest.mark.parametrize(
    ("flags", "notified"),
    [
        ({}, True),
        ({"rejected": "auth rule 4.b: sender not joined"}, False),
        ({"soft_failed": True}, False),
        ({"outlier": True}, False),
    ],
    ids=["accepted", "rejected", "soft-failed", "outlier"],
)
def test_only_accepted_non_soft_failed_events_are_notified(
    flags: dict[str, Any], notified: bool
) -> None:
    msg = build_invalidation(chunk(ev("$x", **flags)), {"$x": 5}, 5, 4)
    assert [e["event_id"] for e in msg["events"]] == (["$x"] if notified else [])
    # Every stored event, notified or not, invalidates its have_seen_event entry.
    assert caches(msg)["have_seen_event"] == [[ROOM, "$x"]]


def test_events_stored_before_are_neither_notified_nor_invalidated() -> None:
    msg = build_invalidation(chunk(ev("$old"), ev("$new")), {"$new": 7}, 7, 6)
    assert [e["event_id"] for e in msg["events"]] == ["$new"]
    assert caches(msg)["have_seen_event"] == [[ROOM, "$new"]]


def test_membership_change_invalidates_room_user_and_host_caches_in_one_message() -> None:
    c = chunk(
        ev("$j", "m.room.member", "@a:example.org", "@a:example.org"),
        ev("$k", "m.room.member", "@b:other.org:8448", "@b:other.org:8448"),
        current_state_set=(
            CurrentStateRow("m.room.member", "@a:example.org", "$j", "join"),
            CurrentStateRow("m.room.member", "@b:other.org:8448", "$k", "leave"),
        ),
        memberships=(
            Membership("$j", "@a:example.org", "@a:example.org", "join"),
            Membership("$k", "@b:other.org:8448", "@b:other.org:8448", "leave"),
        ),
    )
    got = caches(build_invalidation(c, {"$j": 1, "$k": 2}, 2, 0))
    users = [["@a:example.org"], ["@b:other.org:8448"]]
    for cache in (
        "get_rooms_for_user_with_stream_ordering",
        "get_rooms_for_user",
        "get_invited_rooms_for_local_user",
    ):
        assert got[cache] == users
    for cache in ("get_current_state_ids", "get_partial_current_state_ids", "get_room_summary"):
        assert got[cache] == [[ROOM]]
    for cache in ("get_users_in_room", "get_current_hosts_in_room", "get_local_users_in_room"):
        assert got[cache] == [[ROOM]]
    hosts = [[ROOM, "example.org"], [ROOM, "other.org:8448"]]
    assert got["is_host_joined"] == hosts
    assert got["was_host_joined"] == hosts
    assert got["get_user_in_room_with_profile"] == [[ROOM, u[0]] for u in users]


def test_removed_member_from_current_state_counts_as_membership_change() -> None:
    c = chunk(ev("$x"), current_state_removed=(("m.room.member", "@gone:example.org"),))
    got = caches(build_invalidation(c, {"$x": 3}, 3, 2))
    assert got["get_rooms_for_user"] == [["@gone:example.org"]]
    assert got["is_host_joined"] == [[ROOM, "example.org"]]


def test_non_member_state_change_leaves_membership_caches_alone() -> None:
    c = chunk(
        ev("$n", "m.room.name", state_key=""),
        current_state_set=(CurrentStateRow("m.room.name", "", "$n", None),),
    )
    got = caches(build_invalidation(c, {"$n": 1}, 1, 0))
    assert got["get_current_state_ids"] == [[ROOM]]
    assert "get_users_in_room" not in got
    assert "get_rooms_for_user" not in got
    assert "is_host_joined" not in got


@pytest.mark.parametrize(
    ("etype", "cache"),
    [("m.room.encryption", "get_room_encryption"), ("m.room.create", "get_room_type")],
)
def test_state_type_specific_caches(etype: str, cache: str) -> None:
    c = chunk(
        ev("$s", etype, state_key=""), current_state_set=(CurrentStateRow(etype, "", "$s", None),)
    )
    assert caches(build_invalidation(c, {"$s": 1}, 1, 0))[cache] == [[ROOM]]


def test_message_without_state_change_invalidates_no_state_cache() -> None:
    got = caches(build_invalidation(chunk(ev("$m")), {"$m": 1}, 1, 0))
    assert set(got) == {"have_seen_event"}


def test_forward_extremity_change_invalidates_extremity_caches() -> None:
    c = chunk(ev("$m"), forward_extremities_added=("$m",), forward_extremities_removed=("$p",))
    got = caches(build_invalidation(c, {"$m": 1}, 1, 0))
    assert got["get_forward_extremities_for_room"] == [[ROOM]]
    assert got["get_latest_event_ids_in_room"] == [[ROOM]]


def test_redaction_invalidates_the_redacted_event() -> None:
    c = chunk(ev("$r", "m.room.redaction"), redactions=(Redaction("$r", "$victim"),))
    assert caches(build_invalidation(c, {"$r": 9}, 9, 8))["get_event"] == [["$victim"]]


def test_message_is_deterministic() -> None:
    c = chunk(
        ev("$j", "m.room.member", "@z:b.org", "@z:b.org"),
        current_state_set=(
            CurrentStateRow("m.room.member", "@z:b.org", "$j", "join"),
            CurrentStateRow("m.room.member", "@a:a.org", "$j", "join"),
        ),
    )
    one = orjson.dumps(build_invalidation(c, {"$j": 1}, 1, 0))
    two = orjson.dumps(build_invalidation(c, {"$j": 1}, 1, 0))
    assert one == two
    assert caches(orjson.loads(one))["get_rooms_for_user"] == [["@a:a.org"], ["@z:b.org"]]


def test_format_for_tail_names_position_room_events_and_caches() -> None:
    c = chunk(
        ev("$j", "m.room.member", "@a:example.org", "@a:example.org"),
        current_state_set=(CurrentStateRow("m.room.member", "@a:example.org", "$j", "join"),),
    )
    line = format_for_tail(build_invalidation(c, {"$j": 42}, 42, 40))
    assert line.startswith("42 (prev 40) !r:example.org: 1 event(s)")
    assert "m.room.member[@a:example.org]" in line
    assert "get_rooms_for_user×1" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    "missing", ["position", "prev_position", "part", "parts", "rooms", "events", "invalidate"]
)
def test_decode_rejects_a_message_without_a_design_field(missing: str) -> None:
    msg = orjson.loads(encode_parts(build_invalidation(chunk(ev("$m")), {"$m": 1}, 1, 0))[0])
    del msg[missing]
    with pytest.raises(MalformedMessage, match=missing):
        decode_invalidation(orjson.dumps(msg))


@pytest.mark.parametrize(
    ("position", "prev", "says"),
    [(11, 10, "not their highest stream ordering"), (12, 12, "not after prev_position")],
)
def test_position_must_be_the_highest_ordering_and_after_prev(
    position: int, prev: int, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        build_invalidation(chunk(ev("$a"), ev("$b")), {"$a": 11, "$b": 12}, position, prev)


_users = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob", "carol", "dan"]),
        st.sampled_from(["a.org", "b.org", "c.org:8448"]),
    ),
    max_size=6,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(set_users=_users, removed_users=_users, n_events=st.integers(1, 5))
def test_property_every_changed_member_and_host_is_invalidated_once(
    set_users: list[tuple[str, str]], removed_users: list[tuple[str, str]], n_events: int
) -> None:
    set_ids = [f"@{u}:{h}" for u, h in set_users]
    removed_ids = [f"@{u}:{h}" for u, h in removed_users if f"@{u}:{h}" not in set_ids]
    events = [ev(f"$e{i}") for i in range(n_events)]
    c = chunk(
        *events,
        current_state_set=tuple(
            CurrentStateRow("m.room.member", u, "$e0", "join") for u in set_ids
        ),
        current_state_removed=tuple(("m.room.member", u) for u in removed_ids),
    )
    orderings = {e.event_id: 100 + i for i, e in enumerate(events)}
    msg = build_invalidation(c, orderings, 100 + n_events - 1, 99)
    got = caches(msg)
    changed = set(set_ids) | set(removed_ids)
    if not changed:
        assert "get_rooms_for_user" not in got
        return
    assert got["get_rooms_for_user"] == sorted([u] for u in changed)
    hosts = {u.split(":", 1)[1] for u in changed}
    assert got["is_host_joined"] == sorted([ROOM, h] for h in hosts)
    for entry in msg["invalidate"]:
        assert entry["keys"] == sorted(entry["keys"])
        assert len({tuple(k) for k in entry["keys"]}) == len(entry["keys"])
