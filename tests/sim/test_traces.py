"""Trace loaders: the real public traces load with the figures their authors publish, and every
malformed file fails with an error that names the file, the line and the column."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from neocloud.errors import ConfigError
from neocloud.model.job import Job, PriorityClass
from neocloud.sim.trace import Trace, TraceJob
from neocloud.sim.traces import FORMATS, guess_format, load_trace, write_native
from neocloud.sim.traces.gavel import load_gavel
from neocloud.sim.traces.native import load_native
from neocloud.sim.traces.openb import load_openb_pods

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
OPENB = SHARED / "alibaba-gpu-v2023"
GAVEL = SHARED / "philly-gavel"
TIRESIAS = SHARED / "tiresias" / "60_job.csv"

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/traces not present")


# --- real traces ----------------------------------------------------------------------------


@needs_shared
def test_openb_default_pods() -> None:
    start = time.perf_counter()
    trace = load_trace(OPENB / "openb_pod_list_default.csv")
    assert time.perf_counter() - start < 1.0
    assert trace.name == "openb_pod_list_default"
    assert len(trace) == 8152
    jobs = {tj.job.id: tj for tj in trace.jobs}
    assert sum(1 for tj in trace.jobs if tj.job.gpus == 0) == 1088
    assert sum(1 for tj in trace.jobs if tj.job.fractional and tj.job.gpus > 0) == 3078
    assert sum(1 for tj in trace.jobs if tj.job.gpus == 8) == 44
    assert jobs["openb-pod-0001"].job.gpus == pytest.approx(0.46)
    assert jobs["openb-pod-0001"].job.gpu_milli == 460
    assert jobs["openb-pod-0000"].job.cpu_milli == 12000
    assert jobs["openb-pod-0000"].job.memory_mib == 16384
    assert jobs["openb-pod-0000"].duration_s == 12537496
    # A Pending pod was never scheduled: it lasted from creation to deletion.
    assert jobs["openb-pod-0061"].duration_s == 10001403 - 10001278
    assert jobs["openb-pod-0061"].job.priority is PriorityClass.SPOT
    assert sum(1 for tj in trace.jobs if tj.job.priority is PriorityClass.SPOT) == 3398
    assert all(tj.duration_s >= 1 for tj in trace.jobs)
    submits = [tj.job.submit_s for tj in trace.jobs]
    assert submits == sorted(submits)


@needs_shared
def test_openb_gpu_spec_maps_to_catalog_names() -> None:
    trace = load_openb_pods(OPENB / "openb_pod_list_gpuspec33.csv")
    constrained = [tj.job.gpu_types for tj in trace.jobs if tj.job.gpu_types]
    assert len(constrained) == 2388
    assert ("P100", "T4", "V100", "V100-16GB") in constrained  # P100|T4|V100M16|V100M32
    assert ("V100", "V100-16GB") in constrained  # V100M16|V100M32|V100M32: deduplicated
    assert ("G2",) in constrained and ("G3",) in constrained
    assert all(types == tuple(sorted(set(types))) for types in constrained)


@needs_shared
def test_openb_multigpu50_has_no_times() -> None:
    trace = load_trace(OPENB / "openb_pod_list_multigpu50.csv")
    assert len(trace) == 9061
    assert all(tj.job.submit_s == 0 and tj.duration_s == 1 for tj in trace.jobs)
    assert [tj.job.id for tj in trace.jobs[:3]] == [
        "openb-pod-0000",
        "openb-pod-0001",
        "openb-pod-0002",
    ]
    assert sum(1 for tj in trace.jobs if tj.job.gpus == 8) == 556


@needs_shared
def test_gavel_seed0_files_load() -> None:
    files = sorted((GAVEL / "seed0").glob("*.trace"))
    assert len(files) == 15
    total = multi = 0
    for path in files:
        trace = load_trace(path)
        total += len(trace)
        for tj in trace.jobs:
            assert tj.duration_s > 0
            assert tj.job.gpu_types == ("V100",)
            assert tj.job.id.startswith(path.stem + "-")
            if tj.job.gpus > 1:
                multi += 1
                assert tj.spread_duration_s is not None
                assert tj.spread_duration_s >= tj.duration_s
            else:
                assert tj.spread_duration_s is None
    assert total == 15264
    assert multi == 15264 - 10480


@needs_shared
def test_gavel_durations_come_from_measured_throughputs() -> None:
    trace = load_gavel(GAVEL / "seed0" / "23dbec.trace")
    first = trace.jobs[0]
    assert first.job.id == "23dbec-1"
    assert first.job.name == "Transformer (batch size 128)"
    assert first.duration_s == pytest.approx(14612 / 5.446, rel=1e-3)  # 1 V100, measured
    resnet = next(tj for tj in trace.jobs if tj.job.name == "ResNet-18 (batch size 32)")
    assert resnet.job.gpus == 8
    assert resnet.duration_s == pytest.approx(775977 / 340.038, rel=1e-3)
    assert resnet.spread_duration_s == pytest.approx(775977 / 63.2, rel=1e-3)
    k80 = load_trace(GAVEL / "seed0" / "23dbec.trace", gavel_gpu="k80")
    assert k80.jobs[0].job.gpu_types == ("K80",)
    assert k80.jobs[0].duration_s > first.duration_s


def _throughputs(
    path: Path, table: dict[tuple[str, int], float], spread: dict[tuple[str, int], float]
) -> Path:
    data = {
        "v100": {repr(k): {"null": v} for k, v in table.items()},
        "v100_unconsolidated": {repr(k): {"null": v} for k, v in spread.items()},
    }
    path.write_text(json.dumps(data))
    return path


def test_gavel_extrapolates_unmeasured_scale_factors(tmp_path: Path) -> None:
    tp = _throughputs(
        tmp_path / "tp.json",
        {
            ("A", 1): 10.0,
            ("A", 2): 18.0,
            ("A", 4): 32.4,
            ("B", 1): 5.0,
            ("C", 1): 1.0,
            ("C", 2): 4.0,
        },
        {("A", 1): 10.0, ("A", 2): 15.0, ("B", 1): 5.0, ("C", 1): 1.0, ("C", 2): 1.0},
    )
    lines = ["A\tcmd\t-n\t1\t1000\t0\t8", "B\tcmd\t-n\t1\t1000\t1\t4", "C\tcmd\t-n\t1\t1000\t2\t4"]
    path = tmp_path / "x.trace"
    path.write_text("\n".join(lines) + "\n")
    a, b, c = load_trace(path, gavel_throughputs=tp).jobs
    # A: 4 -> 8 is one doubling at A's own efficiency 32.4 / (2 * 18) = 0.9.
    assert a.duration_s == pytest.approx(1000 / (32.4 * 2 * 0.9))
    # A spread: from 2 to 8 GPUs, two doublings at 15 / (2 * 10) = 0.75.
    assert a.spread_duration_s == pytest.approx(1000 / (15.0 * 4 * 0.75**2))
    # B is measured on one GPU only: median efficiency of A (0.9) and C (capped at 1) = 1.
    assert b.duration_s == pytest.approx(1000 / (5.0 * 4))
    assert c.duration_s == pytest.approx(1000 / (4.0 * 2))  # superlinear C capped at linear
    assert a.job.id == "x-1" and a.job.gpus == 8 and a.job.tenant == "default"


@needs_shared
def test_tiresias_60_jobs() -> None:
    trace = load_trace(TIRESIAS)
    assert len(trace) == 60
    second = next(tj for tj in trace.jobs if tj.job.id == "1")
    assert (second.job.gpus, second.job.submit_s, second.duration_s) == (8, 30, 147)
    assert second.job.name == "vgg11"


@needs_shared
def test_guess_format() -> None:
    assert guess_format(OPENB / "openb_pod_list_multigpu50.csv") == "openb"
    assert guess_format(GAVEL / "seed0" / "23dbec.trace") == "gavel"
    assert guess_format(TIRESIAS) == "tiresias"


# --- native format --------------------------------------------------------------------------


def _sample_trace() -> Trace:
    jobs = [
        TraceJob(Job(id="a", gpus=1.0, submit_s=0.0), duration_s=60.0),
        TraceJob(
            Job(
                id="b, quoted",
                gpus=16.0,
                gpus_per_node=8,
                gpu_types=("H100-SXM", "H200-SXM"),
                cpu_milli=96000,
                memory_mib=1_048_576,
                tenant="acme",
                priority=PriorityClass.RESERVED,
                submit_s=12.345678901234,
                estimate_s=7200.0,
                checkpoint_interval_s=900.0,
                name="llama pretrain",
            ),
            duration_s=3600.5,
            spread_duration_s=4000.25,
        ),
        TraceJob(
            Job(id="c", gpus=0.25, priority=PriorityClass.SPOT, submit_s=30.0), duration_s=1.0
        ),
        TraceJob(Job(id="d", gpus=0.0, cpu_milli=2000, submit_s=30.0), duration_s=5.0),
    ]
    return Trace(name="sample", jobs=jobs)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_native_round_trip(tmp_path: Path, suffix: str) -> None:
    original = _sample_trace()
    path = tmp_path / f"sample{suffix}"
    write_native(original, path)
    loaded = load_trace(path)
    assert guess_format(path) == "native"
    assert loaded.name == "sample"
    assert loaded.jobs == original.jobs


@needs_shared
def test_native_round_trip_of_a_real_trace(tmp_path: Path) -> None:
    original = load_openb_pods(OPENB / "openb_pod_list_gpuspec33.csv")
    path = tmp_path / "openb.csv"
    write_native(original, path)
    assert load_native(path).jobs == original.jobs


def test_native_accepts_aliases_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"id": 7, "submit_s": 5, "gpus": 8, "duration_s": 10, "gpu_type": ["h100", "A100"]}\n'
        "\n"
        '{"id": "x", "submit_s": 1, "gpus": 1, "duration_s": 3, "gpu_type": "V100M16|V100M16"}\n'
    )
    first, second = load_native(path).jobs
    assert first.job.id == "x" and first.job.gpu_types == ("V100-16GB",)
    assert second.job.id == "7" and second.job.gpu_types == ("A100-SXM", "H100-SXM")


# --- errors ---------------------------------------------------------------------------------

OPENB_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time"
)
NATIVE_HEADER = "id,submit_s,gpus,duration_s,priority"
TIRESIAS_HEADER = "job_id,num_gpu,submit_time,iterations,model_name,duration,interval"

MALFORMED = {
    "openb-missing-column": (
        "pods.csv",
        "openb",
        "name,cpu_milli,memory_mib,gpu_milli\np,1,1,1000\n",
        "line 1",
        "num_gpu",
    ),
    "openb-non-numeric": (
        "pods.csv",
        "openb",
        f"{OPENB_HEADER}\np,12x,1,1,1000,,LS,Running,0,9,0\n",
        "line 2, column 'cpu_milli'",
        "number",
    ),
    "openb-negative-duration": (
        "pods.csv",
        "openb",
        f"{OPENB_HEADER}\np,1,1,1,1000,,LS,Running,5,3,4\n",
        "line 2, column 'deletion_time'",
        "negative duration",
    ),
    "openb-unknown-gpu": (
        "pods.csv",
        "openb",
        f"{OPENB_HEADER}\np,1,1,1,1000,T4|H900,LS,Running,0,9,0\n",
        "line 2, column 'gpu_spec'",
        "H900",
    ),
    "openb-short-row": ("pods.csv", "openb", f"{OPENB_HEADER}\np,1,1,1\n", "line 2", "fields"),
    "openb-zero-milli": (
        "pods.csv",
        "openb",
        f"{OPENB_HEADER}\np,1,1,1,0,,LS,Running,0,9,0\n",
        "line 2, column 'gpu_milli'",
        "1-1000",
    ),
    "tiresias-negative-duration": (
        "jobs.csv",
        "tiresias",
        f"{TIRESIAS_HEADER}\n0,1,0,5,vgg,-3,1\n",
        "line 2, column 'duration'",
        "> 0",
    ),
    "tiresias-missing-column": (
        "jobs.csv",
        "tiresias",
        "job_id,num_gpu,submit_time\n0,1,0\n",
        "line 1",
        "duration",
    ),
    "tiresias-fractional-gpus": (
        "jobs.csv",
        "tiresias",
        f"{TIRESIAS_HEADER}\n0,2.5,0,5,vgg,3,1\n",
        "line 2, column 'num_gpu'",
        "whole number",
    ),
    "native-bad-header": (
        "jobs.csv",
        "native",
        "id,submit_s,gpus,duration_s,gpu\n",
        "line 1",
        "unknown column(s) gpu",
    ),
    "native-missing-column": (
        "jobs.csv",
        "native",
        "id,submit_s,duration_s\na,0,1\n",
        "line 1",
        "gpus",
    ),
    "native-non-numeric": (
        "jobs.csv",
        "native",
        f"{NATIVE_HEADER}\na,0,eight,10,spot\n",
        "line 2, column 'gpus'",
        "number",
    ),
    "native-negative-duration": (
        "jobs.csv",
        "native",
        f"{NATIVE_HEADER}\na,0,1,-10,spot\n",
        "line 2, column 'duration_s'",
        "> 0",
    ),
    "native-empty-required": (
        "jobs.csv",
        "native",
        f"{NATIVE_HEADER}\na,,1,10,spot\n",
        "line 2, column 'submit_s'",
        "required",
    ),
    "native-bad-priority": (
        "jobs.csv",
        "native",
        f"{NATIVE_HEADER}\na,0,1,10,urgent\n",
        "line 2, column 'priority'",
        "on-demand",
    ),
    "native-duplicate-id": (
        "jobs.csv",
        "native",
        f"{NATIVE_HEADER}\na,0,1,10,spot\na,1,1,10,spot\n",
        "job 'a'",
        "twice",
    ),
    "native-empty-file": ("jobs.csv", "native", "", "line 1", "empty"),
    "native-jsonl-bad-json": (
        "jobs.jsonl",
        "native",
        '{"id": "a", "submit_s": 0, "gpus": 1, "duration_s": 1}\n{"id": \n',
        "line 2",
        "JSON",
    ),
    "native-jsonl-unknown-gpu": (
        "jobs.jsonl",
        "native",
        '{"id": "a", "submit_s": 0, "gpus": 1, "duration_s": 1, "gpu_type": "Z9"}\n',
        "line 1, column 'gpu_type'",
        "unknown GPU type",
    ),
    "native-jsonl-bad-field": (
        "jobs.jsonl",
        "native",
        '{"id": "a", "submit_s": 0, "gpus": 1, "duration": 1}\n',
        "line 1",
        "unknown field(s) duration",
    ),
    "gavel-field-count": ("x.trace", "gavel", "A\tcmd\t-n\t1\t1000\t0\n", "line 1", "7"),
    "gavel-non-numeric": (
        "x.trace",
        "gavel",
        "A\tcmd\t-n\t1\tlots\t0\t1\n",
        "line 1, column 'total_steps'",
        "number",
    ),
    "gavel-unknown-job-type": (
        "x.trace",
        "gavel",
        "Z\tcmd\t-n\t1\t10\t0\t1\n",
        "line 1, column 'job_type'",
        "known job types: A",
    ),
    "unguessable": ("mystery.csv", None, "a,b,c\n1,2,3\n", "line 1", "pass the format"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_say_where_and_what_to_fix(tmp_path: Path, case: str) -> None:
    name, fmt, text, where, problem = MALFORMED[case]
    path = tmp_path / name
    path.write_text(text)
    tp = _throughputs(tmp_path / "tp.json", {("A", 1): 1.0}, {("A", 1): 1.0})
    with pytest.raises(ConfigError) as info:
        load_trace(path, fmt, gavel_throughputs=tp)
    err = info.value
    assert err.source == str(path)
    assert err.path == where
    assert problem in err.problem
    assert str(err).startswith(f"{path}: {where}")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown trace format 'slurm'"):
        load_trace(tmp_path / "x.csv", "slurm")
    assert set(FORMATS) == {"openb", "gavel", "tiresias", "native"}
    with pytest.raises(ConfigError, match="cannot read"):
        load_trace(tmp_path / "absent.csv", "native")
    with pytest.raises(ConfigError, match="cannot read"):
        load_trace(tmp_path / "absent.csv")
    (tmp_path / "x.trace").write_text("A\tcmd\t-n\t1\t10\t0\t1\n")
    with pytest.raises(ConfigError, match="gavel_gpu"):
        load_trace(tmp_path / "x.trace", gavel_gpu="h100")
    with pytest.raises(ConfigError, match="cannot read"):  # no throughputs beside the trace
        load_trace(tmp_path / "x.trace")
