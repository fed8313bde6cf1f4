"""neocloud's default queue: earliest virtual deadline first, preemptive, starvation-free."""

from __future__ import annotations

from neocloud.model.events import Launch, Preempt
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.queue import JobRecord, VirtualDeadline, queue_policy
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL, Allocation
from tests.conftest import make_fleet


def launched(actions: list) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Launch)]


def test_shorter_expected_jobs_go_first_until_an_older_deadline_is_due() -> None:
    q = queue_policy("neocloud")
    assert isinstance(q, VirtualDeadline) and q.preemptive
    long_old = JobRecord(Job("long-old", 1, submit_s=0, estimate_s=10_000), 0)
    short_new = JobRecord(Job("short-new", 1, submit_s=5_000, estimate_s=100), 1)
    short_late = JobRecord(Job("short-late", 1, submit_s=20_000, estimate_s=100), 2)
    for rec in (long_old, short_late, short_new):
        q.add(rec)
    # deadlines: 10,000, 5,100 and 20,100: the late short job cannot pass the old long one
    assert [r.job.id for r in q.order({})] == ["short-new", "long-old", "short-late"]


def test_priority_class_comes_before_deadlines() -> None:
    q = queue_policy("neocloud")
    spot = JobRecord(Job("spot", 1, estimate_s=1, priority=PriorityClass.SPOT), 0)
    reserved = JobRecord(Job("reserved", 1, estimate_s=1e6, priority=PriorityClass.RESERVED), 1)
    q.add(spot)
    q.add(reserved)
    assert [r.job.id for r in q.order({})] == ["reserved", "spot"]


def test_without_an_estimate_what_a_job_has_run_sets_its_expectation() -> None:
    q = VirtualDeadline()
    fresh = JobRecord(Job("fresh", 2), 0)
    veteran = JobRecord(Job("veteran", 2), 1, ran_s=10_000)
    assert q.expected_s(fresh) == q.floor_s
    assert q.expected_s(veteran) == 20_000
    veteran.started_s = 50_000  # running again since then: its deadline keeps moving
    assert q.expected_s(veteran, now=55_000) == 30_000
    assert q.running_key(veteran, 55_000)[1] == 30_000
    assert q.next_review(veteran, 55_000) == 55_000 + q.floor_s


def test_a_long_job_with_no_estimate_yields_to_a_newcomer_once_it_has_run_long() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="neocloud")
    sched.submit(Job("long", 8), 0)
    assert launched(sched.schedule(0)) == ["long"]
    sched.submit(Job("early", 8, submit_s=600), 600)  # deadlines 1 h apart: too close to preempt
    assert sched.schedule(600) == []
    sched.submit(Job("late", 8, submit_s=20_000), 20_000)  # long's deadline has moved to 40,000
    actions = sched.schedule(20_000)
    assert [a.job_id for a in actions if isinstance(a, Preempt)] == ["long"]
    assert launched(actions) == ["early"]


def test_a_short_arrival_preempts_a_long_job_and_the_long_one_resumes() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="neocloud")
    sched.submit(Job("long", 8, estimate_s=100_000), 0)
    assert launched(sched.schedule(0)) == ["long"]
    sched.submit(Job("short", 8, estimate_s=600, submit_s=10), 10)
    actions = sched.schedule(10)
    assert [a.job_id for a in actions if isinstance(a, Preempt)] == ["long"]
    assert launched(actions) == ["short"]
    sched.finish("short", 610)
    assert launched(sched.schedule(610)) == ["long"]
    assert sched.jobs["long"].preemptions == 1


def test_a_job_adopted_after_a_restart_is_ranked_like_one_that_was_queued() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="neocloud")
    sched.adopt(Job("long", 8, estimate_s=100_000), Allocation("long", (0,), (tuple(range(8)),), FULL), 0)
    sched.submit(Job("short", 8, estimate_s=600, submit_s=10), 10)
    actions = sched.schedule(10)
    assert [a.job_id for a in actions if isinstance(a, Preempt)] == ["long"]
    assert launched(actions) == ["short"]


def test_near_ties_do_not_preempt() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="neocloud")
    sched.submit(Job("a", 8, estimate_s=3_000), 0)
    sched.schedule(0)
    sched.submit(Job("b", 8, estimate_s=1_000, submit_s=100), 100)  # deadline 1,100 vs 3,000: within margin
    assert sched.schedule(100) == []
