-- The outbox stores each invalidation message as it is, without compression: a batch's message
-- is a few hundred kilobytes of JSON, and compressing it (pglz, at every commit) cost the
-- database several milliseconds of CPU per batch, half the time of the outbox insert. The
-- outbox keeps a bounded window of sent messages, so the space this takes is bounded too.
-- Rows already stored keep their form.
ALTER TABLE invalidation_outbox ALTER COLUMN message SET STORAGE EXTERNAL;
