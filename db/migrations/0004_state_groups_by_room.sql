-- A room's state groups by room: a worker that rebuilds a room's processing state from the
-- database reads every state group of the room (db.read.load_room_rows), Synapse's
-- state_groups_room_id_idx. IF NOT EXISTS: on a large database an operator may build it
-- beforehand with CREATE INDEX CONCURRENTLY, which does not block the committer's writes.
CREATE INDEX IF NOT EXISTS state_groups_room_id ON state_groups (room_id);
