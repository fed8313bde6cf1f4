"""Slurm's batch gates in the core: dependencies, array throttles and time limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.model.events import Launch
from neocloud.model.job import Dependency, Job
from neocloud.sched.arrays import MAX_TASKS, parse_array
from neocloud.sched.forecast import forecast
from neocloud.sched.gates import OverLimit, Released, Unmet, Waiting
from neocloud.sched.scheduler import Scheduler
from tests.conftest import make_fleet


def launched(actions: list) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Launch)]


def sched(nodes: int = 2) -> Scheduler:
    return Scheduler(make_fleet(nodes_per_leaf=nodes))


# -- dependencies ---------------------------------------------------------------------------------
def test_afterok_waits_then_is_released() -> None:
    s = sched()
    s.submit(Job("1", 1), 0)
    s.submit(Job("2", 1, depends_on=(Dependency("1"),)), 0)
    assert launched(s.schedule(0)) == ["1"]
    assert s.jobs["2"].state == "WAITING"
    assert s.why_waiting("2") == "waiting for job 1 to complete (afterok)"
    assert s.news(0) == [Waiting("2", "waiting for job 1 to complete (afterok)")]
    s.finish("1", 5)
    assert s.news(5) == [Released("2")]
    assert launched(s.schedule(5)) == ["2"]


@pytest.mark.parametrize(("when", "outcome", "runs"), [
    ("afterok", "COMPLETED", True), ("afterok", "FAILED", False), ("afterok", "TIMEOUT", False),
    ("afternotok", "COMPLETED", False), ("afternotok", "FAILED", True), ("afternotok", "CANCELLED", True),
    ("afterany", "COMPLETED", True), ("afterany", "FAILED", True),
])
def test_each_kind_of_dependency(when: str, outcome: str, runs: bool) -> None:
    s = sched()
    s.submit(Job("1", 1), 0)
    s.submit(Job("2", 1, depends_on=(Dependency("1", when),)), 0)
    s.schedule(0)
    s.news(0)
    s.finish("1", 5, outcome)
    news = s.news(5)
    if runs:
        assert news == [Released("2")] and launched(s.schedule(5)) == ["2"]
    else:
        assert len(news) == 1 and isinstance(news[0], Unmet) and s.jobs["2"].state == "FAILED"
        assert news[0].reason.startswith("dependency never satisfied: job 1")
        assert launched(s.schedule(5)) == []


def test_a_dependency_on_a_job_already_over_is_judged_at_submit() -> None:
    s = sched()
    s.submit(Job("2", 1, depends_on=(Dependency("1"),)), 0, ended={"1": "FAILED"})
    assert s.jobs["2"].state == "FAILED"
    assert s.news(0) == [Unmet("2", "dependency never satisfied: job 1 ended FAILED (afterok)")]
    s.submit(Job("3", 1, depends_on=(Dependency("1", "afternotok"),)), 0, ended={"1": "FAILED"})
    assert s.jobs["3"].state == "PENDING" and launched(s.schedule(0)) == ["3"]


def test_a_failure_runs_down_a_chain() -> None:
    s = sched()
    s.submit(Job("1", 1), 0)
    s.submit(Job("2", 1, depends_on=(Dependency("1"),)), 0)
    s.submit(Job("3", 1, depends_on=(Dependency("2"),)), 0)
    s.submit(Job("4", 1, depends_on=(Dependency("2", "afterany"),)), 0)
    s.schedule(0)
    s.news(0)
    s.finish("1", 1, "FAILED")
    news = s.news(1)
    assert {n.job_id for n in news if isinstance(n, Unmet)} == {"2", "3"}
    assert Released("4") in news
    assert launched(s.schedule(1)) == ["4"]


def test_a_dependency_on_an_array_waits_for_all_its_tasks() -> None:
    s = sched()
    tasks = tuple(str(i) for i in range(1, 4))
    for i, t in enumerate(tasks):
        s.submit(Job(t, 1, array_job="1", array_index=i), 0)
    s.submit(Job("9", 1, depends_on=(Dependency("1", "afterok", tasks),)), 0)
    s.schedule(0)
    s.finish("1", 1)
    s.finish("2", 2)
    assert s.jobs["9"].state == "WAITING"
    assert s.why_waiting("9") == "waiting for array 1 (1 of 3 tasks left) to complete (afterok)"
    s.finish("3", 3)
    assert launched(s.schedule(3)) == ["9"]


def test_cancelling_a_waiting_job_leaves_no_trace() -> None:
    s = sched()
    s.submit(Job("1", 1), 0)
    s.submit(Job("2", 1, depends_on=(Dependency("1"),)), 0)
    s.cancel("2", 0)
    s.forget("2")
    s.news(0)
    s.finish("1", 1)
    assert s.news(1) == [] and "2" not in s.gates


def test_the_forecast_claims_no_start_for_a_gated_job() -> None:
    s = sched(nodes=1)
    s.submit(Job("1", 8, estimate_s=100), 0)
    s.submit(Job("2", 8, estimate_s=100, depends_on=(Dependency("1"),)), 0)
    s.submit(Job("3", 8, estimate_s=100), 0)
    s.schedule(0)
    out = forecast(s, 0)
    # 2 goes ahead of 3 once released (it came first), but is told no start or end of its own
    assert "2" not in out.start and "2" not in out.end and out.start["3"] == pytest.approx(200)


# -- array throttle -------------------------------------------------------------------------------
def test_the_throttle_admits_tasks_in_index_order() -> None:
    s = sched()
    for i in range(5):
        s.submit(Job(str(10 + i), 1, array_job="10", array_index=i, throttle=2), 0)
    assert sorted(launched(s.schedule(0))) == ["10", "11"]
    assert s.why_waiting("12") == "waiting for a slot: array 10 runs at most 2 tasks at once"
    s.finish("11", 1)
    assert Released("12") in s.news(1)
    assert launched(s.schedule(1)) == ["12"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 4), steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50)),
                                                                    max_size=60))
def test_the_throttle_is_never_exceeded_and_every_task_runs(n: int, k: int, steps: list[tuple[int, int]]) -> None:
    """Whatever ends, is preempted (interrupted and requeued) or cancelled, no more than K tasks of an
    array run at once, and once the others end every task has run."""
    s = sched()
    for i in range(n):
        s.submit(Job(f"t{i}", 1, array_job="t0", array_index=i, throttle=k), 0)
    ran: set[str] = set()
    now = 0.0

    def check() -> None:
        nonlocal ran
        running = [j for j in s.running if j.startswith("t")]
        assert len(running) <= k
        ran |= set(running)

    for op, pick in steps:
        now += 1
        launched(s.schedule(now))
        check()
        running = sorted(s.running)
        if not running:
            continue
        job_id = running[pick % len(running)]
        if op == 0:
            s.finish(job_id, now, "COMPLETED")
        elif op == 1:
            s.interrupt(job_id, now)
            s.unhold(job_id)
        else:
            s.finish(job_id, now, "FAILED")
        check()
    for _ in range(n + 1):
        now += 1
        s.schedule(now)
        check()
        for job_id in list(s.running):
            s.finish(job_id, now)
    assert ran == {f"t{i}" for i in range(n)}


# -- time limits ----------------------------------------------------------------------------------
def test_a_job_past_its_time_limit_is_told_to_stop_once() -> None:
    s = sched()
    s.submit(Job("1", 1, time_limit_s=30), 0)
    s.schedule(0)
    assert s.news(29.9) == [] and s.next_wakeup(0) == 30 and (s.next_wakeup(30) or 31) > 30
    assert s.news(30) == [OverLimit("1", "time limit 30s reached")]
    assert s.news(31) == []  # it is being stopped: told once
    s.finish("1", 32, "TIMEOUT")
    assert s.jobs["1"].state == "TIMEOUT"


def test_a_requeued_job_keeps_the_run_time_it_had() -> None:
    s = sched()
    s.submit(Job("1", 1, time_limit_s=30), 0)
    s.schedule(0)
    s.interrupt("1", 10)  # ran 10 s
    s.unhold("1")
    s.schedule(100)
    assert s.news(119) == []
    assert s.news(120) == [OverLimit("1", "time limit 30s reached")]


# -- array syntax ---------------------------------------------------------------------------------
def test_slurm_array_syntax() -> None:
    assert parse_array(4).indices == (0, 1, 2, 3) and parse_array(4).throttle is None
    spec = parse_array("0-15%4")
    assert spec.indices == tuple(range(16)) and spec.throttle == 4
    assert parse_array("1,3,5-7").indices == (1, 3, 5, 6, 7)
    assert parse_array("0-20:5").indices == (0, 5, 10, 15, 20)
    for bad, why in [("7-3", "must go up"), ("a-b", "not an index or a range"), ("1%0", "at least 1"),
                     (f"0-{MAX_TASKS}", "at most"), (0, "1 to"), ("1%", "whole number")]:
        with pytest.raises(ValueError, match=why):
            parse_array(bad)
