"""ClusterState: per-GPU milli accounting, CPU/memory, cordons and the fit index."""

from __future__ import annotations

import numpy as np
import pytest

from neocloud.errors import SchedulingError
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site
from neocloud.sched.state import FULL, Allocation, ClusterState
from tests.conftest import custom_fleet, make_fleet


def snapshot(state: ClusterState) -> tuple:
    return (
        state.gpu_left.copy(), state.cpu_free.copy(), state.mem_free.copy(), state.whole_free.copy(),
        state.hist.copy(), [[list(b) for b in row] for row in state.buckets], state.used_milli,
    )


def same(a: tuple, b: tuple) -> bool:
    return all(
        (x == y).all() if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b, strict=True)
    )


def test_fresh_state_counts_every_gpu_free() -> None:
    state = ClusterState(make_fleet(leaves=2, nodes_per_leaf=3, gpus=4))
    assert state.total_gpus == 24 and state.max_gpus == 4
    assert list(state.whole_free) == [4] * 6
    assert (state.gpu_left == FULL).all()
    assert state.used_milli == 0 and state.allocated_share == 0.0
    # Two cells (one per leaf, one GPU type), each with its 3 nodes in the "4 free" bucket.
    assert state.hist.shape == (2, 5)
    assert state.hist[:, 4].tolist() == [3, 3] and state.hist[:, :4].sum() == 0
    assert list(state.buckets[0][4]) == [0, 1, 2] and list(state.buckets[1][4]) == [3, 4, 5]
    assert state.leaf.tolist() == [0, 0, 0, 1, 1, 1]


def test_cells_split_leaves_by_gpu_type_and_pad_smaller_nodes() -> None:
    fleet = custom_fleet([[
        [{"count": 1, "gpu": "H100", "gpus": 8}, {"count": 2, "gpu": "A100", "gpus": 4}],
    ]])
    state = ClusterState(fleet)
    assert state.type_names == ["A100-SXM", "H100-SXM"]
    assert len(state.cell_nodes) == 2
    a100 = state.cells_for(("A100-SXM",))
    assert len(a100) == 1 and state.cell_nodes[int(a100[0])].tolist() == [1, 2]
    assert len(state.cells_for(())) == 2
    assert len(state.cells_for(("B200",))) == 0  # a type the fleet lacks matches no cell
    # A 4-GPU node's missing GPUs 4..7 are -1: never free, never fit anything.
    assert state.gpu_left[1].tolist() == [FULL] * 4 + [-1] * 4
    assert state.nodes_with(a100, 4).tolist() == [2]
    assert state.nodes_with(a100, 5).tolist() == [0]


def test_allocate_and_release_round_trip() -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=2, gpus=8, cpu_milli=32_000, memory_mib=65_536))
    before = snapshot(state)
    alloc = Allocation("j", (0, 1), ((0, 1, 2), (5,)), FULL, cpu_milli=4_000, memory_mib=1_024)
    state.allocate(alloc)
    assert state.whole_free.tolist() == [5, 7]
    assert state.gpu_left[0, :3].tolist() == [0, 0, 0] and state.gpu_left[1, 5] == 0
    assert state.cpu_free.tolist() == [28_000, 28_000]
    assert state.mem_free.tolist() == [64_512, 64_512]
    assert state.used_milli == 4 * FULL and state.allocated_share == pytest.approx(4 / 16)
    assert alloc.gpu_count == 4
    assert list(state.buckets[0][5]) == [0] and list(state.buckets[0][7]) == [1]
    assert state.hist[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 0]
    assert state.release("j") == alloc
    assert same(snapshot(state), before)
    assert state.allocations == {}


def test_shared_gpu_is_exact_in_milli() -> None:
    state = ClusterState(make_fleet(gpus=2))
    state.allocate(Allocation("a", (0,), ((1,),), 500))
    state.allocate(Allocation("b", (0,), ((1,),), 300))
    state.allocate(Allocation("c", (0,), ((1,),), 200))
    assert state.gpu_left[0].tolist() == [FULL, 0]
    assert state.whole_free[0] == 1  # a partly used GPU is no longer wholly free
    assert state.used_milli == FULL
    assert state.allocations["a"].gpu_count == pytest.approx(0.5)
    with pytest.raises(SchedulingError, match="does not fit"):
        state.allocate(Allocation("d", (0,), ((1,),), 1))
    state.release("b")
    assert state.gpu_left[0, 1] == 300 and state.whole_free[0] == 1
    state.release("a")
    state.release("c")
    assert state.whole_free[0] == 2 and state.used_milli == 0


@pytest.mark.parametrize(
    "alloc",
    [
        Allocation("x", (0,), ((0,),), FULL),  # GPU 0 already held
        Allocation("x", (1, 0), ((0,), (0,)), FULL),  # second node fails after the first fits
        Allocation("x", (1,), ((0,),), FULL, cpu_milli=9_000),  # more CPU than left
        Allocation("x", (1,), ((0,),), FULL, memory_mib=20_000),  # more memory than left
    ],
)
def test_failed_allocate_changes_nothing(alloc: Allocation) -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=2, gpus=4, cpu_milli=8_000, memory_mib=16_384))
    state.allocate(Allocation("held", (0,), ((0,),), FULL))
    before = snapshot(state)
    with pytest.raises(SchedulingError):
        state.allocate(alloc)
    assert same(snapshot(state), before)
    assert set(state.allocations) == {"held"}


def test_gpus_a_smaller_node_lacks_never_fit() -> None:
    state = ClusterState(custom_fleet([[[{"count": 1, "gpu": "H100", "gpus": 8},
                                          {"count": 1, "gpu": "A100", "gpus": 4}]]]))
    before = snapshot(state)
    with pytest.raises(SchedulingError):
        state.allocate(Allocation("x", (1,), ((6,),), FULL))  # node 1 has GPUs 0-3 only
    assert same(snapshot(state), before)


@pytest.mark.parametrize("gpus", [(9,), (-1,), (0, 0)], ids=["past-width", "negative", "repeated"])
def test_allocate_refuses_bad_gpu_indices(gpus: tuple[int, ...]) -> None:
    state = ClusterState(make_fleet(gpus=8))
    before = snapshot(state)
    with pytest.raises(SchedulingError):
        state.allocate(Allocation("x", (0,), (gpus,), FULL))
    assert same(snapshot(state), before)


def test_a_job_is_placed_once() -> None:
    state = ClusterState(make_fleet(gpus=4))
    state.allocate(Allocation("j", (0,), ((0,),), FULL))
    with pytest.raises(SchedulingError, match="already placed"):
        state.allocate(Allocation("j", (0,), ((1,),), FULL))


def test_untracked_cpu_and_memory_never_run_short() -> None:
    state = ClusterState(make_fleet(gpus=8))  # cpu_milli/memory_mib 0: not tracked
    assert state.fits_cpu_mem(0, 10**9, 10**9)
    state.allocate(Allocation("j", (0,), ((0,),), FULL, cpu_milli=10**9, memory_mib=10**9))
    assert state.fits_cpu_mem(0, 10**9, 10**9)


def test_cordon_takes_a_node_out_of_the_index_and_keeps_its_work() -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=3, gpus=4))
    state.allocate(Allocation("j", (1,), ((0, 1),), FULL))
    state.set_schedulable(1, False)
    state.set_schedulable(1, False)  # idempotent
    assert not state.schedulable[1]
    assert state.hist[0].tolist() == [0, 0, 0, 0, 2]
    assert 1 not in list(state.candidates(0, 0))
    # Work on the cordoned node stays and can end; the node stays out of the index meanwhile.
    assert "j" in state.allocations
    state.release("j")
    assert state.whole_free[1] == 4 and state.hist[0].tolist() == [0, 0, 0, 0, 2]
    state.set_schedulable(1, True)
    state.set_schedulable(1, True)
    assert state.hist[0].tolist() == [0, 0, 0, 0, 3]
    assert list(state.candidates(0, 4)) == [0, 1, 2]


def test_candidates_tightest_first_then_by_id() -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=4, gpus=8))
    state.allocate(Allocation("a", (3,), (tuple(range(6)),), FULL))  # node 3: 2 free
    state.allocate(Allocation("b", (1,), (tuple(range(4)),), FULL))  # node 1: 4 free
    state.allocate(Allocation("c", (0,), (tuple(range(6)),), FULL))  # node 0: 2 free
    assert list(state.candidates(0, 1)) == [0, 3, 1, 2]
    assert list(state.candidates(0, 3)) == [1, 2]
    assert list(state.candidates(0, 8)) == [2]
    assert state.nodes_with(np.array([0]), 2).tolist() == [4]
    assert state.nodes_with(np.array([0]), 5).tolist() == [1]


def test_gpu_less_nodes_stay_out_of_the_index() -> None:
    fleet = Fleet(
        "mixed", [Site("s")], [Fabric("f", "s")], [Leaf("l", 0)],
        [Node(0, "cpu", None, 0, 0, cpu_milli=64_000), Node(1, "gpu", gpu_type("T4"), 2, 0)],
    )
    state = ClusterState(fleet)
    assert state.total_gpus == 2 and state.type_names == ["T4"]
    assert state.hist.sum() == 1
    assert all(0 not in list(state.candidates(int(c), 0)) for c in state.cells_for(()))
    state.set_schedulable(0, False)
    state.set_schedulable(0, True)
    assert state.hist.sum() == 1


@pytest.mark.parametrize("nodes", [1, 3, 8, 9, 12])
def test_allocations_on_few_or_many_nodes_keep_the_same_books(nodes: int) -> None:
    """A few nodes are booked one by one, a wide gang in one vectorised step: the books agree."""
    state = ClusterState(make_fleet(leaves=2, nodes_per_leaf=8, gpus=4, cpu_milli=16_000, memory_mib=8_192))
    state.allocate(Allocation("shared", (1,), ((2,),), 250))
    before = snapshot(state)
    ids = tuple(range(1, 1 + nodes))  # node 1 holds a share of GPU 2 already
    alloc = Allocation("g", ids, tuple((0, 1) if n % 2 else (0, 1, 3) for n in ids), FULL, 1_000, 512)
    state.allocate(alloc)
    for n, gpus in zip(ids, alloc.gpus):
        assert state.whole_free[n] == 4 - len(gpus) - (n == 1) and state.cpu_free[n] == 15_000
        assert n in state.buckets[int(state.cell[n])][int(state.whole_free[n])]
        assert state.max_left[n] == FULL
    assert state.used_milli == 250 + FULL * sum(len(g) for g in alloc.gpus)
    assert int(state.hist.sum()) == 16 and all(b == sorted(b) for row in state.buckets for b in row)
    state.release("g")
    assert same(snapshot(state), before)


def test_a_shared_gpu_taken_further_leaves_the_node_in_its_bucket() -> None:
    state = ClusterState(make_fleet(gpus=2))
    state.allocate(Allocation("a", (0,), ((1,),), 500))
    assert list(state.buckets[0][1]) == [0] and state.max_left[0] == FULL
    state.allocate(Allocation("b", (0,), ((1,),), 300))
    assert list(state.buckets[0][1]) == [0] and state.gpu_left[0].tolist() == [FULL, 200]
    with pytest.raises(SchedulingError, match="does not fit"):
        state.allocate(Allocation("c", (0,), ((1,),), 300))
    with pytest.raises(SchedulingError, match="not distinct GPUs"):
        state.allocate(Allocation("d", (0,), ((2,),), 100))


def test_a_deep_copy_changes_apart_from_the_original_and_keeps_shared_references_its_own() -> None:
    import copy

    state = ClusterState(make_fleet(leaves=2, nodes_per_leaf=2, gpus=8, cpu_milli=32_000, memory_mib=65_536))
    state.allocate(Allocation("a", (0,), ((0, 1),), FULL, 4_000, 1_024))
    before = {k: copy.deepcopy(v) for k, v in vars(state).items() if k != "fleet"}
    holder = [state.stamp, state.buckets]  # something else holding parts of the state, as a score cache holds `stamp`
    twin, held = copy.deepcopy((state, holder))
    assert twin.fleet is state.fleet and held[0] is twin.stamp and held[1] is twin.buckets
    twin.allocate(Allocation("b", (1, 2), ((0, 1, 2, 3, 4, 5, 6, 7), (3,)), FULL, 1_000, 512))
    twin.release("a")
    twin.set_schedulable(3, False)
    with twin.withheld([2]):
        pass
    for name, value in vars(state).items():
        if name != "fleet":
            assert _equal(value, before[name]), name
    assert twin.allocations.keys() == {"b"} and state.allocations.keys() == {"a"}
    assert not twin.schedulable[3] and state.schedulable[3]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, type(a)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b
