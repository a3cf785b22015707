"""The worker reads again records faust dropped with nothing handed over after them only when its
intake has been free to take input, with none on its way, for ``DROPPED_AFTER_S``: otherwise a
record not taken yet may just be waiting its turn."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.worker import app as worker_app
from pipeline.worker.app import DROPPED_AFTER_S, Worker


class Consumer:
    def __init__(self) -> None:
        self.asked: list[float] = []

    def read_again_overdue(self, after_s: float) -> None:
        self.asked.append(after_s)


def _worker(**kw: Any) -> Any:
    w = SimpleNamespace(
        _consumer=Consumer(),
        _intake_queue=deque(),
        _intake_blocked=False,
        _intake_busy_at=0.0,
        app=SimpleNamespace(rebalancing=False),
        _hurry=lambda: False,
    )
    for k, v in kw.items():
        setattr(w, k, v)
    return w


def _queue(*items: Any) -> Any:
    q = deque(items)
    return SimpleNamespace(empty=lambda: not q)


IDLE = {"_intake_queue": _queue()}


@pytest.mark.parametrize(
    ("why", "state", "asks"),
    [
        ("free, none on its way, long enough", IDLE, True),
        ("inputs still in faust's queue", {"_intake_queue": _queue("event")}, False),
        ("waiting for room capacity", {**IDLE, "_intake_blocked": True}, False),
        ("a rebalance", {**IDLE, "app": SimpleNamespace(rebalancing=True)}, False),
        ("flow suspended or stopping", {**IDLE, "_hurry": lambda: True}, False),
        ("the agent has not started", {"_intake_queue": None}, False),
    ],
)
def test_dropped_records_are_looked_for_only_while_the_intake_waits_for_none(
    monkeypatch: pytest.MonkeyPatch, why: str, state: dict[str, Any], asks: bool
) -> None:
    monkeypatch.setattr(worker_app.time, "monotonic", lambda: 100.0)
    w = _worker(**state)
    Worker._look_for_dropped(w)
    assert bool(w._consumer.asked) is asks, why


def test_the_intake_must_have_been_free_for_the_whole_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(worker_app.time, "monotonic", lambda: now[0])
    w = _worker(_intake_queue=_queue("event"))
    Worker._look_for_dropped(w)  # busy at 100
    w._intake_queue = _queue()
    now[0] += DROPPED_AFTER_S / 2
    Worker._look_for_dropped(w)
    assert w._consumer.asked == []
    now[0] += DROPPED_AFTER_S / 2
    Worker._look_for_dropped(w)
    assert w._consumer.asked == [DROPPED_AFTER_S]


def test_a_faust_without_the_agents_queue_fails_the_start_naming_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="faust-streaming version"):
        worker_app._intake_queue(SimpleNamespace(channel=SimpleNamespace()))
    queue = _queue()
    assert worker_app._intake_queue(SimpleNamespace(channel=SimpleNamespace(queue=queue))) is queue
