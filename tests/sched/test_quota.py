"""Guaranteed quotas from reserved contracts: owners take their GPUs back at once, spot goes first,
and borrowers take nothing an owner is waiting for."""

from __future__ import annotations

import pytest

from neocloud.model.events import Launch, Preempt
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL, Allocation
from tests.conftest import make_fleet

SPOT = PriorityClass.SPOT


def four_nodes(queue: str = "fifo", **quotas: float) -> Scheduler:
    return Scheduler(make_fleet(nodes_per_leaf=4, gpus=8), queue=queue, quotas=quotas)


def run(sched: Scheduler, now: float, *jobs: Job) -> tuple[list[str], list[str]]:
    for job in jobs:
        sched.submit(job, now)
    actions = sched.schedule(now)
    return ([a.job_id for a in actions if isinstance(a, Launch)], [a.job_id for a in actions if isinstance(a, Preempt)])


@pytest.mark.parametrize("queue", ["fifo", "neocloud", "las", "fair"])
def test_an_owner_gets_its_guarantee_back_in_one_pass(queue: str) -> None:
    sched = four_nodes(queue, owner=16)
    started, _ = run(sched, 0, *(Job(f"b{i}", 8, tenant="borrower") for i in range(4)))
    assert len(started) == 4  # idle guarantees are lent: 16 GPUs from the on-demand pool, 16 borrowed
    assert [r.pool for r in sched.running.values()].count(None) == 2
    started, preempted = run(sched, 10, Job("mine", 16, gpus_per_node=8, tenant="owner"))
    assert started == ["mine"] and sorted(preempted) == ["b2", "b3"]  # the borrowers, not the pool's jobs
    assert sched.running["mine"].pool == "owner" and {"b2", "b3"} <= {r.job.id for r in sched.queue.order({})}


def test_spot_goes_first() -> None:
    sched = four_nodes(owner=16)
    run(sched, 0, Job("od1", 8, tenant="b"), Job("od2", 8, tenant="b"), Job("od3", 8, tenant="b"),
        Job("spot", 8, tenant="c", priority=SPOT))
    _, preempted = run(sched, 1, Job("mine", 8, tenant="owner"))
    assert preempted == ["spot"]


def _adopt(sched: Scheduler, job: Job, nodes: tuple[int, ...], gpus: int) -> None:
    """Put a job on given nodes, as jobs found running after a restart are."""
    sched.adopt(job, Allocation(job.id, nodes, tuple(tuple(range(gpus)) for _ in nodes), FULL), 0)


def test_an_owner_moves_on_demand_jobs_to_get_whole_nodes() -> None:
    sched = four_nodes(owner=16)
    for i in range(4):  # half of every node, held by jobs of the on-demand pool
        _adopt(sched, Job(f"half{i}", 4, tenant="b"), (i,), 4)
    assert {r.pool for r in sched.running.values()} == {""}
    started, preempted = run(sched, 1, Job("mine", 16, gpus_per_node=8, tenant="owner"))
    assert len(preempted) == 2 and started[0] == "mine"  # two of them move over to the other halves
    assert sorted(started[1:]) == sorted(preempted) and len(sched.running) == 5


def test_an_owner_leaves_an_on_demand_gang_to_wait_where_it_cannot_move() -> None:
    sched = four_nodes(owner=24)
    _adopt(sched, Job("gang", 8, gpus_per_node=4, tenant="b"), (0, 1), 4)  # the on-demand pool, full
    # The owner needs three whole nodes; the gang needs two nodes with 4 free, which the fourth node
    # is not: the owner's 24 GPUs are there in count, so the gang gives up its shape and waits.
    started, preempted = run(sched, 1, Job("mine", 24, gpus_per_node=8, tenant="owner"))
    assert started == ["mine"] and preempted == ["gang"]
    assert sched.jobs["gang"].state == "PENDING"


def test_borrowers_take_nothing_an_owner_is_waiting_for() -> None:
    sched = four_nodes(owner=24, b=8)
    _adopt(sched, Job("gang", 8, gpus_per_node=4, tenant="b"), (0, 1), 4)  # within b's own guarantee
    # The owner needs three whole nodes; the gang cannot be moved (it needs two nodes with 4 free) and,
    # being guaranteed, is not left to wait: the owner waits, and nothing that would borrow takes the
    # two idle nodes meanwhile.
    assert sched.running["gang"].pool == "b"
    started, preempted = run(sched, 1, Job("mine", 24, gpus_per_node=8, tenant="owner"),
                             Job("more", 4, tenant="b"), Job("cheap", 4, tenant="c", priority=SPOT))
    assert started == [] and preempted == []
    sched.finish("gang", 2)
    started, _ = run(sched, 2)
    assert started[0] == "mine"


def test_a_borrower_joins_its_guarantee_when_room_frees_there() -> None:
    sched = four_nodes(owner=16, a=8)
    run(sched, 0, Job("b1", 8, tenant="b"))  # the on-demand pool, full
    run(sched, 1, Job("a1", 8, tenant="a"), Job("a2", 8, tenant="a"))
    assert sched.running["a2"].pool is None  # beyond a's guarantee: borrowing
    sched.finish("a1", 2)
    assert sched.running["a2"].pool == "a"  # within a's guarantee now: not a borrower to take back
    started, preempted = run(sched, 3, Job("mine", 16, tenant="owner"))
    assert started == ["mine"] and preempted == []


def test_without_quotas_nothing_borrows_or_is_taken_back() -> None:
    sched = four_nodes()
    run(sched, 0, *(Job(f"b{i}", 8, tenant="b") for i in range(4)))
    assert {r.pool for r in sched.running.values()} == {""}
    started, preempted = run(sched, 1, Job("late", 8, tenant="a"))
    assert started == [] and preempted == []


def test_quotas_can_change_while_jobs_run() -> None:
    sched = four_nodes()
    run(sched, 0, *(Job(f"b{i}", 8, tenant="b") for i in range(4)))
    sched.set_quotas({"owner": 8})  # a contract starts: the running jobs keep the pool they started in
    assert sched.on_demand_gpus == 24
    _, preempted = run(sched, 1, Job("mine", 8, tenant="owner"))
    assert preempted == []  # none of them borrows: the owner waits for the pool to drain, as its contract began
