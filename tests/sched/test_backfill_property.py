"""EASY backfill's promise, as a property: whatever was backfilled, the blocked head job starts no
later than its reservation says, when every job runs exactly as long as its estimate.

Histories mix submits, cordons, uncordons and time passing (running jobs end at their estimates).
After every pass that leaves the head waiting (and started only jobs behind it), a copy of the
scheduler is run forward with nothing new happening: the head must start by the time its
reservation gave as the pass found the cluster.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from neocloud.model.events import Launch
from neocloud.model.job import Job
from neocloud.sched.scheduler import Scheduler
from tests.conftest import make_fleet

STEP = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from([1, 2, 4, 6, 8, 16]), st.integers(1, 5_000)),
    st.tuples(st.just("cordon"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("uncordon"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("wait"), st.integers(1, 3_000), st.just(0)),
)


def _pass(sched: Scheduler, ends: dict[str, float], now: float) -> list[str]:
    started = [a.job_id for a in sched.schedule(now) if isinstance(a, Launch)]
    for job_id in started:
        ends[job_id] = now + sched.jobs[job_id].job.estimate_s
    return started


def _until(sched: Scheduler, ends: dict[str, float], now: float, limit: float) -> float:
    """Jobs end at their estimates, each end followed by a pass, up to `limit`."""
    while ends and min(ends.values()) <= limit:
        now = min(ends.values())
        for job_id in [j for j, e in ends.items() if e == now]:
            del ends[job_id]
            sched.finish(job_id, now)
        _pass(sched, ends, now)
    return now


@example(leaves=1, per_leaf=2, script=[("submit", 6, 1_000), ("submit", 6, 5_000), ("submit", 8, 100),
                                       ("cordon", 0, 0), ("submit", 2, 10_000)])  # the head's node cordoned
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaves=st.integers(1, 2), per_leaf=st.integers(1, 3), script=st.lists(STEP, min_size=1, max_size=30))
def test_a_backfilled_job_never_delays_the_head(leaves: int, per_leaf: int, script: list) -> None:
    sched = Scheduler(make_fleet(leaves=leaves, nodes_per_leaf=per_leaf, gpus=8), queue="fifo", placement="topo")
    nodes = leaves * per_leaf
    ends: dict[str, float] = {}
    now, count = 0.0, 0
    for kind, a, b in script:
        if kind == "submit" and a <= 8 * nodes:
            count += 1
            sched.submit(Job(f"j{count}", a, gpus_per_node=min(a, 8), estimate_s=float(b), submit_s=now), now)
        elif kind in ("cordon", "uncordon") and a < nodes:
            sched.state.set_schedulable(a, kind == "uncordon")
        elif kind == "wait":
            now = _until(sched, ends, now, now + a)
        before = copy.deepcopy(sched)
        started = _pass(sched, ends, now)
        pending = sorted((r for r in sched.jobs.values() if r.state == "PENDING"), key=lambda r: r.seq)
        if not pending or any(sched.jobs[j].seq < pending[0].seq for j in started):
            continue  # no head, or jobs ahead of it started in this pass (no backfill, nothing promised)
        head = pending[0].job.id
        promised, _ = before._compute_reservation(before.jobs[head], now)  # as the pass found the cluster
        if promised == float("inf"):
            continue
        future, future_ends = copy.deepcopy((sched, ends))
        _until(future, future_ends, now, promised)
        assert future.jobs[head].state == "RUNNING", f"{head} was due at {promised}: {leaves} {per_leaf} {script}"
