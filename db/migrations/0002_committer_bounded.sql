-- The committer's bookkeeping, bounded and fenced: a per-room high-water of committed chunks
-- (with each chunk's content digest) instead of every chunk id forever, divergences recorded,
-- a fencing generation, and split invalidation messages in the outbox.

-- Per room, the highest chunk sequence number committed (chunk ids are <room_id>/<n>, n
-- increasing per room: the last event sequence number of the chunk), the first sequence number
-- of that chunk, and its content digest. A chunk at or below it was committed.
CREATE TABLE room_chunk_marks (
    room_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    last_first BIGINT,
    last_digest BYTEA
);
INSERT INTO room_chunk_marks (room_id, last_seq)
SELECT substring(chunk_id FROM '^(.*)/[0-9]+$'), max(substring(chunk_id FROM '/([0-9]+)$')::BIGINT)
FROM committed_chunks
WHERE chunk_id ~ '/[0-9]+$'
GROUP BY 1;

-- committed_chunks becomes a window of recent chunks, for comparing the content of a chunk
-- delivered again with what was committed; rows older than the window are pruned.
ALTER TABLE committed_chunks
    ADD COLUMN seq_first BIGINT,  -- the chunk's first event sequence number
    ADD COLUMN digest BYTEA,
    ADD COLUMN committed_at BIGINT NOT NULL DEFAULT 0;  -- the stream position after its commit
CREATE INDEX committed_chunks_committed_at ON committed_chunks (committed_at);

-- A chunk id delivered again with other content than the one committed.
CREATE TABLE chunk_divergences (
    id BIGSERIAL PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stored_digest BYTEA,
    new_digest BYTEA NOT NULL,
    source_offset BIGINT,
    detected_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Fencing: the active committer takes the next generation when it acquires the lock, and
-- every commit transaction checks (and row-locks) it, so a committer that lost the lock
-- without noticing can never commit.
CREATE TABLE committer_fence (
    lock_key BIGINT PRIMARY KEY,
    generation BIGINT NOT NULL
);

-- An invalidation message too large for one record is split into parts of one position.
ALTER TABLE invalidation_outbox
    ADD COLUMN part INT NOT NULL DEFAULT 0,
    ADD COLUMN parts INT NOT NULL DEFAULT 1;
ALTER TABLE invalidation_outbox DROP CONSTRAINT invalidation_outbox_pkey;
ALTER TABLE invalidation_outbox ADD PRIMARY KEY (position, part);
-- A message covers every room of its transaction: room_id is the room when there is one.
ALTER TABLE invalidation_outbox ALTER COLUMN room_id DROP NOT NULL;
