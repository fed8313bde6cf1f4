"""What an interruption cost a job, and whether it (or a failed start) gets another try."""

from __future__ import annotations

import pytest

from neocloud.health.restarts import LAUNCH_BACKOFF_S, MAX_RESTARTS, interruption, launch_retry


def test_losses_are_detection_recomputation_and_the_declared_restart() -> None:
    cut = interruption(now=1000.0, started_at=100.0, checkpoint_at=700.0, observed_at=900.0, interruptions=0,
                       restart_cost=30.0)
    # recomputation: the work from the checkpoint to the fault; detection: from the fault to the stop
    assert (cut.detection_s, cut.recomputation_s, cut.restart_s, cut.lost_s) == (100.0, 200.0, 30.0, 330.0)
    assert (cut.interruptions, cut.limit, cut.gives_up) == (1, MAX_RESTARTS, False)
    # A checkpoint older than the attempt, a fault seen before it started: counted from its start.
    cut = interruption(now=1000.0, started_at=800.0, checkpoint_at=10.0, observed_at=5.0, interruptions=0)
    assert (cut.detection_s, cut.recomputation_s) == (200.0, 0.0)
    # A fault not seen before the stop: all of it recomputation.
    cut = interruption(now=1000.0, started_at=100.0, checkpoint_at=700.0, observed_at=None, interruptions=0)
    assert (cut.detection_s, cut.recomputation_s) == (0.0, 300.0)


def test_a_job_gives_up_after_its_restarts() -> None:
    assert not interruption(now=1.0, started_at=0.0, checkpoint_at=None, observed_at=None, interruptions=2,
                            limit=3).gives_up
    assert interruption(now=1.0, started_at=0.0, checkpoint_at=None, observed_at=None, interruptions=3,
                        limit=3).gives_up
    assert interruption(now=1.0, started_at=0.0, checkpoint_at=None, observed_at=None, interruptions=0,
                        limit=0).gives_up


@pytest.mark.parametrize(("failures", "wait"), [(1, LAUNCH_BACKOFF_S[0]), (len(LAUNCH_BACKOFF_S), LAUNCH_BACKOFF_S[-1]),
                                                (len(LAUNCH_BACKOFF_S) + 1, None)])
def test_failed_starts_wait_longer_each_time_then_fail(failures: int, wait: float | None) -> None:
    assert launch_retry(failures) == wait
    assert sum(LAUNCH_BACKOFF_S) > 30  # a 30 s outage of the engine costs a job a wait, not its run
