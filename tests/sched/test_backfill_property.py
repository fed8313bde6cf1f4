"""EASY backfill's promise, as a property: whatever was backfilled, the blocked head job starts no
later than its reservation says, when every job runs exactly as long as its estimate.

Histories mix submits (three tenants, spot and on-demand, whole and shared GPUs, a few jobs with no
estimate), cordons, uncordons, node failures, changes of tenants' guarantees and time passing, on
one or two fabrics, under FIFO and shortest-job-first. They are driven as the controller drives
the scheduler: a launched job runs until its estimate is up (what is left of it, after an
interruption); a preempted job is held until its stop is reported; a failed node is cordoned and
every job on it interrupted, held, and put back in the queue (`unhold`) once it has stopped. Stops
are reported at the next step.

The promise, precisely: after a pass that leaves a head job H pending with a reservation for time
T, a copy of the scheduler runs forward with nothing new happening (no submits, failures, cordons
or quota changes; no stop reported, so stopping jobs stay held; running jobs end at their
estimates, each end followed by a pass), and H runs by T. A guarantee outranks the queue, so the
promise binds backfilling only: it is void once a job starts that no reservation binds (within its
own tenant's guarantee behind H, or ahead of H: on reclaimed room, or moved ahead when its tenant's
guarantee freed up), or a pass finds another job at the head. Without guarantees none of that
happens, and the test checks that the promise is then never void.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from neocloud.errors import SchedulingError
from neocloud.model.events import Launch, Preempt
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.scheduler import Scheduler
from tests.conftest import make_fleet

TENANTS = ("a", "b", "c")  # c never has a guarantee: it runs in the on-demand pool or borrows

ARGS = {
    # GPUs (half of one, shared), estimate (0: none, the job runs until it is stopped), tenant, spot
    "submit": st.tuples(st.sampled_from([0.5, 1, 2, 4, 6, 8, 16]), st.integers(0, 5_000), st.sampled_from(TENANTS),
                        st.booleans()),
    "cordon": st.tuples(st.integers(0, 11)),
    "uncordon": st.tuples(st.integers(0, 11)),
    "wait": st.tuples(st.integers(1, 3_000)),
    "fail": st.tuples(st.integers(0, 7)),  # the node under the k-th running job fails
    "quotas": st.tuples(st.fixed_dictionaries({"a": st.sampled_from([0, 8, 16]), "b": st.sampled_from([0, 4, 8, 24])})),
}
KINDS = ("submit",) * 5 + ("wait",) * 2 + ("cordon", "uncordon", "fail", "quotas")  # a queue deep enough to block
STEP = st.sampled_from(KINDS).flatmap(lambda kind: ARGS[kind].map(lambda args: (kind, *args)))


class Driver:
    """The scheduler and what its caller knows: when each running job ends, which jobs are stopping."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.ends: dict[str, float] = {}  # running job -> when its estimate is up
        self.stopping: set[str] = set()  # held until their stop is reported

    def run_pass(self, now: float) -> list[str]:
        """One pass, carried out: the jobs it started, in order."""
        started = []
        for action in self.sched.schedule(now):
            if isinstance(action, Launch):
                est = self.sched.jobs[action.job_id].remaining_estimate(now)
                if est is not None:
                    self.ends[action.job_id] = now + est
                started.append(action.job_id)
            elif isinstance(action, Preempt):
                self.ends.pop(action.job_id, None)
                self.sched.hold(action.job_id)  # as the controller does, until the attempt has stopped
                self.stopping.add(action.job_id)
        return started

    def end_jobs(self, now: float, until: float) -> float:
        """Jobs end at their estimates, each end followed by a pass, up to `until`."""
        while self.ends and min(self.ends.values()) <= until:
            now = min(self.ends.values())
            for job_id in sorted(j for j, e in self.ends.items() if e == now):
                del self.ends[job_id]
                self.sched.finish(job_id, now)
            self.run_pass(now)
        return now

    def report_stops(self) -> None:
        for job_id in sorted(self.stopping):
            self.sched.unhold(job_id)
        self.stopping.clear()

    def fail(self, k: int, now: float) -> None:
        """The node under the k-th running job fails: it is cordoned and every job on it interrupted."""
        running = sorted(self.sched.running.values(), key=lambda r: r.seq)
        if not running:
            return
        node = self.sched.state.allocations[running[k % len(running)].job.id].nodes[0]
        self.sched.state.set_schedulable(node, False)
        for job_id in sorted(self.sched.state.on_node[node]):
            self.sched.interrupt(job_id, now)
            self.ends.pop(job_id, None)
            self.stopping.add(job_id)


def kept(driver: Driver, head: str, promise: float, now: float) -> bool | None:
    """Whether, with nothing new happening, `head` runs by `promise`; None when the promise is void."""
    sched = driver.sched
    while driver.ends and min(driver.ends.values()) <= promise:
        now = min(driver.ends.values())
        for job_id in sorted(j for j, e in driver.ends.items() if e == now):
            del driver.ends[job_id]
            sched.finish(job_id, now)
        started = driver.run_pass(now)
        if head in started:
            return True
        res = sched.reservation
        if (res is not None and res.job_id != head) or \
                any(res is None or j not in res.backfilled for j in started):
            return None  # another job went ahead of the head, or started by right of its guarantee
    return sched.jobs[head].state == "RUNNING"


@example(fabrics=1, leaves=1, per_leaf=2, queue="fifo", placement="topo",
         script=[("submit", 6, 1_000, "a", False), ("submit", 6, 5_000, "a", False), ("submit", 8, 100, "a", False),
                 ("cordon", 0), ("submit", 2, 10_000, "a", False)])  # the head's node cordoned
# A long job sharing a GPU with a short one took a GPU the head needs, counted as none of its spare.
@example(fabrics=1, leaves=1, per_leaf=1, queue="fifo", placement="topo",
         script=[("submit", 7, 100, "a", False), ("submit", 1, 10, "a", False), ("submit", 8, 100, "a", False),
                 ("submit", 0.5, 20, "a", False), ("submit", 0.5, 1_000, "a", False), ("wait", 10)])
# The reservation counted no GPU freed by shared-GPU jobs ending: once a short one started on the head's
# node the head's start moved later, and a job short only by the later time took the head's GPU.
@example(fabrics=1, leaves=2, per_leaf=2, queue="fifo", placement="topo",
         script=[("submit", 8, 100, "a", False), ("submit", 8, 500, "a", False), ("submit", 4, 20, "a", False),
                 ("submit", 4, 2_000, "a", False), ("submit", 6, 100, "a", False), ("submit", 16, 1_000, "a", False),
                 ("submit", 1, 300, "a", False), ("submit", 0.5, 50, "a", False)])
# The same, as found among node failures and cordons.
@example(fabrics=2, leaves=2, per_leaf=2, queue="sjf", placement="neocloud",
         script=[("submit", 4, 4, "a", False), ("submit", 0.5, 1, "a", False), ("cordon", 1), ("cordon", 2),
                 ("submit", 2, 0, "a", False), ("submit", 0.5, 3, "a", False), ("submit", 0.5, 4, "a", True),
                 ("submit", 8, 5, "a", False), ("wait", 1), ("submit", 0.5, 0, "a", False),
                 ("submit", 0.5, 0, "a", True), ("submit", 6, 0, "a", False), ("fail", 1),
                 ("submit", 0.5, 0, "a", False), ("submit", 0.5, 1, "a", False), ("wait", 1),
                 ("submit", 0.5, 0, "a", False), ("submit", 0.5, 0, "a", False), ("submit", 0.5, 0, "a", False),
                 ("submit", 8, 0, "a", False), ("submit", 1, 0, "a", False), ("submit", 4, 0, "a", False),
                 ("fail", 2), ("submit", 0.5, 0, "a", False)])
@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(fabrics=st.integers(1, 2), leaves=st.integers(1, 2), per_leaf=st.integers(1, 3),
       queue=st.sampled_from(["fifo", "sjf"]), placement=st.sampled_from(["topo", "neocloud"]),
       script=st.lists(STEP, min_size=8, max_size=40))
def test_a_backfilled_job_never_delays_the_head(fabrics: int, leaves: int, per_leaf: int, queue: str, placement: str,
                                                script: list[tuple[Any, ...]]) -> None:
    fleet = make_fleet(leaves=leaves, nodes_per_leaf=per_leaf, gpus=8, fabrics=fabrics)
    driver = Driver(Scheduler(fleet, queue=queue, placement=placement))
    sched = driver.sched
    nodes = len(fleet.nodes)
    now, checked = 0.0, None
    for i, (kind, *args) in enumerate(script):
        driver.report_stops()
        if kind == "submit":
            gpus, estimate, tenant, spot = args
            job = Job(f"j{i}", gpus, gpus_per_node=min(gpus, 8) if gpus >= 1 else None,
                      estimate_s=float(estimate) if estimate else None, tenant=tenant, submit_s=now,
                      priority=PriorityClass.SPOT if spot else PriorityClass.ON_DEMAND)
            with contextlib.suppress(SchedulingError):  # refused: no fabric of this fleet could ever hold it
                sched.submit(job, now)
        elif kind in ("cordon", "uncordon") and args[0] < nodes:
            sched.state.set_schedulable(args[0], kind == "uncordon")
        elif kind == "wait":
            driver.end_jobs(now, now + args[0])
            now += args[0]
        elif kind == "fail":
            driver.fail(args[0], now)
        elif kind == "quotas":
            sched.set_quotas(args[0])
        driver.run_pass(now)
        res = sched.reservation
        if res is None or res is checked or res.start == float("inf") or sched.jobs[res.job_id].state != "PENDING":
            continue  # no head waiting (none, or one preempted in this pass and now held), or no time promised
        checked = res
        if res.by_right:
            assert sched.quotas, "only a guarantee lets a job pass the head off the reservation's terms"
            event("void: started by right behind the head")
            continue
        verdict = kept(copy.deepcopy(driver), res.job_id, res.start, now)
        event(f"{'void' if verdict is None else 'kept'}{' under guarantees' if sched.quotas else ''}"
              f"{', backfilled' if res.backfilled else ''}")
        assert verdict is not None or sched.quotas, "with no guarantees nothing may go ahead of the head"
        assert verdict is not False, f"{res.job_id} was due at {res.start}"
