"""The `neocloud` command end to end: every trace format replays, errors are one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
EXAMPLES = ROOT / "examples"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared (real traces) is not beside the checkout")

REPORT_KEYS = {"policy", "placement", "seed", "jobs_submitted", "jobs_completed", "avg_jct_s", "p50_jct_s",
               "p99_jct_s", "avg_wait_s", "p99_wait_s", "makespan_s", "gpu_utilization", "wall_s", "events"}


def neocloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from neocloud.cli.main import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def simulate(tmp_path: Path, fleet: Path, trace: Path, *extra: str) -> dict:
    out = tmp_path / "report.json"
    res = neocloud("simulate", "--fleet", str(fleet), "--trace", str(trace), "--out", str(out), *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text())


def test_off_a_terminal_a_replay_says_what_it_replays_and_how_far_it_has_got(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    res = neocloud("simulate", "--fleet", str(EXAMPLES / "fleets" / "small.yaml"), "--trace",
                   str(EXAMPLES / "traces" / "mixed-2k.csv"))
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("replaying 2,000 jobs on 64 GPUs (queue neocloud, placement neocloud) ...")
    from neocloud.cli import main

    monkeypatch.setattr(main, "PLAIN_EVERY_S", 0.0)  # a line at every tick, not every few seconds
    with main._ticking("simulating", "jobs") as tick:
        tick(500, 2000)
    line = capsys.readouterr().err
    assert line.startswith("simulating: 500 of 2,000 jobs (25%), ") and " jobs/s, " in line


def test_native_trace_replays_to_completion(tmp_path: Path) -> None:
    report = simulate(tmp_path, EXAMPLES / "fleets" / "small.yaml", EXAMPLES / "traces" / "mixed-2k.csv",
                      "--policy", "sjf", "--seed", "3")
    assert REPORT_KEYS <= report.keys()
    assert report["jobs_submitted"] == report["jobs_completed"] == 2000
    assert (report["policy"], report["placement"], report["seed"]) == ("sjf", "neocloud", 3)
    assert 0 < report["gpu_utilization"] <= 1
    assert report["p50_jct_s"] <= report["p99_jct_s"]


@needs_shared
@pytest.mark.parametrize("fleet, trace, fmt", [
    ("tiresias.yaml", "tiresias/60_job.csv", "tiresias"),
    ("philly.yaml", "philly-gavel/seed0/ed69ec.trace", "gavel"),
])
def test_real_traces_replay_to_completion(tmp_path: Path, fleet: str, trace: str, fmt: str) -> None:
    for policy in ("fifo", "las"):
        report = simulate(tmp_path, EXAMPLES / "fleets" / fleet, SHARED / "traces" / trace,
                          "--trace-format", fmt, "--policy", policy)
        assert report["jobs_completed"] == report["jobs_submitted"] > 0


@needs_shared
def test_openb_replays_and_inflates(tmp_path: Path) -> None:
    """The replay on the first 1,200 pods (all 8,152 took 95 s in CI); the inflation, whose
    cost is the fleet's rather than the trace's, on the whole of both."""
    data = SHARED / "traces" / "alibaba-gpu-v2023"
    fleet, pods = data / "openb_node_list_gpu_node.csv", data / "openb_pod_list_default.csv"
    head = tmp_path / "pods.csv"
    head.write_text("\n".join(pods.read_text().splitlines()[:1201]) + "\n")
    report = simulate(tmp_path, fleet, head, "--trace-format", "openb")
    assert report["jobs_completed"] == report["jobs_submitted"] == 1200
    inflated = simulate(tmp_path, fleet, pods, "--placement", "bestfit", "--inflate", "1.3", "--seed", "42")
    curve = inflated["allocation_at"]
    assert list(curve) == [str(p) for p in range(1, 131)]
    assert 91.0 < curve["130"] < 95.0  # the paper's BestFit: 93.08 (mean of 10 seeds)
    assert curve["50"] == pytest.approx(50, abs=1.5)  # nothing is dropped while the fleet is half empty


def test_fleet_show_prints_totals() -> None:
    res = neocloud("fleet", "show", str(EXAMPLES / "fleets" / "small.yaml"))
    assert res.returncode == 0, res.stderr
    assert "H100-SXM" in res.stdout and "64" in res.stdout


def test_trace_synth_is_seeded(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (a, b):
        res = neocloud("trace", "synth", "--jobs", "500", "--profile", "llm", "--seed", "7", "--out", str(path))
        assert res.returncode == 0, res.stderr
    assert a.read_text() == b.read_text()
    assert len(a.read_text().splitlines()) == 501


@pytest.mark.parametrize("args, message", [
    (["simulate", "--fleet", "missing.yaml", "--trace", "x.csv"], "missing.yaml"),
    (["simulate", "--fleet", str(EXAMPLES / "fleets" / "small.yaml"), "--trace",
      str(EXAMPLES / "traces" / "mixed-2k.csv"), "--policy", "lottery"], "unknown queue policy 'lottery'"),
    (["simulate", "--fleet", str(EXAMPLES / "fleets" / "small.yaml"), "--trace",
      str(EXAMPLES / "traces" / "mixed-2k.csv"), "--placement", "magic"], "unknown placement 'magic'"),
    (["simulate", "--fleet", str(EXAMPLES / "fleets" / "small.yaml"), "--trace",
      str(EXAMPLES / "traces" / "mixed-2k.csv"), "--arrival-scale", "0"], "arrival scale must be above 0"),
])
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    res = neocloud(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("module", ["jobs", "billing", "check", "capacity", "service", "fleet_view", "main", "login",
                                    "profiles", "options", "nodes", "tenants", "sbatch", "submission", "workdir",
                                    "services"])
def test_each_command_module_imports_alone(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import neocloud.cli.{module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
