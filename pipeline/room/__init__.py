"""Per-room processing over the Matrix core: state groups, forward extremities, soft-fail,
parking and chunk building. Pure: no Kafka, SQL or faust.

The shell's view:

- ``RoomProcessor(room_id, config=..., budget=...)``: ``process(batch, now=...) -> BatchResult``
  (a ``Chunk`` or None, dead letters, duplicates dropped, events parked); ``expire(now)``;
  ``to_dict()`` / ``RoomProcessor.from_dict(data, config=..., budget=...)``.
- ``Incoming(raw, received_ts, source)``: one input PDU; ``DeadLetter``: one refused input.
- ``ProcessorConfig``, ``ParkingLimits``, ``ParkingBudget`` (shared by a worker's rooms).
- ``room_id_of(raw)``: the room to route a PDU to.
- ``replay(lines, state_after=False)``: the ``roomstream replay`` result.
"""

from pipeline.room.batch import BatchResult, DeadLetter, Incoming, ProcessorConfig
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import RoomProcessor
from pipeline.room.replay import replay
from pipeline.room.routing import room_id_of

__all__ = [
    "BatchResult",
    "DeadLetter",
    "Incoming",
    "ParkingBudget",
    "ParkingLimits",
    "ProcessorConfig",
    "RoomProcessor",
    "replay",
    "room_id_of",
]
