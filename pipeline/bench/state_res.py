"""State resolution benchmark: Roomstream beside matrix-synapse, on the same input, in one run.

Three inputs, built deterministically (room version 11, state resolution v2):

- ``two-branches-1000``: a room forked into two branches of 1,000 state events each, every
  key set on both sides (custom state, joins, and a power levels change every 100 events).
- ``ten-extremities-10000``: a 10,000-event room (500 members, messages, topics, power
  levels changes) whose last 2,000 events are ten branches off different points of the main
  line; the ten forward extremities' states are resolved.
- ``five-members-1000``: a 1,000-member room where five memberships conflict (kicked on one
  branch, a display name change on the other).
- ``conflicted-members-10000``: a big room's worst merge: two branches off the room's creation
  on which the same 10,000 users join, with a different display name on each side, so all
  10,000 memberships conflict (20,000 events in the conflicted set, every one auth-checked in
  mainline order).

Synapse's ``resolve_events_with_store`` runs over an in-memory store: events come from a dict,
and the auth chain difference (a SQL query over its chain cover index in production) is a
walk of the state sets' auth chains, the state events included, as Synapse's own tests do.
That walk is timed as part of the baseline and also shown on its own. Roomstream walks the
auth chains itself (no ``auth_chain_ids`` index), so both sides do the same kind of work.

Times are CPU time (``time.process_time``), the median of several repetitions, the two
implementations taking turns within each; wall time is shown beside it. The ratio is Synapse's
CPU time over Roomstream's: above 1, Roomstream is faster. Run as
``python -m pipeline.bench.state_res [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.dev.workload_builder import select_auth_events
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.hashes import add_content_hash, compute_event_id
from pipeline.matrix.room_versions import RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state

BASELINE = "matrix-synapse 1.163.2 state res v2"
TARGET = ">= 2x"
ROOM_VERSION = "11"
SERVER = "bench.example"
ALICE = f"@alice:{SERVER}"
MEMBER_TYPE = "m.room.member"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    room_id: str
    room_version: RoomVersion
    events: Mapping[str, Event]
    state_sets: Sequence[Mapping[StateKey, str]]
    repetitions: int | None = None  # fewer than the run's default for the largest inputs


@dataclass(eq=False)
class _RoomWriter:
    """Writes a room's events; ``_Branch`` objects say where each new event goes."""

    rv: RoomVersion
    room_id: str
    events: dict[str, Event] = field(default_factory=dict)
    _ts: int = field(default=1_700_000_000_000, init=False)

    def found(self, members: Sequence[str]) -> _Branch:
        """Create the room, Alice joins, power levels, public join rule, ``members`` join."""
        room = _Branch(self, {}, None)
        room.send("m.room.create", ALICE, {"room_version": "11"}, "")
        room.send(MEMBER_TYPE, ALICE, {"membership": "join"}, ALICE)
        room.send("m.room.power_levels", ALICE, _levels({}), "")
        room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
        for user in members:
            room.send(MEMBER_TYPE, user, {"membership": "join"}, user)
        return room

    def next_ts(self) -> int:
        self._ts += 1
        return self._ts


@dataclass(eq=False)
class _Branch:
    """A line of events: its last event (``tip``) and the state after it."""

    room: _RoomWriter
    state: dict[StateKey, str]
    tip: str | None

    def fork(self) -> _Branch:
        return _Branch(self.room, dict(self.state), self.tip)

    def send(
        self, etype: str, sender: str, content: Mapping[str, Any], state_key: str | None = None
    ) -> str:
        """Add an event after the tip, with the auth events the selection names in the state."""
        room = self.room
        prev = room.events[self.tip] if self.tip is not None else None
        pdu: dict[str, Any] = {
            "room_id": room.room_id,
            "type": etype,
            "sender": sender,
            "content": dict(content),
            "origin": SERVER,
            "origin_server_ts": room.next_ts(),
            "depth": 1 + (prev.depth if prev is not None else 0),
            "prev_events": [prev.event_id] if prev is not None else [],
            "auth_events": [],
            "signatures": {SERVER: {"ed25519:1": "c2lnbmF0dXJl"}},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        state = self.state
        pdu["auth_events"] = select_auth_events(pdu, room.rv, state)
        pdu = add_content_hash(pdu)
        event = Event.from_trusted(pdu, room.rv, event_id=compute_event_id(pdu, room.rv))
        room.events[event.event_id] = event
        if state_key is not None:
            state[(etype, state_key)] = event.event_id
        self.tip = event.event_id
        return event.event_id


def _levels(users: Mapping[str, int]) -> dict[str, Any]:
    # Members may send state (state_default 0), so custom state from anyone passes the rules.
    return {"users": {ALICE: 100, **users}, "state_default": 0, "events_default": 0}


def _user(n: int) -> str:
    return f"@user{n}:{SERVER}"


def two_branches(per_branch: int = 1000) -> Case:
    """Two branches of ``per_branch`` state events each, every key set on both sides."""
    rv = room_version(ROOM_VERSION)
    room = _RoomWriter(rv, f"!two-branches:{SERVER}")
    members = [_user(n) for n in range(20)]
    base = room.found(members)
    sets: list[dict[StateKey, str]] = []
    for name in ("a", "b"):
        branch = base.fork()
        for i in range(per_branch):
            if i % 100 == 50:
                levels = _levels({_user(i % 20): 50 if name == "a" else 40})
                branch.send("m.room.power_levels", ALICE, levels, "")
            elif i % 10 == 5:
                newcomer = f"@guest{i}:{SERVER}"
                content = {"membership": "join", "displayname": f"{name}{i}"}
                branch.send(MEMBER_TYPE, newcomer, content, newcomer)
            else:
                sender = members[i % len(members)]
                branch.send("org.example.setting", sender, {"branch": name, "i": i}, f"s{i}")
        sets.append(branch.state)
    return Case(
        f"two-branches-{per_branch}",
        f"two branches of {per_branch:,} conflicting state events each",
        room.room_id,
        rv,
        room.events,
        sets,
    )


def ten_extremities(total: int = 10_000, extremities: int = 10, members: int = 500) -> Case:
    """A ``total``-event room ending in ``extremities`` branches off different points."""
    rv = room_version(ROOM_VERSION)
    room = _RoomWriter(rv, f"!ten-extremities:{SERVER}")
    main = room.found([])
    branch_len = total // 5 // extremities
    main_len = total - extremities * branch_len - len(room.events)
    # Fork points spread over the last fifth of the main line.
    fork_at = {main_len - 1 - k * (main_len // 5 // extremities): k for k in range(extremities)}
    forks: dict[int, _Branch] = {}
    for i in range(main_len):
        _busy_room_event(main, i, members, "main")
        if i in fork_at:
            forks[fork_at[i]] = main.fork()
    sets: list[dict[StateKey, str]] = []
    for k in range(extremities):
        branch = forks[k]
        for i in range(branch_len):
            _busy_room_event(branch, main_len + i, members, f"x{k}")
        sets.append(branch.state)
    return Case(
        f"ten-extremities-{total}",
        f"{extremities} forward extremities over a {len(room.events):,}-event room",
        room.room_id,
        rv,
        room.events,
        sets,
    )


def _busy_room_event(branch: _Branch, i: int, members: int, tag: str) -> None:
    """Event ``i`` of a busy room: members join early, then mostly messages, with topics,
    membership changes, custom state and a power levels change now and then."""
    if i < members:
        user = _user(i)
        branch.send(MEMBER_TYPE, user, {"membership": "join"}, user)
        return
    user = _user(i % members)
    if i % 1000 == 999:
        levels = _levels({_user(i % 7): 50, _user(i % 11): 25})
        branch.send("m.room.power_levels", ALICE, levels, "")
    elif i % 50 == 7:
        branch.send("m.room.topic", ALICE, {"topic": f"{tag} {i}"}, "")
    elif i % 20 == 3:
        branch.send(MEMBER_TYPE, user, {"membership": "join", "displayname": f"{tag} {i}"}, user)
    elif i % 20 == 11:
        branch.send("org.example.setting", user, {"i": i}, f"{tag}-{i % 97}")
    else:
        branch.send("m.room.message", user, {"msgtype": "m.text", "body": str(i)})


def five_member_conflict(members: int = 1000, conflicted: int = 5) -> Case:
    """A ``members``-member room where ``conflicted`` memberships differ between two branches."""
    rv = room_version(ROOM_VERSION)
    room = _RoomWriter(rv, f"!five-members:{SERVER}")
    base = room.found([_user(n) for n in range(members)])
    targets = [_user(n * (members // conflicted)) for n in range(conflicted)]
    kicks, renames = base.fork(), base.fork()
    for user in targets:
        kicks.send(MEMBER_TYPE, ALICE, {"membership": "leave"}, user)
        renames.send(MEMBER_TYPE, user, {"membership": "join", "displayname": f"new {user}"}, user)
    return Case(
        f"five-members-{members}",
        f"a {conflicted}-member conflict in a {members:,}-member room",
        room.room_id,
        rv,
        room.events,
        [kicks.state, renames.state],
    )


def conflicted_members(members: int = 10_000, repetitions: int | None = 3) -> Case:
    """Two branches on which the same ``members`` users join, named differently on each."""
    rv = room_version(ROOM_VERSION)
    room = _RoomWriter(rv, f"!conflicted-members:{SERVER}")
    base = room.found([])
    sets: list[dict[StateKey, str]] = []
    for name in ("a", "b"):
        branch = base.fork()
        for n in range(members):
            user = _user(n)
            branch.send(MEMBER_TYPE, user, {"membership": "join", "displayname": name}, user)
        sets.append(branch.state)
    return Case(
        f"conflicted-members-{members}",
        f"{members:,} memberships conflicting between two branches",
        room.room_id,
        rv,
        room.events,
        sets,
        repetitions,
    )


def build_cases(quick: bool = False, big: bool = True) -> list[Case]:
    """The inputs; ``big`` adds the conflicted-members case (10,000, or 1,000 when quick)."""
    if quick:
        cases = [two_branches(200), ten_extremities(2_000, members=100), five_member_conflict(200)]
    else:
        cases = [two_branches(), ten_extremities(), five_member_conflict()]
    if big:
        cases.append(conflicted_members(1_000 if quick else 10_000))
    return cases


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    cpu_ms: float
    wall_ms: float


def _time(fns: Sequence[Callable[[], object]], repetitions: int) -> list[Timing]:
    """Each of ``fns`` timed ``repetitions`` times, in turn within each repetition: a moment of
    load on the machine falls on both sides of a ratio rather than on one."""
    cpu: list[list[float]] = [[] for _ in fns]
    wall: list[list[float]] = [[] for _ in fns]
    for _ in range(repetitions):
        for i, fn in enumerate(fns):
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[i].append((time.process_time() - c0) * 1000)
            wall[i].append((time.perf_counter() - w0) * 1000)
    return [
        Timing(statistics.median(c), statistics.median(w)) for c, w in zip(cpu, wall, strict=True)
    ]


def roomstream_resolver(case: Case) -> Callable[[], dict[StateKey, str]]:
    events = case.events

    def run() -> dict[StateKey, str]:
        return resolve_state(case.room_version, case.state_sets, events.get)

    return run


class SynapseResolver:
    """Synapse's v2 resolution of a case; ``store_ms`` sums the store's auth chain walks."""

    def __init__(self, case: Case) -> None:
        with warnings.catch_warnings():
            # Twisted's web modules, which Synapse pulls in, warn about their own deprecations.
            warnings.simplefilter("ignore")
            # synapse.event_auth first: it and synapse.state import each other.
            import synapse.event_auth  # noqa: F401
            from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
            from synapse.events import make_event_from_dict
            from synapse.state import v2
            from synapse.storage.databases.main.event_federation import StateDifference
            from twisted.internet import defer

        self._v2 = v2
        self._defer = defer
        self._difference = StateDifference
        self.case = case
        self.room_version = KNOWN_ROOM_VERSIONS[case.room_version.identifier]
        self.events = {
            eid: make_event_from_dict(dict(e.pdu), self.room_version)
            for eid, e in case.events.items()
        }
        self.store_ms = 0.0

    # The StateResolutionStore protocol.
    def get_events(self, event_ids: Any, allow_rejected: bool = False) -> Any:
        events = self.events
        return self._defer.succeed({e: events[e] for e in event_ids if e in events})

    def get_auth_chain_difference(
        self, room_id: str, state_sets: list[set[str]], conflicted: Any, additional: Any
    ) -> Any:
        start = time.process_time()
        chains = [self._chain(s) for s in state_sets]
        union: set[str] = set().union(*chains)
        difference = union - chains[0].intersection(*chains[1:])
        self.store_ms += (time.process_time() - start) * 1000
        return self._defer.succeed(self._difference(difference, None))

    def _chain(self, event_ids: set[str]) -> set[str]:
        """The auth chains of ``event_ids``, the events themselves included."""
        seen: set[str] = set()
        todo = list(event_ids)
        events = self.events
        while todo:
            event_id = todo.pop()
            if event_id not in seen:
                seen.add(event_id)
                todo.extend(events[event_id].auth_event_ids())
        return seen

    async def sleep(self, duration: Any) -> None:
        """The clock Synapse yields to every hundred iterations; nothing to yield to here."""

    def __call__(self) -> dict[StateKey, str]:
        outcome: list[Any] = []
        coroutine = self._v2.resolve_events_with_store(
            self,  # as the clock
            self.case.room_id,
            self.room_version,
            [dict(s) for s in self.case.state_sets],
            {},
            self,  # as the store
        )
        self._defer.ensureDeferred(coroutine).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError("Synapse's resolution waited although every event is in memory")
        if not isinstance(outcome[0], Mapping):
            outcome[0].raiseException()
        return dict(outcome[0])


def _synapse_available() -> bool:
    try:
        import synapse  # noqa: F401
    except ImportError:
        return False
    return True


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time both implementations on each input; print a table; return one dict per input."""
    repetitions = 3 if quick else 5
    with_baseline = _synapse_available()
    if not with_baseline:
        print(
            "baseline absent: matrix-synapse is not installed, so only Roomstream is timed; "
            "install it with: pip install -e '.[oracle]'"
        )
    results: list[dict[str, Any]] = []
    for case in build_cases(quick):
        ours_fn = roomstream_resolver(case)
        ours_state = ours_fn()  # warm-up, and the answer to compare
        reps = case.repetitions or repetitions
        theirs_fn = SynapseResolver(case) if with_baseline else None
        if theirs_fn is None:
            (ours,) = _time([ours_fn], reps)
        else:
            theirs_state = theirs_fn()  # warm-up, and the answer to compare
            theirs_fn.store_ms = 0.0
            ours, theirs = _time([ours_fn, theirs_fn], reps)
        result: dict[str, Any] = {
            "name": case.name,
            "description": case.description,
            "events": len(case.events),
            "state_sets": len(case.state_sets),
            "roomstream_ms": round(ours.cpu_ms, 2),
            "roomstream_wall_ms": round(ours.wall_ms, 2),
            "baseline_ms": None,
            "baseline_wall_ms": None,
            "baseline_store_ms": None,
            "ratio": None,
            "ratio_without_store": None,
            "same_result": None,
            "baseline": BASELINE,
            "target": TARGET,
        }
        if theirs_fn is not None:
            store_ms = theirs_fn.store_ms / reps
            result.update(
                baseline_ms=round(theirs.cpu_ms, 2),
                baseline_wall_ms=round(theirs.wall_ms, 2),
                baseline_store_ms=round(store_ms, 2),
                ratio=round(theirs.cpu_ms / ours.cpu_ms, 2) if ours.cpu_ms > 0 else None,
                # As if Synapse's auth chain difference cost nothing (it is SQL in production).
                ratio_without_store=(
                    round((theirs.cpu_ms - store_ms) / ours.cpu_ms, 2) if ours.cpu_ms > 0 else None
                ),
                same_result=theirs_state == ours_state,
            )
        results.append(result)
    _print_table(results)
    return results


def _print_table(results: Sequence[Mapping[str, Any]]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    header = (
        f"{'input':<24} {'events':>7} {'Roomstream ms':>14} {'Synapse ms':>11} "
        f"{'(store ms)':>10} {'wall ms R/S':>17} {'ratio':>6} {'w/o store':>9} {'same':>5} "
        "target"
    )
    print(f"State resolution, CPU time (median); baseline: {BASELINE}")
    print(header)
    for r in results:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        bare = "-" if r["ratio_without_store"] is None else f"{r['ratio_without_store']:.2f}x"
        same = "-" if r["same_result"] is None else ("yes" if r["same_result"] else "NO")
        wall = f"{ms(r['roomstream_wall_ms'])}/{ms(r['baseline_wall_ms'])}"
        print(
            f"{r['name']:<24} {r['events']:>7,} {ms(r['roomstream_ms']):>14} "
            f"{ms(r['baseline_ms']):>11} {ms(r['baseline_store_ms']):>10} {wall:>17} "
            f"{ratio:>6} {bare:>9} {same:>5} {r['target']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer repetitions")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
