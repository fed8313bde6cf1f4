"""`neocloud capacity plan` on the example pipeline: tables, JSON, an offline HTML report, a PNG."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.cli.test_cli import EXAMPLES, ROOT, neocloud

PIPELINE = EXAMPLES / "capacity" / "pipeline.yaml"


def test_plan_writes_json_html_and_png(tmp_path: Path) -> None:
    out, html, png = tmp_path / "plan.json", tmp_path / "plan.html", tmp_path / "plan.png"
    res = neocloud("capacity", "plan", str(PIPELINE), "--runs", "3000", "--seed", "5", "--out", str(out),
                   "--html", str(html), "--png", str(png))
    assert res.returncode == 0, res.stderr
    plan = json.loads(out.read_text())
    assert "P(850 MW by 2025-12-31)" in res.stdout and "backtest: 850 MW reported for 2025-12-31" in res.stdout
    assert f"{100 * plan['target']['probability']:.1f}%" in res.stdout
    page = html.read_text()
    assert "Chart.js v4" in page and "<script src" not in page and "http://" not in page.split("Chart.js")[0]
    assert page.count("<tr>") == 1 + len(plan["projects"]) + 1 + len(plan["contracts"]) + 1 + \
        len(plan["denominator"]) + 1 + len(plan["finance"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    again = tmp_path / "again.json"
    assert neocloud("capacity", "plan", str(PIPELINE), "--runs", "3000", "--seed", "5", "--out", str(again)).returncode == 0
    assert json.loads(again.read_text()) == plan  # same seed, same plan


def test_a_bad_pipeline_is_one_line_that_says_what_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(PIPELINE.read_text().replace("mw: 60, gpu: GB200", "mw: -60, gpu: GB200", 1))
    res = neocloud("capacity", "plan", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert " ".join(res.stderr.split()) == f"error: {bad}: projects[0].mw: mw must be > 0 megawatts of IT power, got -60.0"


def _without_matplotlib(*args: str) -> subprocess.CompletedProcess[str]:
    """The command where matplotlib cannot be imported, as after README's install (no charts extra)."""
    code = "import sys; sys.modules['matplotlib'] = None; from neocloud.cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_png_without_matplotlib_is_refused_before_the_work_naming_the_extra(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    # Ten million scenarios would take many minutes: an answer within the timeout is one given before them.
    res = _without_matplotlib("capacity", "plan", str(PIPELINE), "--runs", "10000000", "--out", str(out),
                              "--png", str(tmp_path / "plan.png"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    message = " ".join(res.stderr.split())
    assert message.startswith("error: PNG charts need matplotlib") and "pip install 'neocloud[charts]'" in message
    assert "charts" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not out.exists() and not (tmp_path / "plan.png").exists()
    assert _without_matplotlib("capacity", "plan", str(PIPELINE), "--runs", "200", "--out", str(out)).returncode == 0
    assert json.loads(out.read_text())["runs"] == 200  # without --png, no matplotlib is needed


def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "plan.html"
    res = neocloud("capacity", "plan", str(PIPELINE), "--runs", "10000000", "--html", str(missing))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert _unwrapped(res.stderr) == \
        _unwrapped(f"error: --html {missing}: there is no directory {missing.parent}; create it or write elsewhere")
    res = neocloud("capacity", "plan", str(PIPELINE), "--runs", "10000000", "--out", str(tmp_path))
    assert res.returncode == 2 and _unwrapped(res.stderr) == _unwrapped(f"error: --out {tmp_path}: is a directory; "
                                                                        "give a file name")


def _unwrapped(text: str) -> str:
    """The text without its whitespace: the terminal wraps long paths anywhere."""
    return "".join(text.split())
