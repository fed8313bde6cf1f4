"""Queue policies: fifo, sjf, las (with preemption), weighted fair share, and what virtual deadlines
owe a preempted job."""

from __future__ import annotations

import pytest

from neocloud.errors import NeocloudError
from neocloud.model.events import Launch, Preempt
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.queue import (
    FairShare,
    Fifo,
    JobRecord,
    LeastAttainedService,
    ShortestJobFirst,
    VirtualDeadline,
    queue_policy,
)
from neocloud.sched.scheduler import Scheduler
from neocloud.sim.engine import simulate
from neocloud.sim.trace import Trace, TraceJob
from tests.conftest import make_fleet


def records(*jobs: Job) -> list[JobRecord]:
    return [JobRecord(job, seq) for seq, job in enumerate(jobs)]


def ids(policy, usage: dict[str, float] | None = None) -> list[str]:
    return [r.job.id for r in policy.order(usage or {})]


def launched(actions: list) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Launch)]


def preempted(actions: list) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Preempt)]


def test_queue_by_name() -> None:
    assert isinstance(queue_policy("fifo"), Fifo)
    assert isinstance(queue_policy("sjf"), ShortestJobFirst)
    assert isinstance(queue_policy("las"), LeastAttainedService)
    assert isinstance(queue_policy("fair"), FairShare)
    assert queue_policy("fifo") is not queue_policy("fifo")
    with pytest.raises(NeocloudError, match="unknown queue policy 'lifo'"):
        queue_policy("lifo")


def test_fifo_orders_by_submit_time_then_arrival() -> None:
    q = Fifo()
    for rec in records(Job("c", 1, submit_s=5), Job("a", 1, submit_s=1), Job("b", 1, submit_s=5),
                       Job("d", 1, submit_s=0)):
        q.add(rec)
    assert ids(q) == ["d", "a", "c", "b"]
    assert len(q) == 4


def test_every_queue_serves_priority_classes_first() -> None:
    for name in ("fifo", "sjf", "las", "fair"):
        q = queue_policy(name)
        for rec in records(
            Job("spot", 1, submit_s=0, priority=PriorityClass.SPOT, estimate_s=1),
            Job("od", 1, submit_s=1, estimate_s=10),
            Job("res", 1, submit_s=2, priority=PriorityClass.RESERVED, estimate_s=100),
        ):
            q.add(rec)
        assert ids(q) == ["res", "od", "spot"], name


def test_remove_takes_a_job_out() -> None:
    for name in ("fifo", "sjf", "las", "fair"):
        q = queue_policy(name)
        recs = records(Job("a", 1, tenant="x"), Job("b", 1, tenant="y"), Job("c", 1, tenant="x", submit_s=1))
        for rec in recs:
            q.add(rec)
        q.remove(recs[2])
        q.remove(recs[0])
        assert ids(q) == ["b"] and len(q) == 1, name


def test_sjf_orders_by_estimate_and_puts_unknown_last() -> None:
    q = ShortestJobFirst()
    for rec in records(Job("long", 1, estimate_s=1000), Job("none", 1), Job("short", 1, estimate_s=10),
                       Job("mid", 1, estimate_s=100, submit_s=3), Job("mid-early", 1, estimate_s=100, submit_s=2)):
        q.add(rec)
    assert ids(q) == ["short", "mid-early", "mid", "long", "none"]


def test_sjf_in_the_scheduler_starts_the_shortest_first() -> None:
    sched = Scheduler(make_fleet(gpus=1), queue="sjf", backfill=False)
    sched.submit(Job("blocker", 1, estimate_s=5), 0)
    assert launched(sched.schedule(0)) == ["blocker"]
    for job in (Job("long", 1, estimate_s=900, submit_s=1), Job("short", 1, estimate_s=30, submit_s=2)):
        sched.submit(job, job.submit_s)
    assert sched.schedule(2) == []
    sched.finish("blocker", 5)
    assert launched(sched.schedule(5)) == ["short"]


# -- least attained service ---------------------------------------------------------------------
def test_las_levels_and_demotion_time() -> None:
    las = LeastAttainedService()
    assert [las.level(a) for a in (0, 3_599, 3_600, 35_999, 36_000, 1e9)] == [0, 0, 1, 1, 2, 2]
    rec = JobRecord(Job("j", 4), 0)
    rec.started_s = 100.0
    assert rec.attained(200.0) == 400.0
    assert las.next_review(rec, 100.0) == pytest.approx(100.0 + 3_600 / 4)
    rec.attained_gpu_s = 5_000.0
    assert las.next_review(rec, 100.0) == pytest.approx(100.0 + 31_000 / 4)
    rec.attained_gpu_s = 40_000.0
    assert las.next_review(rec, 100.0) is None


def test_las_new_job_preempts_a_demoted_one() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="las")
    sched.submit(Job("old", 8), 0)
    assert launched(sched.schedule(0)) == ["old"]
    # It crosses 1 GPU-hour at 3600 / 8 = 450 s: the scheduler asks to be woken then.
    assert sched.next_wakeup(0) == pytest.approx(450)
    # Before the threshold a newcomer waits: both are in the top queue, the older one first.
    sched.submit(Job("early", 8, submit_s=100), 100)
    assert sched.schedule(100) == []
    sched.cancel("early", 100)
    # After it, a newcomer in the top queue preempts the demoted job and starts at once.
    sched.submit(Job("new", 8, submit_s=500), 500)
    actions = sched.schedule(500)
    assert preempted(actions) == ["old"] and launched(actions) == ["new"]
    assert actions.index(Preempt("old", actions[0].reason)) == 0  # the stop comes before the start
    old = sched.jobs["old"]
    assert old.state == "PENDING" and old.preemptions == 1
    assert old.attained_gpu_s == pytest.approx(8 * 500) and old.ran_s == pytest.approx(500)
    # The demoted job resumes when the newcomer ends, and is not preempted by it again.
    sched.finish("new", 600)
    assert launched(sched.schedule(600)) == ["old"]
    assert sched.jobs["old"].first_start_s == 0


def test_las_priority_class_still_comes_first() -> None:
    """A demoted reserved job is not preempted by a fresh spot job."""
    sched = Scheduler(make_fleet(gpus=8), queue="las")
    sched.submit(Job("res", 8, priority=PriorityClass.RESERVED), 0)
    sched.schedule(0)
    sched.submit(Job("spot", 8, priority=PriorityClass.SPOT, submit_s=1000), 1000)
    assert sched.schedule(1000) == []


def test_las_preempted_job_resumes_and_completes_in_the_twin() -> None:
    fleet = make_fleet(gpus=8)
    trace = Trace("las", [
        TraceJob(Job("old", 8, submit_s=0), duration_s=2_000),
        TraceJob(Job("new", 8, submit_s=500), duration_s=100),
    ])
    report = simulate(fleet, trace, policy="las", placement="topo", restart_overhead_s=10)
    assert report.jobs_completed == 2 and report.preemptions == 1
    # old: 500 s done (a quarter), paused 500-600, resumes with 10 s restart, 1500 s left -> 2110.
    assert report.makespan_s == pytest.approx(2_110)
    assert report.avg_jct_s == pytest.approx((2_110 + 100) / 2)
    fifo = simulate(fleet, trace, policy="fifo", placement="topo")
    assert fifo.preemptions == 0 and fifo.avg_jct_s == pytest.approx((2_000 + 1_600) / 2)


# -- fair share ---------------------------------------------------------------------------------
def test_fair_order_follows_gpus_held_per_weight() -> None:
    q = FairShare()
    for rec in records(Job("a1", 1, tenant="a"), Job("a2", 1, tenant="a", submit_s=1),
                       Job("b1", 1, tenant="b", submit_s=2)):
        q.add(rec)
    assert ids(q, {"a": 4.0}) == ["b1", "a1", "a2"]
    assert ids(q, {}) == ["a1", "b1", "a2"]  # equal shares: by submit time, then a's second
    q = FairShare(weights={"a": 4.0})
    for rec in records(Job("a1", 1, tenant="a"), Job("b1", 1, tenant="b", submit_s=2)):
        q.add(rec)
    assert ids(q, {"a": 4.0, "b": 2.0}) == ["a1", "b1"]  # a holds 1 per weight, b holds 2


def test_fair_gives_the_next_gpu_to_the_tenant_holding_fewest() -> None:
    for name, first in (("fair", "b1"), ("fifo", "a5")):
        sched = Scheduler(make_fleet(gpus=5), queue=name, backfill=False)
        for i in range(4):
            sched.submit(Job(f"a{i}", 1, tenant="a"), 0)
        assert len(launched(sched.schedule(0))) == 4
        sched.submit(Job("a5", 1, tenant="a", submit_s=1), 1)
        sched.submit(Job("b1", 1, tenant="b", submit_s=2), 2)
        assert launched(sched.schedule(2)) == [first], name
        assert sched.usage[sched.jobs[first].job.tenant] == (5 if first == "a5" else 1)


def test_fair_weights_buy_a_bigger_share() -> None:
    sched = Scheduler(make_fleet(gpus=4), queue=FairShare(weights={"a": 3.0}), backfill=False)
    for i in range(4):
        sched.submit(Job(f"a{i}", 1, tenant="a", submit_s=i), i)
        sched.submit(Job(f"b{i}", 1, tenant="b", submit_s=i), i)
    started = launched(sched.schedule(10))
    assert sorted(started) == ["a0", "a1", "a2", "b0"]  # 3:1, as weighted


# -- virtual deadlines: what a preempted job is owed ----------------------------------------------
def test_a_preempted_job_is_due_within_the_window_of_its_first_preemption() -> None:
    q = VirtualDeadline()
    long, short = JobRecord(Job("long", 1, estimate_s=1e7), 0), JobRecord(Job("short", 1, estimate_s=600), 1)
    assert q.deadline(long) == 1e7
    for rec in (long, short):
        rec.preempted(100.0)
    long.preempted(5_000.0)  # a later preemption does not move the window on
    assert long.preemptions == 2 and long.first_preempted_s == 100.0
    assert q.deadline(long) == 100.0 + q.owed_s
    assert q.deadline(short) == 600  # its own deadline is earlier: it keeps it


def test_a_preempted_long_job_resumes_first_and_is_not_taken_by_work_due_later() -> None:
    def run(queue: VirtualDeadline) -> tuple[Scheduler, list[list[str]]]:
        sched = Scheduler(make_fleet(gpus=8), queue=queue)
        steps = []  # who is preempted at each arrival, and who starts when the short job ends
        sched.submit(Job("long", 8, estimate_s=1e7), 0)
        sched.schedule(0)
        for t, job in ((10, Job("short", 8, estimate_s=600, submit_s=10)),  # due at 610: takes long's GPUs
                       (20, Job("later", 8, estimate_s=200_000, submit_s=20))):  # due long after the window
            sched.submit(job, t)
            steps.append(preempted(sched.schedule(t)))
        sched.finish("short", 610)
        steps.append(launched(sched.schedule(610)))
        late = VirtualDeadline.owed_s + 10  # due at once, but only after long's window has closed
        sched.submit(Job("late", 8, estimate_s=600, submit_s=late), late)
        steps.append(preempted(sched.schedule(late)))
        return sched, steps

    sched, steps = run(VirtualDeadline())
    assert steps == [["long"], [], ["long"], []]  # it resumes before "later", and "late" cannot take it
    assert sched.jobs["long"].preemptions == 1 and sched.jobs["late"].state == "PENDING"
    unowed = VirtualDeadline()
    unowed.owed_s = float("inf")  # by its own far deadline alone it would wait behind both, and be taken
    assert run(unowed)[1] == [["long"], [], ["later"], ["later"]]
