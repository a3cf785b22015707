"""Whose fault an error is, and what the worker does about it (DESIGN.md invariants 7 and 9).

An error is either the input's or the system's:

* The input's: the PDU cannot be routed to a room, does not parse, is refused by the room's
  rules. The room processor (or the routing parse) says so with a reason; the input goes to the
  dead-letter topic and the partition goes on. Nothing else is ever dead-lettered.
* The system's: the broker refused or lost a record, the resolution process pool broke, a
  chunk could not be serialised, processing raised. The event that met it is valid (or at least
  not known to be invalid), so it must not be dead-lettered. What retrying can fix is retried a
  bounded number of times (``retry``); then, or at once when retrying cannot help, the worker
  stops with a ``WorkerStopped`` that says what failed and what to do, counts it in
  ``roomstream_worker_stopped_total`` and exits non-zero. Its inputs are unacked, so after a
  restart they are processed again from the last stored state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.errors import RoomstreamError

__all__ = ["RETRIES", "WorkerStopped", "retry"]

log = logging.getLogger("roomstream.worker")

T = TypeVar("T")

RETRIES = 5
"""Attempts of an operation retrying can fix, before the worker stops."""
BACKOFF_S = 0.2
"""The wait before the second attempt; it doubles with each attempt after."""


class WorkerStopped(RoomstreamError):
    """The system failed, not the input; ``reason`` is a short label for the metric.

    The message says what failed and what to do; the worker exits non-zero with it.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


async def retry(
    what: str,
    reason: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int = RETRIES,
    backoff_s: float = BACKOFF_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``attempt()`` until it returns, at most ``attempts`` times; WorkerStopped after that.

    ``what`` names the operation in the log and the error ("handing a chunk to the producer").
    """
    delay = backoff_s
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except WorkerStopped:
            raise
        except Exception as e:
            if n == attempts:
                raise WorkerStopped(
                    reason,
                    f"{what} failed {attempts} times, last with {type(e).__name__}: {e}; the "
                    "worker stops with its inputs unacked, to process them again once it is "
                    "restarted (check that the Kafka brokers are reachable and healthy)",
                ) from e
            log.warning(
                "%s failed (%s: %s); attempt %d of %d", what, type(e).__name__, e, n + 1, attempts
            )
            await sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
