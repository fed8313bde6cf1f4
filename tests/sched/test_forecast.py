"""The forecast: the production scheduler run forward on a copy of its state."""

from __future__ import annotations

from neocloud.model.job import Job
from neocloud.sched.forecast import forecast
from neocloud.sched.scheduler import Scheduler
from tests.conftest import make_fleet


def _busy(queue: str = "fifo", backfill: bool = False) -> Scheduler:
    """One 8-GPU node running `a` (ends at 100 by its estimate), `b` and `c` queued behind it."""
    sched = Scheduler(make_fleet(nodes_per_leaf=1, gpus=8), queue=queue, placement="topo", backfill=backfill)
    sched.submit(Job("a", 8, estimate_s=100.0), 0.0)
    sched.schedule(0.0)
    sched.submit(Job("b", 8, estimate_s=50.0, submit_s=1.0), 1.0)
    sched.submit(Job("c", 4, submit_s=2.0), 2.0)
    sched.schedule(2.0)
    return sched


def test_pending_jobs_start_as_running_ones_end_by_their_estimates() -> None:
    sched = _busy()
    f = forecast(sched, 10.0, default_s=600.0)
    assert f.start == {"b": 100.0, "c": 150.0}
    assert f.end == {"a": 100.0, "b": 150.0, "c": 750.0}  # c gives no estimate: default_s


def test_the_live_scheduler_is_left_as_it_was() -> None:
    sched = _busy()
    before = (dict(sched.state.allocations), {j: r.state for j, r in sched.jobs.items()})
    forecast(sched, 10.0)
    assert (dict(sched.state.allocations), {j: r.state for j, r in sched.jobs.items()}) == before
    assert sched.schedule(10.0) == []  # nothing started, nothing learned


def test_a_held_job_is_not_expected_and_backfill_is_forecast_as_it_decides() -> None:
    sched = _busy(backfill=True)
    sched.hold("b")
    f = forecast(sched, 10.0, default_s=600.0)
    assert "b" not in f.start and f.start["c"] == 100.0
