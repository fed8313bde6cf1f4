"""Capacity planning over the API: the pipeline as JSON in, the plan (or its HTML report) out."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tests.api.conftest import ADMIN, Server, serving

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "capacity" / "pipeline.yaml"


def test_plan_over_the_api(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None)) as srv:
        body = yaml.safe_load(PIPELINE.read_text())
        http = httpx.Client(base_url=srv.url, timeout=60,
                            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})

        def plan(pipeline: dict, **params: object) -> httpx.Response:
            return http.post("/v1/capacity/plan", params=params, content=json.dumps(pipeline, default=str))

        r = plan(body, runs=2000, seed=1)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["live_mw_at_start"] == 590 and out["runs"] == 2000 and 0 < out["target"]["probability"] < 1
        assert out == plan(body, runs=2000, seed=1).json()
        html = plan(body, runs=500, format="html")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "Buildout plan as of 2025-09-30" in html.text
        body["projects"][0]["phases"]["shell"] = ["2025-07-01", "2025-01-01"]
        bad = plan(body)
        assert bad.status_code == 400
        assert "projects[0].phases" in bad.json()["detail"] and "ends (2025-01-01) before it starts" in bad.json()["detail"]
        anonymous = httpx.post(f"{srv.url}/v1/capacity/plan", content=json.dumps(body, default=str))
        assert anonymous.status_code == 401
