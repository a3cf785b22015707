"""Per-room processing over the Matrix core: state groups, forward extremities, soft-fail,
parking and chunk building. Pure: no Kafka, SQL or faust.

The shell's view:

- ``RoomProcessor(room_id, config=..., budget=...)``: ``process(inputs) -> BatchResult`` takes
  every waiting input of the room at once (``chunks``: one, or several when over
  ``max_chunk_bytes``; dead letters; requests for missing events, ``missing_requests``, to
  publish on ``<prefix>.missing-events``; duplicates dropped; events parked and their bytes);
  ``expire(ts)`` a tick of the room's logical clock; ``compact()`` when the room goes idle;
  ``input_seq`` / ``event_seq`` / ``clock``; ``to_dict()`` /
  ``RoomProcessor.from_dict(data, config=..., budget=...)``. Outputs depend only on the room's
  inputs in order (see ``processor``); chunk identity is in ``chunk``.
- ``RoomProcessor.from_database_rows(rows, ...)``: a room rebuilt from what the committer stored
  (``rebuild.RoomRows``, with the chunks in flight folded in by ``rebuild.fold_chunks``);
  ``adopt_parked(stale)`` takes over the parked events of the stale state it replaces.
- ``Incoming(raw, received_ts, source)``: one input PDU; ``received_ts`` is the room's clock.
- ``DeadLetter``: one refused input. ``ResolverFailed``: not the input's fault; retry.
- ``ProcessorConfig``, ``ParkingLimits`` (per room: count, bytes, ttl), ``ParkingBudget`` (a
  worker-wide count for back-pressure; it refuses nothing).
- ``room_id_of(raw)``: the room to route a PDU to.
- ``replay(lines, state_after=False)``: the ``roomstream replay`` result.
"""

from pipeline.room.batch import BatchResult, DeadLetter, Incoming, ProcessorConfig
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import ResolverFailed, RoomProcessor
from pipeline.room.replay import replay
from pipeline.room.routing import room_id_of

__all__ = [
    "BatchResult",
    "DeadLetter",
    "Incoming",
    "ParkingBudget",
    "ParkingLimits",
    "ProcessorConfig",
    "ResolverFailed",
    "RoomProcessor",
    "replay",
    "room_id_of",
]
