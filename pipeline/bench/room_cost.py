"""The pure room logic's cost per event, and how it depends on the size of the room.

Two figures, both in this process with no broker:

* ``size``: a linear room with M members (every member joins first, one at a time, not timed),
  then a timed run of messages with a topic change and a display-name change among them; per
  event µs in a 50-member room and in a 20,000-member room, and their ratio. Inputs are fed one
  at a time (``process([one])``, as a shell that sends each input alone) and as one batch.
* ``replay``: ``roomstream replay``'s logic (``pipeline.room.replay.replay``) over the generated
  workload, µs per line.

``python -m pipeline.bench.room_cost [--small 50] [--large 20000] [--timed 2000]``
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import orjson

from pipeline.dev.workload import generate_workload
from pipeline.dev.workload_builder import select_auth_events
from pipeline.matrix.events import StateKey
from pipeline.matrix.hashes import add_content_hash, compute_event_id
from pipeline.matrix.room_versions import RoomVersion, room_version
from pipeline.room.batch import Incoming
from pipeline.room.processor import RoomProcessor
from pipeline.room.replay import replay

CREATOR = "@creator:example.org"


@dataclass(eq=False)
class LinearRoom:
    """PDUs of a room where every event points at the one before (cheap to build at any size)."""

    version: InitVar[str] = "10"
    room_id: str = "!cost:example.org"
    rv: RoomVersion = field(init=False)
    state: dict[StateKey, str] = field(init=False, default_factory=dict)
    last: str | None = field(init=False, default=None)
    depth: int = field(init=False, default=0)
    ts: int = field(init=False, default=1_700_000_000_000)

    def __post_init__(self, version: str) -> None:
        self.rv = room_version(version)

    def send(
        self, etype: str, sender: str, content: dict[str, Any], state_key: str | None = None
    ) -> bytes:
        self.depth += 1
        self.ts += 1
        pdu: dict[str, Any] = {
            "type": etype,
            "room_id": self.room_id,
            "sender": sender,
            "content": content,
            "depth": self.depth,
            "origin_server_ts": self.ts,
            "prev_events": [self.last] if self.last else [],
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu["auth_events"] = select_auth_events(pdu, self.rv, self.state)
        pdu = add_content_hash(pdu)
        eid = compute_event_id(pdu, self.rv)
        if state_key is not None:
            self.state[(etype, state_key)] = eid
        self.last = eid
        return orjson.dumps(pdu)

    def _create_content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            content["creator"] = CREATOR
        return content

    def setup(self, members: int) -> list[bytes]:
        out = [
            self.send("m.room.create", CREATOR, self._create_content(), ""),
            self.send("m.room.member", CREATOR, {"membership": "join"}, CREATOR),
            self.send("m.room.power_levels", CREATOR, {"users": {CREATOR: 100}}, ""),
            self.send("m.room.join_rules", CREATOR, {"join_rule": "public"}, ""),
        ]
        for i in range(members - 1):
            user = f"@u{i}:example.org"
            out.append(self.send("m.room.member", user, {"membership": "join"}, user))
        return out

    def traffic(self, n: int, members: int) -> list[bytes]:
        """Messages, with every 10th event a topic change and every 10th a display-name change."""
        out = []
        for i in range(n):
            user = f"@u{i % max(1, members - 1)}:example.org" if members > 1 else CREATOR
            if i % 10 == 3:
                out.append(self.send("m.room.topic", CREATOR, {"topic": f"t{i}"}, ""))
            elif i % 10 == 7:
                content = {"membership": "join", "displayname": f"n{i}"}
                out.append(self.send("m.room.member", user, content, user))
            else:
                out.append(
                    self.send("m.room.message", user, {"msgtype": "m.text", "body": f"m{i}"})
                )
        return out


def size_cost(members: int, timed: int, *, batch: bool) -> float:
    """µs per event of ``timed`` events after ``members`` joins."""
    room = LinearRoom()
    setup = room.setup(members)
    traffic = room.traffic(timed, members)
    proc = RoomProcessor(room.room_id)
    done = proc.process([Incoming(raw, received_ts=0) for raw in setup])
    assert not any(e.rejected for c in done.chunks for e in c.events)
    gc.collect()
    started = time.perf_counter()
    if batch:
        result = proc.process([Incoming(raw, received_ts=0) for raw in traffic])
        events = [e for c in result.chunks for e in c.events]
        assert len(events) == timed and not any(e.rejected for e in events)
    else:
        for raw in traffic:
            result = proc.process([Incoming(raw, received_ts=0)])
            assert result.chunk is not None and len(result.chunk.events) == 1
    return (time.perf_counter() - started) / timed * 1e6


def replay_cost(lines: Sequence[bytes]) -> float:
    gc.collect()
    started = time.perf_counter()
    replay(lines)
    return (time.perf_counter() - started) / len(lines) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=20_000)
    parser.add_argument("--timed", type=int, default=2_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--per-room", type=int, default=200)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    for mode in ("one_at_a_time", "batch"):
        small = size_cost(args.small, args.timed, batch=mode == "batch")
        large = size_cost(args.large, args.timed, batch=mode == "batch")
        out[mode] = {
            f"us_per_event_{args.small}_members": round(small, 1),
            f"us_per_event_{args.large}_members": round(large, 1),
            "ratio": round(large / small, 2),
        }
    lines = generate_workload(args.rooms, args.per_room).lines
    out["replay_us_per_line"] = round(replay_cost(lines), 1)
    out["replay_lines"] = len(lines)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
