"""The authorization rules for ``m.room.power_levels`` events (rule 10 in v1–v5 and v12's
numbering, rule 9 in v6–v11): the shape of the content, and which changes the sender may make.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.matrix.auth.context import AuthContext
from pipeline.matrix.auth.identifiers import is_valid_user_id
from pipeline.matrix.auth.selection import POWER_LEVELS_KEY
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.power_levels import NAMED_LEVEL_DEFAULTS, parse_level
from pipeline.matrix.room_versions import RoomVersion


def power_levels_content_problem(
    content: Mapping[str, Any], room_version: RoomVersion
) -> str | None:
    """Why ``content`` is not valid power levels content for the room version, or None.

    v10+ 10.1: the named levels are integers. 10.2: ``events`` and ``notifications`` are objects
    of integers. 10.3 (all versions): ``users`` is an object of valid user IDs to integers
    (v1–v9: or strings of integers). Before v10 the spec only shapes ``users``, but a level the
    version cannot read at all (``"ban": "high"``) is rejected too, as peer implementations do,
    rather than guessed at.
    """
    for name in NAMED_LEVEL_DEFAULTS:
        if name in content and parse_level(content[name], room_version) is None:
            return f"power levels {name!r} is not an integer: {content[name]!r}"
    objects = ["events", "users"]
    if room_version.limit_notifications_power_levels:
        objects.append("notifications")
    for name in objects:
        if name not in content:
            continue
        value = content[name]
        if not isinstance(value, Mapping):
            return f"power levels {name!r} is not an object: {value!r}"
        for key, raw in value.items():
            if name == "users" and not is_valid_user_id(key):
                return f"power levels users key {key!r} is not a valid user ID"
            if parse_level(raw, room_version) is None:
                return f"power levels {name}[{key!r}] is not an integer: {raw!r}"
    return None


def check_power_levels_event(ctx: AuthContext) -> None:
    event = ctx.event
    rv = event.room_version
    # 10.1–10.3: the content's shape.
    problem = power_levels_content_problem(event.content, rv)
    if problem is not None:
        raise EventRejected(f"{event.event_id}: {problem}", rule=_shape_rule(problem))
    new_users = _levels(event.content.get("users"), rv)
    # v12+ 10.4. If the users property in content contains the sender of the m.room.create
    # event or any of the additional_creators, reject.
    if rv.privileged_creators:
        listed = sorted(ctx.creators & set(new_users))
        if listed:
            raise EventRejected(
                f"{event.event_id}: room creators {listed} cannot be given a power level in users",
                rule="10.4",
            )
    # 10.5. If there is no previous m.room.power_levels event in the room, allow.
    previous = ctx.state.get(POWER_LEVELS_KEY)
    if previous is None:
        return
    old, new = previous.content, event.content
    sender_level = ctx.level(event.sender)

    def reject(what: str, value: int, relation: str, rule: str) -> EventRejected:
        return EventRejected(
            f"{event.sender} (power level {sender_level}) cannot change {what}: {relation} "
            f"value {value} is too high",
            rule=rule,
        )

    # 10.6. For users_default, events_default, state_default, ban, redact, kick and invite,
    # for each one added, changed or removed: reject if the current value or the new value is
    # higher than the sender's current power level.
    for name in NAMED_LEVEL_DEFAULTS:
        before, after = _level(old.get(name), rv), _level(new.get(name), rv)
        if before == after:
            continue
        if before is not None and before > sender_level:
            raise reject(name, before, "current", "10.6")
        if after is not None and after > sender_level:
            raise reject(name, after, "new", "10.6")
    # 10.7/10.8. For each entry changed in or removed from events (v6+: and notifications),
    # reject if the current value is greater than the sender's level; for each entry added or
    # changed, reject if the new value is greater.
    maps = ["events"]
    if rv.limit_notifications_power_levels:
        maps.append("notifications")
    for name in maps:
        before_map, after_map = _levels(old.get(name), rv), _levels(new.get(name), rv)
        for key in sorted(before_map.keys() | after_map.keys()):
            before, after = before_map.get(key), after_map.get(key)
            if before == after:
                continue
            if before is not None and before > sender_level:
                raise reject(f"{name}[{key!r}]", before, "current", "10.7")
            if after is not None and after > sender_level:
                raise reject(f"{name}[{key!r}]", after, "new", "10.8")
    # 10.9. For each entry changed in or removed from users, other than the sender's own:
    # reject if the current value is greater than or equal to the sender's level.
    # 10.10. For each entry added to or changed in users: reject if the new value is greater.
    old_users = _levels(old.get("users"), rv)
    for user in sorted(old_users.keys() | new_users.keys()):
        before, after = old_users.get(user), new_users.get(user)
        if before == after:
            continue
        if before is not None and user != event.sender and before >= sender_level:
            raise EventRejected(
                f"{event.sender} (power level {sender_level}) cannot change the power level of "
                f"{user}: current value {before} is not below the sender's",
                rule="10.9",
            )
        if after is not None and after > sender_level:
            raise reject(f"users[{user!r}]", after, "new", "10.10")
    # 10.11. Otherwise, allow.


def _shape_rule(problem: str) -> str:
    """The rule of a content shape problem: 10.1 the named levels, 10.2 the events and
    notifications objects, 10.3 the users object."""
    if problem.startswith(("power levels users", "power levels 'users'")):
        return "10.3"
    if problem.startswith(("power levels events", "power levels 'events'")) or (
        problem.startswith(("power levels notifications", "power levels 'notifications'"))
    ):
        return "10.2"
    return "10.1"


def _level(value: object, rv: RoomVersion) -> int | None:
    return parse_level(value, rv) if value is not None else None


def _levels(value: object, rv: RoomVersion) -> dict[str, int]:
    """An object of levels; entries that cannot be read are left out (the previous event was
    accepted already, and the new one has passed the shape rules)."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, raw in value.items():
        level = parse_level(raw, rv)
        if level is not None:
            out[key] = level
    return out
