"""Property tests of the scheduler's invariants, under random fleets, jobs and event sequences.

Each example draws a small fleet (1-3 fabrics, 1-4 leaves each, 1-6 nodes a leaf, 1-8 GPUs a
node, mixed GPU types, some nodes tracking CPU and memory), a scheduler configuration
(placement x queue x backfill) and a sequence of submit / finish / cancel / cordon / uncordon /
schedule steps with time moving forward. After every step the scheduler's state is checked
against a from-scratch recount of its own allocations and against a shadow model of each job's
life (pending -> running <-> pending (preempted) -> done).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from neocloud.errors import SchedulingError
from neocloud.model.events import Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.placements import placement as placement_named
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL, ClusterState
from tests.conftest import custom_fleet

GPU_TYPES = ("H100-SXM", "A100-SXM", "L40S")
PLACEMENTS = ("random", "bestfit", "topo", "fgd", "neocloud")
QUEUES = ("fifo", "sjf", "las", "fair", "neocloud")

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- strategies -----------------------------------------------------------------------------------
@st.composite
def node_groups(draw: st.DrawFn) -> dict:
    group: dict = {
        "count": draw(st.integers(1, 3)),
        "gpu": draw(st.sampled_from(GPU_TYPES)),
        "gpus": draw(st.integers(1, 8)),
    }
    if draw(st.booleans()):
        group["cpu_milli"] = draw(st.sampled_from([4_000, 16_000, 64_000]))
        group["memory_mib"] = draw(st.sampled_from([0, 32_768, 262_144]))
    return group


@st.composite
def fleets(draw: st.DrawFn, max_fabrics: int = 3, max_leaves: int = 4) -> Fleet:
    fabrics = []
    for _ in range(draw(st.integers(1, max_fabrics))):
        leaves = []
        for _ in range(draw(st.integers(1, max_leaves))):
            # 1-2 groups of 1-3 nodes: 1-6 nodes a leaf, one or two GPU types in a leaf.
            leaves.append(draw(st.lists(node_groups(), min_size=1, max_size=2)))
        fabrics.append(leaves)
    return custom_fleet(fabrics)


@st.composite
def jobs(draw: st.DrawFn, max_gpus: int = 32) -> dict:
    """Job fields without id and submit time (those come from the step's position)."""
    if draw(st.integers(0, 3)) == 0:
        gpus: float = draw(st.integers(1, 9)) / 10  # fractional 0.1-0.9
        per_node = None
    else:
        gpus = draw(st.one_of(st.integers(1, min(8, max_gpus)), st.integers(1, max_gpus)))
        # A shape no wider than the job (a 1-GPU job asking 2 a node is refused; see test_scheduler).
        per_node = draw(st.one_of(st.none(), st.none(), st.integers(1, min(8, gpus))))
    return {
        "gpus": gpus,
        "gpus_per_node": per_node,
        "gpu_types": draw(st.one_of(
            st.just(()), st.just(()),
            st.lists(st.sampled_from(GPU_TYPES), min_size=1, max_size=2, unique=True).map(tuple),
        )),
        "cpu_milli": draw(st.one_of(st.just(0), st.sampled_from([500, 2_000, 8_000, 32_000]))),
        "memory_mib": draw(st.one_of(st.just(0), st.sampled_from([1_024, 65_536]))),
        "tenant": draw(st.sampled_from(["a", "b", "c"])),
        "priority": draw(st.sampled_from(list(PriorityClass))),
        "estimate_s": draw(st.one_of(st.none(), st.floats(10, 20_000))),
    }


KINDS = ("submit",) * 8 + ("schedule",) * 5 + ("finish",) * 2 + ("cancel", "cordon", "uncordon")


def steps(n_max: int = 40, max_gpus: int = 32, max_dt: float = 5_000):
    """(kind, job, index, seconds) steps, submits weighted most. finish/cancel/cordon take their
    target as `index` modulo what exists; schedule advances the clock by `seconds` first."""
    return st.lists(
        st.tuples(st.sampled_from(KINDS), jobs(max_gpus), st.integers(0, 1_000), st.floats(0, max_dt)),
        min_size=6,
        max_size=n_max,
    )


configs = st.tuples(st.sampled_from(PLACEMENTS), st.sampled_from(QUEUES), st.booleans(), st.integers(0, 3))


# -- oracles ---------------------------------------------------------------------------------------
def fits_empty_fleet(fleet: Fleet, job: Job) -> bool:
    """Whether some policy of the scheduler places `job` on the fleet with nothing running."""
    for name in PLACEMENTS:
        if placement_named(name).place(ClusterState(fleet), job, np.random.default_rng(0)) is not None:
            return True
    return False


def could_ever_hold(fleet: Fleet, job: Job) -> bool:
    """An ideal scheduler's answer: is there one fabric and one GPU type with nodes that can
    take the job's GPUs (in its shape, when it gives one) and its CPU and memory per node?"""
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    # With no shape given, a gang is packed as tightly as the widest node it accepts allows.
    widest = max((n.gpus for n in fleet.nodes if n.gpu and (not job.gpu_types or n.gpu.name in job.gpu_types)),
                 default=0)
    for node in fleet.nodes:
        if node.gpu is None or (job.gpu_types and node.gpu.name not in job.gpu_types):
            continue
        if (node.cpu_milli and node.cpu_milli < job.cpu_milli) or (node.memory_mib and node.memory_mib < job.memory_mib):
            continue
        groups[(fleet.fabric_of(node), node.gpu.name)].append(node.gpus)
    for caps in groups.values():
        if job.fractional:
            return True
        need = job.layout(job.gpus_per_node or widest)
        caps_sorted = sorted(caps, reverse=True)
        if len(caps_sorted) >= len(need) and all(c >= need[0] for c in caps_sorted[: len(need)]):
            return True
    return False


# -- the invariant checks -------------------------------------------------------------------------
@dataclass
class Model:
    """What the test knows independently of the scheduler: each job's life so far."""

    status: dict[str, str]
    launches: Counter
    cordoned: set[int]


def check_state(sched: Scheduler, model: Model) -> None:
    state, fleet = sched.state, sched.state.fleet
    n = len(fleet.nodes)
    # GPUs: recount milli used per GPU from the live allocations.
    used = np.zeros_like(state.gpu_left)
    cpu = np.zeros(n, dtype=np.int64)
    mem = np.zeros(n, dtype=np.int64)
    for alloc in state.allocations.values():
        assert len(set(alloc.nodes)) == len(alloc.nodes), f"{alloc.job_id} lists a node twice"
        for node, gpus in zip(alloc.nodes, alloc.gpus):
            assert len(set(gpus)) == len(gpus), f"{alloc.job_id} lists a GPU twice on node {node}"
            assert all(0 <= g < fleet.nodes[node].gpus for g in gpus), f"{alloc.job_id}: no such GPU"
            used[node, list(gpus)] += alloc.gpu_milli
            cpu[node] += alloc.cpu_milli
            mem[node] += alloc.memory_mib
    for node in fleet.nodes:
        k = node.gpus
        assert (used[node.id, :k] <= FULL).all(), f"GPU over-committed on node {node.id}: {used[node.id]}"
        assert (state.gpu_left[node.id, :k] == FULL - used[node.id, :k]).all()
        assert (state.gpu_left[node.id, k:] == -1).all()  # GPUs the node lacks stay unusable
        assert state.whole_free[node.id] == int((used[node.id, :k] == 0).sum())
        if node.cpu_milli:
            assert cpu[node.id] <= node.cpu_milli, f"CPU over-committed on node {node.id}"
            assert state.cpu_free[node.id] == node.cpu_milli - cpu[node.id]
        if node.memory_mib:
            assert mem[node.id] <= node.memory_mib, f"memory over-committed on node {node.id}"
            assert state.mem_free[node.id] == node.memory_mib - mem[node.id]
    assert state.used_milli == int(used.sum())
    assert 0.0 <= state.allocated_share <= 1.0
    # Who holds each node, as the index keeps it, is what the allocations say.
    holders: list[set[str]] = [set() for _ in range(n)]
    for alloc in state.allocations.values():
        for node in alloc.nodes:
            holders[node].add(alloc.job_id)
    assert state.on_node == holders

    # The fit index: per cell, per count of wholly free GPUs, the schedulable nodes.
    hist = np.zeros_like(state.hist)
    members: dict[tuple[int, int], set[int]] = defaultdict(set)
    for node in fleet.nodes:
        if node.gpus and state.schedulable[node.id]:
            key = (int(state.cell[node.id]), int(state.whole_free[node.id]))
            hist[key] += 1
            members[key].add(node.id)
    assert (state.hist == hist).all(), "fit index histogram disagrees with a recount"
    for c, row in enumerate(state.buckets):
        for k, bucket in enumerate(row):
            assert set(bucket) == members.get((c, k), set()), f"fit index bucket ({c}, {k}) is stale"
    assert [bool(s) for s in state.schedulable] == [i not in model.cordoned for i in range(n)]

    # Allocations: exactly the running jobs, each holding exactly what it asked for.
    running = {j for j, s in model.status.items() if s == "RUNNING"}
    assert set(state.allocations) == running == set(sched.running)
    usage: Counter = Counter()
    for job_id, alloc in state.allocations.items():
        rec = sched.jobs[job_id]
        job = rec.job
        assert rec.state == "RUNNING"
        usage[job.tenant] += job.gpus
        assert (alloc.cpu_milli, alloc.memory_mib) == (job.cpu_milli, job.memory_mib)
        if job.fractional:
            assert len(alloc.nodes) == 1 and len(alloc.gpus[0]) == 1
            assert alloc.gpu_milli == job.gpu_milli
        else:
            assert alloc.gpu_milli == FULL
            assert sum(len(g) for g in alloc.gpus) == job.whole_gpus, "gang is not all-or-nothing"
            assert len(alloc.nodes) == len(state.layout(job))
            if job.gpus_per_node:
                assert all(len(g) <= job.gpus_per_node for g in alloc.gpus)
        nodes = [fleet.nodes[i] for i in alloc.nodes]
        assert len({fleet.fabric_of(nd) for nd in nodes}) == 1, f"{job_id} spans two fabrics"
        types = {nd.gpu.name for nd in nodes if nd.gpu is not None}
        assert len(types) == 1, f"{job_id} spans GPU types {types}"
        if job.gpu_types:
            assert types <= set(job.gpu_types), f"{job_id} pinned to {job.gpu_types} runs on {types}"
    for tenant, held in sched.usage.items():
        assert held == pytest.approx(usage.get(tenant, 0.0), abs=1e-9)
    pending = sum(1 for s in model.status.values() if s == "PENDING")
    assert len(sched.queue) == pending


def apply_actions(sched: Scheduler, model: Model, actions: list) -> None:
    for action in actions:
        if isinstance(action, Launch):
            assert model.status[action.job_id] == "PENDING", f"{action.job_id} launched while {model.status[action.job_id]}"
            alloc = sched.state.allocations[action.job_id]
            assert (action.nodes, action.gpus) == (alloc.nodes, alloc.gpus)
            assert not set(action.nodes) & model.cordoned, f"{action.job_id} launched on a cordoned node"
            model.status[action.job_id] = "RUNNING"
            model.launches[action.job_id] += 1
        else:
            assert isinstance(action, Preempt)
            assert sched.queue.preemptive, "only a preemptive queue preempts"
            assert model.status[action.job_id] == "RUNNING"
            model.status[action.job_id] = "PENDING"


def run_steps(fleet: Fleet, config: tuple, script: list) -> tuple[Scheduler, list[Job]]:
    place, queue, backfill, seed = config
    sched = Scheduler(fleet, queue=queue, placement=place, backfill=backfill, seed=seed)
    model = Model({}, Counter(), set())
    refused: list[Job] = []
    now = 0.0
    submitted: list[str] = []
    for i, (kind, spec, arg, dt) in enumerate(script):
        if kind == "submit":
            job = Job(id=f"j{i}", submit_s=now, **spec)
            try:
                sched.submit(job, now)
            except SchedulingError:
                refused.append(job)
                assert job.id not in sched.jobs
            else:
                model.status[job.id] = "PENDING"
                submitted.append(job.id)
        elif kind in ("finish", "cancel"):
            live = [j for j in submitted if model.status[j] in ("PENDING", "RUNNING")]
            if live:
                job_id = live[arg % len(live)]
                if kind == "finish":
                    sched.finish(job_id, now)
                else:
                    sched.cancel(job_id, now)
                model.status[job_id] = "DONE"
                assert sched.jobs[job_id].state == ("COMPLETED" if kind == "finish" else "CANCELLED")
        elif kind in ("cordon", "uncordon"):
            node = arg % len(fleet.nodes)
            sched.state.set_schedulable(node, kind == "uncordon")
            (model.cordoned.discard if kind == "uncordon" else model.cordoned.add)(node)
        else:
            now += dt
            apply_actions(sched, model, sched.schedule(now))
        check_state(sched, model)
    # Drain: pass, finish whatever runs, and again, until nothing more starts.
    for _ in range(len(script)):
        now += 1.0
        apply_actions(sched, model, sched.schedule(now))
        check_state(sched, model)
        if not sched.running:
            break
        for job_id in list(sched.running):
            sched.finish(job_id, now)
            model.status[job_id] = "DONE"
        check_state(sched, model)
    assert sched.state.used_milli == 0 and not sched.state.allocations
    for job_id, count in model.launches.items():
        assert count <= 1 + sched.jobs[job_id].preemptions, f"{job_id} ran more often than it was preempted"
    return sched, refused


# -- the properties --------------------------------------------------------------------------------
@SETTINGS
@given(fleet=fleets(), config=configs, script=steps())
def test_invariants_hold_after_every_step(fleet: Fleet, config: tuple, script: list) -> None:
    sched, refused = run_steps(fleet, config, script)
    event(f"launched {'some' if sched.decisions and any(r.first_start_s is not None for r in sched.jobs.values()) else 'none'}")
    event(f"preempted {'some' if any(r.preemptions for r in sched.jobs.values()) else 'none'}")
    event(f"refused {'some' if refused else 'none'}")
    for job in refused:  # refusal is only for jobs no scheduler could ever hold
        assert not could_ever_hold(fleet, job), f"{job} was refused but the fleet can hold it"
        assert not fits_empty_fleet(fleet, job)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    fleet=fleets(max_fabrics=1, max_leaves=2),
    config=st.tuples(st.sampled_from(PLACEMENTS), st.sampled_from(("las", "neocloud")), st.booleans(),
                     st.integers(0, 3)),
    script=steps(max_gpus=6, max_dt=20_000),
)
def test_invariants_hold_under_las_preemption(fleet: Fleet, config: tuple, script: list) -> None:
    """The same invariants on small crowded fleets under the preemptive queue, where running
    jobs are stopped and requeued (and every preempted job is back in the queue, not lost)."""
    sched, _ = run_steps(fleet, config, script)
    event(f"preempted {'some' if any(r.preemptions for r in sched.jobs.values()) else 'none'}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), job=jobs())
def test_submit_refuses_exactly_what_the_fleet_can_never_hold(fleet: Fleet, job: dict) -> None:
    """Refused at submit if and only if no fabric and GPU type could ever hold the job."""
    j = Job(id="x", **job)
    sched = Scheduler(fleet)
    if could_ever_hold(fleet, j):
        sched.submit(j, 0.0)
    else:
        with pytest.raises(SchedulingError):
            sched.submit(j, 0.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), job=jobs())
def test_submit_refuses_every_job_the_fleet_can_never_hold(fleet: Fleet, job: dict) -> None:
    j = Job(id="x", **job)
    sched = Scheduler(fleet)
    try:
        sched.submit(j, 0.0)
    except SchedulingError:
        return
    assert fits_empty_fleet(fleet, j), f"accepted {j} though no placement can ever run it"
