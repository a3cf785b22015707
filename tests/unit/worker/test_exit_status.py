"""The worker's exit status: a supervisor restarts a worker that exits non-zero, so every stop
that is not a clean one (SIGTERM, SIGINT) is non-zero, whoever noticed the fault."""

from __future__ import annotations

import pytest

from pipeline.worker.app import exit_status
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.lifecycle import EXIT_STOPPED, Lifecycle


def _life(fault: WorkerStopped | None = None) -> Lifecycle:
    life = Lifecycle("w1", pause_limit_s=5.0)
    if fault is not None:
        life.fatal(fault)
    life.stop("stopped")
    return life


@pytest.mark.parametrize("status", [None, 0])
def test_a_clean_stop_exits_zero(status: object) -> None:
    assert exit_status(_life(), status, None) == (0, "stopped")


def test_a_fault_the_worker_recorded_exits_non_zero() -> None:
    code, why = exit_status(_life(WorkerStopped("bug", "the worker raised KeyError")), 0, None)
    assert code == EXIT_STOPPED
    assert "KeyError" in why


def test_faust_stopping_on_its_own_error_exits_non_zero() -> None:
    # faust's worker exits with status 1 after a crash of one of its services; the lifecycle
    # knew nothing of it and the worker exited 0, a clean stop to any supervisor.
    code, why = exit_status(_life(), 1, None)
    assert code == EXIT_STOPPED
    assert "status 1" in why


def test_a_crash_faust_recorded_exits_non_zero_and_names_it() -> None:
    code, why = exit_status(_life(), 0, RuntimeError("consumer stopped"))
    assert code == EXIT_STOPPED
    assert "RuntimeError: consumer stopped" in why
