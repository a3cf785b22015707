"""Room chunks as a room processor would make them, for the committer's and database's tests.

``RoomSim`` plays a linear room: each accepted event points at the current forward
extremities, each accepted state event gets a new state group (a one-row delta over the
previous group, a full snapshot for the first), and each chunk carries its net changes.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from pipeline.matrix.room_versions import EventFormat, room_version
from pipeline.room import chunk as core

_GROUP_IDS = itertools.count(1)


@dataclass
class Spec:
    type: str
    sender: str
    state_key: str | None = None
    content: dict[str, Any] | None = None
    rejected: str | None = None
    soft_failed: bool = False
    redacts: str | None = None


def msg(sender: str, body: str = "hi") -> Spec:
    return Spec("m.room.message", sender, None, {"msgtype": "m.text", "body": body})


def member(user: str, membership: str = "join", sender: str | None = None) -> Spec:
    return Spec("m.room.member", sender or user, user, {"membership": membership})


def state(etype: str, sender: str, content: dict[str, Any], state_key: str = "") -> Spec:
    return Spec(etype, sender, state_key, content)


class RoomSim:
    def __init__(self, room_id: str, version: str = "10", creator: str = "@alice:example.org"):
        self.room_id = room_id
        self.version = version
        self.creator = creator
        self.state: dict[tuple[str, str], str] = {}
        self.extremities: list[str] = []
        self.group: int | None = None
        self.depth = 0
        self.n_chunks = 0
        self.n_events = 0
        self.groups_of: dict[str, int | None] = {}  # event_id -> its state group

    def create_chunk(self) -> core.Chunk:
        return self.chunk(
            Spec("m.room.create", self.creator, "", {"room_version": self.version}),
            member(self.creator),
        )

    def _event_id(self) -> str:
        self.n_events += 1
        if self.n_events == 1 and room_version(self.version).room_id_is_create_event_hash:
            return "$" + self.room_id[1:]  # v12: the room ID derives from the create event
        digest = hashlib.sha256(f"{self.room_id}/{self.n_events}".encode()).hexdigest()[:20]
        return f"${digest}"

    def chunk(self, *specs: Spec) -> core.Chunk:
        self.n_chunks += 1
        start_state = dict(self.state)
        start_ext = list(self.extremities)
        events: list[core.ChunkEvent] = []
        groups: list[core.StateGroup] = []
        memberships: list[core.Membership] = []
        redactions: list[core.Redaction] = []
        for s in specs:
            eid = self._event_id()
            self.depth += 1
            pdu: dict[str, Any] = {
                "room_id": self.room_id,
                "type": s.type,
                "sender": s.sender,
                "content": dict(s.content or {}),
                "prev_events": list(self.extremities),
                "auth_events": sorted(set(self.state.values()))[:3],
                "depth": self.depth,
                "origin_server_ts": 1_700_000_000_000 + self.n_events,
                "hashes": {"sha256": "x"},
                "signatures": {},
            }
            if s.state_key is not None:
                pdu["state_key"] = s.state_key
            fmt = room_version(self.version).event_format
            if fmt == EventFormat.V1:
                # v1/v2: the event ID is a field; references are [event_id, hashes] pairs.
                pdu["event_id"] = eid
                pdu["prev_events"] = [[p, {"sha256": "x"}] for p in pdu["prev_events"]]
                pdu["auth_events"] = [[a, {"sha256": "x"}] for a in pdu["auth_events"]]
            if fmt == EventFormat.V4 and s.type == "m.room.create":
                del pdu["room_id"]
            if s.redacts is not None:
                pdu["content"]["redacts"] = s.redacts
                redactions.append(core.Redaction(eid, s.redacts))
            accepted = s.rejected is None
            group = self.group
            if accepted and s.state_key is not None and not s.soft_failed:
                gid = next(_GROUP_IDS)
                key = (s.type, s.state_key)
                if self.group is None:
                    delta = tuple((t, k, e) for (t, k), e in sorted(self.state.items()))
                    delta += ((s.type, s.state_key, eid),)
                    groups.append(core.StateGroup(gid, eid, None, delta))
                else:
                    groups.append(core.StateGroup(gid, eid, self.group, ((*key, eid),)))
                self.state[key] = eid
                self.group = group = gid
                if s.type == "m.room.member":
                    membership = (s.content or {})["membership"]
                    memberships.append(core.Membership(eid, s.state_key, s.sender, membership))
            if accepted and not s.soft_failed:
                self.extremities = [eid]
            self.groups_of[eid] = group
            events.append(
                core.ChunkEvent(
                    event_id=eid,
                    format_version=int(fmt),
                    pdu=pdu,
                    rejected=s.rejected,
                    soft_failed=s.soft_failed,
                    state_group=group,
                    received_ts=1_700_000_000_500 + self.n_events,
                )
            )
        changed = [
            core.CurrentStateRow(t, k, e, self._membership_of(events, e))
            for (t, k), e in sorted(self.state.items())
            if start_state.get((t, k)) != e
        ]
        has_create = any(e.pdu["type"] == "m.room.create" for e in events)
        return core.Chunk(
            chunk_id=f"{self.room_id}/{self.n_chunks}",
            room_id=self.room_id,
            room_version=self.version,
            events=tuple(events),
            state_groups=tuple(groups),
            forward_extremities_added=tuple(e for e in self.extremities if e not in start_ext),
            forward_extremities_removed=tuple(e for e in start_ext if e not in self.extremities),
            current_state_set=tuple(changed),
            memberships=tuple(memberships),
            redactions=tuple(redactions),
            creator=self.creator if has_create else None,
        )

    @staticmethod
    def _membership_of(events: list[core.ChunkEvent], eid: str) -> str | None:
        for e in events:
            if e.event_id == eid and e.pdu["type"] == "m.room.member":
                m = e.pdu["content"].get("membership")
                return m if isinstance(m, str) else None
        return None
