"""Differential fuzzer: random rooms through Roomstream's room processor and Synapse's receive path.

Each seed makes one room (``random.Random(seed)``, so a seed is a room, reproducibly): a room
version from 1 to 12, founded as a homeserver does, then events by users of three servers on
random prev events: the latest events, merges of several forks, stale forks from far back and
events on soft-failed or rejected ones; power level changes, bans, kicks, joins, leaves,
invites, join rule changes, topics, custom state, messages and redactions; now and then a
second create event (in rooms v1–v11), mostly without prev events, naming the room's version,
another one or none, some forbidding federation. Some senders are rogue: they send what the
rules forbid, or claim auth events from an older state (before a ban, say). Some events arrive
after events that cite them, so Roomstream parks those until they come.

The PDUs go, in arrival order, through ``RoomProcessor`` (what ``roomstream replay`` runs); each
event it decides goes, in the same order, through ``SynapseReceiver`` (Synapse's own code).
After every event both must agree on: rejected or not, soft-failed or not, the state after it;
and after every input, on the room's current state (as the processor holds it, and as the
chunks' absolute changes leave it) and forward extremities.

    python -m tests.oracle.fuzz --rooms 100000 [--first-seed 0]   (or: make fuzz ROOMS=100000)

prints progress and a summary, and for each divergence its seed and a short description; exit
status 1 when any room diverged. ``python -m tests.oracle.fuzz --seed N`` replays one room and
prints its events.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from pipeline.matrix.auth import auth_event_selection, check_auth_rules
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.hashes import compute_event_id
from pipeline.matrix.room_versions import room_version
from pipeline.room.processor import Incoming, RoomProcessor
from tests.oracle._rooms import ALICE, BOB, CHARLIE, EVELYN, ZARA, OracleRoom

VERSIONS = [str(v) for v in range(1, 13)]
YVES = "@yves:third.example"  # a user of a third server, not in the room at the start
USERS = [ALICE, BOB, CHARLIE, EVELYN, ZARA, YVES]
LEVELS = [0, 10, 50, 100]
MAX_EVENTS = 24  # events after the founding ones, at most (a seed's room depends on it)
# What a second create event names as its room version: the room's, others (experimental ones
# Synapse recognises among them), none ("1"), or one nobody recognises (rejected, 1.3).
CREATE_VERSIONS: list[str | None] = [
    "same",
    "same",
    "1",
    "6",
    "10",
    "11",
    "12",
    "org.matrix.msc3757.10",
    "org.matrix.hydra.11",
    None,
    "99",
]
_T = TypeVar("_T")

# Synapse logs every soft-fail and rejection at warning level, and its metrics complain
# outside a request context; the fuzzer reports what matters itself.
logging.getLogger("synapse").setLevel(logging.CRITICAL)


@dataclass
class GeneratedRoom:
    seed: int
    version: str
    room_id: str
    events: dict[str, Event]  # in the order they were made: each after what it cites
    arrivals: list[Event]  # in arrival order, duplicates included
    notes: dict[str, str] = field(default_factory=dict)  # event ID -> how it was made

    @classmethod
    def of(cls, room: OracleRoom, arrivals: list[Event], seed: int = -1) -> GeneratedRoom:
        return cls(seed, room.rv.identifier, room.room_id, dict(room.events), arrivals)

    @classmethod
    def load(cls, path: Path) -> GeneratedRoom:
        """A room saved with ``--save``: its PDUs, one a line, in arrival order."""
        pdus = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        create = next(p for p in pdus if p["type"] == "m.room.create" and p["state_key"] == "")
        rv = room_version(create["content"].get("room_version", "1"))
        arrivals = [Event.from_trusted(p, rv, compute_event_id(p, rv)) for p in pdus]
        room_id = create.get("room_id") or "!" + arrivals[pdus.index(create)].event_id[1:]
        seed = int(path.stem.rpartition("-")[2]) if path.stem[-1:].isdigit() else -1
        return cls(seed, rv.identifier, room_id, {e.event_id: e for e in arrivals}, arrivals)

    def save(self, path: Path) -> None:
        path.write_bytes(
            b"".join(
                orjson.dumps(e.pdu, option=orjson.OPT_SORT_KEYS) + b"\n" for e in self.arrivals
            )
        )


@dataclass
class Divergence:
    seed: int
    version: str
    what: str
    trace: list[str]

    def report(self) -> str:
        lines = [f"seed {self.seed} (room version {self.version}): {self.what}"]
        lines.extend(f"    {line}" for line in self.trace)
        return "\n".join(lines)


# ---------------------------------------------------------------------- generating rooms


def _power_levels(rng: random.Random, room: OracleRoom) -> dict[str, Any]:
    users = {u: rng.choice(LEVELS) for u in (BOB, CHARLIE, ZARA, YVES) if rng.random() < 0.5}
    extra: dict[str, Any] = {}
    for name in ("ban", "kick", "invite", "redact", "state_default", "users_default"):
        if rng.random() < 0.2:
            extra[name] = rng.choice(LEVELS)
    if rng.random() < 0.3:
        extra["events"] = {
            "m.room.topic": rng.choice(LEVELS),
            "m.room.power_levels": rng.choice([50, 100]),
        }
    return room.power_levels_content(users, **extra)


def _spec(
    rng: random.Random, room: OracleRoom, earlier: Sequence[str]
) -> tuple[str, str, str | None, dict[str, Any]]:
    sender = rng.choice(USERS)
    target = rng.choice(USERS)
    kind = rng.choices(
        [
            "topic",
            "power",
            "ban",
            "kick",
            "join",
            "leave",
            "invite",
            "join_rules",
            "custom",
            "message",
            "redaction",
            "knock",
            "restricted_join",
            "odd",
            "create",
        ],
        weights=[3, 3, 2, 2, 3, 2, 2, 2, 1, 4, 2, 1, 1, 1, 0.3],
    )[0]
    match kind:
        case "topic":
            return ("m.room.topic", sender, "", {"topic": f"by {sender} {rng.random():.3f}"})
        case "power":
            return ("m.room.power_levels", sender, "", _power_levels(rng, room))
        case "ban":
            return ("m.room.member", sender, target, {"membership": "ban"})
        case "kick":
            return ("m.room.member", sender, target, {"membership": "leave"})
        case "join":
            return ("m.room.member", target, target, {"membership": "join"})
        case "leave":
            return ("m.room.member", target, target, {"membership": "leave"})
        case "invite":
            return ("m.room.member", sender, target, {"membership": "invite"})
        case "join_rules":
            rules = ["public", "invite"] + (["knock"] if room.rv.knock_join_rule else [])
            if room.rv.restricted_join_rule:
                rules.append("restricted")
            rule = rng.choice(rules)
            content: dict[str, Any] = {"join_rule": rule}
            if rule == "restricted":
                content["allow"] = [{"type": "m.room_membership", "room_id": "!other:example.com"}]
            return ("m.room.join_rules", sender, "", content)
        case "knock":
            return ("m.room.member", target, target, {"membership": "knock"})
        case "restricted_join":
            authoriser = rng.choice(USERS)
            membership = rng.choice(["join", "join", "join", "leave", "knock", "invite"])
            content = {"membership": membership, "join_authorised_via_users_server": authoriser}
            return ("m.room.member", target, target, content)
        case "custom":
            return ("m.room.custom", sender, target, {"n": rng.randint(0, 3)})
        case "odd":
            return _odd_spec(rng, room, sender, target)
        case "create" if not room.rv.room_id_is_create_event_hash:  # (v12: a redaction)
            return _create_spec(rng, room, sender)
        case "message":
            return ("m.room.message", sender, None, {"body": "hi", "msgtype": "m.text"})
        case _:
            redacts = rng.choice([*earlier, "$gone:example.com"])
            return ("m.room.redaction", sender, None, {"redacts": redacts})


def _odd_spec(
    rng: random.Random, room: OracleRoom, sender: str, target: str
) -> tuple[str, str, str | None, dict[str, Any]]:
    """Edge cases: a second create event, aliases, odd join rules and power levels."""
    match rng.randrange(5):
        case 0 if not room.rv.room_id_is_create_event_hash:
            return _create_spec(rng, room, sender)
        case 1:
            server = rng.choice(["example.com", "other.example", "elsewhere.example"])
            return ("m.room.aliases", sender, server, {"aliases": [f"#a:{server}"]})
        case 2:
            rule = rng.choice(["private", "bogus", "knock_restricted"])
            return ("m.room.join_rules", sender, "", {"join_rule": rule})
        case 3:
            content = _power_levels(rng, room)
            odd: list[Any] = (
                [-1, 101, 2**40] if room.rv.enforce_int_power_levels else [-1, 101, "50", "0"]
            )
            content["users"] = {**content["users"], target: rng.choice(odd)}
            return ("m.room.power_levels", sender, "", content)
        case _:
            return ("m.room.member", sender, target, {"membership": "bogus"})


def _create_spec(
    rng: random.Random, room: OracleRoom, sender: str
) -> tuple[str, str, str | None, dict[str, Any]]:
    """A second create event (not in v12, where a create event founds the room its ID names:
    another room). ``generate`` mostly gives it no prev events: the rules allow it from the
    room ID's server, and the room version it names resolves the state it joins."""
    content: dict[str, Any] = {"creator": rng.choice(USERS)}
    named = rng.choice(CREATE_VERSIONS)
    if named is not None:
        content["room_version"] = room.rv.identifier if named == "same" else named
    if rng.random() < 0.3:
        content["m.federate"] = rng.choice([False, False, 0, "yes"])
    return ("m.room.create", sender, "", content)


def _allowed(room: OracleRoom, event: Event, state: dict[StateKey, str]) -> bool:
    auth_state = {k: room.events[state[k]] for k in auth_event_selection(event) if k in state}
    try:
        check_auth_rules(event, auth_state)
    except EventRejected:
        return False
    return True


def _evader(
    rng: random.Random, room: OracleRoom, order: Sequence[str], tips: Sequence[str]
) -> tuple[list[str], str] | None:
    """An older event and a user joined after it but not after the latest tip, if any."""
    latest = room.state_after[tips[-1]]
    for _ in range(4):
        older = rng.choice(order)
        state = room.state_after[older]
        for user in rng.sample(USERS, len(USERS)):
            key = ("m.room.member", user)
            if _membership(room, state.get(key)) == "join" and state.get(key) != latest.get(key):
                return [older], user
    return None


def _membership(room: OracleRoom, event_id: str | None) -> str | None:
    return room.events[event_id].membership if event_id is not None else None


def generate(seed: int, *, max_events: int = MAX_EVENTS) -> GeneratedRoom:
    """The room of ``seed``: the same events in the same arrival order every time."""
    rng = random.Random(seed)
    version = rng.choice(VERSIONS)
    room = OracleRoom(version, keep_unauthorised=True)
    notes: dict[str, str] = {e: "founding" for e in room.events}
    order = list(room.events)  # generation order: every event after what it cites
    tips = [room.start]
    clock = 100
    for _ in range(rng.randint(3, max_events)):
        roll = rng.random()
        if roll < 0.55 or len(order) < 3:
            prevs = [rng.choice(tips[-3:])]
            how = "on a tip"
        elif roll < 0.75:
            prevs = rng.sample(tips, min(len(tips), rng.randint(2, 3)))
            how = "merging"
        elif roll < 0.92:
            prevs = [rng.choice(order)]
            how = "on a stale event"
        else:
            prevs = list(dict.fromkeys([order[-1], rng.choice(order)]))
            how = "on the latest and an old event"
        spec = _spec(rng, room, order)
        if spec[0] == "m.room.create" and rng.random() < 0.75:
            prevs = []
            how = "without prev events"
        if rng.random() < 0.15:
            # An evader: someone who has lost their membership or power on the latest events
            # sends on an older event where they still had it (soft-fail prone).
            evader = _evader(rng, room, order, tips)
            if evader is not None:
                prevs, sender = evader
                spec = _spec(rng, room, order)
                spec = (spec[0], sender, sender if spec[0] == "m.room.member" else spec[2], spec[3])
                how = "evading on an older event"
        state = room.state_before(prevs)
        clock += rng.choice([1, 1, 1, 0, 2])
        ts = clock if rng.random() < 0.8 else rng.randint(100, clock)
        rogue = rng.random() < 0.3
        auth_note = ""
        # A restricted join carries its authorising server's signature, mostly.
        authoriser = spec[3].get("join_authorised_via_users_server")
        signers = (authoriser.partition(":")[2],) if authoriser and rng.random() < 0.8 else ()
        if rogue and rng.random() < 0.4:
            # Claims auth events from an older state: before a ban or a power change, say.
            older = room.state_after[rng.choice(order)]
            event = room.build(spec, prevs, state=older, ts=ts, signers=signers)
            auth_note = ", auth events from an older state"
        else:
            event = room.build(spec, prevs, state=state, ts=ts, signers=signers)
        if not rogue and not _allowed(room, event, state):
            continue
        room._store(event, state)
        order.append(event.event_id)
        notes[event.event_id] = how + (" (rogue)" if rogue else "") + auth_note
        tips = [t for t in tips if t not in prevs] + [event.event_id]

    arrivals = [room.events[e] for e in order]
    # Late arrivals: some events come after events that cite them (parked until they come).
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        if len(arrivals) < 4:
            break
        i = rng.randrange(1, len(arrivals) - 1)
        late = arrivals.pop(i)
        arrivals.insert(min(len(arrivals), i + rng.randint(1, 4)), late)
    # Duplicates: a server sends an event again.
    if rng.random() < 0.2:
        at, again = rng.randrange(len(arrivals)), rng.choice(arrivals)
        # The room's own create event comes first: it is the room its front end joined.
        arrivals.insert(max(at, 1) if again.type == "m.room.create" else at, again)
    return GeneratedRoom(seed, version, room.room_id, dict(room.events), arrivals, notes)


# ---------------------------------------------------------------------- running both


def _describe(gen: GeneratedRoom, event_id: str, index: dict[str, int]) -> str:
    event = gen.events.get(event_id)
    if event is None:
        return event_id
    what = event.type + (f" {event.state_key}" if event.state_key else "")
    content = event.content.get("membership") or event.content.get("join_rule") or ""
    if event.type == "m.room.create":
        content = f"v{event.content.get('room_version', '1')}"
    redacts = event.redacts
    prevs = ",".join(f"#{index.get(p, '?')}" for p in event.prev_event_ids)
    return (
        f"#{index[event_id]} {what} {content} by {event.sender}"
        + (f" redacts #{index.get(redacts, '?')}" if redacts else "")
        + f" on [{prevs}] ts={event.origin_server_ts} ({gen.notes.get(event_id, '')})"
    )


def _names(event_ids: Iterable[str], index: dict[str, int]) -> list[str]:
    return sorted(f"#{index.get(e, e)}" for e in event_ids)


def _rows(state: dict[StateKey, str], index: dict[str, int]) -> str:
    return ", ".join(f"{k[0]}/{k[1]}=#{index.get(v, v)}" for k, v in sorted(state.items()))


def _differs(what: str, ours: _T, theirs: _T, show: Callable[[_T], str]) -> str | None:
    """None when Roomstream's ``ours`` equals Synapse's ``theirs``; else what differs, shown."""
    if ours == theirs:
        return None
    return f"{what}: Roomstream {show(ours)}; Synapse {show(theirs)}"


def run_room(
    seed: int, counts: Counter[str] | None = None, *, max_events: int = MAX_EVENTS
) -> Divergence | None:
    """Generate the room of ``seed`` and run it through both; the first divergence, if any."""
    return run_generated(generate(seed, max_events=max_events), counts)


def run_generated(gen: GeneratedRoom, counts: Counter[str] | None = None) -> Divergence | None:
    """Run ``gen``'s arrivals through both; the first divergence, if any. ``counts`` gathers
    how many events were decided, rejected and soft-failed, and how many waited (parked)."""
    counts = counts if counts is not None else Counter()
    from tests.oracle.synapse_receive import SynapseReceiver

    seed = gen.seed
    index = {e: n for n, e in enumerate(gen.events)}
    processor = RoomProcessor(gen.room_id)
    synapse = SynapseReceiver(gen.room_id, gen.version)
    trace: list[str] = []
    # The current state as a committer keeps it: each chunk's changes, absolute at its end.
    committed: dict[StateKey, str] = {}

    def diverged(what: str) -> Divergence:
        return Divergence(seed, gen.version, what, trace)

    def rows(state: dict[StateKey, str]) -> str:
        return _rows(state, index)

    for arrival, event in enumerate(gen.arrivals):
        result = processor.process([Incoming(dict(event.pdu), source={"line": arrival})])
        for dead in result.dead_letters:
            return diverged(f"Roomstream dead-lettered {event.event_id}: {dead.reason}")
        decided = result.chunk.events if result.chunk is not None else ()
        if result.chunk is not None:
            for key in result.chunk.current_state_removed:
                committed.pop(key, None)
            for row in result.chunk.current_state_set:
                committed[(row.type, row.state_key)] = row.event_id
        for ours in decided:
            outcome = "rejected" if ours.rejected else "soft-failed" if ours.soft_failed else "ok"
            counts["events"] += 1
            counts[outcome] += 1
            counts["decided later"] += ours.event_id != event.event_id
            decided_event = gen.events[ours.event_id]
            if decided_event.type == "m.room.create" and index[ours.event_id] > 0:
                counts[f"second create {outcome}"] += 1
            trace.append(f"{_describe(gen, ours.event_id, index)}: {outcome}")
            if ours.event_id in synapse.events:
                return diverged(f"Roomstream decided #{index[ours.event_id]} twice")
            theirs = synapse.receive(gen.events[ours.event_id])
            name = f"#{index[ours.event_id]}"
            if (ours.rejected is not None) != theirs.rejected:
                return diverged(
                    f"{name} rejected: Roomstream {ours.rejected or 'no'}, "
                    f"Synapse {'yes' if theirs.rejected else 'no'}"
                )
            problem = _differs(
                f"{name} soft-failed", ours.soft_failed, theirs.soft_failed, str
            ) or _differs(
                f"{name} state after",
                dict(processor.state_of_group(ours.state_group)),
                theirs.state_after,
                rows,
            )
            if problem is not None:
                return diverged(problem)
        problem = (
            _differs(
                f"current state after arrival {arrival}",
                dict(processor.current_state),
                synapse.current_state,
                rows,
            )
            or _differs(
                f"current state the chunks leave after arrival {arrival}",
                committed,
                synapse.current_state,
                rows,
            )
            or _differs(
                f"forward extremities after arrival {arrival}",
                set(processor.forward_extremities),
                synapse.extremities,
                lambda ids: str(_names(ids, index)),
            )
        )
        if problem is not None:
            return diverged(problem)
    parked = {p.event_id or "?" for p in processor.parked()}
    if parked:
        return diverged(f"still parked at the end: {sorted(parked)}")
    return None


@dataclass
class Summary:
    rooms: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    divergences: list[Divergence] = field(default_factory=list)


def fuzz(
    first_seed: int,
    rooms: int,
    *,
    progress: bool = False,
    stop_after: int | None = None,
    max_events: int = MAX_EVENTS,
) -> Summary:
    """Run ``rooms`` rooms from seed ``first_seed`` on; the divergences found."""
    summary = Summary()
    started = time.monotonic()
    for seed in range(first_seed, first_seed + rooms):
        divergence = run_room(seed, summary.counts, max_events=max_events)
        summary.rooms += 1
        if divergence is not None:
            summary.divergences.append(divergence)
            if progress:
                print(divergence.report(), flush=True)
            if stop_after is not None and len(summary.divergences) >= stop_after:
                break
        if progress and summary.rooms % 500 == 0:
            rate = summary.rooms / (time.monotonic() - started)
            print(
                f"{summary.rooms}/{rooms} rooms, {len(summary.divergences)} divergences, "
                f"{rate:.0f} rooms/s",
                file=sys.stderr,
                flush=True,
            )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.oracle.fuzz", description=__doc__)
    parser.add_argument("--rooms", type=int, default=1000, help="how many rooms (seeds)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run one room and print its events")
    parser.add_argument("--stop-after", type=int, help="stop after this many divergences")
    parser.add_argument(
        "--save", type=Path, help="with --seed: write the room's PDUs to this JSONL file"
    )
    parser.add_argument(
        "--max-events",
        type=int,
        default=MAX_EVENTS,
        help="events after the founding ones, at most (other values give other rooms per seed)",
    )
    args = parser.parse_args(argv)
    if args.seed is not None:
        gen = generate(args.seed, max_events=args.max_events)
        if args.save is not None:
            gen.save(args.save)
        index = {e: n for n, e in enumerate(gen.events)}
        print(f"seed {args.seed}: room version {gen.version}, arrival order:")
        for event in gen.arrivals:
            print("   ", _describe(gen, event.event_id, index))
        divergence = run_generated(gen)
        print(divergence.report() if divergence else "no divergence")
        return 1 if divergence else 0
    started = time.monotonic()
    summary = fuzz(
        args.first_seed,
        args.rooms,
        progress=True,
        stop_after=args.stop_after,
        max_events=args.max_events,
    )
    elapsed = time.monotonic() - started
    counts = summary.counts
    print(
        f"{summary.rooms} rooms (seeds {args.first_seed}–{args.first_seed + summary.rooms - 1}) "
        f"in {elapsed:.0f} s: {counts['events']} events decided ({counts['rejected']} rejected, "
        f"{counts['soft-failed']} soft-failed, {counts['decided later']} after a wait; "
        f"second create events: {counts['second create ok']} accepted, "
        f"{counts['second create rejected']} rejected), "
        f"{len(summary.divergences)} divergences"
    )
    return 1 if summary.divergences else 0


if __name__ == "__main__":
    sys.exit(main())
