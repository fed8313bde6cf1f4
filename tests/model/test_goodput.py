"""Goodput arithmetic: measured and declared losses, never more than was allocated."""

from __future__ import annotations

import pytest

from neocloud.model.goodput import goodput


def test_losses_by_cause_and_ettr() -> None:
    ledger = {"first_start": 0.0, "detection_s": 30.0, "recomputation_s": 300.0, "queueing_s": 120.0}
    g = goodput(8, 3600.0, 2, ledger, until=3720.0, checkpoint_interval=600.0, checkpoint_cost=5.0,
                restart_cost=180.0)
    assert g.allocated_gpu_s == 8 * 3600
    assert g.lost_gpu_s == {"detection": 240.0, "restart": 1440.0, "recomputation": 2400.0,
                            "checkpoint writes": 8 * 5 * 5}  # 3600 s holds five whole 605 s periods
    assert g.productive_gpu_s == 8 * (3600 - 30 - 180 - 300 - 25)
    assert g.queueing_after_failure_s == 120.0
    assert g.ettr == pytest.approx((3600 - 535) / 3720, abs=1e-4)


def test_losses_never_exceed_the_allocation_and_a_job_not_started_has_no_ettr() -> None:
    g = goodput(1, 10.0, 3, {"first_start": 0.0, "recomputation_s": 50.0}, until=10.0, restart_cost=100.0)
    assert g.productive_gpu_s == 0.0
    assert goodput(1, 0.0, 0, {}, until=5.0).ettr is None
