"""The forecast: the production scheduler run forward on a copy of its state."""

from __future__ import annotations

import pytest

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


def _loaded() -> Scheduler:
    """A few hundred mixed jobs, single nodes and gangs, on 64 nodes with the default placement:
    enough that scores are cached, looked up by condition and recomputed."""
    import random

    rnd = random.Random(7)
    sched = Scheduler(make_fleet(leaves=8, nodes_per_leaf=8, gpus=8), placement="neocloud", backfill=True)
    for i in range(400):
        gpus = rnd.choice([1, 1, 1, 2, 4, 8, 16, 32])
        sched.submit(Job(f"j{i}", gpus, estimate_s=rnd.uniform(60, 6_000), submit_s=float(i)), float(i))
        if i % 40 == 0:
            sched.schedule(float(i))
    sched.schedule(400.0)
    return sched


def test_a_forecast_from_a_snapshot_is_the_run_the_scheduler_itself_makes() -> None:
    sched = _loaded()
    told = forecast(sched, 400.0)  # on a snapshot
    ran = forecast(sched, 400.0, copy=False)  # on the scheduler itself
    assert len(told.start) > 300 and told.passes > 20
    assert (told.start, told.where, told.end) == (ran.start, ran.where, ran.end)


def test_scores_looked_up_by_a_nodes_condition_are_the_scores_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    from neocloud.sched import fgd

    looked_up = forecast(_loaded(), 400.0)
    monkeypatch.setattr(fgd, "FEW", 0)  # every stale node scored afresh
    computed = forecast(_loaded(), 400.0)
    assert (looked_up.start, looked_up.where) == (computed.start, computed.where)


def test_the_collector_is_paused_while_forecasts_run_and_resumes_as_it_was() -> None:
    import gc

    from neocloud.sched.forecast import collector_paused

    assert gc.isenabled()
    with collector_paused():
        with collector_paused():  # another forecast, in another thread say
            assert not gc.isenabled()
        assert not gc.isenabled()  # one is still running
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()
