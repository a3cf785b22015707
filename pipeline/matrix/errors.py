"""The errors of the Matrix core.

    RoomstreamError                       (root of every error Roomstream raises; pipeline.errors)
    └── MatrixError
        ├── InvalidPdu(ValueError)        the bytes are not a valid PDU for the room version
        │   └── EventIdMismatch           the event ID does not follow the room version's rule
        ├── UnknownRoomVersion(ValueError)
        ├── EventRejected                 the event fails the authorization rules (a normal result)
        └── MissingEvents(LookupError)    an event needed to decide is not known (park and retry)

A rejection is a result to record, with its reason; it is never raised for an I/O failure.
"""

from __future__ import annotations


class RoomstreamError(Exception):
    """Root of every error Roomstream raises on purpose."""


class MatrixError(RoomstreamError):
    pass


class InvalidPdu(MatrixError, ValueError):
    """A PDU that cannot be accepted. ``field`` names the offending field (dotted path) or ''."""

    def __init__(self, reason: str, field: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"invalid PDU: {reason}" + (f" (field {field!r})" if field else ""))


class EventIdMismatch(InvalidPdu):
    pass


class UnknownRoomVersion(MatrixError, ValueError):
    def __init__(self, identifier: object) -> None:
        self.identifier = identifier
        super().__init__(
            f"unknown room version {identifier!r}: Roomstream supports room versions 1 to 12; "
            "events of this room cannot be processed"
        )


class EventRejected(MatrixError):
    """The event is not allowed by the authorization rules. ``reason`` says why, with the
    values compared; ``rule`` is the rule that decided, numbered as room version 12's
    authorization rules number it (``pipeline.matrix.explain.spec_rule`` gives the event's own
    room version's number), or '' for a check outside the numbered rules."""

    def __init__(self, reason: str, rule: str = "") -> None:
        self.reason = reason
        self.rule = rule
        super().__init__(reason)


class MissingEvents(MatrixError, LookupError):
    """Events needed to decide are not known yet. ``event_ids`` lists them."""

    def __init__(self, event_ids: set[str] | frozenset[str], why: str = "") -> None:
        self.event_ids = frozenset(event_ids)
        super().__init__(f"missing events {sorted(self.event_ids)}" + (f": {why}" if why else ""))
