"""The parsed power levels cache is shared by the room processors' threads."""

from __future__ import annotations

import sys
import threading

from pipeline.matrix.events import Event
from pipeline.matrix.power_levels import PowerLevels
from pipeline.matrix.room_versions import room_version


def test_parsing_power_levels_from_many_threads_at_once_never_fails() -> None:
    rv = room_version("10")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                event = Event.from_trusted(
                    {
                        "type": "m.room.power_levels",
                        "state_key": "",
                        "sender": "@a:example.org",
                        "room_id": "!r:example.org",
                        "content": {"users": {"@a:example.org": 100}, "ban": i % 100},
                    },
                    rv,
                    f"$pl{n}-{i}",
                )
                assert PowerLevels.from_event(event, rv).exists
        except BaseException as e:  # collected for the main thread's assertion
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
