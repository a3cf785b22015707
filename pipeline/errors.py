"""The error tree of Roomstream, every class where it lives (a test keeps this drawing true).

    RoomstreamError                          [pipeline.matrix.errors] the root
    ├── MatrixError                          [pipeline.matrix.errors] the Matrix core's
    │   ├── InvalidPdu(ValueError)           [pipeline.matrix.errors] not a valid PDU
    │   │   ├── EventIdMismatch              [pipeline.matrix.errors] event_id is not the rule's
    │   │   └── SignatureFailed              [pipeline.matrix.signing] a required signature fails
    │   ├── UnknownRoomVersion(ValueError)   [pipeline.matrix.errors]
    │   ├── EventRejected                    [pipeline.matrix.errors] fails the auth rules
    │   ├── MissingEvents(LookupError)       [pipeline.matrix.errors] needs events not known
    │   └── CanonicalJsonError(ValueError)   [pipeline.matrix.canonical_json]
    ├── ParkingFull                          [pipeline.room.parking] a parking bound is reached
    ├── InvalidHeader(ValueError)            [pipeline.room.headers] an input header is unusable
    ├── ResolverFailed(RuntimeError)         [pipeline.room.processor] not the input's fault
    ├── RecallFailed(RuntimeError)           [pipeline.room.known_events] dropped entries unread
    │   └── RecallNeeded                     [pipeline.room.known_events] no recall to ask
    ├── ConfigError(ValueError)              a setting is malformed; names the variable
    ├── StackError(RuntimeError)             the local stack cannot start or stop
    │   ├── MissingBinary                    Java, Maven or PostgreSQL binaries are absent
    │   ├── PortInUse                        a port the stack needs is taken
    │   └── StartTimeout                     a service did not come up; carries its log's tail
    ├── TopicDrift                           existing topics differ from their definitions
    ├── MalformedMessage(ValueError)         a message on a topic does not decode; names the field
    ├── SchemaError                          the database schema is missing, newer or unknown
    ├── WorkerStopped                        [pipeline.worker.faults] the system failed; it stops
    ├── PublishError(RuntimeError)           [pipeline.committer.errors] the broker refused
    ├── CommitterStopped                     [pipeline.committer.errors] retrying cannot help
    ├── Fenced                               [db.fence] another committer took over
    │   └── PositionMoved                    [db.writer] the stream position moved under it
    ├── Unreachable(ConnectionError)         [pipeline.ops.status] Kafka or PostgreSQL is not there
    └── Stalled                              [pipeline.bench.runs] a benchmark run stopped moving

A class without ``[module]`` lives here. Every message names the bad input and says what to do.
"""

from __future__ import annotations

from pipeline.matrix.errors import RoomstreamError

__all__ = [
    "ConfigError",
    "MalformedMessage",
    "MissingBinary",
    "PortInUse",
    "RoomstreamError",
    "SchemaError",
    "StackError",
    "StartTimeout",
    "TopicDrift",
]


class ConfigError(RoomstreamError, ValueError):
    pass


class StackError(RoomstreamError, RuntimeError):
    pass


class MissingBinary(StackError):
    pass


class PortInUse(StackError):
    def __init__(self, service: str, port: int, holder: str = "") -> None:
        self.service = service
        self.port = port
        super().__init__(
            f"port {port} on 127.0.0.1, needed by {service}, is already in use"
            + (f" by {holder}" if holder else "")
            + f"; stop that process or choose another port "
            f"(ROOMSTREAM_{'KAFKA' if service == 'kafka' else 'PG'}_PORT)"
        )


class StartTimeout(StackError):
    pass


class TopicDrift(RoomstreamError):
    pass


class SchemaError(RoomstreamError):
    pass


class MalformedMessage(RoomstreamError, ValueError):
    """A message on one of Roomstream's topics that its codec cannot decode.

    Raised by the codecs in ``topics/``; ``wire_format`` names the format (``chunk``,
    ``invalidation``, ...) and the message says which field is wrong. The consumer decides what
    follows: the committer dead-letters a malformed chunk, a client reports it.
    """

    def __init__(self, wire_format: str, reason: str) -> None:
        self.wire_format = wire_format
        self.reason = reason
        super().__init__(f"malformed {wire_format} message: {reason}")
