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
    assert f.end == {"a": 100.0, "b": 150.0}  # c gives no estimate: it is taken to run default_s, but not told


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


def test_a_job_past_its_estimate_is_taken_to_overrun_it_by_as_much_again() -> None:
    sched = _busy()  # a: 8 GPUs from 0, estimate 100
    f = forecast(sched, 200.0, default_s=600.0)
    assert f.end["a"] == 300.0 and f.start["b"] == 300.0
    assert forecast(sched, 110.0).end["a"] == 170.0  # a minute more at least


def test_ends_close_together_share_a_pass_and_a_start_is_late_by_at_most_the_step() -> None:
    sched = Scheduler(make_fleet(nodes_per_leaf=8, gpus=8), queue="fifo", placement="topo", backfill=False)
    for i in range(64):  # every GPU held, ending one by one 10 ms apart from t=1,000
        sched.submit(Job(f"r{i}", 1, estimate_s=1_000.0 + i / 100), 0.0)
    sched.schedule(0.0)
    for i in range(8):
        sched.submit(Job(f"p{i}", 8, estimate_s=10.0, submit_s=1.0), 1.0)
    exact = forecast(sched, 1.0, step_s=0.0, rel_step=0.0)
    coarse = forecast(sched, 1.0)
    assert coarse.passes < exact.passes / 4
    assert coarse.start.keys() == exact.start.keys()
    for job, t in exact.start.items():
        assert t <= coarse.start[job] <= t + max(1.0, 0.01 * (t - 1.0)) + 1e-9


def test_a_forecast_for_one_job_stops_once_it_starts_and_says_why_it_waited() -> None:
    sched = _busy()
    f = forecast(sched, 10.0, until_started="b")
    assert f.start == {"b": 100.0} and "capacity" in f.why
