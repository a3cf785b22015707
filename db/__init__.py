"""Roomstream's PostgreSQL layer: schema migrations, the bulk writer and the read API.

- ``db.migrate``: ``migrate(database_url)`` applies ``db/migrations/*.sql`` once each;
  ``check_schema(conn)`` refuses a database that is behind or ahead of this code.
- ``db.writer``: ``write_batch(cur, chunks, offsets, build_message)`` writes a batch of room
  chunks with stream orderings, in the caller's transaction.
- ``db.outbox``: the committer's consumed offsets and invalidation outbox.
- ``db.read``: ``RoomStore(conn)``, the read API (events with their format version, current
  state, forward extremities, joined rooms, state for events in one query).
"""

from db.migrate import check_schema, migrate
from db.read import RoomStore
from db.writer import write_batch

__all__ = ["RoomStore", "check_schema", "migrate", "write_batch"]
