-- Roomstream's schema: Synapse's table and column names, so operators recognise them, plus the
-- committer's own bookkeeping. Sizes that grow with traffic are BIGINT.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT
);

-- Every persisted event, rejected and soft-failed ones included (with the flag that says so).
CREATE TABLE events (
    stream_ordering BIGINT NOT NULL UNIQUE,
    topological_ordering BIGINT NOT NULL,  -- the event's depth
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT,
    received_ts BIGINT,
    format_version INT NOT NULL,
    rejection_reason TEXT,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    outlier BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_order_room ON events (room_id, topological_ordering, stream_ordering);

-- The federation JSON exactly as accepted. TEXT rather than JSONB: JSONB reorders keys and
-- drops duplicates, and the stored bytes must stay the ones that were hashed and signed.
CREATE TABLE event_json (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    format_version INT NOT NULL,
    json TEXT NOT NULL
);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    UNIQUE (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev_id ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    UNIQUE (event_id, auth_id)
);

CREATE TABLE current_state_events (
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    membership TEXT,
    UNIQUE (room_id, type, state_key)
);
-- get_rooms_for_user_with_stream_ordering: a user's memberships across rooms.
CREATE INDEX current_state_events_member ON current_state_events (state_key)
    WHERE type = 'm.room.member';

CREATE TABLE room_memberships (
    event_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    room_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL
);
CREATE INDEX room_memberships_room_id ON room_memberships (room_id);
CREATE INDEX room_memberships_user_room ON room_memberships (user_id, room_id);

CREATE TABLE event_forward_extremities (
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    UNIQUE (event_id, room_id)
);
CREATE INDEX event_forward_extremities_room_id ON event_forward_extremities (room_id);

CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL
);

CREATE TABLE state_groups_state (
    state_group BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX state_groups_state_type_idx ON state_groups_state (state_group, type, state_key);

-- Each group has at most one prev group (a delta chain); the walk goes state_group -> prev.
CREATE TABLE state_group_edges (
    state_group BIGINT NOT NULL,
    prev_state_group BIGINT NOT NULL
);
CREATE UNIQUE INDEX state_group_edges_unique_idx ON state_group_edges (state_group);
CREATE INDEX state_group_edges_prev_idx ON state_group_edges (prev_state_group);

CREATE TABLE event_to_state_groups (
    event_id TEXT PRIMARY KEY,
    state_group BIGINT NOT NULL
);
CREATE INDEX event_to_state_groups_sg_index ON event_to_state_groups (state_group);

CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

-- The committer's bookkeeping --------------------------------------------------------------

-- The last stream ordering handed out, per stream. Locked and advanced inside each commit
-- transaction, so orderings are contiguous and in commit order.
CREATE TABLE stream_positions (
    stream_name TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);
INSERT INTO stream_positions (stream_name, stream_id) VALUES ('events', 0);

-- Kafka offsets consumed, written in the same transaction as the rows they produced
-- ("storing offsets outside Kafka"): the next offset to read.
CREATE TABLE committer_offsets (
    topic TEXT NOT NULL,
    partition INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Chunks already committed, so a chunk delivered again (replays after a crash) is skipped.
CREATE TABLE committed_chunks (
    chunk_id TEXT PRIMARY KEY,
    position BIGINT  -- the position of its invalidation message; NULL when it stored no event
);

-- One invalidation message per committed chunk, written with the rows and published after.
CREATE TABLE invalidation_outbox (
    position BIGINT PRIMARY KEY,
    prev_position BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    message BYTEA NOT NULL,  -- the exact bytes published, so a resend is byte-identical
    sent BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX invalidation_outbox_unsent ON invalidation_outbox (position) WHERE NOT sent;
