"""Deterministic Matrix room workloads: valid federation PDUs, in arrival order, with the facts
a correct pipeline must reproduce.

``generate_workload`` builds many rooms, each the life of a small public room shared by two
servers (example.org and other.example): the creation sequence (create, the creator's join,
power levels, public join rules, history visibility), then joins, messages (most events),
leaves, kicks, bans, promotions, topic and name changes, redactions, and, when asked, forks:
both servers send on top of the same forward extremity and a later event merges the branches.
A few events are deliberately unauthorised (a message from a non-member, a power levels change
by a non-admin: rejected), and some are sent by a server whose view is stale (a message from a
user after their ban, on prev_events from before it: soft-failed). Bad inputs can be mixed in:
they must end up in the dead-letter topic.

Rooms are interleaved by their senders' clocks, as a federation receiver would see them. The
same arguments give byte-identical lines.

Single-room scenarios for tests and demos: ``soft_fail_scenario``, ``rejection_scenario``,
``fork_and_merge_scenario`` and ``slow_resolution_room``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from pipeline.dev.workload_builder import (
    REJECTED,
    SOFT_FAILED,
    BuiltEvent,
    RoomBuilder,
    default_power_levels,
    opaque_tag,
    server_of,
)
from pipeline.matrix.events import StateKey
from pipeline.matrix.hashes import add_content_hash
from pipeline.matrix.room_versions import EventFormat
from pipeline.matrix.room_versions import room_version as lookup_room_version

HOME: Final = "example.org"
REMOTE: Final = "other.example"
SERVERS: Final = (HOME, REMOTE)

BASE_EVENTS: Final = 5
"""create, the creator's join, power levels, join rules, history visibility."""

USERS_PER_SERVER: Final = 64

# Reason classes of the expected outcomes.
NOT_JOINED: Final = "sender_not_joined"
INSUFFICIENT_POWER: Final = "insufficient_power"
SENDER_BANNED: Final = "sender_banned"

# Bad input kinds, in the order generate_workload cycles through them, with their reason class.
BAD_INPUT_KINDS: Final[Mapping[str, str]] = {
    "malformed_json": "malformed_json",
    "not_an_object": "not_an_object",
    "missing_sender": "invalid_pdu",
    "depth_as_string": "invalid_pdu",
    "too_many_prev_events": "invalid_pdu",
    "unknown_room_version": "unknown_room_version",
    # An event of a room whose create event was invalid: it waits for a create event that
    # never comes, and is dead-lettered when its parking time runs out.
    "missing_create_event": "missing_create_event",
}
_BAD_FIELDS: Final[Mapping[str, str]] = {
    "missing_sender": "sender",
    "depth_as_string": "depth",
    "too_many_prev_events": "prev_events",
}

_START_TS: Final = 1_700_000_000_000
_START_SPREAD_MS: Final = 60_000
_NAMES: Final = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil",
)  # fmt: skip
_WORDS: Final = (
    "the", "deploy", "is", "green", "again", "who", "broke", "main", "lunch", "at", "noon",
    "looks", "good", "to", "me", "ship", "it", "please", "review", "my", "patch", "thanks",
    "meeting", "moved", "tomorrow", "coffee", "anyone", "federation", "is", "slow", "today",
)  # fmt: skip


def user_id(server: str, n: int) -> str:
    """The ``n``-th user of ``server``'s pool (users recur across rooms, as on real servers)."""
    name = _NAMES[n % len(_NAMES)]
    return f"@{name}{n // len(_NAMES) or ''}:{server}"


# -------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RoomFacts:
    """What a correct pipeline ends up with for one room."""

    room_id: str
    room_version: str
    creator: str
    event_ids: tuple[str, ...]  # every PDU of the room that parses, in arrival order
    rejected: Mapping[str, str]  # event ID -> reason class
    soft_failed: frozenset[str]
    forward_extremities: frozenset[str]
    # None when the room was built without resolving a merge (too costly to precompute).
    current_state: Mapping[StateKey, str] | None

    @property
    def valid_events(self) -> int:
        """Events that are not rejected (soft-failed ones included: they are persisted)."""
        return len(self.event_ids) - len(self.rejected)

    @property
    def accepted_events(self) -> int:
        return len(self.event_ids) - len(self.rejected) - len(self.soft_failed)


@dataclass(frozen=True, slots=True)
class BadInput:
    """An input line that must end up in the dead-letter topic."""

    line: int  # index into Workload.lines
    kind: str  # a key of BAD_INPUT_KINDS
    reason_class: str
    room_id: str | None  # the key it is produced under
    field: str | None  # the PDU field at fault, for invalid PDUs
    # False when the input is parked first (its room has no create event) and dead-lettered
    # only once its parking time runs out.
    on_arrival: bool


@dataclass(frozen=True, slots=True)
class Workload:
    lines: tuple[bytes, ...]  # one PDU (or bad input) each, in arrival order
    keys: tuple[str | None, ...]  # the room ID each line is produced under
    rooms: Mapping[str, RoomFacts]
    bad_inputs: tuple[BadInput, ...] = ()
    room_version: str = "10"
    seed: int = 0
    stats: Mapping[str, int] = field(default_factory=dict)

    @property
    def event_count(self) -> int:
        return sum(len(r.event_ids) for r in self.rooms.values())


def write_jsonl(workload: Workload, path: str | Path) -> Path:
    """Write the lines of ``workload`` to ``path``, one a line. Returns the path."""
    out = Path(path)
    with out.open("wb") as f:
        for line in workload.lines:
            f.write(line)
            f.write(b"\n")
    return out


# -------------------------------------------------------------------- one room's life


@dataclass
class _RoomScript:
    """Plays one room: chooses each next event at random among those that make sense now."""

    b: RoomBuilder
    rng: random.Random
    forks: bool
    ts: int  # the room's clock, ms since the epoch: each event a random tick after the last
    state_heavy: bool = False
    creator: str = field(init=False)
    joined: list[str] = field(init=False, default_factory=list)
    banned: set[str] = field(init=False, default_factory=set)
    levels: dict[str, int] = field(init=False, default_factory=dict)  # users beside the creator
    messages: list[tuple[str, str]] = field(init=False, default_factory=list)  # (sender, ID)
    stats: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.creator = user_id(HOME, self.rng.randrange(USERS_PER_SERVER))

    def _tick(self) -> int:
        self.ts += self.rng.randint(40, 4_000)
        return self.ts

    def _body(self) -> str:
        return " ".join(self.rng.choices(_WORDS, k=self.rng.randint(2, 14)))

    def _count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    def play(self, n_events: int) -> None:
        b, creator = self.b, self.creator
        b.create(creator)
        b.join(creator, ts=self._tick())
        self.joined.append(creator)
        b.state("m.room.power_levels", creator, self._power_levels(), ts=self._tick())
        b.state("m.room.join_rules", creator, {"join_rule": "public"}, ts=self._tick())
        b.state(
            "m.room.history_visibility", creator, {"history_visibility": "shared"}, ts=self._tick()
        )
        remaining = n_events - BASE_EVENTS
        while remaining > 0:
            actions = self._actions(remaining)
            weights = [w for w, _ in actions]
            _, act = self.rng.choices(actions, weights=weights)[0]
            remaining -= act()

    def _actions(self, remaining: int) -> list[tuple[float, Callable[[], int]]]:
        others = [u for u in self.joined if u != self.creator]
        n = len(self.joined)
        # A state-heavy room: members keep coming, its topic and power levels keep changing,
        # and its servers fork it often; a message is one event in five.
        heavy = self.state_heavy
        acts: list[tuple[float, Callable[[], int]]] = [
            (40.0 if n < 3 else 6.0 if n < 20 or heavy else 1.0, self._join),
        ]
        if n >= 2 or remaining == 1:
            acts.append((2.0 if heavy else 70.0, self._message))
        if others:
            acts += [
                (2.5, self._leave),
                (1.0, self._kick_or_ban),
                (3.0, self._promote),
                (6.0 if heavy else 2.0, self._topic_or_name),
                (1.0, self._reject_power),
            ]
        if self.messages:
            acts.append((1.5, self._redact))
        acts.append((1.0, self._reject_non_member))
        if others and remaining >= 2:
            acts.append((1.5, self._soft_fail))
        if self.forks and n >= 2 and remaining >= 3:
            acts.append((10.0 if heavy else 2.5, lambda: self._fork(remaining)))
        return acts

    def _power_levels(self, extra: Mapping[str, int] | None = None) -> dict[str, Any]:
        return default_power_levels(self.creator, self.b.rv, {**self.levels, **(extra or {})})

    def _outsider(self) -> str:
        """A pool user who is not joined (nor banned) here."""
        server = self.rng.choice(SERVERS)
        for _ in range(16):
            u = user_id(server, self.rng.randrange(USERS_PER_SERVER))
            if u not in self.joined and u not in self.banned:
                return u
        # A long-lived room has used up the pool: take users from beyond it.
        n = USERS_PER_SERVER
        while user_id(server, n) in self.joined or user_id(server, n) in self.banned:
            n += 1
        return user_id(server, n)

    def _remove(self, u: str) -> None:
        self.joined.remove(u)
        self.messages = [(s, e) for s, e in self.messages if s != u]

    # -- accepted events, one each

    def _join(self) -> int:
        u = self._outsider()
        self.b.join(u, ts=self._tick())
        self.joined.append(u)
        self._count("joins")
        return 1

    def _message(self, sender: str | None = None) -> int:
        s = sender or self.rng.choice(self.joined)
        ev = self.b.message(s, self._body(), ts=self._tick())
        self.messages.append((s, ev.event_id))
        self._count("messages")
        return 1

    def _leave(self) -> int:
        u = self.rng.choice([u for u in self.joined if u != self.creator])
        self.b.member(u, "leave", ts=self._tick())
        self._remove(u)
        self._count("leaves")
        return 1

    def _kick_or_ban(self) -> int:
        u = self.rng.choice([u for u in self.joined if u != self.creator])
        ban = self.rng.random() < 0.5
        self.b.member(u, "ban" if ban else "leave", sender=self.creator, ts=self._tick())
        self._remove(u)
        if ban:
            self.banned.add(u)
        self._count("bans" if ban else "kicks")
        return 1

    def _promote(self) -> int:
        u = self.rng.choice([u for u in self.joined if u != self.creator])
        self.levels[u] = 0 if self.levels.get(u, 0) >= 50 else 50
        self.b.state("m.room.power_levels", self.creator, self._power_levels(), ts=self._tick())
        self._count("power_level_changes")
        return 1

    def _moderators(self) -> list[str]:
        return [u for u in self.joined if u == self.creator or self.levels.get(u, 0) >= 50]

    def _topic_or_name(self) -> int:
        s = self.rng.choice(self._moderators())
        if self.rng.random() < 0.6:
            self.b.state("m.room.topic", s, {"topic": self._body()}, ts=self._tick())
        else:
            name = " ".join(self.rng.choices(_WORDS, k=2))
            self.b.state("m.room.name", s, {"name": name}, ts=self._tick())
        self._count("topic_name_changes")
        return 1

    def _redact(self) -> int:
        # Senders redact their own messages (allowed without the redact level in every room
        # version: v1–v2 by the event IDs' shared domain, v3+ by deferring the check).
        i = self.rng.randrange(len(self.messages))
        sender, target = self.messages.pop(i)
        self.b.redact(sender, target, ts=self._tick())
        self._count("redactions")
        return 1

    # -- rejected and soft-failed events

    def _reject_non_member(self) -> int:
        u = self._outsider()
        self.b.message(u, self._body(), ts=self._tick(), expect=REJECTED, reason=NOT_JOINED)
        self._count("rejected")
        return 1

    def _reject_power(self) -> int:
        candidates = [u for u in self.joined if u != self.creator and self.levels.get(u, 0) < 50]
        if not candidates:
            return self._reject_non_member()
        u = self.rng.choice(candidates)
        # m.room.power_levels needs level 100 here; the sender has 0.
        self.b.state(
            "m.room.power_levels",
            u,
            self._power_levels({u: 100}),
            ts=self._tick(),
            expect=REJECTED,
            reason=INSUFFICIENT_POWER,
        )
        self._count("rejected")
        return 1

    def _soft_fail(self) -> int:
        others = [u for u in self.joined if u != self.creator]
        remote = [u for u in others if server_of(u) == REMOTE]
        victim = self.rng.choice(remote or others)
        stale_view = self.b.forward_extremities
        self.b.member(victim, "ban", sender=self.creator, ts=self._tick())
        self._remove(victim)
        self.banned.add(victim)
        # The victim's server has not seen the ban: its event builds on the state before it.
        # It passes the checks against its auth events and the state before it, and fails
        # against the room's current state.
        self.b.message(
            victim,
            self._body(),
            prev=stale_view,
            ts=self._tick(),
            expect=SOFT_FAILED,
            reason=SENDER_BANNED,
        )
        self._count("bans")
        self._count("soft_failed")
        return 2

    # -- forks

    def _fork(self, remaining: int) -> int:
        """Each server sends a few events on the same extremity; then one event merges them."""
        k = min(self.rng.randint(1, 3), (remaining - 1) // 2)
        by_server = {s: [u for u in self.joined if server_of(u) == s] for s in SERVERS}
        senders = [by_server[HOME] or self.joined, by_server[REMOTE] or self.joined]
        base = self.b.forward_extremities
        tips = [base, base]
        mods = [u for u in self._moderators() if u != self.creator]
        # Sometimes both branches change the topic: the merge needs state resolution.
        conflict = bool(mods) and self.rng.random() < 0.5
        for step in range(k):
            order = [0, 1] if self.rng.random() < 0.5 else [1, 0]
            for branch in order:
                ts = self._tick()
                if conflict and step == k - 1:
                    s = self.creator if branch == 0 else self.rng.choice(mods)
                    ev = self.b.state(
                        "m.room.topic", s, {"topic": self._body()}, prev=tips[branch], ts=ts
                    )
                else:
                    s = self.rng.choice(senders[branch])
                    ev = self.b.message(s, self._body(), prev=tips[branch], ts=ts)
                    self.messages.append((s, ev.event_id))
                tips[branch] = [ev.event_id]
        # The merge: prev_events are both branch tips (the builder's forward extremities).
        self._message(self.creator)
        self._count("forks")
        if conflict:
            self._count("conflicting_forks")
        self._count("messages", 2 * k - (2 if conflict else 0))
        return 2 * k + 1


def _facts(b: RoomBuilder, creator: str) -> RoomFacts:
    return RoomFacts(
        room_id=b.room_id,
        room_version=b.rv.identifier,
        creator=creator,
        event_ids=tuple(e.event_id for e in b.events),
        rejected={e.event_id: e.reason or "" for e in b.events if e.outcome == REJECTED},
        soft_failed=frozenset(e.event_id for e in b.events if e.outcome == SOFT_FAILED),
        forward_extremities=frozenset(b.forward_extremities),
        current_state=b.current_state() if b.state_exact else None,
    )


# -------------------------------------------------------------------- the workload


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a line goes in arrival order: by clock, then room, then position in the room."""

    ts: int
    group: int
    seq: int
    sub: int
    line: bytes
    key: str | None

    def order(self) -> tuple[int, int, int, int]:
        return (self.ts, self.group, self.seq, self.sub)


def generate_workload(
    rooms: int,
    events_per_room: int,
    *,
    seed: int = 0,
    room_version: str = "10",
    bad_inputs: int = 0,
    forks: bool = True,
    state_heavy: bool = False,
) -> Workload:
    """``rooms`` rooms of ``events_per_room`` PDUs each (at least BASE_EVENTS), interleaved in
    arrival order, plus ``bad_inputs`` lines for the dead-letter topic (kinds cycle through
    BAD_INPUT_KINDS). ``state_heavy`` rooms are mostly state changes and forks. Same arguments,
    same bytes."""
    if rooms < 0:
        raise ValueError(f"rooms must be >= 0, not {rooms}")
    if events_per_room < BASE_EVENTS:
        raise ValueError(
            f"events_per_room must be at least {BASE_EVENTS} (the room creation sequence), "
            f"not {events_per_room}"
        )
    if bad_inputs < 0:
        raise ValueError(f"bad_inputs must be >= 0, not {bad_inputs}")
    if bad_inputs and not rooms:
        # Most bad inputs are corrupted copies of a room's events.
        raise ValueError("bad inputs are mixed into rooms: ask for at least one room")
    rv = lookup_room_version(room_version)

    slots: list[_Slot] = []
    facts: dict[str, RoomFacts] = {}
    stats: dict[str, int] = {}
    built_rooms: list[list[BuiltEvent]] = []
    for i in range(rooms):
        rng = random.Random(f"roomstream-workload/{seed}/{i}")
        start = _START_TS + rng.randrange(_START_SPREAD_MS)
        b = RoomBuilder(rv.identifier, tag=opaque_tag(seed, i), start_ts=start)
        script = _RoomScript(b, rng, forks=forks, ts=start, state_heavy=state_heavy)
        script.play(events_per_room)
        f = _facts(b, script.creator)
        facts[f.room_id] = f
        for what, n in script.stats.items():
            stats[what] = stats.get(what, 0) + n
        for seq, ev in enumerate(b.events):
            slots.append(_Slot(ev.origin_server_ts, i, seq, 0, ev.line, f.room_id))
        built_rooms.append(b.events)

    slots += _bad_input_slots(bad_inputs, seed, rv.identifier, built_rooms, rooms)
    slots.sort(key=_Slot.order)
    lines = tuple(s.line for s in slots)
    keys = tuple(s.key for s in slots)
    bad = _locate_bad_inputs(slots)
    return Workload(
        lines=lines,
        keys=keys,
        rooms=facts,
        bad_inputs=bad,
        room_version=rv.identifier,
        seed=seed,
        stats=dict(sorted(stats.items())),
    )


# Bad input slots carry their kind in ``sub`` (1 + index into BAD_INPUT_KINDS) so that the
# sorted order tells where each landed.
_KIND_LIST: Final = tuple(BAD_INPUT_KINDS)


def _bad_input_slots(
    count: int, seed: int, version: str, rooms: list[list[BuiltEvent]], n_rooms: int
) -> list[_Slot]:
    out: list[_Slot] = []
    rv = lookup_room_version(version)
    invalid_room: tuple[str, int] | None = None  # (room ID, ts) of the last invalid create
    for i in range(count):
        kind = _KIND_LIST[i % len(_KIND_LIST)]
        rng = random.Random(f"roomstream-bad-input/{seed}/{i}")
        group = n_rooms + i
        sub = 1 + _KIND_LIST.index(kind)
        if kind in ("unknown_room_version", "missing_create_event"):
            if kind == "missing_create_event" and invalid_room is not None:
                room_id, ts = invalid_room
                ts += 1
            else:
                room_id = f"!{opaque_tag(seed, 'invalid', i)}:{HOME}"
                ts = _START_TS + rng.randrange(_START_SPREAD_MS)
            if kind == "unknown_room_version":
                line = orjson.dumps(_unknown_version_create(room_id, ts, rv.identifier))
                invalid_room = (room_id, ts)
            else:
                line = orjson.dumps(_orphan_message(room_id, ts, seed, i, rv.identifier))
            out.append(_Slot(ts, group, 0, sub, line, room_id))
            continue
        room_index = rng.randrange(len(rooms))
        events = rooms[room_index]
        src_seq = rng.randrange(1, len(events))
        src = events[src_seq]
        room_id = src.pdu["room_id"]
        pdu = dict(src.pdu)
        pdu["content"] = {"msgtype": "m.text", "body": f"bad input {i}"}
        if kind == "malformed_json":
            full = orjson.dumps(pdu)
            line = full[: len(full) // 2]
        elif kind == "not_an_object":
            line = orjson.dumps([pdu])
        else:
            if kind == "missing_sender":
                del pdu["sender"]
            elif kind == "depth_as_string":
                pdu["depth"] = str(pdu["depth"])
            else:
                # prev_events "Must contain less than or equal to 20 events".
                pdu["prev_events"] = [_fake_ref(rv.event_format, seed, i, j) for j in range(21)]
            line = orjson.dumps(add_content_hash(pdu))
        # Right after the event it was made from, so it arrives after its room's create event.
        out.append(_Slot(src.origin_server_ts, room_index, src_seq, sub, line, room_id))
    return out


def _fake_ref(fmt: EventFormat, seed: int, i: int, j: int) -> Any:
    if fmt == EventFormat.V1:
        return [f"$bad{i}-{j}:{HOME}", {"sha256": opaque_tag(seed, i, j, length=43)}]
    tag = opaque_tag(seed, i, j, length=43)
    return "$" + (tag.replace("-", "+").replace("_", "/") if fmt == EventFormat.V2 else tag)


def _unknown_version_create(room_id: str, ts: int, version: str) -> dict[str, Any]:
    creator = user_id(HOME, 0)
    pdu: dict[str, Any] = {
        "type": "m.room.create",
        "room_id": room_id,
        "sender": creator,
        "state_key": "",
        "content": {"room_version": "999", "creator": creator},
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin": HOME,
        "origin_server_ts": ts,
    }
    if lookup_room_version(version).event_format == EventFormat.V1:
        pdu["event_id"] = f"$create-{room_id[1:].split(':', maxsplit=1)[0]}:{HOME}"
    pdu = add_content_hash(pdu)
    pdu["signatures"] = {HOME: {"ed25519:1": pdu["hashes"]["sha256"] * 2}}
    return pdu


def _orphan_message(room_id: str, ts: int, seed: int, i: int, version: str) -> dict[str, Any]:
    fmt = lookup_room_version(version).event_format
    sender = user_id(HOME, 1)
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "content": {"msgtype": "m.text", "body": "anyone here?"},
        "prev_events": [_fake_ref(fmt, seed, i, 0)],
        "auth_events": [_fake_ref(fmt, seed, i, 1)],
        "depth": 2,
        "origin": HOME,
        "origin_server_ts": ts,
    }
    if fmt == EventFormat.V1:
        pdu["event_id"] = f"$orphan{i}:{HOME}"
    pdu = add_content_hash(pdu)
    pdu["signatures"] = {HOME: {"ed25519:1": pdu["hashes"]["sha256"] * 2}}
    return pdu


def _locate_bad_inputs(slots: list[_Slot]) -> tuple[BadInput, ...]:
    out: list[BadInput] = []
    for index, s in enumerate(slots):
        if s.sub == 0:
            continue
        kind = _KIND_LIST[s.sub - 1]
        out.append(
            BadInput(
                line=index,
                kind=kind,
                reason_class=BAD_INPUT_KINDS[kind],
                room_id=s.key,
                field=_BAD_FIELDS.get(kind),
                on_arrival=kind != "missing_create_event",
            )
        )
    return tuple(out)


# -------------------------------------------------------------------- single-room scenarios


def _single_room(b: RoomBuilder, creator: str) -> Workload:
    f = _facts(b, creator)
    return Workload(
        lines=tuple(e.line for e in b.events),
        keys=tuple(f.room_id for _ in b.events),
        rooms={f.room_id: f},
        room_version=b.rv.identifier,
    )


def _base_room(version: str, tag: str, *, moderator: str | None = None) -> RoomBuilder:
    """A public room created by @alice:example.org, with @bob:other.example joined."""
    alice, bob = user_id(HOME, 0), user_id(REMOTE, 1)
    b = RoomBuilder(version, tag=tag)
    rv = b.rv
    b.create(alice)
    b.join(alice)
    users = {moderator: 50} if moderator is not None else {}
    b.state("m.room.power_levels", alice, default_power_levels(alice, rv, users))
    b.state("m.room.join_rules", alice, {"join_rule": "public"})
    b.state("m.room.history_visibility", alice, {"history_visibility": "shared"})
    b.join(bob)
    return b


def soft_fail_scenario(room_version: str = "10") -> Workload:
    """Alice bans Bob; Bob's server, not having seen the ban, sends a message on the events
    before it. The message passes the checks against its auth events and the state before it,
    and fails against the current state: it is soft-failed. Alice's next message builds on the
    ban, not on the soft-failed event."""
    alice, bob = user_id(HOME, 0), user_id(REMOTE, 1)
    b = _base_room(room_version, "softfail")
    b.message(bob, "hi all")
    stale = b.forward_extremities
    b.member(bob, "ban", sender=alice)
    b.message(bob, "did I miss anything?", prev=stale, expect=SOFT_FAILED, reason=SENDER_BANNED)
    b.message(alice, "bye bob")
    return _single_room(b, alice)


def rejection_scenario(room_version: str = "10") -> Workload:
    """A message from a user who never joined, and a power levels change by a user at level 0:
    both rejected. Neither becomes a forward extremity; Alice's next message is accepted."""
    alice, bob, carol = user_id(HOME, 0), user_id(REMOTE, 1), user_id(REMOTE, 2)
    b = _base_room(room_version, "rejections")
    b.message(carol, "let me in", expect=REJECTED, reason=NOT_JOINED)
    content = default_power_levels(alice, b.rv, {bob: 100})
    b.state("m.room.power_levels", bob, content, expect=REJECTED, reason=INSUFFICIENT_POWER)
    b.message(alice, "nice try")
    return _single_room(b, alice)


def fork_and_merge_scenario(room_version: str = "10", *, conflicting: bool = True) -> Workload:
    """Both servers send two events on the same extremity; a message from Alice merges them.

    With ``conflicting``, the last event of each branch sets the topic (Bob is a moderator), so
    the state before the merge is a state resolution."""
    alice, bob = user_id(HOME, 0), user_id(REMOTE, 1)
    b = _base_room(room_version, "fork", moderator=bob)
    base = b.forward_extremities
    a1 = b.message(alice, "branch a, 1", prev=base)
    b1 = b.message(bob, "branch b, 1", prev=base)
    if conflicting:
        b.state("m.room.topic", alice, {"topic": "alice's topic"}, prev=[a1.event_id])
        b.state("m.room.topic", bob, {"topic": "bob's topic"}, prev=[b1.event_id])
    else:
        b.message(alice, "branch a, 2", prev=[a1.event_id])
        b.state("m.room.name", bob, {"name": "bob's room"}, prev=[b1.event_id])
    b.message(alice, "merged")
    return _single_room(b, alice)


def slow_resolution_room(
    n_conflicts: int, room_version: str = "10", *, resolve: bool = False
) -> Workload:
    """A room whose state resolution is expensive: two admins on two servers each send
    ``n_conflicts`` state events on the same extremity, setting the same state keys (every
    fourth a power levels change, so the power events conflict too), then a merge.

    Each branch event also makes the room's forward extremities fork, so a processor resolves
    state over the two branches again and again. Building it does not run the final resolution
    unless ``resolve``; without it the expected current state is None.
    """
    if n_conflicts < 1:
        raise ValueError(f"n_conflicts must be >= 1, not {n_conflicts}")
    alice, bob = user_id(HOME, 0), user_id(REMOTE, 1)
    b = RoomBuilder(room_version, tag=f"slow{n_conflicts}")
    rv = b.rv
    b.create(alice)
    b.join(alice)
    b.state("m.room.power_levels", alice, default_power_levels(alice, rv, {bob: 100}))
    b.state("m.room.join_rules", alice, {"join_rule": "public"})
    b.join(bob)
    base = b.forward_extremities
    tips = {alice: base, bob: base}
    bots: dict[str, dict[str, int]] = {alice: {bob: 100}, bob: {bob: 100}}
    for i in range(n_conflicts):
        for admin in (alice, bob):
            if i % 4 == 3:
                bots[admin][user_id(server_of(admin), 100 + i)] = 1
                content = default_power_levels(alice, rv, bots[admin])
                ev = b.state("m.room.power_levels", admin, content, prev=tips[admin])
            else:
                ev = b.state(
                    "org.example.setting",
                    admin,
                    {"value": f"{server_of(admin)}-{i}"},
                    state_key=f"k{i}",
                    prev=tips[admin],
                )
            tips[admin] = [ev.event_id]
    b.send(
        "m.room.message",
        alice,
        {"msgtype": "m.text", "body": "merged"},
        resolve=resolve,
    )
    return _single_room(b, alice)
