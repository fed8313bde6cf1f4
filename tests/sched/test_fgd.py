"""FGD: its fragmentation measure on hand-made nodes, and the node it picks."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

from neocloud.model.job import Job
from neocloud.sched.fgd import (
    FragmentationGradientDescent,
    TypicalPods,
    frag,
    shape_of,
    sigmoid_score,
)
from neocloud.sched.state import FULL, Allocation, ClusterState
from tests.conftest import custom_fleet, make_fleet


class _Types:
    type_names: ClassVar[list[str]] = ["A100", "H100"]


TYPICAL = TypicalPods(
    ((1000, 500, 1, ()), (1000, 0, 0, ()), (2000, FULL, 2, ()), (0, 200, 1, ("H100",))),
    np.array([0.4, 0.2, 0.2, 0.2]),
)


def _frag(left: list[int], cpu: int, gtype: int) -> float:
    return float(frag(np.array([left]), np.array([cpu]), np.array([gtype]), TYPICAL.arrays(_Types))[0])


def test_frag_by_hand() -> None:
    # GPUs [1000, 300, none], 4 cores, A100. Shared 500m: fits, only the 300m GPU is a fragment
    # (0.4 * 300); CPU-only: all idle (0.2 * 1300); 2 whole GPUs: only one free, all idle
    # (0.2 * 1300); H100-only: wrong model, all idle (0.2 * 1300).
    assert _frag([1000, 300, -1], 4000, 0) == pytest.approx(120 + 260 + 260 + 260)
    # On an H100 the last shape fits and 300m >= 200m: no fragment from it.
    assert _frag([1000, 300, -1], 4000, 1) == pytest.approx(120 + 260 + 260)
    # Two free GPUs but 1.5 cores: the 2-GPU shape lacks CPU (all idle), the shared one fits.
    assert _frag([1000, 1000, -1], 1500, 1) == pytest.approx(0 + 400 + 400 + 0)
    # A full node has no fragment.
    assert _frag([0, 0, 0], 0, 0) == 0


def test_typical_pods_cover_95_percent_renormalised() -> None:
    jobs = [Job(f"a{i}", 1) for i in range(60)] + [Job(f"b{i}", 0.5) for i in range(36)]
    jobs += [Job(f"c{i}", 2) for i in range(3)] + [Job("d", 4)]
    t = TypicalPods.from_jobs(jobs)
    assert t.shapes == (shape_of(jobs[0]), shape_of(jobs[60]))  # 96% covered by the top two
    assert t.freq == pytest.approx([60 / 96, 36 / 96])
    assert shape_of(Job("x", 0.25, cpu_milli=3, gpu_types=("H100",))) == (3, 250, 1, ("H100",))
    assert shape_of(Job("y", 0, cpu_milli=5)) == (5, 0, 0, ())
    assert shape_of(Job("z", 0.5)) == (100, 500, 1, ())  # a zero CPU request scores as 100m


def test_typical_pods_at_the_cut_keep_the_larger_request() -> None:
    # 10 pods of each of three shapes: the first two cover 2/3 < 95%, so all three are kept;
    # at 60% only two of the equally frequent shapes are, the larger requests, as the paper orders them.
    jobs = [Job(f"a{i}", 0.25) for i in range(10)] + [Job(f"b{i}", 0.5) for i in range(10)]
    jobs += [Job(f"c{i}", 0.75) for i in range(10)]
    assert len(TypicalPods.from_jobs(jobs).shapes) == 3
    assert [s[1] for s in TypicalPods.from_jobs(jobs, coverage=0.6).shapes] == [750, 500]


def test_sigmoid_score_is_truncated() -> None:
    assert sigmoid_score(np.array([0.0, 1000.0, -1000.0])).tolist() == [50, 73, 26]


def test_fgd_puts_a_shared_pod_where_it_fragments_least() -> None:
    state = ClusterState(make_fleet(nodes_per_leaf=2, gpus=2))
    # Node 0: one GPU with 500m left; node 1 untouched. The workload: half 500m, half 1-GPU pods.
    state.allocate(Allocation("x", (0,), ((0,),), 500))
    fgd = FragmentationGradientDescent()
    fgd.prime([Job(f"p{i}", 0.5) for i in range(5)] + [Job(f"q{i}", 1) for i in range(5)])
    # 500m: on node 0's half GPU nothing is left over (frag 250 -> 0); on node 1 it would strand
    # 500m for the 1-GPU pods (0 -> 250).
    alloc = fgd.place(state, Job("j", 0.5), np.random.default_rng(0))
    assert alloc is not None and alloc.nodes == (0,) and alloc.gpus == ((0,),) and alloc.gpu_milli == 500
    # 300m: node 0 GPU 0 -> [200, 1000]: frag 250 -> 200 (the best); node 0 GPU 1 -> [500, 700]:
    # no whole GPU left, 250 -> 600; node 1 -> [700, 1000]: 0 -> 350.
    alloc = fgd.place(state, Job("k", 0.3), np.random.default_rng(0))
    assert alloc is not None and alloc.nodes == (0,) and alloc.gpus == ((0,),) and alloc.gpu_milli == 300


def test_fgd_honours_gpu_model_and_cpu() -> None:
    fleet = custom_fleet([[[
        {"count": 1, "gpu": "A100", "gpus": 8, "cpu_milli": 64_000},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 2_000},
        {"count": 1, "gpu": "H100", "gpus": 8, "cpu_milli": 64_000},
    ]]])
    state = ClusterState(fleet)
    fgd = FragmentationGradientDescent()
    alloc = fgd.place(state, Job("j", 2, gpu_types=("H100-SXM",), cpu_milli=8_000), np.random.default_rng(1))
    assert alloc is not None and fleet.nodes[alloc.nodes[0]].gpu.name == "H100-SXM"
    assert alloc.nodes == (2,) and len(alloc.gpus[0]) == 2 and alloc.gpu_milli == FULL


@pytest.mark.parametrize("seed", [3, 11])
def test_ties_follow_one_node_order_for_the_whole_run(seed: int) -> None:
    # Eight identical nodes and CPU-only pods: every node scores the same, so every pod goes to
    # the node first in the run's order, drawn once from the run's generator, until it is full.
    state = ClusterState(make_fleet(nodes_per_leaf=8, gpus=2, cpu_milli=8_000))
    fgd = FragmentationGradientDescent()
    fgd.prime([Job(f"p{i}", 0, cpu_milli=2_000) for i in range(4)])
    rng = np.random.default_rng(seed)
    order = np.argsort(np.random.default_rng(seed).permutation(8))  # node ids, first in the order first
    placed = []
    for i in range(8):
        alloc = fgd.place(state, Job(f"c{i}", 0, cpu_milli=4_000), rng)
        assert alloc is not None
        state.allocate(alloc)
        placed.append(alloc.nodes[0])
    assert placed == [int(order[k // 2]) for k in range(8)]  # two pods fill a node's CPU


def test_modules_import_in_any_order() -> None:
    for mod in ("neocloud.sched.fgd", "neocloud.sched.packing", "neocloud.sched.placement",
                "neocloud.sched.placements"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)


def test_a_nodes_fragment_does_not_depend_on_its_batch() -> None:
    # Scores are cached per node and recomputed in batches of varying size: a node's value must
    # be the same to the last bit whichever nodes are scored with it, or ties would drift.
    r = np.random.default_rng(0)
    left = r.choice([-1, 0, 130, 470, 810, 1000], size=(300, 8))
    cpu, gtype = r.integers(0, 96_000, size=300), r.integers(0, 2, size=300)
    typical = TypicalPods(
        tuple((int(c), int(m), 1, ()) for c, m in zip(r.integers(100, 8000, 40), r.integers(10, 1000, 40))),
        np.full(40, 1 / 40),
    ).arrays(_Types)
    batch = frag(left, cpu, gtype, typical)
    alone = np.array([frag(left[i : i + 1], cpu[i : i + 1], gtype[i : i + 1], typical)[0] for i in range(300)])
    assert (batch == alone).all()
