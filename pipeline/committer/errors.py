"""The committer's errors (drawn in ``pipeline.errors``): what it retries, and what stops it.

``PublishError`` is retried unless ``permanent`` (resending the same bytes cannot succeed);
``CommitterStopped`` means retrying cannot help, and the process exits non-zero.
"""

from __future__ import annotations

from pipeline.errors import RoomstreamError

__all__ = ["CommitterStopped", "PublishError"]


class PublishError(RoomstreamError, RuntimeError):
    """Invalidation messages could not be delivered; they stay unsent in the outbox."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


class CommitterStopped(RoomstreamError):
    """An error retrying cannot fix; ``reason`` is a short label for the metric."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
