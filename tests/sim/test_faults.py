"""The failure process: published rates over every node, seeded, and cause files read strictly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from neocloud.errors import ConfigError
from neocloud.sim.faults import (
    DAY,
    LLAMA3_CAUSES,
    FailureModel,
    FaultProcess,
    HealthChecks,
    causes_named,
)
from tests.conftest import make_fleet


def test_faults_arrive_at_the_published_rate_in_proportion_to_gpus() -> None:
    fleet = make_fleet(leaves=2, nodes_per_leaf=50, gpus=8)
    fleet.nodes[50:] = [replace(n, gpus=4) for n in fleet.nodes[50:]]  # leaf l1's nodes: 4 GPUs
    process = FaultProcess(fleet, LLAMA3_CAUSES, np.random.default_rng(7))
    horizon = 1000 * DAY
    faults = []
    while process.next_at < horizon:
        faults.append(process.take())
    expected = 0.474 * 600 * 1000 / 1000  # per 1,000 GPU-days x 600 GPUs x 1,000 days
    assert abs(len(faults) - expected) < 4 * expected ** 0.5
    on_big = sum(1 for _, node, _ in faults if "-l0-" in node)
    assert on_big / len(faults) == pytest.approx(2 / 3, abs=0.08)
    gpu = sum(1 for _, _, c in faults if c is LLAMA3_CAUSES[0])
    assert gpu / len(faults) == pytest.approx(0.303 / 0.474, abs=0.08)
    again = FaultProcess(fleet, LLAMA3_CAUSES, np.random.default_rng(7))
    assert [again.take() for _ in range(5)] == faults[:5]


def test_no_causes_no_faults_and_a_script_replays_its_faults() -> None:
    fleet = make_fleet(nodes_per_leaf=2)
    assert FaultProcess(fleet, (), np.random.default_rng(0)).next_at == float("inf")
    script = ((50.0, "n1", LLAMA3_CAUSES[0]), (10.0, "n0", LLAMA3_CAUSES[2]))
    process = FaultProcess(fleet, LLAMA3_CAUSES, np.random.default_rng(0), script)
    assert [process.take(), process.take()] == sorted(script) and process.next_at == float("inf")


def test_detection_follows_the_health_checks_or_the_timeout() -> None:
    checks = HealthChecks()
    model = FailureModel()
    by_signal = {c.signal: model.detection(c) for c in LLAMA3_CAUSES}
    assert by_signal == {"xid": 7.5, "exit": 1.0, "link": 67.5, "heartbeat": 35.0, "stall": 67.5}
    assert checks.latency("link") == 7.5  # the link is drained at once; the job is stopped by its stall
    assert FailureModel(timeout_s=600.0).detection(LLAMA3_CAUSES[0]) == 600.0


def test_named_and_file_causes(tmp_path: Path) -> None:
    assert causes_named("llama3") == LLAMA3_CAUSES and causes_named("none") == ()
    yaml_file = tmp_path / "rates.yaml"
    yaml_file.write_text("causes:\n  - {name: GPU, per_1000_gpu_days: 0.5, takes_node: true, signal: xid}\n"
                         "  - {name: bug, per_1000_gpu_days: 0, takes_node: false, signal: exit}\n")
    assert [(c.name, c.per_1000_gpu_days, c.takes_node, c.signal) for c in causes_named(str(yaml_file))] == \
        [("GPU", 0.5, True, "xid"), ("bug", 0.0, False, "exit")]
    json_file = tmp_path / "rates.json"
    json_file.write_text(json.dumps([{"name": "NIC", "per_1000_gpu_days": 1, "takes_node": True, "signal": "link"}]))
    assert causes_named(str(json_file))[0].signal == "link"


@pytest.mark.parametrize(("text", "says"), [
    ("- {name: GPU, per_1000_gpu_days: 0.3, takes_node: true, signal: smoke}", "causes[0].signal: must be one of xid"),
    ("- {name: GPU, per_1000_gpu_days: -1, takes_node: true, signal: xid}", "must be a rate of at least 0, got -1"),
    ("- {name: GPU, per_1000_gpu_days: 0.3, takes_node: true}", "causes[0]: missing signal"),
    ("- {name: GPU, per_1000_gpu_days: 0.3, takes_node: yes please, signal: xid}", "takes_node: must be true or false"),
    ("- {name: GPU, per_1000_gpu_days: 0.3, takes_node: true, signal: xid, color: red}", "unknown key(s) color"),
    ("- {name: bug, per_1000_gpu_days: 0.3, takes_node: true, signal: exit}", "cannot take the node out"),
    ("- {name: a, per_1000_gpu_days: 1, takes_node: true, signal: xid}\n"
     "- {name: a, per_1000_gpu_days: 1, takes_node: true, signal: xid}", "causes[1].name: must be a name not used"),
    ("name: GPU", "expected a list of causes"),
    ("[unclosed", "cannot be read as YAML"),
])
def test_a_bad_causes_file_says_where_and_what(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "causes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        causes_named(str(path))
    assert says in str(e.value) and str(path) in str(e.value)


def test_a_missing_causes_file_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="llama3, none, or a YAML/JSON file"):
        causes_named("no-such-file.yaml")
