"""Decision records: what the deciding code notes about a decision while it makes it.

The auth rules' callers, state resolution and the room processor take an optional
``Recorder``. When one is given they append a ``Note`` at each step that decides something
(the conflicted keys of a resolution, each iterative auth check, the power and mainline
orderings, a rejection with its rule); when none is (the hot path) every hook is one
``is not None`` test and nothing is built. The records are therefore the decisions
themselves, never a second implementation that could tell another story.

Rule numbers: ``EventRejected.rule`` numbers the authorization rules as room version 12 does
(the numbering the code's comments quote); ``spec_rule`` turns that into the number the
event's own room version gives the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.room_versions import RoomVersion


@dataclass(frozen=True, slots=True)
class Note:
    """One step of a decision. ``event_id`` is the event being decided when it was noted
    (None outside one, e.g. the current state moving); ``data`` is JSON-friendly."""

    kind: str
    event_id: str | None
    data: dict[str, Any]


@dataclass(slots=True)
class Recorder:
    """Collects notes in the order the decisions were made."""

    notes: list[Note] = field(default_factory=list)
    current: str | None = None

    def begin(self, event_id: str | None) -> None:
        """Notes from now on are about deciding ``event_id`` (None: about no one event)."""
        self.current = event_id

    def note(self, kind: str, **data: Any) -> None:
        self.notes.append(Note(kind, self.current, data))


def spec_rule(rule: str, room_version: RoomVersion) -> str:
    """``rule`` (room version 12's numbering, as ``EventRejected.rule`` gives it) in the
    numbering of ``room_version``'s authorization rules.

    v12 added rule 2 (the room ID is the create event's hash) and v6 dropped the
    ``m.room.aliases`` rule 4 of v1–v5: so v1–v5 number rules 3 and 4 one less and the rest
    the same, v6–v11 number everything after rule 2 one less. Rules without a number in v12
    keep a name: ``aliases.N`` is v1–v5's 4.N, ``redaction`` is v1–v2's rule 11.
    """
    if not rule:
        return rule
    if rule.startswith("aliases."):
        return "4." + rule.removeprefix("aliases.")
    if rule == "redaction":
        return "11"
    if room_version.room_id_is_create_event_hash:
        return rule
    top, dot, rest = rule.partition(".")
    if not top.isdigit():
        return rule
    number = int(top)
    if number >= 3 and (number <= 4 or not room_version.special_case_aliases_auth):
        number -= 1
    return f"{number}{dot}{rest}"
