"""State groups of one room: the state after each event, stored as chains of deltas.

A state group is either a full snapshot or a delta over a previous group. Chains are cut after a
bounded number of delta hops (``MAX_DELTA_HOPS``, as Synapse does) so reading a group never walks
far. Group ids are derived from the room ID and a per-room counter, so replaying the same input
yields the same ids. Memory grows with state changes: a group is only made when state changes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.matrix.events import StateKey, StateMap
from pipeline.room.chunk import StateGroup, StateRow

MAX_DELTA_HOPS = 100
"""Delta hops after which a group is written as a full snapshot."""

_EMPTY: Mapping[StateKey, str] = {}


def state_group_id(room_id: str, n: int) -> int:
    """The id of the room's ``n``-th state group: 63 bits of blake2b, positive, never 0."""
    digest = hashlib.blake2b(f"{room_id}\x00{n}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


@dataclass(slots=True)
class _Group:
    prev: int | None
    hops: int  # delta hops down to the snapshot this group rests on (0: a snapshot)
    event_id: str
    delta: tuple[StateRow, ...]


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

    def __len__(self) -> int:
        return len(self._groups)

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
        chain: list[_Group] = []
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
            chain.append(group)
            cur = group.prev
        state = dict(base)
        for group in reversed(chain):
            for etype, skey, eid in group.delta:
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
        hops = self._groups[prev].hops + 1 if prev is not None else 0
        if prev is None or hops > self.max_hops:
            state = dict(base)
            state.update(changes)
            return self._store(None, 0, event_id, state, state)
        delta = {k: v for k, v in changes.items() if base.get(k) != v}
        cached = self._cache.get(prev) if in_place else None
        if isinstance(cached, dict):
            del self._cache[prev]
            cached.update(delta)
            state = cached
        else:
            state = dict(base)
            state.update(delta)
        return self._store(prev, hops, event_id, delta, state)

    def add_state(
        self, event_id: str, state: StateMap, candidates: Iterable[int | None]
    ) -> tuple[int | None, StateGroup | None]:
        """The group holding exactly ``state``: a candidate if one matches, else a new group.

        A new group is a delta over the candidate needing the fewest rows, among those whose keys
        all survive in ``state`` (a delta cannot remove a key); else a snapshot. Returns (id, the
        new group or None when a candidate was reused).
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
        if best is None or best_delta is None or self._groups[best].hops + 1 > self.max_hops:
            sg_id, group = self._store(None, 0, event_id, full, full)
        else:
            sg_id, group = self._store(
                best, self._groups[best].hops + 1, event_id, best_delta, full
            )
        return sg_id, group

    def trim(self, keep: Iterable[int | None] = ()) -> None:
        """Drop cached materialised states except those of ``keep`` (to save memory at rest)."""
        wanted = {sg for sg in keep if sg is not None}
        for sg in [s for s in self._cache if s not in wanted]:
            del self._cache[sg]

    def _store(
        self,
        prev: int | None,
        hops: int,
        event_id: str,
        delta: StateMap,
        state: dict[StateKey, str],
    ) -> tuple[int, StateGroup]:
        self._counter += 1
        sg_id = state_group_id(self.room_id, self._counter)
        rows = tuple(sorted((k[0], k[1], v) for k, v in delta.items()))
        self._groups[sg_id] = _Group(prev, hops, event_id, rows)
        self._remember(sg_id, state)
        return sg_id, StateGroup(id=sg_id, event_id=event_id, prev_group=prev, delta=rows)

    def _remember(self, sg: int, state: Mapping[StateKey, str]) -> None:
        self._cache[sg] = state
        self._cache.move_to_end(sg)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def hops(self, sg: int) -> int:
        return self._groups[sg].hops

    def parent(self, sg: int) -> tuple[int | None, dict[StateKey, str]]:
        """The group ``sg`` rests on and the rows it adds to it ((None, its rows) for a
        snapshot)."""
        group = self._groups[sg]
        return group.prev, {(t, k): e for t, k, e in group.delta}

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
            keys.update((t, k) for t, k, _ in group.delta)
            cur = group.prev
        for sg in below_a:
            if sg == cur:
                break
            keys.update((t, k) for t, k, _ in self._groups[sg].delta)
        return keys

    def to_dict(self, groups_from: int = 0) -> dict[str, Any]:
        """The groups as data; with ``groups_from`` (an earlier ``len``), only those made since.

        Groups are never changed or dropped once made, so saved parts stay valid.
        """
        return {
            "counter": self._counter,
            "max_hops": self.max_hops,
            "groups": {
                str(sg): [g.prev, g.hops, g.event_id, [list(r) for r in g.delta]]
                for sg, g in itertools.islice(self._groups.items(), groups_from, None)
            },
        }

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
            hops = out._groups[prev].hops + 1 if prev is not None else 0
            out._groups[g.id] = _Group(prev, hops, g.event_id, tuple(sorted(g.delta)))
        return out

    @classmethod
    def from_dict(
        cls, room_id: str, data: Mapping[str, Any], *, cache_size: int = 4
    ) -> StateGroups:
        groups = cls(room_id, max_hops=int(data["max_hops"]), cache_size=cache_size)
        groups._counter = int(data["counter"])
        for key, (prev, hops, event_id, rows) in data["groups"].items():
            groups._groups[int(key)] = _Group(
                prev,
                int(hops),
                event_id,
                tuple((r[0], r[1], r[2]) for r in rows),
            )
        return groups
