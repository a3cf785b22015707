"""The committer: stream orderings at commit, one PostgreSQL transaction per batch, the outbox."""
