"""The `neocloud` placement: deterministic, constraint-honouring, CPU-aware packing."""

from __future__ import annotations

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.packing import ShapeAwarePacking
from neocloud.sched.placements import placement
from neocloud.sched.state import FULL, Allocation, ClusterState
from tests.conftest import custom_fleet, make_fleet


def _jobs(seed: int) -> list[Job]:
    r = np.random.default_rng(seed)
    sizes = [0.25, 0.5, 0.8, 1, 2, 4, 0]
    return [Job(f"j{i}", float(r.choice(sizes)), cpu_milli=int(r.choice([1_000, 8_000, 16_000])))
            for i in range(60)]


def _run(seed: int) -> list[Allocation]:
    state = ClusterState(make_fleet(nodes_per_leaf=6, gpus=8, cpu_milli=96_000))
    policy = ShapeAwarePacking()
    out = []
    for job in _jobs(seed):
        alloc = policy.place(state, job, np.random.default_rng(seed))
        if alloc is not None:
            state.allocate(alloc)
            out.append(alloc)
    return out


def test_registered_and_deterministic() -> None:
    assert isinstance(placement("neocloud"), ShapeAwarePacking)
    assert _run(3) == _run(3)


def test_shared_pods_share_a_gpu_and_nodes_fill_up() -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=3, gpus=8))
    policy = ShapeAwarePacking()
    policy.prime([Job(f"p{i}", 0.5) for i in range(5)] + [Job(f"q{i}", 8) for i in range(5)])
    allocs = []
    for i in range(2):
        alloc = policy.place(state, Job(f"s{i}", 0.5), np.random.default_rng(0))
        assert alloc is not None and alloc.gpu_milli == 500
        state.allocate(alloc)
        allocs.append(alloc)
    assert allocs[0].nodes == allocs[1].nodes and allocs[0].gpus == allocs[1].gpus  # one GPU, full
    # A whole node stays free for the 8-GPU jobs to come.
    alloc = policy.place(state, Job("w", 1), np.random.default_rng(0))
    assert alloc is not None and alloc.nodes == allocs[0].nodes


def test_cpu_only_jobs_go_where_cpu_is_spare() -> None:
    fleet = custom_fleet([[[
        {"count": 1, "gpu": "T4", "gpus": 8, "cpu_milli": 96_000, "memory_mib": 393_216},
        {"count": 1, "gpu": "T4", "gpus": 2, "cpu_milli": 104_000, "memory_mib": 524_288},
    ]]])
    state = ClusterState(fleet)
    policy = ShapeAwarePacking()
    policy.prime([Job(f"g{i}", 1, cpu_milli=12_000) for i in range(8)] + [Job("c", 0, cpu_milli=32_000)])
    alloc = policy.place(state, Job("cpu", 0, cpu_milli=32_000), np.random.default_rng(0))
    assert alloc is not None and alloc.nodes == (1,) and alloc.gpus == ((),)


def test_honours_gpu_model_cpu_and_memory() -> None:
    fleet = custom_fleet([[[
        {"count": 1, "gpu": "A100", "gpus": 8, "cpu_milli": 64_000, "memory_mib": 262_144},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000, "memory_mib": 1_024},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 1_000, "memory_mib": 262_144},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000, "memory_mib": 262_144},
    ]]])
    state = ClusterState(fleet)
    job = Job("j", 0.3, gpu_types=("H100-SXM",), cpu_milli=8_000, memory_mib=4_096)
    alloc = ShapeAwarePacking().place(state, job, np.random.default_rng(0))
    assert alloc is not None and alloc.nodes == (3,) and alloc.gpu_milli == 300 and len(alloc.gpus[0]) == 1
    state.allocate(alloc)
    assert ShapeAwarePacking().place(state, Job("k", 1, cpu_milli=100_000), np.random.default_rng(0)) is None
    whole = ShapeAwarePacking().place(state, Job("w", 4, gpu_types=("A100-SXM",)), np.random.default_rng(0))
    assert whole is not None and whole.nodes == (0,) and whole.gpu_milli == FULL and len(whole.gpus[0]) == 4


def test_a_job_placed_again_is_learned_from_once() -> None:
    # A preemption's probe or a retry places the same job again: the workload it learns from
    # must count that job once.
    state = ClusterState(make_fleet(nodes_per_leaf=2, gpus=8))
    policy = ShapeAwarePacking()
    for _ in range(3):
        assert policy.place(state, Job("j", 0.5), np.random.default_rng(0)) is not None
    policy.place(state, Job("k", 1), np.random.default_rng(0))
    assert sum(policy._counts.values()) == 2
