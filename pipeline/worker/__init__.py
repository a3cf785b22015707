"""The room processor: a faust worker that turns each room's PDUs into chunks."""
