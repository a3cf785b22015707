"""Parked events of idle rooms, expired on a timer.

A room's parked events are also expired whenever it processes an input; this timer covers the
rooms that see none. Only rooms whose processor is in memory are looked at (a room with parked
events is never evicted from it), and only while the room is idle: the room is claimed from the
scheduler for the time it takes, and inputs arriving meanwhile wait for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import metrics
from pipeline.room import storage
from pipeline.worker import dead_letters
from topics import missing_events
from topics.definitions import Topic

if TYPE_CHECKING:
    from pipeline.worker.app import Worker

__all__ = ["INTERVAL_S", "expire_idle_rooms"]

INTERVAL_S = 5.0


async def expire_idle_rooms(worker: Worker, now: int) -> None:
    """Dead-letter the parked events due at ``now`` (ms) in idle rooms, and store the rooms."""
    for room_id, proc in list(worker.states.cache.items()):
        if not worker.scheduler.holds(room_id):
            proc.compact()  # idle: drop what only speeds up its next inputs
            worker.states.measure(room_id)
        if not proc.parked():
            continue
        ttl = proc.config.parking.ttl_ms
        if not any(p.parked_at + ttl <= now for p in proc.parked()):
            continue
        if not worker.scheduler.claim(room_id):
            continue
        try:
            await _expire_room(worker, room_id, now)
        finally:
            following = worker.scheduler.release(room_id)
            if following is not None:
                worker._submit(following)


async def _expire_room(worker: Worker, room_id: str, now: int) -> None:
    proc = worker.states.cache[room_id]
    result = proc.expire(now)
    topic = worker.settings.topic(Topic.PDUS)
    letters = [
        await worker.sender.send(
            worker.dead_letter_topic, room_id.encode(), dead_letters.refused(room_id, dl, topic)
        )
        for dl in result.dead_letters
    ]
    # Requests for what the expired events waited for are closed ("expired").
    letters += [
        await worker.sender.send(
            worker.missing_topic, room_id.encode(), missing_events.encode_request(request)
        )
        for request in result.missing_requests
    ]
    await worker.sender.delivered(letters, f"room {room_id}'s expired parked events")
    metrics.DEAD_LETTERED.inc(len(result.dead_letters))
    partition = worker.owners(room_id)
    writes = storage.save(proc, worker.states.stored(room_id))
    changelog = worker._changelog_topic()
    sent = [await worker.sender.send(changelog, k, v, partition) for k, v in writes]
    await worker.sender.delivered(sent, f"room {room_id}'s stored state")
    worker.states.put(writes, partition)
    worker.states.keep(room_id, proc)
    metrics.PARKED.set(worker.budget.used)
