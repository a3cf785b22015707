"""Pure Matrix semantics: room versions, PDUs, hashes, redaction, auth rules, state resolution.

Nothing here does I/O; callers pass events and fetch callbacks.
"""
