"""Small rooms for the integration tests, built with the project's RoomBuilder."""

from __future__ import annotations

from pipeline.dev.workload_builder import REJECTED, SOFT_FAILED, RoomBuilder, default_power_levels

ALICE = "@alice:example.org"
BOB = "@bob:other.example"
CAROL = "@carol:example.org"
CHAT_ROOM_SETUP = 5  # a chat room's founding events: created, Alice's, public, Bob joined


def alices_room(tag: str, version: str = "10") -> RoomBuilder:
    """A room Alice created and joined, with the default power levels (3 events)."""
    room = RoomBuilder(version, tag=tag)
    room.create(ALICE)
    room.join(ALICE)
    room.state("m.room.power_levels", ALICE, default_power_levels(ALICE, room.rv))
    return room


def chat_room(tag: str, version: str = "10", messages: int = 6) -> RoomBuilder:
    """Alice's room made public, Bob (of another server) joined (5 events), and ``messages``
    messages between them."""
    room = alices_room(tag, version)
    room.state("m.room.join_rules", ALICE, {"join_rule": "public"})
    room.join(BOB)
    for i in range(messages):
        room.message(ALICE if i % 2 else BOB, f"message {i}")
    return room


def busy_room(tag: str, version: str = "10", messages: int = 6) -> RoomBuilder:
    """A chat room with a fork and its merge, a rejected event and a soft-failed one (a banned
    user's message built on a stale view of the room)."""
    room = chat_room(tag, version, messages)
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


def interleaved(rooms: list[RoomBuilder]) -> list[bytes]:
    """The rooms' lines one room after another in turn, as a busy front end sends them; each
    room's order kept."""
    queues = [lines_of(r) for r in rooms]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
