"""Small rooms for the integration tests, built with the project's RoomBuilder."""

from __future__ import annotations

from pipeline.dev.workload_builder import REJECTED, SOFT_FAILED, RoomBuilder, default_power_levels

ALICE = "@alice:example.org"
BOB = "@bob:other.example"
CAROL = "@carol:example.org"


def busy_room(tag: str, version: str = "10", messages: int = 6) -> RoomBuilder:
    """A room with joins from two servers, a fork and its merge, a rejected event and a
    soft-failed one (a banned user's message built on a stale view of the room)."""
    room = RoomBuilder(version, tag=tag)
    room.create(ALICE)
    room.join(ALICE)
    room.state("m.room.power_levels", ALICE, default_power_levels(ALICE, room.rv))
    room.state("m.room.join_rules", ALICE, {"join_rule": "public"})
    room.join(BOB)
    for i in range(messages):
        room.message(ALICE if i % 2 else BOB, f"message {i}")
    # A fork: both servers send on top of the same extremity; then a merge.
    base = room.forward_extremities
    room.message(ALICE, "left branch", prev=base)
    room.message(BOB, "right branch", prev=base)
    room.message(ALICE, "merge")
    # Carol never joined: rejected.
    room.message(CAROL, "not a member", expect=REJECTED, reason="not joined")
    # Bob is banned; his server had not seen the ban and sends on top of the old extremity.
    before_ban = room.forward_extremities
    room.member(BOB, "ban", sender=ALICE)
    room.message(BOB, "too late", prev=before_ban, expect=SOFT_FAILED, reason="banned")
    room.message(ALICE, "after the ban")
    return room


def lines_of(room: RoomBuilder) -> list[bytes]:
    return [e.line for e in room.events]
