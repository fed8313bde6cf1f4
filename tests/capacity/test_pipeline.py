"""Pipelines: power to GPUs through the catalog, and bad pipelines refused with what to fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from neocloud.capacity.pipeline import facility_mw, gpus_for_mw, unit
from neocloud.capacity.schema import load_pipeline, pipeline_from_dict
from neocloud.errors import ConfigError
from neocloud.model.catalog import gpu_type

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "capacity" / "pipeline.yaml"


def test_megawatts_become_whole_systems_of_the_catalogs_power() -> None:
    h100, gb200 = gpu_type("H100"), gpu_type("GB200")
    # An 8-GPU H100 server draws 10.2 kW: 1 MW holds 98 of them with nothing else, 89 with 10% for network.
    assert (h100.system_kw, h100.gpus_per_system) == (10.2, 8)
    assert gpus_for_mw(1, "H100", 0.0) == 98 * 8
    assert gpus_for_mw(1, "H100", 0.10) == 89 * 8  # 1000 / (10.2 * 1.1) = 89.1
    # A GB200 NVL72 rack is 18 four-GPU trays: 72 GPUs for about 120 kW, installed whole.
    assert unit(gb200) == (72, pytest.approx(18 * gb200.system_kw))
    assert 118 < unit(gb200)[1] < 122
    assert gpus_for_mw(1, "GB200", 0.10) == 7 * 72  # 1000 / (120.6 * 1.1) = 7.5 racks
    assert gpus_for_mw(0.13, "GB200", 0.10) == 0  # less than one rack's power holds no GPU
    # Per GPU, all in: capacity.md's 1.67-1.83 kW for GB200 and 1.28 MW per 1,000 H100 at nameplate.
    assert 1.67 <= 1000 * 100 / gpus_for_mw(100, "GB200", 0.0) <= 1.83 * 1.1
    assert 100 / (gpus_for_mw(100, "H100", 0.0) / 1000) == pytest.approx(1.28, abs=0.01)
    assert facility_mw(100, 1.3) == pytest.approx(130)


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _refused(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        pipeline_from_dict(data, "p.yaml")
    return str(exc.value)


def test_the_example_starts_where_the_operator_stood() -> None:
    p = load_pipeline(EXAMPLE)
    assert p.live_mw == 590 and p.target_mw == 850 and str(p.as_of) == "2025-09-30"
    q4 = [x for x in p.projects if p.date(x.planned_live).year == 2025]
    assert sum(x.mw for x in q4) > 850 - 590  # planned above the target, with slack


def test_invalid_pipelines_are_refused_with_what_to_fix() -> None:
    data = _example()
    cycle = copy.deepcopy(data)
    cycle["projects"][0]["after"] = ["denton-4"]  # denton-4 comes after denton-3, which comes after denton-2
    msg = _refused(cycle)
    assert "cycle" in msg and "denton-2" in msg and "denton-4" in msg

    negative = copy.deepcopy(data)
    negative["projects"][1]["mw"] = -40
    assert _refused(negative) == "p.yaml: projects[1].mw: mw must be > 0 megawatts of IT power, got -40.0"

    backwards = copy.deepcopy(data)
    backwards["projects"][2]["phases"]["cooling"] = ["2025-11-30", "2025-11-01"]
    msg = _refused(backwards)
    assert "projects[2].phases" in msg and "'cooling' ends (2025-11-01) before it starts (2025-11-30)" in msg

    for change, words in [
        (lambda d: d["projects"][0].update(site="mars"), "unknown site 'mars'"),
        (lambda d: d["projects"][0].update(after=["nowhere"]), "after 'nowhere', which is no project"),
        (lambda d: d["projects"][0]["phases"].update(paint=["2025-01-01", "2025-02-01"]), "unknown phase 'paint'"),
        (lambda d: d["risks"]["energy"].update(probability=1.5), "probability must be within 0-1"),
        (lambda d: d["phase_delays"].update(shell=[4, 2, 1]), "0 <= low <= likeliest <= high"),
        (lambda d: d["sites"][0].update(pue=0.9), "pue must be at least 1.0"),
        (lambda d: d.update(horizon="2045-01-01"), "by at most 10 years"),
        (lambda d: d["projects"][0].update(gpu="Z9000"), "unknown GPU type 'Z9000'"),
        (lambda d: d["projects"].append(dict(d["projects"][0])), "project names must be unique; repeated: denton-2"),
        (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
        (lambda d: d["projects"][0].update(phases={"shell": ["2025-01-01", "2025-06-01"],
                                                   "burn_in": ["2025-09-01", "2025-09-20"]}),
         "planned live on or before as_of; count its MW in its site's live_mw"),
    ]:
        bad = copy.deepcopy(data)
        change(bad)
        assert words in _refused(bad)
