"""The scheduler benchmark: its fleet, its report, its determinism, and the CLI that runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neocloud.cli.main import app
from neocloud.errors import NeocloudError
from neocloud.sim.schedbench import bench_fleet, run_scheduler_bench

KEYS = {"decisions_per_s", "p50_decision_ms", "p99_decision_ms", "nodes", "gpus", "pending", "fill_share",
        "per_gang_size", "decisions", "passes", "p50_pass_ms", "p99_pass_ms", "started"}
COUNTS = ("decisions", "timed_decisions", "started", "passes", "fill_jobs", "fill_share", "failed_decisions")


@pytest.fixture(scope="module")
def small() -> dict:
    return run_scheduler_bench(96, 8, 300, seed=7)


def test_fleet_is_leaves_of_32_in_fabrics_of_64_with_the_remainder_last() -> None:
    fleet = bench_fleet(64 * 32 + 32 * 3 + 5, 4)
    assert len(fleet.nodes) == 64 * 32 + 32 * 3 + 5
    assert fleet.total_gpus == 4 * len(fleet.nodes)
    assert len(fleet.fabrics) == 2 and len(fleet.leaves) == 64 + 3 + 1
    assert sum(1 for leaf in fleet.leaves if leaf.fabric == 1) == 4
    assert len(bench_fleet(5).leaves) == 1 and len(bench_fleet(64 * 32 + 7).fabrics) == 2


def test_report_has_the_figures_and_they_are_positive(small: dict) -> None:
    assert KEYS <= small.keys()
    assert (small["nodes"], small["gpus"], small["pending"]) == (96, 768, 300)
    for key in ("decisions_per_s", "p50_decision_ms", "p99_decision_ms", "p50_pass_ms", "decisions", "passes"):
        assert small[key] > 0, key
    assert small["p50_decision_ms"] <= small["p99_decision_ms"] <= small["max_decision_ms"]
    assert 0.8 <= small["fill_share"] <= 0.9
    assert small["started"] == 300
    assert small["timed_decisions"] == small["decisions"] >= small["started"]
    sizes = small["per_gang_size"]
    assert set(sizes) <= {str(1 << k) for k in range(10)}
    assert sum(row["decisions"] for row in sizes.values()) == small["decisions"]


def test_counts_are_fixed_by_the_seed(small: dict) -> None:
    again = run_scheduler_bench(96, 8, 300, seed=7)
    assert [again[k] for k in COUNTS] == [small[k] for k in COUNTS]
    assert {k: v["decisions"] for k, v in again["per_gang_size"].items()} == \
        {k: v["decisions"] for k, v in small["per_gang_size"].items()}
    other = run_scheduler_bench(96, 8, 300, seed=8)
    assert [other[k] for k in COUNTS] != [small[k] for k in COUNTS]


@pytest.mark.parametrize("placement, policy", [("bestfit", "fair"), ("random", "las")])
def test_other_policies_run(placement: str, policy: str) -> None:
    r = run_scheduler_bench(64, 8, 100, seed=1, placement=placement, policy=policy, step=0.05)
    assert (r["placement"], r["policy"]) == (placement, policy)
    assert r["decisions"] > 0 and r["timed_decisions"] == r["decisions"]


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(NeocloudError):
        run_scheduler_bench(8, 8, 10, fill=0.99)
    with pytest.raises(NeocloudError):
        run_scheduler_bench(8, 8, 0)
    with pytest.raises(NeocloudError):
        bench_fleet(0)


def test_cli_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "scheduler", "--nodes", "64", "--gpus-per-node", "8",
                                   "--pending", "100", "--seed", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert KEYS <= report.keys() and report["pending"] == 100 and report["gpus"] == 512
