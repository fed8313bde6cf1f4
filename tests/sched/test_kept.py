"""Placement answers kept while the state stays as it is: asked again, placement is not consulted."""

from __future__ import annotations

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.kept import KeptPlacement
from neocloud.sched.placement import TopologyPacking
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import Allocation, ClusterState
from tests.conftest import make_fleet


class Counting(TopologyPacking):
    def __init__(self) -> None:
        self.calls = 0

    def place(self, state: ClusterState, job: Job, rng: np.random.Generator) -> Allocation | None:
        self.calls += 1
        return super().place(state, job, rng)


def kept() -> tuple[KeptPlacement, Counting, ClusterState]:
    state = ClusterState(make_fleet(nodes_per_leaf=2, gpus=8))
    policy = Counting()
    return KeptPlacement(policy, state), policy, state


def test_the_same_question_on_the_same_state_is_answered_once() -> None:
    place, policy, state = kept()
    job, rng = Job("j", 4), np.random.default_rng(0)
    first = place.place(state, job, rng)
    assert first is not None and place.place(state, job, rng) is first and policy.calls == 1
    assert place.place(state, Job("j", 4), rng) is not first and policy.calls == 2  # another job of that id


def test_an_answer_goes_stale_when_the_state_changes() -> None:
    place, policy, state = kept()
    job, rng = Job("j", 8), np.random.default_rng(0)
    assert place.place(state, job, rng) is not None
    state.allocate(Allocation("other", (0,), ((0,),), 1000))
    again = place.place(state, job, rng)
    assert again is not None and again.nodes == (1,) and policy.calls == 2


def test_nothing_is_kept_while_nodes_are_withheld() -> None:
    place, policy, state = kept()
    job, rng = Job("j", 8), np.random.default_rng(0)
    assert place.place(state, job, rng) is not None
    with state.withheld([0, 1]):
        assert place.place(state, job, rng) is None  # the withheld nodes are out of reach
    assert place.place(state, job, rng) is not None and policy.calls == 2  # the answer from before still holds


def test_the_pass_starts_a_job_where_the_preemption_check_found_it_room_without_asking_again() -> None:
    policy = Counting()
    sched = Scheduler(make_fleet(nodes_per_leaf=2, gpus=8), queue="neocloud", placement=policy)
    sched.submit(Job("a", 4, estimate_s=60), 0)
    assert [a.job_id for a in sched.schedule(0)] == ["a"]
    assert policy.calls == 1  # asked by the preemption check; the pass took that answer
