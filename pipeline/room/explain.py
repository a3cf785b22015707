"""Why a room is as it is: the decision records of a replay, per event and per room.

``explain(lines)`` runs PDU lines through ``RoomProcessor``s that carry a ``Recorder``, the
very code that decides in the workers, so an explanation cannot drift from the decision it
explains. From the notes it builds, per event: the outcome (accepted, rejected, soft-failed,
parked, dead-lettered) with the rule that decided (numbered as the event's room version
numbers its authorization rules) and the auth events the rule read; the state before the event
and where it came from (its prev event, or a state resolution and for each conflicted key the
winner and why). Per room: the forward extremities and what kept each one, and the changes to
the current state that removed or reverted an entry (candidate state resets) with the
resolution that made them.

``EventExplanation``/``RoomExplanation`` are JSON-friendly dicts; ``render_event`` and
``render_room`` draw them as trees for people. The database command
(``pipeline.ops.explain``) feeds the room's stored PDUs here in stream order, which is the
order they were decided in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.explain import Note, Recorder, explained_rule
from pipeline.matrix.room_versions import room_version
from pipeline.room.processor import (
    BatchResult,
    Incoming,
    ProcessorConfig,
    RoomProcessor,
    as_mapping,
)
from pipeline.room.replay import routed_lines

Json = dict[str, Any]

ACCEPTED = "accepted"
REJECTED = "rejected"
SOFT_FAILED = "soft-failed"
PARKED = "parked"
DEAD_LETTERED = "dead-lettered"


@dataclass(slots=True)
class _EventRecord:
    event_id: str
    pdu: Mapping[str, Any]
    outcome: str
    reason: str | None
    notes: list[Note]
    line: int | None


@dataclass(slots=True)
class _RoomRecord:
    room_id: str
    processor: RoomProcessor
    recorder: Recorder
    events: dict[str, _EventRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    current: dict[tuple[str, str], str] = field(default_factory=dict)
    state_changes: list[Json] = field(default_factory=list)
    dead_letters: list[Json] = field(default_factory=list)


@dataclass(slots=True)
class Explained:
    """The replay with its records: explain any event or room of it."""

    rooms: dict[str, _RoomRecord]
    dead_letters: list[Json]  # lines that named no room

    def room_of(self, event_id: str) -> _RoomRecord | None:
        for room in self.rooms.values():
            if event_id in room.events or any(
                d.get("event_id") == event_id for d in room.dead_letters
            ):
                return room
            if any(p.event_id == event_id for p in room.processor.parked()):
                return room
        return None

    def event(self, event_id: str) -> Json:
        """The explanation of ``event_id`` (outcome ``unknown`` when no line held it)."""
        room = self.room_of(event_id)
        if room is None:
            return {
                "event_id": event_id,
                "outcome": "unknown",
                "reason": "no input held this event",
            }
        return _event_json(room, event_id)

    def room(self, room_id: str) -> Json:
        room = self.rooms.get(room_id)
        if room is None:
            return {"room_id": room_id, "error": "no input was of this room"}
        return _room_json(room)


def explain(lines: Iterable[bytes | str], *, config: ProcessorConfig | None = None) -> Explained:
    """Replay ``lines`` (PDUs in the order they were decided) with decision records."""
    rooms: dict[str, _RoomRecord] = {}
    stray: list[Json] = []
    for number, text, room_id in routed_lines(lines, stray):
        room = rooms.get(room_id)
        if room is None:
            recorder = Recorder()
            processor = RoomProcessor(room_id, config=config, recorder=recorder)
            room = rooms[room_id] = _RoomRecord(room_id, processor, recorder)
        mark = len(room.recorder.notes)
        result = room.processor.process([Incoming(text, source={"line": number})])
        _collect(room, result, mark, number, text)
    return Explained(rooms, stray)


def _collect(room: _RoomRecord, result: BatchResult, mark: int, line: int, text: str) -> None:
    notes = room.recorder.notes[mark:]
    room.recorder.begin(None)
    for dl in result.dead_letters:
        event_id = dl.event_id
        if event_id is None:
            pdu = as_mapping(text)
            event_id = pdu.get("event_id") if pdu is not None else None
        room.dead_letters.append({"line": line, "event_id": event_id, "reason": dl.reason})
    chunk_events: list[str] = []
    for chunk in result.chunks:
        in_chunk = {e.event_id for e in chunk.events}
        for ev in chunk.events:
            outcome = (
                REJECTED if ev.rejected is not None else SOFT_FAILED if ev.soft_failed else ACCEPTED
            )
            own = [n for n in notes if n.event_id == ev.event_id]
            reason = ev.rejected
            if ev.soft_failed:
                reason = next((n.data["reason"] for n in own if n.kind == "soft_failed"), None)
            room.events[ev.event_id] = _EventRecord(ev.event_id, ev.pdu, outcome, reason, own, line)
            room.order.append(ev.event_id)
            chunk_events.append(ev.event_id)
        for row in chunk.current_state_set:
            key = (row.type, row.state_key)
            old = room.current.get(key)
            room.current[key] = row.event_id
            if row.event_id not in in_chunk:
                room.state_changes.append(
                    _state_change(key, old, row.event_id, chunk_events, notes)
                )
        for t, k in chunk.current_state_removed:
            old = room.current.pop((t, k), None)
            room.state_changes.append(_state_change((t, k), old, None, chunk_events, notes))


def _state_change(
    key: tuple[str, str],
    old: str | None,
    new: str | None,
    events: Sequence[str],
    notes: Sequence[Note],
) -> Json:
    """A current-state change that no event of its chunk made itself: a candidate state reset."""
    resolutions = [r for r in _resolutions(notes) if key in r["conflicted"]]
    change: Json = {
        "key": list(key),
        "from": old,
        "to": new,
        "kind": "removed" if new is None else "reverted",
        "after_event": events[-1] if events else None,
    }
    if resolutions:
        change["resolution"] = _conflict(resolutions[-1], key)
    return change


# ------------------------------------------------------------------ state resolution notes


def _resolutions(notes: Sequence[Note]) -> list[Json]:
    """The resolutions among ``notes``, each with its notes grouped."""
    found: list[Json] = []
    current: Json | None = None
    for note in notes:
        if note.kind == "resolution":
            current = {
                "conflicted": dict(note.data["conflicted"]),
                "algorithm": note.data.get("algorithm", "v2"),
                "room_version": note.data.get("room_version"),
                "state_sets": note.data["state_sets"],
                "checks": [],
                "power_order": [],
                "auth_edges": {},
                "mainline_order": [],
                "mainline": [],
                "resolved": {},
            }
            found.append(current)
        elif note.kind == "resolved_v1":
            found.append(
                {
                    "conflicted": dict(note.data["conflicted"]),
                    "algorithm": "v1",
                    "state_sets": note.data["state_sets"],
                    "resolved": dict(note.data["resolved"]),
                    "checks": [],
                }
            )
            current = None
        elif current is None:
            continue
        elif note.kind == "auth_check":
            current["checks"].append(note.data)
        elif note.kind == "power_order":
            current["power_order"] = note.data["order"]
            current["auth_edges"] = note.data["auth_edges"]
        elif note.kind == "mainline_order":
            current["mainline_order"] = note.data["order"]
            current["mainline"] = note.data["mainline"]
        elif note.kind == "resolved":
            current["resolved"] = dict(note.data["resolved"])
            current = None
    return found


def _resolution_json(resolution: Json) -> Json:
    keys = sorted(resolution["conflicted"])
    return {
        "algorithm": resolution["algorithm"],
        "state_sets": resolution["state_sets"],
        "conflicted": [_conflict(resolution, key) for key in keys],
    }


def _conflict(resolution: Json, key: tuple[str, str]) -> Json:
    """Which event won ``key`` and why, from the resolution's own steps."""
    candidates = sorted(resolution["conflicted"].get(key, ()))
    winner = resolution["resolved"].get(key)
    checks = [c for c in resolution["checks"] if tuple(c["key"]) == key]
    out: Json = {"key": list(key), "candidates": candidates, "winner": winner}
    if resolution["algorithm"] == "v1":
        out["why"] = "room version 1 ordering"
        out["failed"] = []
        out["detail"] = (
            "power levels, join rules and memberships: the candidates by ascending depth then "
            "descending sha1(event_id), each kept while the auth rules allow it; any other key: "
            "the highest depth and lowest sha1(event_id) that the auth rules allow"
        )
        return out
    failed = [c for c in checks if not c["admitted"]]
    rv_id = resolution.get("room_version")
    rv = room_version(rv_id) if isinstance(rv_id, str) else None
    out["failed"] = [
        {
            "event_id": c["event"],
            **explained_rule(c.get("rule", ""), rv),
            "reason": c.get("reason", ""),
            "auth_events": _key_map(c.get("auth_events", {})),
        }
        for c in failed
    ]
    checked = {c["event"] for c in checks}
    unchecked = [e for e in candidates if e not in checked]
    if unchecked:
        out["not_checked"] = unchecked
    admitted = [c for c in checks if c["admitted"]]
    if winner is None:
        out["why"] = "failed the iterative auth checks"
        out["detail"] = "no candidate passed the iterative auth checks; the key left the state"
        return out
    # The winner against the other candidates: events of the full conflicted set that no state
    # set holds (auth difference, v2.1's subgraph) may be applied to the key on the way, but
    # what a reader asks is why this candidate and not those.
    rivals = [c for c in admitted if c["event"] != winner and c["event"] in candidates]
    mine = [c for c in admitted if c["event"] == winner]
    if not mine:
        out["why"] = "unconflicted"
        out["detail"] = f"{winner} was not checked in this resolution"
        return out
    if not rivals and len(candidates) == 1:
        out["why"] = "only candidate"
        out["detail"] = (
            f"{winner} is the only candidate (the other state sets do not have the key) and "
            "passed the iterative auth checks"
        )
        return out
    if not rivals:
        out["why"] = "failed the iterative auth checks"
        out["detail"] = (
            f"{winner} was the only candidate the iterative auth checks admitted"
            if any(f["event"] in candidates for f in failed)
            else f"{winner} was the only candidate checked"
        )
        return out
    rival = rivals[-1]
    why, detail = _ordering(resolution, rival, mine[-1])
    out["why"], out["detail"], out["overtook"] = why, detail, rival["event"]
    return out


def _ordering(resolution: Json, rival: Json, win: Json) -> tuple[str, str]:
    """Why ``win`` was applied after ``rival`` (both admitted): the ordering that decided."""
    r, w = rival["event"], win["event"]
    if rival["step"] == "power" and win["step"] == "mainline":
        return (
            "mainline position",
            f"{w} is not a power event: it was applied in the mainline step, after the power "
            f"event {r}",
        )
    if win["step"] == "power":
        order = {e: (p, ts) for e, p, ts in resolution["power_order"]}
        (pr, tr), (pw, tw) = order[r], order[w]
        if _in_auth_chain(resolution["auth_edges"], r, w):
            return ("auth chain order", f"{r} is in the auth chain of {w}, so sorts before it")
        if pr != pw:
            return (
                "power ordering",
                f"{r}'s sender has power level {_level(pr)} and {w}'s {_level(pw)}: the higher "
                "sorts first, and the event applied last wins",
            )
        if tr != tw:
            return (
                "origin_server_ts tie-break",
                f"equal power ({_level(pw)}): {r} has origin_server_ts {tr}, {w} {tw}; the later "
                "is applied last",
            )
        return ("event_id tie-break", f"equal power and origin_server_ts: {r} < {w} by event ID")
    order = {e: (pos, ts) for e, pos, ts in resolution["mainline_order"]}
    (pr, tr), (pw, tw) = order[r], order[w]
    if pr != pw:
        return (
            "mainline position",
            f"{w} cites power levels at mainline depth {pw}, {r} at depth {pr} (0: none on the "
            f"mainline); the deeper is applied last",
        )
    if tr != tw:
        return (
            "origin_server_ts tie-break",
            f"same mainline position: {r} has origin_server_ts {tr}, {w} {tw}; the later is "
            "applied last",
        )
    return ("event_id tie-break", f"same mainline position and origin_server_ts: {r} < {w}")


def _in_auth_chain(edges: Mapping[str, Sequence[str]], ancestor: str, of: str) -> bool:
    seen: set[str] = set()
    todo = list(edges.get(of, ()))
    while todo:
        e = todo.pop()
        if e == ancestor:
            return True
        if e not in seen:
            seen.add(e)
            todo.extend(edges.get(e, ()))
    return False


def _level(value: float) -> str:
    return "infinite (room creator)" if value == float("inf") else str(int(value))


def _key_map(m: Mapping[Any, str]) -> dict[str, str]:
    return {(f"{k[0]}|{k[1]}" if isinstance(k, tuple) else str(k)): v for k, v in sorted(m.items())}


# ------------------------------------------------------------------ one event


def _event_json(room: _RoomRecord, event_id: str) -> Json:
    proc = room.processor
    rv = proc.room_version
    record = room.events.get(event_id)
    if record is None:
        for p in proc.parked():
            if p.event_id == event_id:
                return {
                    "event_id": event_id,
                    "room_id": room.room_id,
                    "outcome": PARKED,
                    "waits_for": sorted(p.missing),
                    "reason": f"waits for {sorted(p.missing)}, not received yet",
                }
        for d in room.dead_letters:
            if d.get("event_id") == event_id:
                return {
                    "event_id": event_id,
                    "room_id": room.room_id,
                    "outcome": DEAD_LETTERED,
                    "reason": d["reason"],
                    "line": d["line"],
                }
        return {"event_id": event_id, "outcome": "unknown", "reason": "no input held this event"}
    pdu = record.pdu
    out: Json = {
        "event_id": event_id,
        "room_id": room.room_id,
        "room_version": rv.identifier if rv else None,
        "type": pdu.get("type"),
        "state_key": pdu.get("state_key"),
        "sender": pdu.get("sender"),
        "outcome": record.outcome,
    }
    decided = {n.kind: n for n in record.notes if n.kind in ("rejected", "soft_failed")}
    if record.outcome == REJECTED:
        note = decided.get("rejected")
        rule = note.data["rule"] if note is not None else ""
        out.update(
            **explained_rule(rule, rv),
            check=note.data["check"] if note is not None else "receipt",
            reason=record.reason,
            auth_events=note.data["auth_events"] if note is not None else {},
        )
    elif record.outcome == SOFT_FAILED:
        note = decided.get("soft_failed")
        if note is not None:
            out.update(
                **explained_rule(note.data["rule"], rv),
                check="current state",
                reason=note.data["reason"],
                auth_events=note.data["auth_events"],
                forward_extremities=note.data["extremities"],
            )
    out["state_before"] = _state_before(record, pdu)
    return out


def _state_before(record: _EventRecord, pdu: Mapping[str, Any]) -> Json:
    notes = record.notes
    at = next((i for i, n in enumerate(notes) if n.kind == "state_before"), None)
    prevs = [p for p in pdu.get("prev_events", ()) if isinstance(p, str)] or [
        p[0] for p in pdu.get("prev_events", ()) if isinstance(p, list) and p
    ]
    if at is None:
        return {"from": "none (a create event has no state before it)", "prev_events": prevs}
    before = notes[at].data
    out: Json = {
        "group": before["group"],
        "prev_events": prevs,
        "state": [[t, k, e] for (t, k), e in sorted(before["state"].items())],
    }
    resolutions = _resolutions(notes[:at])
    if resolutions:
        out["from"] = "state resolution over the states after its prev events"
        out["resolution"] = _resolution_json(resolutions[-1])
    elif len(prevs) > 1:
        out["from"] = "its prev events have one state"
    elif prevs:
        out["from"] = f"the state after its prev event {prevs[0]}"
    else:
        out["from"] = "none"
    after = _resolutions(notes[at + 1 :])
    if after:
        out["current_state_resolution"] = _resolution_json(after[-1])
    return out


# ------------------------------------------------------------------ one room


def _room_json(room: _RoomRecord) -> Json:
    proc = room.processor
    outcomes = {e: r.outcome for e, r in room.events.items()}
    counts: dict[str, int] = {}
    for o in outcomes.values():
        counts[o] = counts.get(o, 0) + 1
    if proc.parked():
        counts[PARKED] = len(proc.parked())
    if room.dead_letters:
        counts[DEAD_LETTERED] = len(room.dead_letters)
    cited: dict[str, list[str]] = {}
    for e in room.order:
        for p in _prevs(room.events[e].pdu):
            cited.setdefault(p, []).append(e)
    extremities: list[Json] = []
    for e in sorted(proc.forward_extremities):
        record = room.events[e]
        built_on = cited.get(e, [])
        extremities.append(
            {
                "event_id": e,
                "type": record.pdu.get("type"),
                "sender": record.pdu.get("sender"),
                "prev_events": _prevs(record.pdu),
                "walked": [
                    p for p in _prevs(record.pdu) if outcomes.get(p) in (REJECTED, SOFT_FAILED)
                ],
                "built_on_by": [{"event_id": c, "outcome": outcomes[c]} for c in built_on],
                "why": (
                    "no accepted event has it among its prev events"
                    + (
                        "; the events that do were "
                        + ", ".join(f"{outcomes[c]} ({c})" for c in built_on)
                        if built_on
                        else ""
                    )
                ),
            }
        )
    return {
        "room_id": room.room_id,
        "room_version": proc.room_version.identifier if proc.room_version else None,
        "events": dict(sorted(counts.items())),
        "forward_extremities": extremities,
        "state_resets": room.state_changes,
        "not_accepted": [
            {"event_id": e, "outcome": outcomes[e], "reason": room.events[e].reason}
            for e in room.order
            if outcomes[e] != ACCEPTED
        ],
        "parked": [{"event_id": p.event_id, "waits_for": sorted(p.missing)} for p in proc.parked()],
        "dead_lettered": room.dead_letters,
    }


def _prevs(pdu: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for p in pdu.get("prev_events", ()):
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, list) and p and isinstance(p[0], str):
            out.append(p[0])
    return out


# ------------------------------------------------------------------ for people


def render_event(ex: Json) -> str:
    lines = [f"{ex['event_id']}: {ex['outcome']}"]
    if ex.get("type"):
        sk = ex.get("state_key")
        lines.append(
            f"├─ {ex['type']}"
            + (f" [{sk!r}]" if sk is not None else "")
            + f" from {ex.get('sender')} in {ex.get('room_id')}"
            + f" (room version {ex.get('room_version')})"
        )
    if ex.get("rule") is not None or ex["outcome"] in (REJECTED, SOFT_FAILED):
        rule = ex.get("rule") or "(no numbered rule)"
        name = f" ({ex['rule_name']})" if ex.get("rule_name") else ""
        lines.append(f"├─ rule {rule}{name} — {ex.get('reason')}")
        lines.append(f"│  checked against: {ex.get('check')}")
        for k, e in (ex.get("auth_events") or {}).items():
            etype, _, skey = k.partition("|")
            lines.append(f"│  · {etype}" + (f" {skey}" if skey else "") + f": {e}")
    elif ex.get("reason"):
        lines.append(f"├─ {ex['reason']}")
    sb = ex.get("state_before")
    if sb:
        lines.append(f"└─ state before: {sb.get('from')}")
        if "resolution" in sb:
            lines.extend(_render_resolution(sb["resolution"], "   "))
        if "current_state_resolution" in sb:
            lines.append("   current state moved by a resolution:")
            lines.extend(_render_resolution(sb["current_state_resolution"], "   "))
    return "\n".join(lines)


def _render_resolution(res: Json, pad: str) -> list[str]:
    lines = [f"{pad}resolution {res['algorithm']} over {res['state_sets']} states"]
    for c in res["conflicted"]:
        t, k = c["key"]
        lines.append(f"{pad}├─ {t} [{k!r}]: {c.get('winner') or 'none'} — {c.get('why')}")
        if c.get("detail"):
            lines.append(f"{pad}│  {c['detail']}")
        for f in c.get("failed", ()):
            name = f" ({f['rule_name']})" if f.get("rule_name") else ""
            lines.append(f"{pad}│  ✗ {f['event_id']}: rule {f['rule']}{name} — {f['reason']}")
    return lines


def render_room(ex: Json) -> str:
    lines = [f"{ex['room_id']} (room version {ex.get('room_version')})"]
    lines.append("├─ events: " + ", ".join(f"{n} {k}" for k, n in ex.get("events", {}).items()))
    fx = ex.get("forward_extremities", [])
    lines.append(f"├─ forward extremities: {len(fx)}")
    for f in fx:
        lines.append(f"│  ├─ {f['event_id']} ({f['type']} from {f['sender']})")
        lines.append(f"│  │  {f['why']}")
        if f["walked"]:
            lines.append(f"│  │  its prev events walked past: {', '.join(f['walked'])}")
    resets = ex.get("state_resets", [])
    lines.append(
        f"├─ current-state changes no event made itself (candidate state resets): {len(resets)}"
    )
    for r in resets:
        t, k = r["key"]
        lines.append(
            f"│  ├─ {t} [{k!r}] {r['kind']}: {r['from']} → {r['to']} (after {r['after_event']})"
        )
        res = r.get("resolution")
        if res:
            lines.append(f"│  │  {res.get('why')}: {res.get('detail')}")
    na = ex.get("not_accepted", [])
    lines.append(f"└─ not accepted: {len(na)}")
    for n in na:
        lines.append(f"   ├─ {n['event_id']}: {n['outcome']} — {n['reason'] or ''}")
    for p in ex.get("parked", []):
        lines.append(f"   ├─ {p['event_id']}: parked, waits for {', '.join(p['waits_for'])}")
    for d in ex.get("dead_lettered", []):
        lines.append(
            f"   ├─ {d.get('event_id') or 'line ' + str(d['line'])}: dead-lettered — {d['reason']}"
        )
    return "\n".join(lines)


__all__ = ["Explained", "explain", "explain_resolutions", "render_event", "render_room"]


def explain_resolutions(notes: Sequence[Note]) -> list[Json]:
    """Every state resolution among ``notes`` (a ``Recorder``'s): its conflicted keys, and
    for each the winner and why."""
    return [_resolution_json(r) for r in _resolutions(notes)]
