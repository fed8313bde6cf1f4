"""Guarantees in the twin: delivered as owed, idle ones lent, the same rules as the control plane."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from neocloud.fleet.loader import load_fleet
from neocloud.sim.engine import simulate
from neocloud.sim.synth import synthesize
from neocloud.sim.trace import Trace
from tests.cli.test_cli import EXAMPLES, neocloud

GUARANTEES = {"t1": 24, "t2": 16}


def _trace() -> Trace:
    t = synthesize(600, seed=3, profile="philly", fleet_gpus=64, load=1.5, gpus_per_node=8)
    return Trace(t.name, [replace(tj, job=replace(tj.job, tenant=("t1", "t2", "od")[i % 3]))
                          for i, tj in enumerate(t.jobs)])


def test_guarantees_are_delivered_and_borrowing_fills_idle_ones() -> None:
    fleet = load_fleet(EXAMPLES / "fleets" / "small.yaml")
    lend = simulate(fleet, _trace(), quotas=GUARANTEES, estimates="noisy").to_dict()
    keep = simulate(fleet, _trace(), quotas=GUARANTEES, borrowing=False, estimates="noisy").to_dict()
    for report in (lend, keep):
        for tenant, g in report["guarantees"].items():
            assert g["owed_gpu_h"] > 0 and g["delivered_share"] > 0.995, (tenant, g)
    assert lend["gpu_utilization_while_arriving"] > keep["gpu_utilization_while_arriving"]
    again = simulate(fleet, _trace(), quotas=GUARANTEES, estimates="noisy").to_dict()
    assert again["guarantees"] == lend["guarantees"] and again["avg_jct_s"] == lend["avg_jct_s"]


def test_simulate_takes_a_contract_book(tmp_path: Path) -> None:
    book = tmp_path / "book.yaml"
    book.write_text("contracts:\n  - {tenant: t1, gpu_type: H100, gpus: 16, start: 2026-01-01, end: 2027-01-01, "
                    "price_per_gpu_hour: 2}\n")
    out = tmp_path / "report.json"
    res = neocloud("simulate", "--fleet", str(EXAMPLES / "fleets" / "small.yaml"), "--trace",
                   str(EXAMPLES / "traces" / "mixed-2k.csv"), "--contracts", str(book), "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["borrowing"] is True and set(report["guarantees"]) == {"t1"}
    assert report["guarantees"]["t1"]["guaranteed_gpus"] == 16 and report["guarantees"]["t1"]["owed_gpu_h"] > 0
