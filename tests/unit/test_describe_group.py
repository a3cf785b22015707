"""The harness's view of a consumer group: a broker that cannot answer now is asked again."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.dev.local import describe_group


class _Admin:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.asked: list[tuple[list[str], float]] = []

    def describe_consumer_groups(
        self, groups: list[str], request_timeout: float
    ) -> dict[str, concurrent.futures.Future[Any]]:
        self.asked.append((groups, request_timeout))
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if isinstance(self.outcome, BaseException):
            fut.set_exception(self.outcome)
        elif self.outcome is not None:
            fut.set_result(self.outcome)
        return {groups[0]: fut}


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(None, id="no answer within the timeout"),
        pytest.param(
            KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
            id="coordinator loading",
        ),
    ],
)
def test_a_group_the_broker_cannot_describe_now_is_none(outcome: Any) -> None:
    admin = _Admin(outcome)
    assert describe_group(admin, "g", timeout=0.01) is None  # type: ignore[arg-type]
    assert admin.asked == [(["g"], 0.01)]


def test_a_described_group_is_returned() -> None:
    described = object()
    assert describe_group(_Admin(described), "g") is described  # type: ignore[arg-type]
