"""The scheduling pass: submit checks, launches, finish/cancel, EASY backfill, the dirty flag."""

from __future__ import annotations

import pytest

from neocloud.errors import SchedulingError
from neocloud.model.events import Launch
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.kept import KeptPlacement
from neocloud.sched.placement import BestFit
from neocloud.sched.queue import Fifo
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL, Allocation
from tests.conftest import custom_fleet, make_fleet


def launched(actions: list) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Launch)]


# -- submit ---------------------------------------------------------------------------------------
def test_submit_refuses_what_the_fleet_can_never_hold() -> None:
    sched = Scheduler(custom_fleet([[[{"count": 2, "gpu": "H100", "gpus": 8}],
                                     [{"count": 1, "gpu": "A100", "gpus": 4}]]]))
    with pytest.raises(SchedulingError, match="needs 3 node.s. of 8 GPUs in one fabric, but the most this fleet has is 2"):
        sched.submit(Job("big", 17), 0)
    with pytest.raises(SchedulingError, match="needs 2 node.s. of 4 GPUs"):
        sched.submit(Job("a100", 8, gpu_types=("A100-SXM",)), 0)
    with pytest.raises(SchedulingError, match="GPU type B200, which this fleet does not have"):
        sched.submit(Job("b200", 1, gpu_types=("B200",)), 0)
    with pytest.raises(SchedulingError, match="its nodes have at most 8"):
        sched.submit(Job("wide", 16, gpus_per_node=16), 0)
    assert sched.jobs == {} and len(sched.queue) == 0
    sched.submit(Job("ok", 16), 0)
    sched.submit(Job("either", 4, gpu_types=("B200", "A100-SXM")), 0)
    with pytest.raises(SchedulingError, match="already submitted"):
        sched.submit(Job("ok", 1), 0)
    assert sorted(sched.jobs) == ["either", "ok"] and len(sched.queue) == 2


def test_scheduler_accepts_policy_objects() -> None:
    queue, place = Fifo(), BestFit()
    sched = Scheduler(make_fleet(), queue=queue, placement=place)
    assert sched.queue is queue
    assert isinstance(sched.placement, KeptPlacement) and sched.placement.policy is place and sched.placement.name == "bestfit"


# -- launching and freeing -----------------------------------------------------------------------
def test_launch_finish_and_relaunch() -> None:
    sched = Scheduler(make_fleet(nodes_per_leaf=2, gpus=8), backfill=False)
    for i in range(3):
        sched.submit(Job(f"j{i}", 8, submit_s=i), i)
    actions = sched.schedule(2)
    assert launched(actions) == ["j0", "j1"]
    assert all(len(a.nodes) == 1 and len(a.gpus[0]) == 8 for a in actions)
    assert sched.jobs["j2"].state == "PENDING" and len(sched.queue) == 1
    assert sched.state.allocated_share == 1.0
    sched.finish("j0", 10)
    assert sched.jobs["j0"].state == "COMPLETED" and "j0" not in sched.state.allocations
    assert launched(sched.schedule(10)) == ["j2"]
    rec = sched.jobs["j2"]
    assert (rec.state, rec.started_s, rec.first_start_s) == ("RUNNING", 10, 10)
    assert sched.usage["default"] == 16


def test_cancel_pending_and_running() -> None:
    sched = Scheduler(make_fleet(gpus=8), backfill=False)
    sched.submit(Job("run", 8), 0)
    sched.submit(Job("wait", 8, submit_s=1), 1)
    sched.submit(Job("next", 8, submit_s=2), 2)
    assert launched(sched.schedule(2)) == ["run"]
    sched.cancel("wait", 3)
    assert sched.jobs["wait"].state == "CANCELLED" and len(sched.queue) == 1
    sched.cancel("run", 4)
    assert sched.jobs["run"].state == "CANCELLED" and sched.state.used_milli == 0
    assert launched(sched.schedule(4)) == ["next"]


def test_failed_job_state_is_recorded() -> None:
    sched = Scheduler(make_fleet(gpus=8))
    sched.submit(Job("j", 2), 0)
    sched.schedule(0)
    sched.finish("j", 5, "FAILED")
    assert sched.jobs["j"].state == "FAILED" and sched.state.used_milli == 0


def test_a_pass_with_nothing_new_does_nothing() -> None:
    sched = Scheduler(make_fleet(gpus=8))
    sched.submit(Job("a", 8), 0)
    sched.submit(Job("b", 8), 0)
    assert launched(sched.schedule(0)) == ["a"]
    decisions = sched.decisions
    assert sched.schedule(1) == [] and sched.decisions == decisions  # nothing changed: no pass


def test_priority_class_jumps_the_queue() -> None:
    sched = Scheduler(make_fleet(gpus=8), backfill=False)
    sched.submit(Job("od", 8), 0)
    sched.submit(Job("spot", 8, priority=PriorityClass.SPOT, submit_s=1), 1)
    sched.submit(Job("res", 8, priority=PriorityClass.RESERVED, submit_s=2), 2)
    assert launched(sched.schedule(2)) == ["res"]


def test_fractional_jobs_fill_a_gpu_then_wait() -> None:
    sched = Scheduler(make_fleet(gpus=1), placement="bestfit")
    for i in range(4):
        sched.submit(Job(f"f{i}", 0.3), 0)
    assert launched(sched.schedule(0)) == ["f0", "f1", "f2"]
    assert sched.state.used_milli == 900
    sched.finish("f1", 1)
    assert launched(sched.schedule(1)) == ["f3"]


# -- EASY backfill --------------------------------------------------------------------------------
def blocked_head(backfill: bool) -> Scheduler:
    """8 GPUs; a 6-GPU job runs until 1000 (its estimate); an 8-GPU head job waits for it."""
    sched = Scheduler(make_fleet(gpus=8), backfill=backfill)
    sched.submit(Job("run", 6, estimate_s=1_000), 0)
    assert launched(sched.schedule(0)) == ["run"]
    sched.submit(Job("head", 8, estimate_s=100, submit_s=1), 1)
    sched.submit(Job("long", 2, estimate_s=5_000, submit_s=2), 2)
    sched.submit(Job("short", 2, estimate_s=500, submit_s=3), 3)
    return sched


def test_backfill_runs_a_short_job_that_ends_before_the_head_starts() -> None:
    sched = blocked_head(backfill=True)
    actions = sched.schedule(3)
    assert launched(actions) == ["short"]  # ends at 503 <= 1000; "long" would hold the head up
    assert sched.jobs["head"].state == "PENDING" and sched.jobs["long"].state == "PENDING"
    # When the running job ends the head goes first; the long one only after it.
    sched.finish("short", 503)
    assert sched.schedule(503) == []
    sched.finish("run", 1_000)
    assert launched(sched.schedule(1_000)) == ["head"]


def test_backfill_respects_the_shadow_time_exactly() -> None:
    sched = Scheduler(make_fleet(gpus=8))
    sched.submit(Job("run", 6, estimate_s=1_000), 0)
    sched.schedule(0)
    sched.submit(Job("head", 8, estimate_s=100), 0)
    sched.submit(Job("late", 2, estimate_s=1_000.5), 0)
    sched.submit(Job("on-time", 2, estimate_s=1_000), 0)
    assert launched(sched.schedule(0)) == ["on-time"]


def test_without_backfill_nothing_jumps_the_head() -> None:
    sched = blocked_head(backfill=False)
    assert sched.schedule(3) == []
    sched.finish("run", 1_000)
    assert launched(sched.schedule(1_000)) == ["head"]


def test_backfill_uses_gpus_spare_at_the_shadow_time() -> None:
    """GPUs the head will not need at its start can go to a long job, but only that many."""
    sched = Scheduler(make_fleet(gpus=8), queue="fifo")
    sched.submit(Job("run", 4, estimate_s=1_000), 0)
    sched.schedule(0)
    sched.submit(Job("head", 6, estimate_s=100, submit_s=1), 1)  # waits: 4 free; 8 at t=1000
    sched.submit(Job("long1", 2, estimate_s=9_000, submit_s=2), 2)  # 2 spare at 1000: fits
    sched.submit(Job("long2", 2, submit_s=3), 3)  # no estimate, no spare left: waits
    assert launched(sched.schedule(3)) == ["long1"]
    assert sched.state.used_milli == 6_000
    sched.finish("run", 1_000)
    assert launched(sched.schedule(1_000)) == ["head"]


def test_without_estimates_only_spare_gpus_are_backfilled() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="fifo")
    sched.submit(Job("run", 6), 0)  # no estimate: it may never end
    sched.schedule(0)
    sched.submit(Job("head", 8), 1)
    sched.submit(Job("small", 1), 2)
    assert sched.schedule(2) == []  # shadow is unknown and nothing is spare


def test_the_pass_tells_when_the_blocked_head_starts() -> None:
    sched = blocked_head(backfill=True)
    sched.schedule(3)
    res = sched.reservation
    assert res is not None and (res.job_id, res.start) == ("head", 1_000)
    assert res.backfilled == ["short"] and res.by_right == []
    sched.finish("short", 503)
    sched.finish("run", 1_000)
    assert launched(sched.schedule(1_000)) == ["head"]
    assert sched.reservation is None  # the fleet is full: the pass stopped before trying "long"


def test_a_head_with_nothing_behind_it_has_its_reservation_worked_out_when_asked() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="fifo")
    sched.submit(Job("run", 6, estimate_s=1_000), 0)
    sched.schedule(0)
    worked_out = []
    reservation = sched._reservation
    sched._reservation = lambda rec, now: worked_out.append(rec.job.id) or reservation(rec, now)  # type: ignore[method-assign]
    sched.submit(Job("head", 8, submit_s=1), 1)
    assert sched.schedule(1) == [] and worked_out == []  # no job behind the head: no walk
    res = sched.reservation
    assert res is not None and (res.job_id, res.start, res.scanned) == ("head", 1_000, 0) and worked_out == ["head"]
    assert sched.reservation is res and worked_out == ["head"]


def test_backfill_depth_limits_the_scan() -> None:
    sched = Scheduler(make_fleet(gpus=8), queue="fifo", backfill_depth=2)
    sched.submit(Job("run", 6, estimate_s=1_000), 0)
    sched.schedule(0)
    sched.submit(Job("head", 8, submit_s=1), 1)
    sched.submit(Job("l1", 2, estimate_s=9_000, submit_s=2), 2)
    sched.submit(Job("l2", 2, estimate_s=9_000, submit_s=3), 3)
    sched.submit(Job("short", 1, estimate_s=10, submit_s=4), 4)  # third behind the head
    assert sched.schedule(4) == []


# -- bugs -------------------------------------------------------------------------------------------
def test_a_backfilled_long_job_never_delays_the_head() -> None:
    sched = Scheduler(make_fleet(nodes_per_leaf=2, gpus=8), queue="fifo", placement="topo")
    sched.submit(Job("r1", 6, estimate_s=1_000), 0)  # node 0, ends at 1000
    sched.submit(Job("r2", 6, estimate_s=5_000), 0)  # node 1, ends at 5000
    assert launched(sched.schedule(0)) == ["r1", "r2"]
    sched.submit(Job("head", 8, estimate_s=100, submit_s=1), 1)  # needs a whole node
    sched.submit(Job("long", 2, estimate_s=10_000, submit_s=2), 2)
    sched.schedule(2)
    sched.finish("r1", 1_000)
    assert "head" in launched(sched.schedule(1_000)), "the head starts at its shadow time"


def test_a_long_job_sharing_a_gpu_with_a_short_one_takes_that_gpu_from_the_head() -> None:
    """The GPU a short job shares will be whole when the head starts; a long job on the rest of it
    keeps it from the head, as if it took the whole GPU."""
    sched = Scheduler(make_fleet(gpus=8), queue="fifo", placement="topo")
    sched.submit(Job("run", 7, estimate_s=100), 0)
    sched.submit(Job("brief", 1, estimate_s=10), 0)
    assert launched(sched.schedule(0)) == ["run", "brief"]
    sched.submit(Job("head", 8, estimate_s=100), 0)  # all 8 GPUs at 100
    sched.submit(Job("short", 0.5, estimate_s=20), 0)
    sched.submit(Job("long", 0.5, estimate_s=1_000), 0)
    sched.finish("brief", 10)
    assert launched(sched.schedule(10)) == ["short"], "half of GPU 7 until 1010 would hold the head up"
    sched.finish("short", 30)
    sched.schedule(30)
    sched.finish("run", 100)
    assert launched(sched.schedule(100)) == ["head"]


def test_the_reservation_counts_a_shared_gpu_free_when_its_last_job_ends() -> None:
    """A short shared-GPU job on the head's node must not move the head's start later: worked out
    again, the reservation would then let a job that outlasts the first start take the head's GPUs."""
    sched = Scheduler(make_fleet(nodes_per_leaf=4, gpus=8), queue="fifo", placement="topo")
    for job_id, node, gpus, est in [("a", 0, range(6), 100), ("b", 1, range(8), 100), ("c", 2, range(8), 500),
                                    ("d", 3, range(4), 20), ("f", 3, range(4, 8), 2_000)]:
        job = Job(job_id, len(gpus), estimate_s=est)
        sched.adopt(job, Allocation(job_id, (node,), (tuple(gpus),), FULL), 0)
    sched.submit(Job("head", 16, gpus_per_node=8, estimate_s=1_000), 0)  # nodes 0 and 1 at 100
    sched.submit(Job("later", 1, estimate_s=300), 0)
    sched.submit(Job("short", 0.5, estimate_s=50), 0)
    assert launched(sched.schedule(0)) == ["short"]  # on node 0, where the head goes
    sched.finish("d", 20)  # the reservation is worked out again: still 100, on nodes 0 and 1
    assert launched(sched.schedule(20)) == ["later"] and sched.state.allocations["later"].nodes == (3,)
    assert sched.reservation is not None and sched.reservation.start == 100
    sched.finish("short", 50)
    sched.schedule(50)
    sched.finish("a", 100)
    sched.finish("b", 100)
    assert launched(sched.schedule(100)) == ["head"]


def test_a_cordon_moves_the_head_s_reservation() -> None:
    """The head's reservation is worked out again when a node is cordoned: kept as it was, a long
    job could be backfilled onto the node the head must now wait for."""
    sched = Scheduler(make_fleet(nodes_per_leaf=2, gpus=8), queue="fifo", placement="topo")
    sched.submit(Job("r1", 6, estimate_s=1_000), 0)  # node 0, ends at 1000
    sched.submit(Job("r2", 6, estimate_s=5_000), 0)  # node 1, ends at 5000
    assert launched(sched.schedule(0)) == ["r1", "r2"]
    sched.submit(Job("head", 8, estimate_s=100, submit_s=1), 1)
    assert sched.schedule(1) == []  # reserved: node 0 at 1000
    sched.state.set_schedulable(0, False)  # node 0 cordoned: the head's place is now node 1, at 5000
    sched.submit(Job("long", 2, estimate_s=10_000, submit_s=2), 2)
    assert sched.schedule(2) == [], "a 10,000 s job on node 1 would delay the head past 5,000 s"
    sched.finish("r2", 5_000)
    assert launched(sched.schedule(5_000)) == ["head"]


def test_a_long_job_does_not_jump_a_head_whose_start_is_unknown() -> None:
    sched = Scheduler(make_fleet(gpus=8))
    sched.submit(Job("run", 6), 0)  # no estimate
    sched.schedule(0)
    sched.submit(Job("head", 8, submit_s=1), 1)
    sched.submit(Job("long", 2, estimate_s=1e6, submit_s=2), 2)
    sched.schedule(2)
    sched.finish("run", 100)
    assert launched(sched.schedule(100)) == ["head"], "the head waited only for the running job"


@pytest.mark.parametrize("case", ["across-fabrics", "smaller-nodes-of-type", "cpu", "memory"])
def test_submit_refuses_a_job_no_placement_can_ever_run(case: str) -> None:
    if case == "across-fabrics":  # 16 H100 in all, but 8 per fabric and a job never spans two
        fleet, job = make_fleet(gpus=8, fabrics=2), Job("j", 16)
    elif case == "smaller-nodes-of-type":  # 16 A100 on 4-GPU nodes; layout uses the 8-GPU H100s
        fleet = custom_fleet([[[{"count": 1, "gpu": "H100", "gpus": 8},
                                {"count": 4, "gpu": "A100", "gpus": 4}]]])
        job = Job("j", 8, gpu_types=("A100-SXM",))
    elif case == "cpu":
        fleet, job = make_fleet(gpus=8, cpu_milli=8_000), Job("j", 1, cpu_milli=16_000)
    else:
        fleet, job = make_fleet(gpus=8, memory_mib=1_024), Job("j", 1, memory_mib=4_096)
    sched = Scheduler(fleet)
    try:
        sched.submit(job, 0)
    except SchedulingError:
        return
    assert launched(sched.schedule(0)), f"{job} was accepted, yet it cannot run on the empty fleet"


def test_uncordon_lets_a_waiting_job_start() -> None:
    sched = Scheduler(make_fleet(gpus=8))
    sched.state.set_schedulable(0, False)
    sched.submit(Job("j", 1), 0)
    assert sched.schedule(0) == []
    sched.state.set_schedulable(0, True)
    assert launched(sched.schedule(1)) == ["j"]


def test_cancel_after_the_end_keeps_the_outcome() -> None:
    sched = Scheduler(make_fleet(gpus=8))
    sched.submit(Job("j", 1), 0)
    sched.schedule(0)
    sched.finish("j", 5)
    try:
        sched.cancel("j", 6)
    except SchedulingError:
        pass
    assert sched.jobs["j"].state == "COMPLETED"
    with pytest.raises(SchedulingError):
        sched.cancel("nope", 7)
