"""Placement policies: topology packing, best fit, random, and the filter they all share."""

from __future__ import annotations

import numpy as np
import pytest

from neocloud.errors import NeocloudError
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job
from neocloud.sched.placement import BestFit, RandomPlacement, TopologyPacking
from neocloud.sched.placements import PLACEMENTS, placement
from neocloud.sched.state import FULL, Allocation, ClusterState
from tests.conftest import custom_fleet, make_fleet

POLICIES = sorted(PLACEMENTS)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def fill(state: ClusterState, node: int, gpus: int, job_id: str | None = None) -> None:
    """Take the first `gpus` GPUs of `node` with a filler job."""
    state.allocate(Allocation(job_id or f"fill-{node}-{gpus}", (node,), (tuple(range(gpus)),), FULL))


def place_and_take(state: ClusterState, policy, job: Job, seed: int = 0) -> Allocation | None:
    alloc = policy.place(state, job, rng(seed))
    if alloc is not None:
        state.allocate(alloc)
    return alloc


def leaves_of(fleet: Fleet, alloc: Allocation) -> set[int]:
    return {fleet.nodes[n].leaf for n in alloc.nodes}


def fabrics_of(fleet: Fleet, alloc: Allocation) -> set[int]:
    return {fleet.fabric_of(fleet.nodes[n]) for n in alloc.nodes}


def test_placement_by_name() -> None:
    assert isinstance(placement("topo"), TopologyPacking)
    assert isinstance(placement("bestfit"), BestFit)
    assert isinstance(placement("random"), RandomPlacement)
    with pytest.raises(NeocloudError, match="unknown placement 'nope'.*topo"):
        placement("nope")


# -- topology ------------------------------------------------------------------------------------
def test_topo_puts_a_gang_in_the_fullest_leaf_that_holds_it() -> None:
    fleet = make_fleet(leaves=3, nodes_per_leaf=4, gpus=8)  # leaves: nodes 0-3, 4-7, 8-11
    state = ClusterState(fleet)
    fill(state, 4, 8)  # leaf 1: 3 free nodes
    fill(state, 0, 8)
    fill(state, 1, 8)  # leaf 0: 2 free nodes, the smallest leaf that holds a 2 x 8 gang
    alloc = place_and_take(state, TopologyPacking(), Job("g", 16))
    assert alloc is not None
    assert sorted(alloc.nodes) == [2, 3] and leaves_of(fleet, alloc) == {0}
    assert all(len(g) == 8 for g in alloc.gpus)


def test_topo_spans_leaves_of_one_fabric_only_when_no_leaf_fits() -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=2, gpus=8, fabrics=2)  # fabric 0: leaves 0,1
    state = ClusterState(fleet)
    for node in (0, 2, 4, 6):  # every leaf keeps one free node
        fill(state, node, 8)
    alloc = place_and_take(state, TopologyPacking(), Job("g", 16))
    assert alloc is not None
    assert len(leaves_of(fleet, alloc)) == 2 and len(fabrics_of(fleet, alloc)) == 1
    # A 3-node gang: no fabric has three free nodes (each has one left now or two) -> refused.
    assert TopologyPacking().place(state, Job("h", 24), rng()) is None


def test_topo_prefers_one_leaf_in_another_fabric_to_spreading() -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=2, gpus=8, fabrics=2)
    state = ClusterState(fleet)
    for node in (0, 2):  # fabric 0: one free node in each leaf; fabric 1 untouched
        fill(state, node, 8)
    alloc = place_and_take(state, TopologyPacking(), Job("g", 16))
    assert alloc is not None and len(leaves_of(fleet, alloc)) == 1
    assert fabrics_of(fleet, alloc) == {1}


@pytest.mark.parametrize("name", POLICIES)
def test_no_policy_spans_two_fabrics(name: str) -> None:
    fleet = make_fleet(leaves=1, nodes_per_leaf=1, gpus=8, fabrics=2)  # 16 GPUs, 8 per fabric
    state = ClusterState(fleet)
    assert placement(name).place(state, Job("g", 16), rng()) is None
    assert placement(name).place(state, Job("g", 8), rng()) is not None


@pytest.mark.parametrize("name", POLICIES)
def test_no_policy_spans_two_gpu_types(name: str) -> None:
    fleet = custom_fleet([[[{"count": 1, "gpu": "H100", "gpus": 8}, {"count": 1, "gpu": "A100", "gpus": 8}]]])
    state = ClusterState(fleet)
    assert placement(name).place(state, Job("g", 16), rng()) is None


@pytest.mark.parametrize("name", POLICIES)
def test_gang_shape_follows_gpus_per_node(name: str) -> None:
    fleet = make_fleet(leaves=1, nodes_per_leaf=4, gpus=8)
    state = ClusterState(fleet)
    alloc = place_and_take(state, placement(name), Job("g", 8, gpus_per_node=2))
    assert alloc is not None
    assert len(alloc.nodes) == 4 and [len(g) for g in alloc.gpus] == [2, 2, 2, 2]
    # Packed without a shape: 12 GPUs on 8-GPU nodes is one full node and one of 4.
    alloc = place_and_take(ClusterState(fleet), placement(name), Job("h", 12))
    assert alloc is not None and sorted(len(g) for g in alloc.gpus) == [4, 8]


# -- packing single jobs -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bestfit", "topo"])
def test_single_gpu_jobs_pack_on_one_node(name: str) -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=4, gpus=8)
    state = ClusterState(fleet)
    allocs = [place_and_take(state, placement(name), Job(f"j{i}", 1), seed=i) for i in range(8)]
    assert all(a is not None for a in allocs)
    assert len({a.nodes[0] for a in allocs}) == 1
    assert sorted(g for a in allocs for g in a.gpus[0]) == list(range(8))
    # The ninth starts a second node; the rest stay wholly free for gangs.
    ninth = place_and_take(state, placement(name), Job("j8", 1))
    assert ninth is not None and ninth.nodes != allocs[0].nodes
    assert sorted(state.whole_free.tolist()) == [0, 7, 8, 8, 8, 8, 8, 8]


def test_topo_fills_a_used_leaf_before_opening_an_empty_one() -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=2, gpus=8)
    state = ClusterState(fleet)
    fill(state, 3, 8)  # leaf 1's node 3 is full: leaf 1 is "in use", leaf 0 is whole
    alloc = place_and_take(state, TopologyPacking(), Job("j", 8))
    assert alloc is not None and alloc.nodes == (2,)


def test_random_spreads_single_jobs() -> None:
    fleet = make_fleet(leaves=1, nodes_per_leaf=8, gpus=8)
    distinct = []
    for seed in range(20):
        state = ClusterState(fleet)
        generator = rng(seed)
        nodes = []
        for i in range(8):
            alloc = RandomPlacement().place(state, Job(f"j{i}", 1), generator)
            assert alloc is not None
            state.allocate(alloc)
            nodes.append(alloc.nodes[0])
        distinct.append(len(set(nodes)))
    # Uniform over 8 nodes, 8 draws: 5.25 distinct nodes expected; packing would give 1.
    assert min(distinct) >= 3
    assert 4.5 <= np.mean(distinct) <= 6.0


def test_random_is_reproducible_for_a_seed() -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=4, gpus=8)

    def run(seed: int) -> list[tuple]:
        state, generator, out = ClusterState(fleet), rng(seed), []
        for i, gpus in enumerate([1, 2, 16, 0.5, 4, 8, 1]):
            alloc = RandomPlacement().place(state, Job(f"j{i}", gpus), generator)
            assert alloc is not None
            state.allocate(alloc)
            out.append((alloc.nodes, alloc.gpus))
        return out

    assert run(3) == run(3)
    assert any(run(3) != run(s) for s in range(4, 8))


# -- shared GPUs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bestfit", "topo"])
def test_fractional_jobs_share_one_gpu(name: str) -> None:
    fleet = make_fleet(leaves=1, nodes_per_leaf=2, gpus=2)
    state = ClusterState(fleet)
    allocs = [place_and_take(state, placement(name), Job(f"f{i}", g)) for i, g in enumerate([0.5, 0.3, 0.2])]
    assert all(a is not None for a in allocs)
    assert len({(a.nodes, a.gpus) for a in allocs}) == 1
    assert [a.gpu_milli for a in allocs] == [500, 300, 200]
    (node,), ((gpu,),) = allocs[0].nodes, allocs[0].gpus
    assert state.gpu_left[node, gpu] == 0
    assert sorted(state.whole_free.tolist()) == [1, 2]  # three jobs cost one GPU, not three


@pytest.mark.parametrize("name", POLICIES)
def test_fractional_job_never_overfills_a_gpu(name: str) -> None:
    state = ClusterState(make_fleet(gpus=1))
    assert place_and_take(state, placement(name), Job("a", 0.7)) is not None
    assert placement(name).place(state, Job("b", 0.4), rng()) is None
    assert place_and_take(state, placement(name), Job("c", 0.3)) is not None
    assert state.gpu_left[0, 0] == 0


# -- the shared filter ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", POLICIES)
def test_cpu_and_memory_are_respected_single(name: str) -> None:
    fleet = custom_fleet([[[
        {"count": 3, "gpu": "H100", "gpus": 8, "cpu_milli": 4_000, "memory_mib": 262_144},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000, "memory_mib": 16_384},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000, "memory_mib": 262_144},
    ]]])
    state = ClusterState(fleet)
    for seed in range(5):
        alloc = placement(name).place(state, Job("j", 1, cpu_milli=8_000, memory_mib=32_768), rng(seed))
        assert alloc is not None and alloc.nodes == (4,)
    for i in range(8):  # fill node 4's CPU: 8 x 8 cores (node 3 lacks the memory)
        job = Job(f"c{i}", 0.1, cpu_milli=8_000, memory_mib=16_385)
        assert place_and_take(state, placement(name), job) is not None
    assert state.cpu_free[4] == 0
    assert placement(name).place(state, Job("k", 1, cpu_milli=8_000, memory_mib=32_768), rng()) is None


@pytest.mark.parametrize("name", POLICIES)
def test_cpu_and_memory_are_respected_by_gangs(name: str) -> None:
    fleet = custom_fleet([[[
        {"count": 2, "gpu": "H100", "gpus": 8, "cpu_milli": 4_000},
        {"count": 2, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000},
        {"count": 2, "gpu": "H100", "gpus": 8, "cpu_milli": 4_000},
    ]]])
    state = ClusterState(fleet)
    alloc = placement(name).place(state, Job("g", 16, cpu_milli=16_000), rng())
    assert alloc is not None and sorted(alloc.nodes) == [2, 3]
    assert placement(name).place(state, Job("g", 24, cpu_milli=16_000), rng()) is None


@pytest.mark.parametrize("name", POLICIES)
def test_pinned_gpu_type_is_honoured(name: str) -> None:
    fleet = custom_fleet([[
        [{"count": 2, "gpu": "H100", "gpus": 8}],
        [{"count": 2, "gpu": "A100", "gpus": 8}],
    ]])
    state = ClusterState(fleet)
    for seed in range(5):
        for job in (Job("a", 1, gpu_types=("A100-SXM",)), Job("b", 16, gpu_types=("A100-SXM",)),
                    Job("c", 0.5, gpu_types=("A100-SXM",))):
            alloc = placement(name).place(state, job, rng(seed))
            assert alloc is not None
            assert {fleet.nodes[n].gpu.name for n in alloc.nodes} == {"A100-SXM"}
    assert placement(name).place(state, Job("d", 1, gpu_types=("B200",)), rng()) is None
    assert placement(name).place(state, Job("e", 24, gpu_types=("A100-SXM",)), rng()) is None


@pytest.mark.parametrize("name", POLICIES)
def test_cordoned_nodes_get_no_new_work(name: str) -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=2, gpus=8)
    state = ClusterState(fleet)
    for node in (0, 1, 2):
        state.set_schedulable(node, False)
    for seed in range(5):
        for job in (Job("a", 1), Job("b", 0.5), Job("c", 8)):
            alloc = placement(name).place(state, job, rng(seed))
            assert alloc is not None and alloc.nodes == (3,)
    assert placement(name).place(state, Job("g", 16), rng()) is None
    state.set_schedulable(2, True)
    alloc = placement(name).place(state, Job("g", 16), rng())
    assert alloc is not None and sorted(alloc.nodes) == [2, 3]


@pytest.mark.parametrize("name", POLICIES)
def test_nothing_fits_a_full_fleet(name: str) -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=2, gpus=2))
    for node in (0, 1):
        fill(state, node, 2)
    for job in (Job("a", 1), Job("b", 0.1), Job("c", 2), Job("d", 4)):
        assert placement(name).place(state, job, rng()) is None


def test_topo_keeps_a_gang_in_one_leaf_when_cpu_rules_out_the_tightest() -> None:
    fleet = custom_fleet([[
        [{"count": 2, "gpu": "H100", "gpus": 8, "cpu_milli": 4_000}],  # tightest, too little CPU
        [{"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000},  # roomiest, one node fits
         {"count": 3, "gpu": "H100", "gpus": 8, "cpu_milli": 4_000}],
        [{"count": 3, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000}],  # holds the gang alone
    ]])
    state = ClusterState(fleet)
    alloc = TopologyPacking().place(state, Job("g", 16, cpu_milli=16_000), rng())
    assert alloc is not None
    assert leaves_of(fleet, alloc) == {2}


@pytest.mark.parametrize("name", list(PLACEMENTS))
def test_a_gang_goes_to_the_gpu_type_whose_nodes_have_its_cpu(name: str) -> None:
    """The fit index counts GPUs only: a group with GPUs free but CPU short must not be chosen."""
    fleet = custom_fleet([[
        [{"count": 1, "gpu": "H100", "gpus": 1}, {"count": 1, "gpu": "A100", "gpus": 1}],
        [{"count": 2, "gpu": "A100", "gpus": 1}],
        [{"count": 1, "gpu": "A100", "gpus": 1}, {"count": 2, "gpu": "H100", "gpus": 1, "cpu_milli": 4000}],
    ]])
    job = Job("gang", 3, cpu_milli=8000)
    alloc = placement(name).place(ClusterState(fleet), job, np.random.default_rng(0))
    assert alloc is not None
    assert {fleet.nodes[n].gpu.name for n in alloc.nodes} == {"A100-SXM"}
