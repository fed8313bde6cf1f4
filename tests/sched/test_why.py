"""Why a pending job waits: the words the queue shows (capacity, shape, topology, quota, held)."""

from __future__ import annotations

from neocloud.model.job import Job
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL, Allocation
from tests.conftest import make_fleet


def _adopt(sched: Scheduler, job: Job, nodes: tuple[int, ...], gpus: int) -> None:
    sched.adopt(job, Allocation(job.id, nodes, tuple(tuple(range(gpus)) for _ in nodes), FULL), 0)


def _waiting(sched: Scheduler, job: Job) -> str:
    sched.submit(job, 1)
    sched.schedule(1)
    assert sched.jobs[job.id].state == "PENDING"
    return sched.why_waiting(job.id)


def test_capacity_shape_and_topology() -> None:
    full = Scheduler(make_fleet(nodes_per_leaf=2))
    _adopt(full, Job("big", 16), (0, 1), 8)
    assert _waiting(full, Job("w", 4)) == "capacity: needs 4 GPUs, 0 free"

    halves = Scheduler(make_fleet(nodes_per_leaf=2))
    for i in range(2):
        _adopt(halves, Job(f"h{i}", 4), (i,), 4)
    assert _waiting(halves, Job("w", 8, gpus_per_node=8)).startswith("shape: 8 GPUs free, but not 1 node(s) with 8")

    apart = Scheduler(make_fleet(nodes_per_leaf=2, fabrics=2))  # a gang never spans two fabrics
    _adopt(apart, Job("f0", 8), (0,), 8)
    _adopt(apart, Job("f1", 8), (2,), 8)
    assert _waiting(apart, Job("w", 16, gpus_per_node=8)).startswith("topology: 2 nodes with 8 free GPUs exist")

    cordoned = Scheduler(make_fleet(nodes_per_leaf=2))  # free GPUs on a node that takes no work do not count
    cordoned.state.set_schedulable(0, False)
    assert _waiting(cordoned, Job("w", 16, gpus_per_node=8)) == \
        "capacity: needs 16 GPUs, 8 free (8 more on nodes out of service)"


def test_quota_and_held() -> None:
    sched = Scheduler(make_fleet(nodes_per_leaf=2), quotas={"owner": 8}, borrowing=False)
    _adopt(sched, Job("pool", 8, tenant="b"), (0,), 8)  # the on-demand pool is full
    assert _waiting(sched, Job("more", 8, tenant="b")).startswith("quota: beyond its tenant's guarantee")
    sched.hold("more")
    assert sched.why_waiting("more").startswith("held")


def test_guarantees_now() -> None:
    sched = Scheduler(make_fleet(nodes_per_leaf=2), quotas={"owner": 8})
    _adopt(sched, Job("pool", 8, tenant="b"), (0,), 8)  # the on-demand pool, full
    sched.submit(Job("mine", 4, tenant="owner"), 0)
    sched.submit(Job("more", 8, tenant="owner"), 0)
    assert sched.guarantees() == {"owner": {"guaranteed": 8, "within": 0, "beyond": 0, "waiting": 4}}  # room for one
    sched.schedule(1)  # "mine" starts within; "more" would borrow, and 4 GPUs are free
    assert sched.guarantees() == {"owner": {"guaranteed": 8, "within": 4, "beyond": 0, "waiting": 0}}


def test_reasons_are_kept_until_the_cluster_changes() -> None:
    """A page asking every few seconds costs no placement while nothing changes."""
    sched = Scheduler(make_fleet(nodes_per_leaf=2))
    _adopt(sched, Job("big", 12), (0, 1), 6)
    calls = []
    place = sched.placement.place
    sched.placement.place = lambda *a: calls.append(1) or place(*a)  # type: ignore[method-assign]
    assert _waiting(sched, Job("w", 8, gpus_per_node=8)).startswith("capacity:")
    asked = len(calls)
    assert asked >= 1
    for _ in range(5):
        assert sched.why_waiting("w").startswith("capacity:")
    assert len(calls) == asked
    sched.finish("big", 2)  # the cluster changed: worked out again, and now it fits
    assert sched.why_waiting("w").startswith("reservation:") and len(calls) == asked + 1
