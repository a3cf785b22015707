"""The development harness: the local stack, the demo run, workload generation."""
