"""`neocloud simulate --failures` and `neocloud failures` from the command line: reports, identity
without failures, and clear one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neocloud.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleets" / "small.yaml"
TIMING = ("wall_s", "events_per_s")


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process (a fresh interpreter costs a second): exit status, out, err."""
    monkeypatch.setattr(sys, "argv", ["neocloud", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())  # errors unwrapped from the console's width


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    rows = ["id,submit_s,gpus,duration_s,checkpoint_interval_s"]
    rows += [f"j{i},{i * 300},{[1, 8, 16, 4][i % 4]},{3600 * (1 + i % 5)},{'600' if i % 3 == 0 else ''}"
             for i in range(30)]
    path.write_text("\n".join(rows) + "\n")
    return path


def replay(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, trace: Path,
           *extra: str) -> tuple[dict, str]:
    out = tmp_path / f"report{len(extra)}.json"
    code, stdout, stderr = cli(monkeypatch, capsys, "simulate", "--fleet", str(FLEET), "--trace", str(trace),
                               "--out", str(out), *extra)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    for key in TIMING:
        report.pop(key)
    return report, stdout


def test_failures_none_is_the_replay_without_failures(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      trace: Path) -> None:
    before, _ = replay(monkeypatch, capsys, tmp_path, trace)
    assert replay(monkeypatch, capsys, tmp_path, trace, "--failures", "none")[0] == before
    assert "failures" not in before


def test_a_replay_with_failures_reports_what_they_cost(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       trace: Path) -> None:
    causes = tmp_path / "often.yaml"  # GPUs failing 20,000 times as often as Llama 3's: faults in a 3-hour trace
    causes.write_text("- {name: GPU, per_1000_gpu_days: 6000, takes_node: true, signal: xid}\n")
    report, stdout = replay(monkeypatch, capsys, tmp_path, trace, "--failures", str(causes))
    f = report["failures"]
    assert f["failures"] == "often.yaml" and f["faults"] > 0 and f["interruptions"] > 0
    assert set(f["lost_gpu_h"]) == {"detection", "recomputation", "restart", "waiting", "checkpoint writes",
                                    "preemption"}
    assert {"1 GPU", "2-8 GPUs", "9-64 GPUs"} <= set(f["by_size"]) and f["node_h"]["triage"] > 0
    assert "failures: often.yaml" in stdout and "lost GPU-h: detection" in stdout and "by job size" in stdout


def test_a_bad_causes_file_is_one_line_and_no_traceback(tmp_path: Path, trace: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: GPU, per_1000_gpu_days: 0.3, takes_node: true, signal: smoke}\n")
    res = subprocess.run([sys.executable, "-c", "from neocloud.cli.main import main; main()", "simulate",
                          "--fleet", str(FLEET), "--trace", str(trace), "--failures", str(bad)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "500"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{bad}: causes[0].signal: must be one of xid, link, heartbeat, stall, exit" in res.stderr


@pytest.mark.parametrize(("args", "says"), [
    (("--failures", "no-such.yaml"), "llama3, none, or a YAML/JSON file"),
    (("--failures", "llama3", "--inflate", "1.2"), "--inflate has no clock"),
])
def test_bad_failure_options_are_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         trace: Path, args: tuple[str, ...], says: str) -> None:
    code, _, err = cli(monkeypatch, capsys, "simulate", "--fleet", str(FLEET), "--trace", str(trace), *args)
    assert code == 2 and says in err


def test_the_failures_command_plays_one_job_on_the_engine(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(monkeypatch, capsys, "failures", "--scenario", "peers", "--seeds", "1", "--gpus", "2048",
                         "--spares", "8", "--days", "20")
    assert code == 0, err
    for line in ("ETTR (twin, mean)", "ETTR (first-order model)", "lost to waiting", "node-hours in burn-in"):
        assert line in out
    code, _, err = cli(monkeypatch, capsys, "failures", "--interval", "often")
    assert code == 2 and "--interval takes seconds or 'auto'" in err
    code, _, err = cli(monkeypatch, capsys, "failures", "--scenario", "magic")
    assert code == 2 and "unknown scenario 'magic'" in err
