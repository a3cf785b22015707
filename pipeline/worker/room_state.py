"""Rooms' processing state: the changelogged ``rooms`` table and the processors kept in memory.

The table holds each room's state as a record and append-only segments
(``pipeline.room.storage``). Room jobs run outside faust's stream iteration, where the table
cannot tell a key's partition, so the worker writes the table's local store directly (this
module) and the changelog records itself (``emit``). Both the in-memory store and RocksDB
(``ROOMSTREAM_WORKER_STORE``) are written the same way; RocksDB also learns the changelog
offset written, so a restart restores only what came after it. They are read the same way too,
from the database of the room's own partition: faust's RocksDB store reads a key from the
database of the partition of the input being taken, when there is one, so a room whose job
started while another room's input was taken (a holding ended, a slot freed) was read from the
wrong partition and found nothing: the room was rebuilt from PostgreSQL, or, once checked since
the assignment and out of the cache, processed as if it were new.

A room's processor is kept deserialised while it is in use or recently used; a room outside the
cache is rebuilt from its stored state. The cache is bounded by bytes
(``ROOMSTREAM_WORKER_ROOM_CACHE_MB``, each processor's own estimate of its memory:
``RoomProcessor.footprint``) and by ``PROCESSOR_CACHE`` rooms: a count alone would let a
worker whose rooms are large (a processor of a 20,000-member room holds about 30 MB) grow to
tens of gigabytes. Rooms in use and rooms with parked events stay whatever the bound, and so
does the room used last, so a room larger than the whole budget is not rebuilt at every job.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from faust.types import TP

from pipeline import metrics
from pipeline.room import storage
from pipeline.room.processor import RoomProcessor

__all__ = ["PROCESSOR_CACHE", "PROCESSOR_CACHE_BYTES", "RoomStates"]

log = logging.getLogger("roomstream.worker")

PROCESSOR_CACHE = 1000
PROCESSOR_CACHE_BYTES = 256 * 1024 * 1024


class RoomStates:
    """The table's local store (``data``) and the processor cache."""

    def __init__(
        self,
        data: Any,
        *,
        in_use: Callable[[str], bool],
        owner: Callable[[str], int],
        cache_size: int = PROCESSOR_CACHE,
        cache_bytes: int = PROCESSOR_CACHE_BYTES,
    ) -> None:
        self.data = data
        # RocksDB: one database per partition, read and written by the room's own partition.
        self._db_for: Callable[[int], Any] | None = getattr(data, "_db_for_partition", None)
        self.in_use = in_use
        self.owner = owner
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.cache: OrderedDict[str, RoomProcessor] = OrderedDict()
        self._sizes: dict[str, int] = {}  # each cached processor's footprint when last measured
        self._too_large: set[str] = set()  # rooms said to be larger than the whole cache
        self.cached_bytes = 0

    def stored(self, room_id: str) -> bytes | None:
        return self._get(storage.record_key(room_id), self.owner(room_id))

    def processor(
        self, room_id: str
    ) -> tuple[RoomProcessor | None, bytes | None, dict[bytes, bytes | None]]:
        """The room's cached processor (always the stored state's or ahead of it: every write
        goes through here, and the cache is dropped when partitions move); else None with the
        stored record and its segments, to rebuild it from (read here, on the loop: processing
        threads do not touch the table)."""
        stored = self.stored(room_id)
        cached = self.cache.get(room_id)
        if cached is not None:
            self.cache.move_to_end(room_id)
            return cached, stored, {}
        if stored is None:
            return None, None, {}
        keys = storage.segment_keys(room_id, stored)
        partition = self.owner(room_id)
        return None, stored, {k: self._get(k, partition) for k in keys}

    def _get(self, key: bytes, partition: int) -> bytes | None:
        # RocksDB: the room's own partition's database, whatever input is being taken.
        db_for = self._db_for
        value = self.data.get(key) if db_for is None else db_for(partition).get(key)
        return None if value is None else bytes(value)

    def put(self, writes: list[tuple[bytes, bytes]], partition: int) -> None:
        """Write to the local store (the changelog records are sent apart)."""
        db_for = self._db_for
        for key, value in writes:
            if db_for is None:
                self.data[key] = value
            else:  # RocksDB: one database per partition, as faust's own writes do
                db_for(partition).put(key, value)
                self.data._key_index[key] = partition

    def persisted(self, changelog: str, partition: int, offset: int) -> None:
        """The changelog holds our writes up to ``offset``: a restart restores from there."""
        self.data.set_persisted_offset(TP(changelog, partition), offset)

    def keep(self, room_id: str, proc: RoomProcessor) -> None:
        """Cache ``proc`` as the room's (ahead of its stored state, or equal to it)."""
        self.cache[room_id] = proc
        self.cache.move_to_end(room_id)
        self.measure(room_id)
        if len(self.cache) <= self.cache_size and self.cached_bytes <= self.cache_bytes:
            return
        # Least recently used first; rooms in use (inputs queued, in a job, not stored yet),
        # rooms with parked events (the expiry reads them here) and the room just kept stay.
        count, size = len(self.cache), self.cached_bytes
        victims = []
        for rid, p in self.cache.items():
            if count <= self.cache_size and size <= self.cache_bytes:
                break
            if rid == room_id or self.in_use(rid) or p.parked():
                continue
            victims.append(rid)
            count -= 1
            size -= self._sizes[rid]
        for rid in victims:
            self._drop(rid)

    def measure(self, room_id: str) -> None:
        """Count the cached processor of ``room_id`` at its present footprint (after it was
        kept or compacted)."""
        size = self.cache[room_id].footprint()
        self.cached_bytes += size - self._sizes.get(room_id, 0)
        self._sizes[room_id] = size
        if size > self.cache_bytes and room_id not in self._too_large:
            self._too_large.add(room_id)
            log.warning(
                "room %s's processor holds about %.0f MB, more than the whole room cache "
                "(ROOMSTREAM_WORKER_ROOM_CACHE_MB=%.0f): it stays only while it is the room used "
                "last, and is read back from the store after other rooms' jobs. Raise "
                "ROOMSTREAM_WORKER_ROOM_CACHE_MB above it",
                room_id,
                size / 2**20,
                self.cache_bytes / 2**20,
            )
        metrics.ROOM_CACHE_BYTES.set(self.cached_bytes)
        metrics.ROOM_CACHE_ROOMS.set(len(self.cache))

    def _drop(self, room_id: str) -> None:
        del self.cache[room_id]
        self.cached_bytes -= self._sizes.pop(room_id)
        metrics.ROOM_CACHE_BYTES.set(self.cached_bytes)
        metrics.ROOM_CACHE_ROOMS.set(len(self.cache))

    def forget_all(self) -> None:
        """Partitions moved: cached processors may be stale from now on."""
        self.cache.clear()
        self._sizes.clear()
        self.cached_bytes = 0
        metrics.ROOM_CACHE_BYTES.set(0)
        metrics.ROOM_CACHE_ROOMS.set(0)
