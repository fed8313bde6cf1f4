"""Preemption for better-ranked queues: the counted walk decides as a release-and-place walk would.

The walk counts what its victims' going frees (`Room`) and asks placement only once the count says
the blocked job might fit. Against a reference that releases each victim and asks placement every
time, it must take the same victims for the same jobs; and the count must never say "no room"
where placement finds some.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from neocloud.errors import SchedulingError
from neocloud.model.events import Action, Preempt
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.placements import placement as placement_named
from neocloud.sched.preemption import Room
from neocloud.sched.queue import JobRecord
from neocloud.sched.quota import ON_DEMAND
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import Allocation, ClusterState
from tests.conftest import make_fleet
from tests.sched.test_properties import fleets, jobs


def reference_preemption(sched: Scheduler, now: float) -> list[Action]:
    """The walk as first written: every victim released from the state, then placement asked;
    of the victims taken, those off the nodes the job lands on are spared."""
    queue, state = sched.queue, sched.state
    actions: list[Action] = []
    worst_first: list[JobRecord] | None = None
    blocked = 0
    for rec in list(itertools.islice(queue.order(sched.usage), sched.backfill_depth)):
        if sched.placement.place(state, rec.job, sched.rng) is not None:
            continue
        if worst_first is None:
            worst_first = sorted(sched.running.values(), key=lambda r: queue.running_key(r, now), reverse=True)
        if not worst_first or not queue.displaces(rec, worst_first[0], now):
            break
        blocked += 1
        if blocked > sched.preempt_depth:
            break
        taken: list[tuple[JobRecord, Allocation]] = []
        fits: Allocation | None = None
        kept = []
        while worst_first and queue.displaces(rec, worst_first[0], now):
            victim = worst_first.pop(0)
            if victim.pool not in (None, ON_DEMAND) and victim.pool != rec.job.tenant:
                kept.append(victim)
                continue
            taken.append((victim, state.release(victim.job.id)))
            fits = sched.placement.place(state, rec.job, sched.rng)
            if fits is not None:
                break
        for _, alloc in taken:
            state.allocate(alloc)
        worst_first = kept + worst_first
        if fits is not None:  # only the victims on the job's nodes are stopped
            worst_first = [v for v, a in taken if not set(a.nodes) & set(fits.nodes)] + worst_first
            taken = [(v, a) for v, a in taken if set(a.nodes) & set(fits.nodes)]
        if fits is None:
            worst_first = [v for v, _ in taken] + worst_first
            continue
        for victim, _ in taken:
            sched._requeue(victim, now)
            actions.append(Preempt(victim.job.id, f"{queue.name}: {rec.job.id} ranks higher"))
    return actions


def crowded() -> st.SearchStrategy[list]:
    """Steps that keep a small fleet full: long jobs, then short ones that outrank them. Whole GPUs
    only, so that topology packing makes no random draw and both walks see the same placements."""
    spec = st.fixed_dictionaries({
        "gpus": st.sampled_from([1, 2, 4, 8, 16]),
        "estimate_s": st.sampled_from([60.0, 600.0, 50_000.0, None]),
        "priority": st.sampled_from(list(PriorityClass)),
        "tenant": st.sampled_from(["a", "b"]),
        "cpu_milli": st.sampled_from([0, 0, 8_000]),
    }).map(lambda j: {**j, "gpus_per_node": 8 if j["gpus"] > 8 else None})
    kinds = st.sampled_from(("submit",) * 6 + ("schedule",) * 4 + ("finish",))
    return st.lists(st.tuples(kinds, spec, st.integers(0, 1_000), st.floats(0, 20_000)), min_size=20, max_size=60)


# Nine scripts in ten preempt (the events say): 60 compare the walks over some 50 preempting ones.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(leaves=st.integers(1, 2), per_leaf=st.integers(1, 3), queue=st.sampled_from(("las", "neocloud")),
       script=crowded())
def test_the_counted_walk_preempts_as_the_release_and_place_walk(leaves: int, per_leaf: int, queue: str,
                                                                 script: list) -> None:
    fleet = make_fleet(leaves=leaves, nodes_per_leaf=per_leaf, gpus=8, cpu_milli=32_000)
    counted = Scheduler(fleet, queue=queue, placement="topo")
    reference = Scheduler(fleet, queue=queue, placement="topo")
    reference._preempt_for_better_queues = lambda now: reference_preemption(reference, now)  # type: ignore[method-assign]
    now, preempted = 0.0, False
    for i, (kind, spec, arg, dt) in enumerate(script):
        if kind == "submit":
            job = Job(id=f"j{i}", submit_s=now, **spec)
            results = []
            for sched in (counted, reference):
                try:
                    sched.submit(job, now)
                    results.append(True)
                except SchedulingError:  # refused alike by both
                    results.append(False)
            assert results[0] == results[1]
        elif kind == "finish":
            live = sorted(j for j, r in counted.jobs.items() if r.state in ("PENDING", "RUNNING"))
            if live:
                for sched in (counted, reference):
                    sched.finish(live[arg % len(live)], now)
        elif kind == "schedule":
            now += dt
            ranked = sorted(counted.running.values(), key=lambda r: counted.queue.running_key(r, now), reverse=True)
            assert counted.worst_ranked(now) == ranked
            actions = counted.schedule(now)
            assert actions == reference.schedule(now)
            preempted = preempted or any(isinstance(a, Preempt) for a in actions)
    event(f"preempted {'some' if preempted else 'none'}")


# About half the blocked jobs fit already and end at once: 100 leave some 50 walks that release.
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fleet=fleets(max_fabrics=2, max_leaves=2), running=st.lists(jobs(max_gpus=16), min_size=8, max_size=40),
       blocked=jobs(max_gpus=24), name=st.sampled_from(("topo", "bestfit", "neocloud", "random")),
       order=st.randoms(use_true_random=False))
def test_the_count_never_says_no_where_placement_finds_room(fleet: Fleet, running: list, blocked: dict, name: str,
                                                           order: random.Random) -> None:
    state = ClusterState(fleet)
    policy, rng = placement_named(name), np.random.default_rng(0)
    for i, spec in enumerate(running):
        alloc = policy.place(state, Job(f"r{i}", **spec), rng)
        if alloc is not None:
            state.allocate(alloc)
    job = Job("blocked", **blocked)
    if policy.place(state, job, rng) is not None:
        event("fits already")
        return  # the walk never starts
    victims = list(state.allocations)
    order.shuffle(victims)
    room, said_yes = Room(state, job), False
    for victim in victims:
        said_yes = room.release(state.allocations[victim]) or said_yes
        state.release(victim)
        if policy.place(state, job, np.random.default_rng(0)) is not None:
            assert said_yes, f"{job} fits once {victim} is gone, but the count said no room"
            event("fits once some are gone")
            return
    event("never fits")


def test_a_gang_is_asked_about_only_once_enough_whole_nodes_are_counted_free() -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=4, gpus=8))
    for node in range(4):
        state.allocate(Allocation(f"s{node}", (node,), ((0,),), 1000))
        state.allocate(Allocation(f"t{node}", (node,), ((1, 2),), 1000))
    room = Room(state, Job("gang", 16, gpus_per_node=8))
    assert not room.release(state.allocations["s0"])  # node 0 still has two GPUs held
    assert not room.release(state.allocations["t0"])  # node 0 whole: one of the two nodes
    assert not room.release(state.allocations["s1"])
    assert room.release(state.allocations["t1"])  # node 1 whole too: the gang may fit


def test_a_shared_gpu_counts_free_only_when_its_last_holder_goes() -> None:
    state = ClusterState(make_fleet(gpus=1))
    state.allocate(Allocation("a", (0,), ((0,),), 500))
    state.allocate(Allocation("b", (0,), ((0,),), 500))
    room = Room(state, Job("one", 1))
    assert not room.release(state.allocations["a"])
    assert room.release(state.allocations["b"])


def test_a_preempting_job_starts_where_its_victims_were_and_they_wait() -> None:
    sched = Scheduler(make_fleet(nodes_per_leaf=2, gpus=8), queue="neocloud", placement="topo")
    for i in range(4):
        sched.submit(Job(f"long{i}", 4, estimate_s=100_000, submit_s=0), 0)
    sched.schedule(0)
    sched.submit(Job("short", 16, gpus_per_node=8, estimate_s=60, submit_s=1), 1)
    actions = sched.schedule(1)
    preempted = sorted(a.job_id for a in actions if isinstance(a, Preempt))
    assert preempted == ["long0", "long1", "long2", "long3"]
    assert sched.jobs["short"].state == "RUNNING" and sched.state.allocations["short"].nodes == (0, 1)
    assert all(sched.jobs[j].state == "PENDING" and sched.jobs[j].preemptions == 1 for j in preempted)


def test_a_victim_off_the_nodes_the_job_lands_on_runs_on() -> None:
    # Node 0 holds a and c (4 GPUs each), node 1 holds b (8). Ranked worst first: a, b, c. Taking
    # a leaves node 0 short of 8 GPUs; taking b makes node 1 whole and the job lands there, so a,
    # whose node it does not touch, is spared.
    sched = Scheduler(make_fleet(nodes_per_leaf=2, gpus=8), queue="neocloud", placement="topo")
    for name, gpus, estimate in (("a", 4, 900_000.0), ("c", 4, 100_000.0), ("b", 8, 800_000.0)):
        sched.submit(Job(name, gpus, estimate_s=estimate), 0.0)
    sched.schedule(0.0)
    on = {j: sched.state.allocations[j].nodes for j in ("a", "b", "c")}
    assert on["a"] == on["c"] != on["b"]
    sched.submit(Job("big", 8, estimate_s=10.0, submit_s=60.0), 60.0)
    actions = sched.schedule(60.0)
    assert [a.job_id for a in actions if isinstance(a, Preempt)] == ["b"]
    assert sched.state.allocations["big"].nodes == on["b"] and "a" in sched.state.allocations
