"""The room logic offline: PDU lines in arrival order in, the ``roomstream replay`` JSON out.

The output shape is DESIGN.md's "`roomstream replay` output": per room its room version, current
state, forward extremities, rejected events with reasons, soft-failed events, events still parked
and (on request) the state after every event that was not rejected; plus the dead letters by line.
Lines are numbered from 1; blank lines are skipped. No clock runs, so nothing expires.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pipeline.room.processor import (
    BatchResult,
    Incoming,
    ProcessorConfig,
    RoomProcessor,
    as_mapping,
)
from pipeline.room.routing import room_id_of


class _Room:
    def __init__(self, room_id: str, config: ProcessorConfig | None) -> None:
        self.processor = RoomProcessor(room_id, config=config)
        self.rejected: dict[str, str] = {}
        self.soft_failed: set[str] = set()
        self.state_groups: dict[str, int | None] = {}  # events not rejected -> state after


def replay(
    lines: Iterable[bytes | str],
    *,
    state_after: bool = False,
    config: ProcessorConfig | None = None,
) -> dict[str, Any]:
    """Run every line through its room's processor; the result as DESIGN.md describes it."""
    rooms: dict[str, _Room] = {}
    dead_letter: list[dict[str, Any]] = []
    for number, text, room_id in routed_lines(lines, dead_letter):
        room = rooms.get(room_id)
        if room is None:
            room = rooms[room_id] = _Room(room_id, config)
        result = room.processor.process([Incoming(text, source={"line": number})])
        _collect(room, result, dead_letter)
    dead_letter.sort(key=lambda d: int(d["line"]))
    return {
        "rooms": {rid: _room_json(room, state_after) for rid, room in sorted(rooms.items())},
        "dead_letter": dead_letter,
    }


def routed_lines(
    lines: Iterable[bytes | str], unroutable: list[dict[str, Any]]
) -> Iterator[tuple[int, str, str]]:
    """Each non-blank line of a PDU file that names a room: its number (from 1), its text and its
    room. A line that names none is appended to ``unroutable`` as a dead letter (line, reason)."""
    for number, line in enumerate(lines, start=1):
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        if not text.strip():
            continue
        room_id = room_id_of(text)
        if room_id is None:
            unroutable.append({"line": number, "reason": unroutable_reason(text)})
        else:
            yield number, text, room_id


def unroutable_reason(text: str) -> str:
    """Why a line names no room."""
    if as_mapping(text) is None:
        return "the line is not a JSON object"
    return "the PDU has no room_id and is not a create event to derive one from"


def _collect(room: _Room, result: BatchResult, dead_letter: list[dict[str, Any]]) -> None:
    for dl in result.dead_letters:
        dead_letter.append({"line": _line_of(dl.source), "reason": dl.reason})
    # One input's chunk is cut in several only over the chunk size budget (a release of many
    # parked events).
    for ev in (ev for chunk in result.chunks for ev in chunk.events):
        if ev.rejected is not None:
            room.rejected[ev.event_id] = ev.rejected
            continue
        if ev.soft_failed:
            room.soft_failed.add(ev.event_id)
        room.state_groups[ev.event_id] = ev.state_group


def _room_json(room: _Room, with_state_after: bool) -> dict[str, Any]:
    proc = room.processor
    out: dict[str, Any] = {
        "room_version": proc.room_version.identifier if proc.room_version else None,
        "current_state": _rows(proc.current_state),
        "forward_extremities": sorted(proc.forward_extremities),
        "rejected": dict(sorted(room.rejected.items())),
        "soft_failed": sorted(room.soft_failed),
    }
    if with_state_after:
        out["state_after"] = {
            eid: _rows(proc.state_of_group(sg)) for eid, sg in sorted(room.state_groups.items())
        }
    parked = proc.parked()
    if parked:
        # An input parked before its room version was known has no event ID yet.
        out["parked"] = sorted(
            p.event_id if p.event_id is not None else f"line {_line_of(p.source)}" for p in parked
        )
    return out


def _rows(state: Mapping[tuple[str, str], str]) -> list[list[str]]:
    return [[t, k, e] for (t, k), e in sorted(state.items())]


def _line_of(source: Mapping[str, Any] | None) -> int:
    line = source.get("line") if source is not None else None
    return int(line) if isinstance(line, int) else 0
