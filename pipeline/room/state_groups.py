"""State groups of one room: the state after each event, stored as chains of deltas.

A state group is either a full snapshot or a delta over an earlier group: the rows by which its
state differs from that group's. Group ids are derived from the room ID and a per-room counter,
so replaying the same input yields the same ids. Memory grows with state changes: a group is
only made when state changes.

Each group is made from a *parent*, the group whose state it changes (the state before its
event), and is ``step`` groups away from the snapshot at the root of its parents. Which group
its rows are stored over (its *base*, ``prev_group`` in the chunk and the database) follows
the step in base ``FANOUT``, as a skip list does: a group at a step whose lowest non-zero digit
is worth ``FANOUT**j`` is stored over its ancestor ``FANOUT**j`` steps back, holding every row
changed on the way. Step 37 rests on 36, 40 on 30, 300 on 200. So a reader walks at most the
step's digit sum of hops (under 50 up to a million steps), and each state change writes about
one row per digit of its step, whatever the size of the room.

A snapshot costs the whole state, so it is written only when it pays: when the rows a reader
would walk exceed the state's own size by more than the state (or ``MIN_SPARE_ROWS`` for a small
one), i.e. once overwritten rows make up half of what a reader reads; or when the chain would
pass ``MAX_DELTA_HOPS`` hops. Synapse writes a snapshot after every 100 hops; in a room of
20,000 members that is 200 rows per state change, all of them written again. Here a snapshot
is paid for by at least as many rows of deltas as it holds: a state change writes a few rows
in a room of any size, and reading any group reads at most about twice its state.

A room that lives for years makes groups for years, so the rows of old groups may be dropped
(``drop_rows``, for groups the shell knows are stored) and read back through ``recall`` (one
call for the groups a read needs) when a state is built from them; what a group is made of
(its base, parent, step and the count of its rows) stays, so every group made later is the one
an unbounded room makes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from sys import intern
from typing import Any, Protocol

from pipeline.matrix.events import StateKey, StateMap
from pipeline.room.appended import items_after
from pipeline.room.chunk import StateGroup, StateRow
from pipeline.room.known_events import RecallFailed, ask_recall

MAX_DELTA_HOPS = 100
"""Delta hops after which a group is written as a full snapshot, whatever else."""

FANOUT = 10
"""The base of the steps that decides which earlier group a delta is stored over."""

MIN_SPARE_ROWS = 100
"""Rows a reader may walk beyond the state's size before a snapshot cuts the chain, however
small the state (so a small room writes a snapshot about as often as after 100 hops)."""

RECALLED_GROUPS = 64
"""Groups whose recalled rows are kept (the least recently read go first)."""

# Bytes of memory per item, for ``footprint`` (measured as ``known_events``' are).
GROUP_BYTES = 150  # a group: its _Group and its slot
ROW_BYTES = 100  # a row of a delta: its tuple
MAP_ENTRY_BYTES = 100  # an entry of a materialised state: its key tuple and its slot

_EMPTY: Mapping[StateKey, str] = {}

Rows = tuple[StateRow, ...]


class GroupRecall(Protocol):
    def __call__(self, room_id: str, group_ids: Sequence[int]) -> Mapping[int, Rows]:
        """The rows of those of ``group_ids`` that room ``room_id`` stored (a stored group
        without rows: ``()``; absent: not stored). Raises when the store cannot be read."""
        ...


def state_group_id(room_id: str, n: int) -> int:
    """The id of the room's ``n``-th state group: 63 bits of blake2b, positive, never 0."""
    digest = hashlib.blake2b(f"{room_id}\x00{n}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def _stride(step: int) -> int:
    """How many steps back a group at ``step`` (> 0) is stored over: the value of the lowest
    non-zero digit's place in base ``FANOUT``."""
    stride = 1
    while step % FANOUT == 0:
        step //= FANOUT
        stride *= FANOUT
    return stride


@dataclass(slots=True)
class _Group:
    prev: int | None  # the base: the group the rows are stored over (None: a snapshot)
    hops: int  # delta hops down to the snapshot this group rests on (0: a snapshot)
    event_id: str
    delta: Rows | None  # the rows over ``prev`` (the whole state for a snapshot); None: dropped
    parent: int | None  # the group whose state this one changes (None: a snapshot)
    step: int  # groups from the snapshot along the parents (0: a snapshot)
    read_rows: int  # rows read to materialise it: its own and its bases' down to the snapshot


class StateGroups:
    """The state groups of one room, with a small cache of materialised states."""

    def __init__(
        self, room_id: str, *, max_hops: int = MAX_DELTA_HOPS, cache_size: int = 4
    ) -> None:
        if max_hops < 0:
            raise ValueError(f"max_hops must be >= 0, not {max_hops}")
        self.room_id = room_id
        self.max_hops = max_hops
        self._cache_size = max(1, cache_size)
        self._groups: dict[int, _Group] = {}
        self._counter = 0
        self._cache: OrderedDict[int, Mapping[StateKey, str]] = OrderedDict()
        # Asked for the rows of dropped groups; bound to the room by the processor.
        self.recall: Callable[[Sequence[int]], Mapping[int, Rows]] | None = None
        self._recalled: OrderedDict[int, Rows] = OrderedDict()
        self.held_rows = 0  # rows held in groups' deltas
        self.dropped_rows = 0  # rows dropped in all
        self._dropped_groups = 0  # the first this many groups were considered by ``drop_rows``

    def __len__(self) -> int:
        return len(self._groups)

    def footprint(self) -> int:
        """An estimate of the bytes the groups, their rows and the cached states hold."""
        cached = sum(map(len, self._cache.values()))
        recalled = sum(map(len, self._recalled.values()))
        return (
            len(self._groups) * GROUP_BYTES
            + (self.held_rows + recalled) * ROW_BYTES
            + cached * MAP_ENTRY_BYTES
        )

    def __contains__(self, sg: object) -> bool:
        return sg in self._groups

    def state(self, sg: int | None) -> Mapping[StateKey, str]:
        """The full state of group ``sg`` (None: the empty state). Do not mutate the result."""
        if sg is None:
            return _EMPTY
        cached = self._cache.get(sg)
        if cached is not None:
            self._cache.move_to_end(sg)
            return cached
        chain: list[tuple[int, _Group]] = []
        cur: int | None = sg
        base: Mapping[StateKey, str] = _EMPTY
        while cur is not None:
            hit = self._cache.get(cur)
            if hit is not None:
                base = hit
                break
            group = self._groups.get(cur)
            if group is None:
                raise KeyError(f"state group {cur} is not known in room {self.room_id}")
            chain.append((cur, group))
            cur = group.prev
        dropped = [g for g, group in chain if group.delta is None]
        recalled = self._recall_rows(dropped) if dropped else {}
        state = dict(base)
        for g, group in reversed(chain):
            rows = group.delta if group.delta is not None else recalled[g]
            for etype, skey, eid in rows:
                state[(etype, skey)] = eid
        self._remember(sg, state)
        return state

    def add_delta(
        self, prev: int | None, event_id: str, changes: StateMap, *, in_place: bool = False
    ) -> tuple[int, StateGroup]:
        """A new group: the state of ``prev`` with ``changes`` on top. Returns (id, the group).

        With ``in_place``, the materialised state of ``prev``, when cached, becomes the new
        group's (updated in place, so the cost does not grow with the room's state): a mapping
        ``state(prev)`` returned earlier then reads as the new group's state. Without, it is
        copied.
        """
        base = self.state(prev)
        if prev is None:
            state = dict(base)
            state.update(changes)
            return self._snapshot(event_id, state)
        delta = {k: v for k, v in changes.items() if base.get(k) != v}
        cached = self._cache.get(prev) if in_place else None
        if isinstance(cached, dict):
            del self._cache[prev]
            cached.update(delta)
            state = cached
        else:
            state = dict(base)
            state.update(delta)
        return self._derive(prev, event_id, delta, state)

    def add_state(
        self, event_id: str, state: StateMap, candidates: Iterable[int | None]
    ) -> tuple[int | None, StateGroup | None]:
        """The group holding exactly ``state``: a candidate if one matches, else a new group.

        A new group is made from the candidate needing the fewest rows, among those whose keys
        all survive in ``state`` (a delta cannot remove a key); else it is a snapshot. Returns
        (id, the new group or None when a candidate was reused).
        """
        if not state:
            return None, None
        best: int | None = None
        best_delta: dict[StateKey, str] | None = None
        for sg in candidates:
            if sg is None:
                continue
            base = self.state(sg)
            if base == state:
                return sg, None
            if any(k not in state for k in base):
                continue
            delta = {k: v for k, v in state.items() if base.get(k) != v}
            if best_delta is None or len(delta) < len(best_delta):
                best, best_delta = sg, delta
        full = dict(state)
        if best is None or best_delta is None:
            return self._snapshot(event_id, full)
        return self._derive(best, event_id, best_delta, full)

    def _derive(
        self, parent: int, event_id: str, delta: dict[StateKey, str], state: dict[StateKey, str]
    ) -> tuple[int, StateGroup]:
        """Store ``state``, which is the state of ``parent`` with ``delta`` on top: as a delta
        over the ancestor its step says (module docstring), or as a snapshot when the chain
        would be too long or a snapshot pays."""
        groups = self._groups
        step = groups[parent].step + 1
        back_to = step - _stride(step)
        # The rows changed since the base, newest first: the chain of bases from ``parent``
        # down passes through it (the groups at steps after ``back_to`` rest on it).
        rows: dict[StateKey, str] = {}
        base = parent
        group = groups[base]
        while group.step > back_to and group.prev is not None:
            for etype, skey, eid in self._rows(base, group):
                rows.setdefault((etype, skey), eid)
            base = group.prev
            group = groups[base]
        rows.update(delta)
        hops = group.hops + 1
        read_rows = group.read_rows + len(rows)
        size = len(state)
        if hops > self.max_hops or read_rows - size > max(size, MIN_SPARE_ROWS):
            return self._snapshot(event_id, state)
        return self._store(base, event_id, rows, state, made_from=(parent, step, hops, read_rows))

    def _snapshot(self, event_id: str, state: dict[StateKey, str]) -> tuple[int, StateGroup]:
        return self._store(None, event_id, state, state)

    def trim(self, keep: Iterable[int | None] = ()) -> None:
        """Drop cached materialised states except those of ``keep`` (to save memory at rest)."""
        self._recalled.clear()
        wanted = {sg for sg in keep if sg is not None}
        for sg in [s for s in self._cache if s not in wanted]:
            del self._cache[sg]

    def _store(
        self,
        base: int | None,
        event_id: str,
        rows: StateMap,
        state: dict[StateKey, str],
        *,
        made_from: tuple[int | None, int, int, int] = (None, 0, 0, 0),
    ) -> tuple[int, StateGroup]:
        """Store a group of ``rows`` over ``base`` whose state is ``state``; ``made_from`` is
        (parent, step, hops, read_rows), all None or 0 for a snapshot."""
        self._counter += 1
        sg_id = state_group_id(self.room_id, self._counter)
        parent, step, hops, read_rows = made_from
        delta = tuple(sorted((k[0], k[1], v) for k, v in rows.items()))
        if base is None:
            read_rows = len(delta)
        self._groups[sg_id] = _Group(base, hops, event_id, delta, parent, step, read_rows)
        self.held_rows += len(delta)
        self._remember(sg_id, state)
        return sg_id, StateGroup(id=sg_id, event_id=event_id, prev_group=base, delta=delta)

    def _remember(self, sg: int, state: Mapping[StateKey, str]) -> None:
        self._cache[sg] = state
        self._cache.move_to_end(sg)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def hops(self, sg: int) -> int:
        return self._groups[sg].hops

    def step_from(self, sg: int, parent: int) -> dict[StateKey, str] | None:
        """The entries by which the state of ``sg`` differs from that of ``parent``, when
        ``sg`` was made from ``parent`` (None otherwise). Costs the group's rows (and, for a
        group stored over an earlier ancestor, reading ``parent``'s state, usually cached)."""
        group = self._groups[sg]
        if group.parent != parent:
            return None
        rows = {(t, k): e for t, k, e in self._rows(sg, group)}
        if group.prev == parent:
            return rows
        before = self.state(parent)
        return {k: v for k, v in rows.items() if before.get(k) != v}

    def keys_between(self, a: int, b: int) -> set[StateKey]:
        """The keys whose entries may differ between groups ``a`` and ``b``: those the groups
        on the way from each down to the nearest group both rest on set. Costs what those
        groups hold, not the size of the state (bar a snapshot on the way)."""
        below_a: list[int] = []
        seen: set[int] = set()
        cur: int | None = a
        while cur is not None:
            below_a.append(cur)
            seen.add(cur)
            cur = self._groups[cur].prev
        keys: set[StateKey] = set()
        cur = b
        while cur is not None and cur not in seen:
            group = self._groups[cur]
            keys.update((t, k) for t, k, _ in self._rows(cur, group))
            cur = group.prev
        for sg in below_a:
            if sg == cur:
                break
            keys.update((t, k) for t, k, _ in self._rows(sg, self._groups[sg]))
        return keys

    # ---------------------------------------------------------------- bounding

    def drop_rows(self, stored: int, keep: int) -> int:
        """Drop the rows of the oldest groups among the first ``stored`` made (the caller knows
        them stored) until at most ``keep`` rows are held. Returns the rows dropped."""
        if self.held_rows <= keep or stored <= self._dropped_groups:
            return 0
        count = min(stored, len(self._groups)) - self._dropped_groups
        # The candidates, oldest first, walked from the end: what was considered before is
        # never walked again.
        tail = len(self._groups) - self._dropped_groups
        candidates = list(itertools.islice(reversed(self._groups.items()), tail))
        candidates.reverse()
        dropped = 0
        for _, group in candidates[:count]:
            if self.held_rows <= keep:
                break
            self._dropped_groups += 1
            if group.delta:
                dropped += len(group.delta)
                self.held_rows -= len(group.delta)
                group.delta = None
        self.dropped_rows += dropped
        return dropped

    def _rows_count(self, group: _Group) -> int:
        """How many rows ``group`` holds, dropped or not (what it adds to the rows read)."""
        if group.delta is not None:
            return len(group.delta)
        below = self._groups[group.prev].read_rows if group.prev is not None else 0
        return group.read_rows - below

    def _rows(self, sg: int, group: _Group) -> Rows:
        if group.delta is not None:
            return group.delta
        return self._recall_rows([sg])[sg]

    def _recall_rows(self, sgs: Sequence[int]) -> dict[int, Rows]:
        """The rows of dropped groups ``sgs``: kept ones, the rest recalled in one call."""
        out: dict[int, Rows] = {}
        want: list[int] = []
        for sg in sgs:
            hit = self._recalled.get(sg)
            if hit is None:
                want.append(sg)
            else:
                self._recalled.move_to_end(sg)
                out[sg] = hit
        if not want:
            return out
        got = ask_recall(
            self.recall,
            want,
            what=f"the rows of {len(want)} state group(s) of room {self.room_id}",
            missing=(
                f"state group {want[0]} of room {self.room_id} had its rows dropped, and there "
                "is no recall to ask"
            ),
        )
        for sg in want:
            rows = got.get(sg)
            if rows is None:
                raise RecallFailed(
                    f"state group {sg} of room {self.room_id} had its rows dropped as stored, "
                    "but the store does not hold it"
                )
            out[sg] = self._recalled[sg] = tuple(sorted(rows))
        while len(self._recalled) > RECALLED_GROUPS:
            self._recalled.popitem(last=False)
        return out

    def to_dict(self, groups_from: int = 0) -> dict[str, Any]:
        """The groups as data; with ``groups_from`` (an earlier ``len``), only those made since.

        Each group is ``[prev, hops, event_id, rows, step]``, and its parent after those when it
        is not ``prev``. Groups are never changed or dropped once made, so saved parts stay
        valid.
        """
        data = {
            "counter": self._counter,
            "max_hops": self.max_hops,
            "groups": {
                str(sg): _group_data(g, self._rows_count(g))
                for sg, g in items_after(self._groups, groups_from)
            },
        }
        if self.dropped_rows:
            data["dropped_rows"] = self.dropped_rows
        return data

    @classmethod
    def from_rows(
        cls,
        room_id: str,
        groups: Iterable[StateGroup],
        counter: int,
        *,
        max_hops: int = MAX_DELTA_HOPS,
        cache_size: int = 4,
    ) -> StateGroups:
        """The groups as stored (``state_groups``, ``state_group_edges``, ``state_groups_state``),
        in the order they were made (``pipeline.room.rebuild.group_order``); ``counter`` is the
        number of the last group made, so the next one gets the id it would have got."""
        out = cls(room_id, max_hops=max_hops, cache_size=cache_size)
        out._counter = counter
        for g in groups:
            prev = g.prev_group
            if prev is not None and prev not in out._groups:
                raise ValueError(
                    f"state group {g.id} of room {room_id} rests on group {prev}, which is not "
                    "stored before it"
                )
            delta = tuple(sorted(g.delta))
            out.held_rows += len(delta)
            below = out._groups[prev] if prev is not None else None
            hops = below.hops + 1 if below is not None else 0
            read_rows = (below.read_rows if below is not None else 0) + len(delta)
            # The rows do not say which group each one was made from, nor its step: each is
            # taken as made from the group it is stored over, and as a new root of steps, so
            # groups made from it rest on it and on one another as after a snapshot. Their
            # states are what an uninterrupted run would make; only which ancestor their rows
            # are stored over may differ.
            out._groups[g.id] = _Group(prev, hops, g.event_id, delta, prev, 0, read_rows)
        return out

    @classmethod
    def from_dict(
        cls, room_id: str, data: Mapping[str, Any], *, cache_size: int = 4
    ) -> StateGroups:
        """Groups as ``to_dict`` wrote them, all of them, in the order they were made. Groups
        saved before steps were kept were each stored over their parent, and their step was
        their hops."""
        groups = cls(room_id, max_hops=int(data["max_hops"]), cache_size=cache_size)
        groups._counter = int(data["counter"])
        made = groups._groups
        # Parts saved before a group's rows were dropped still hold them: they are loaded, and
        # every group is considered again by the next ``drop_rows``.
        groups.dropped_rows = int(data.get("dropped_rows", 0))
        for key, (prev, hops, event_id, rows, *more) in data["groups"].items():
            step = int(more[0]) if more else int(hops)
            parent = more[1] if len(more) > 1 else prev
            # A dropped group's rows are saved as their count.
            # Interned: parsed apart, each row's strings would be objects of their own, where a
            # processor that made its groups shares them with its events (a third more memory).
            delta = (
                None
                if isinstance(rows, int)
                else tuple((intern(r[0]), intern(r[1]), intern(r[2])) for r in rows)
            )
            size = rows if isinstance(rows, int) else len(rows)
            groups.held_rows += size if delta is not None else 0
            below = made[prev].read_rows if prev is not None else 0
            made[int(key)] = _Group(
                prev, int(hops), intern(event_id), delta, parent, step, below + size
            )
        return groups


def _group_data(g: _Group, count: int) -> list[Any]:
    rows: Any = [list(r) for r in g.delta] if g.delta is not None else count
    data = [g.prev, g.hops, g.event_id, rows, g.step]
    if g.parent != g.prev:
        data.append(g.parent)
    return data
