"""The Matrix authorization rules of room versions 1–12.

Public API:

- ``auth_types_for_event(event, room_version=None)``: the (type, state_key) pairs the rules
  read for an event (as ``room_version`` selects them, default the event's).
- ``auth_event_selection(event)``: what an event's ``auth_events`` may hold.
- ``check_auth_rules(event, auth_state)``: reject (EventRejected) or allow against a state.
- ``check_auth_events(event, fetch_event, is_rejected=...)``: the checks of an event's own
  auth events, then the rules against them.
- ``is_power_event(event)``: state resolution v2's power events.
- ``check_create_event(event)``: rule 1 alone; ``power_levels_content_problem(content, rv)``:
  why power levels content is malformed for a room version (for event creation paths).

Signature checks are seams (``ThirdPartySignatureCheck``, ``ServerSignatureCheck``): the
defaults accept a third-party invite's ``signed`` block when it carries signatures, and a
restricted join when the authorising user's server has signed it.

Modules: ``selection`` (which state is read), ``rules`` (the rule chain), ``membership``
(m.room.member), ``power_levels_rules`` (m.room.power_levels), ``auth_events`` (checks on an
event's own auth events), ``context`` and ``identifiers`` (helpers).

Power level arithmetic lives in ``pipeline.matrix.power_levels``.
"""

from pipeline.matrix.auth.auth_events import check_auth_events
from pipeline.matrix.auth.context import (
    ServerSignatureCheck,
    ThirdPartySignatureCheck,
    signature_checked_on_receipt,
)
from pipeline.matrix.auth.power_levels_rules import power_levels_content_problem
from pipeline.matrix.auth.rules import check_auth_rules, check_create_event
from pipeline.matrix.auth.selection import (
    auth_event_selection,
    auth_types_for_event,
    is_power_event,
)

__all__ = [
    "ServerSignatureCheck",
    "ThirdPartySignatureCheck",
    "auth_event_selection",
    "auth_types_for_event",
    "check_auth_events",
    "check_auth_rules",
    "check_create_event",
    "is_power_event",
    "power_levels_content_problem",
    "signature_checked_on_receipt",
]
