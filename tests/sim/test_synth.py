"""The synthetic trace generator: deterministic, calibrated on the published figures, and
offering the load it was asked for."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from neocloud.errors import NeocloudError
from neocloud.sim.synth import (
    PHILLY_GPU_COUNTS,
    PHILLY_GPU_PROBS,
    PROFILES,
    TENANTS,
    calibration,
    offered_load,
    synthesize,
)
from neocloud.sim.trace import Trace

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def _rows(trace: Trace) -> list[tuple[object, ...]]:
    return [(tj.job, tj.duration_s) for tj in trace.jobs]


def test_deterministic_for_a_seed() -> None:
    for profile in PROFILES:
        a = synthesize(2000, seed=7, profile=profile)
        b = synthesize(2000, seed=7, profile=profile)
        c = synthesize(2000, seed=8, profile=profile)
        assert _rows(a) == _rows(b)
        assert _rows(a) != _rows(c)


def test_llm_profile_matches_kalos() -> None:
    trace = synthesize(50_000, seed=0, profile="llm")
    gpus = [tj.job.gpus for tj in trace.jobs]
    runs = [tj.duration_s for tj in trace.jobs]
    assert statistics.fmean(gpus) == pytest.approx(26.8, rel=0.15)
    assert statistics.median(gpus) == 1
    assert max(gpus) <= 1024
    assert max(gpus) == 1024
    assert statistics.median(runs) == pytest.approx(124, rel=0.1)
    assert statistics.fmean(runs) == pytest.approx(1260, rel=0.25)


def test_philly_profile_matches_philly() -> None:
    trace = synthesize(50_000, seed=0, profile="philly")
    gpus = Counter(tj.job.gpus for tj in trace.jobs)
    assert set(gpus) <= set(PHILLY_GPU_COUNTS)
    assert gpus[1] / len(trace) == pytest.approx(PHILLY_GPU_PROBS[1], abs=0.01)
    runs = [tj.duration_s for tj in trace.jobs]
    assert statistics.median(runs) == pytest.approx(1186, rel=0.1)
    assert min(runs) >= 1


@pytest.mark.skipif(not (SHARED / "philly-gavel").is_dir(), reason="../shared/traces not present")
def test_philly_gpu_mix_is_the_one_counted_in_the_gavel_traces() -> None:
    counts: Counter[int] = Counter()
    for path in (SHARED / "philly-gavel" / "seed0").glob("*.trace"):
        for line in path.read_text().splitlines():
            if line.strip():
                counts[int(line.split("\t")[6])] += 1
    assert dict(counts) == PHILLY_GPU_COUNTS
    assert sum(PHILLY_GPU_PROBS.values()) == pytest.approx(1)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("load", [0.5, 0.8, 1.2])
def test_offered_load_is_the_target(profile: str, load: float) -> None:
    trace = synthesize(5000, seed=3, profile=profile, fleet_gpus=4096, load=load)
    assert offered_load(trace, 4096) == pytest.approx(load, rel=0.10)
    submits = [tj.job.submit_s for tj in trace.jobs]
    assert submits == sorted(submits) and submits[0] >= 0


def test_gang_shape_tenants_and_fleet_cap() -> None:
    trace = synthesize(20_000, seed=1, profile="mixed", fleet_gpus=512, gpus_per_node=4)
    for tj in trace.jobs:
        assert tj.job.gpus <= 512
        assert tj.job.gpus_per_node == (4 if tj.job.gpus > 4 else None)
    assert {tj.job.name for tj in trace.jobs} == {"philly", "llm"}
    tenants = Counter(tj.job.tenant for tj in trace.jobs)
    assert set(tenants) == set(TENANTS)
    assert tenants.most_common(1)[0][0] == "t0"
    assert len({tj.job.id for tj in trace.jobs}) == len(trace)


def test_fast_enough_for_big_fleets() -> None:
    start = time.perf_counter()
    trace = synthesize(100_000, seed=0, profile="mixed")
    assert len(trace) == 100_000
    assert time.perf_counter() - start < 5.0


def test_calibration_reports_target_and_achieved() -> None:
    report = calibration("llm", n_jobs=20_000)
    target, achieved = report["target"], report["achieved"]
    assert isinstance(target, dict) and isinstance(achieved, dict)
    assert target["mean_gpus"] == pytest.approx(26.77)
    assert achieved["mean_gpus"] == pytest.approx(target["mean_gpus"], rel=0.15)
    assert achieved["offered_load"] == pytest.approx(0.8)
    philly = calibration("philly", n_jobs=20_000)
    assert philly["target"]["median_runtime_s"] == 1186  # type: ignore[index]


def test_bad_arguments() -> None:
    with pytest.raises(NeocloudError, match="unknown synthetic profile"):
        synthesize(10, seed=0, profile="helios")
    with pytest.raises(NeocloudError, match="load > 0"):
        synthesize(10, seed=0, load=0)
    assert len(synthesize(0, seed=0)) == 0
    assert synthesize(1, seed=0).jobs[0].job.submit_s > 0
