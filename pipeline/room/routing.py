"""Which room an input PDU belongs to, so the shell can route it to the room's one owner.

Room version 12 create events carry no room_id: the room ID is derived from the event itself
("!" + its reference hash); ``peek_room_id`` of the Matrix core does that derivation.
"""

from __future__ import annotations

from pipeline.matrix.pdu import peek_room_id
from pipeline.room.parking import RawInput


def room_id_of(raw: RawInput) -> str | None:
    """The room ID of ``raw``; None when it names none and is not a create event that founds one.

    Never raises: input that cannot be routed goes to the dead-letter topic with a reason.
    """
    return peek_room_id(raw)
