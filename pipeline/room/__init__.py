"""Per-room processing over the Matrix core: state groups, forward extremities, soft-fail,
parking and chunk building. Pure: no Kafka, SQL or faust."""
