"""The operator's commands: status, tail, produce."""
