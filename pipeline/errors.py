"""The error tree of Roomstream's shells (the Matrix core's own errors: pipeline.matrix.errors).

    RoomstreamError
    ├── MatrixError ...                   (pipeline.matrix.errors)
    ├── ConfigError(ValueError)           a setting is malformed; names the variable
    ├── StackError(RuntimeError)          the local stack cannot start or stop
    │   ├── MissingBinary                 Java, Maven or PostgreSQL binaries are absent
    │   ├── PortInUse                     a port the stack needs is taken
    │   └── StartTimeout                  a service did not come up; carries its log's tail
    ├── TopicDrift                        existing topics differ from their definitions
    └── SchemaError                       the database schema is missing, newer or unknown

Every message names the bad input and says what to do.
"""

from __future__ import annotations

from pipeline.matrix.errors import RoomstreamError

__all__ = [
    "ConfigError",
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
