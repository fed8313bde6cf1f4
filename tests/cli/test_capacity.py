"""`neocloud capacity plan` on the example pipeline: tables, JSON, an offline HTML report, a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import EXAMPLES, neocloud

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
