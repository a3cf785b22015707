"""``check_auth_events``: the rules on an event's ``auth_events`` (v12 rule 3, v1–v11 rule 2),
then the authorization rules against those auth events.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.matrix.auth.context import (
    ServerSignatureCheck,
    ThirdPartySignatureCheck,
    accept_third_party_signature,
    has_server_signature,
)
from pipeline.matrix.auth.rules import check_auth_rules
from pipeline.matrix.auth.selection import CREATE, CREATE_KEY, auth_event_selection
from pipeline.matrix.errors import EventRejected, MissingEvents
from pipeline.matrix.events import Event, EventFetcher, StateKey
from pipeline.matrix.power_levels import create_event_id_for_room


def _never_rejected(event_id: str, /) -> bool:
    return False


def check_auth_events(
    event: Event,
    fetch_event: EventFetcher,
    *,
    is_rejected: Callable[[str], bool] = _never_rejected,
    third_party_signature_ok: ThirdPartySignatureCheck = accept_third_party_signature,
    server_signature_ok: ServerSignatureCheck = has_server_signature,
) -> None:
    """Check ``event`` against its own ``auth_events``.

    Fetches every auth event (MissingEvents naming all unknown ones), rejects when the auth
    events break the rules on them, then applies ``check_auth_rules`` with the auth events as
    the state. ``is_rejected(event_id)`` says whether a known event was rejected. In v12+ the
    create event is the one the room ID names (fetched too, and it must not be rejected).
    """
    rv = event.room_version
    # 1. A create event's auth_events are not considered: its own rules decide.
    if event.type == CREATE:
        check_auth_rules(event, {})
        return

    ids = list(event.auth_event_ids)
    implied_create_id: str | None = None
    if rv.room_id_is_create_event_hash:
        implied_create_id = create_event_id_for_room(event.room_id)
    fetched: dict[str, Event] = {}
    missing: set[str] = set()
    for eid in [*ids, *([implied_create_id] if implied_create_id else [])]:
        if eid in fetched or eid in missing:
            continue
        found = fetch_event(eid)
        if found is None:
            missing.add(eid)
        else:
            fetched[eid] = found
    if missing:
        raise MissingEvents(missing, f"auth events of {event.event_id}")

    create_event: Event | None = None
    if implied_create_id is not None:
        # v12+ 2. If the event's room_id is not an event ID for an accepted (not rejected)
        # m.room.create event, with the sigil ! instead of $, reject.
        create_event = fetched[implied_create_id]
        if create_event.type != CREATE or create_event.state_key != "":
            raise EventRejected(
                f"{event.event_id}: room ID {event.room_id} does not name an m.room.create event",
                rule="2",
            )
        if is_rejected(implied_create_id):
            raise EventRejected(
                f"{event.event_id}: the room's create event {implied_create_id} was rejected",
                rule="2",
            )

    expected = auth_event_selection(event)
    by_key: dict[StateKey, Event] = {}
    for eid in ids:
        auth_event = fetched[eid]
        # 3.5. If any event in auth_events has a room_id which does not match that of the event
        # being authorised, reject. Checked first for each entry, before the other rules on it,
        # as Synapse does (``check_state_independent_auth_rules``), so the reason names the
        # foreign room whatever else is wrong with the entry.
        if auth_event.room_id != event.room_id:
            raise EventRejected(
                f"{event.event_id} in room {event.room_id} has an auth event "
                f"{auth_event.event_id} from room {auth_event.room_id}",
                rule="3.5",
            )
        key = (auth_event.type, auth_event.state_key)
        if auth_event.state_key is None:
            raise EventRejected(f"{event.event_id} has a non-state auth event {eid}", rule="3.2")
        state_key = (auth_event.type, auth_event.state_key)
        # 3.1. If there are duplicate entries for a given type and state_key pair, reject.
        if state_key in by_key:
            raise EventRejected(
                f"{event.event_id} has two auth events for {key}: "
                f"{by_key[state_key].event_id} and {eid}",
                rule="3.1",
            )
        # 3.2. If there are entries whose type and state_key don't match those specified by
        # the auth events selection algorithm, reject. (v12+: m.room.create MUST NOT be
        # selected.)
        if state_key not in expected:
            raise EventRejected(
                f"{event.event_id} has an auth event {eid} for {key} it does not need", rule="3.2"
            )
        # 3.3. If there are entries which were themselves rejected, reject.
        if is_rejected(eid):
            raise EventRejected(f"{event.event_id} has a rejected auth event {eid}", rule="3.3")
        by_key[state_key] = auth_event
    # v1–v11 2.4. If there is no m.room.create event among the entries, reject.
    if not rv.room_id_is_create_event_hash and CREATE_KEY not in by_key:
        raise EventRejected(
            f"{event.event_id} has no m.room.create among its auth events", rule="3.4"
        )
    check_auth_rules(
        event,
        by_key,
        create_event=create_event,
        third_party_signature_ok=third_party_signature_ok,
        server_signature_ok=server_signature_ok,
    )
