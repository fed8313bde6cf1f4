"""The Monte Carlo: a plan without delays comes out as planned, the same seed gives the same plan,
correlated shocks widen the spread, and the denominator effect shrinks as the fleet grows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import yaml

from neocloud.capacity.montecarlo import simulate
from neocloud.capacity.plan import slip_share, summarise
from neocloud.capacity.schema import load_pipeline, pipeline_from_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "capacity" / "pipeline.yaml"


def test_without_delays_every_project_goes_live_as_planned() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["phase_delays"] = {}
    for risk in data["risks"].values():
        risk["probability"] = 0
    p = pipeline_from_dict(data)
    sc = simulate(p, runs=200, seed=1)
    planned = np.array([x.planned_live for x in p.projects])
    assert np.allclose(sc.live, planned)  # every scenario is the plan
    plan = summarise(p, sc)
    assert plan["target"]["probability"] == 1.0  # 590 + 360 MW planned by year end
    assert all(x["slip_weeks_mean"] == 0 for x in plan["projects"])


def test_a_slip_waits_on_what_it_depends_on_less_the_slack_in_the_plan() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["phase_delays"] = {"hardware": [3, 3, 3]}  # every hardware delivery three weeks late, nothing else
    for risk in data["risks"].values():
        risk["probability"] = 0
    p = pipeline_from_dict(data)
    sc = simulate(p, runs=50, seed=0)
    by_name = {x.name: i for i, x in enumerate(p.projects)}
    # denton-2 is mid-delivery on as_of: 29 of its 49 planned days are done, so 20/49 of the delay remains.
    i = by_name["denton-2"]
    assert sc.live[0, i] == pytest.approx(p.projects[i].planned_live + 21 * 20 / 49, abs=1e-3)
    # denton-3 comes after denton-2, but its shell was planned to start long before denton-2 goes live:
    # no slack, so denton-2's slip passes on, then its own three weeks.
    j = by_name["denton-3"]
    assert sc.live[0, j] == pytest.approx(p.projects[j].planned_live + 21 * 20 / 49 + 21, abs=1e-3)


def test_the_same_seed_gives_the_same_plan() -> None:
    p = load_pipeline(EXAMPLE)
    a, b = summarise(p, simulate(p, 2000, seed=7)), summarise(p, simulate(p, 2000, seed=7))
    assert a == b
    assert summarise(p, simulate(p, 2000, seed=8))["weekly"] != a["weekly"]


def test_correlated_shocks_widen_the_spread() -> None:
    p = load_pipeline(EXAMPLE)
    runs = 20_000
    spread = {}
    for correlated in (True, False):
        sc = simulate(p, runs, seed=3, correlated=correlated)
        mw = np.array([x.mw for x in p.projects])
        at = p.live_mw + (sc.live <= p.day(dt.date(2026, 9, 30))) @ mw
        spread[correlated] = (np.std(at), np.percentile(at, 90) - np.percentile(at, 10))
        # the same risks hit each project as often either way: only their coincidence differs
        assert np.mean(sc.live) == pytest.approx(np.mean(simulate(p, runs, seed=4, correlated=correlated).live),
                                                 rel=0.01)
    assert spread[True][0] > 1.3 * spread[False][0]
    assert spread[True][1] > spread[False][1]


def test_the_denominator_effect_shrinks_as_the_fleet_grows() -> None:
    # The same one-week slip of 100 MW: a hundred times the share of a 500 MW fleet as of 50,000 MW.
    assert slip_share(100, 500) == pytest.approx(100 * slip_share(100, 50_000))
    assert slip_share(100, 500) > slip_share(100, 5_000) > slip_share(100, 50_000)
    p = load_pipeline(EXAMPLE)
    plan = summarise(p, simulate(p, 2000, seed=0))
    shares = [d["share_of_fleet"] for d in plan["denominator"]]
    fleets = [d["fleet_mw_p50"] for d in plan["denominator"]]
    assert fleets == sorted(fleets) and fleets[-1] > fleets[0]
    assert shares == sorted(shares, reverse=True) and shares[-1] < shares[0]


def test_the_example_reports_its_target_and_backtest() -> None:
    p = load_pipeline(EXAMPLE)
    plan = summarise(p, simulate(p, 5000, seed=0))
    assert plan["weekly"][0]["mw"] == {"p10": 590, "p50": 590, "p90": 590}  # the starting point, exactly
    assert plan["live_mw_at_start"] == 590
    target = plan["target"]
    assert target["mw"] == 850 and target["by"] == "2025-12-31" and 0 < target["probability"] < 1
    (back,) = plan["backtest"]
    assert back["reported_mw"] == 850 and back["probability_at_least_reported"] == target["probability"]
    assert back["plan_mw"]["p10"] <= back["plan_mw"]["p50"] <= back["plan_mw"]["p90"]
    # contracted power above live power: the new contracts are short at their start in most scenarios
    late = [c for c in plan["contracts"] if c["start"] >= "2025-11-01" and c["start"] <= "2026-12-31"]
    assert late and all(c["short_at_start"] > 0.5 and c["revenue_at_risk_mean"] > 0 for c in late)
    early = [c for c in plan["contracts"] if c["start"] < "2025-10-01"]
    assert all(c["short_mw_weeks_mean"] == 0 for c in early)  # served first, from what is live
    assert all(q["capex"] >= 0 and q["equity"] == pytest.approx(q["capex"] * 0.3) for q in plan["finance"])
    revenue_weeks = [c for c in plan["contracts"] if c["customer"] == "cust-d"]
    assert revenue_weeks[0]["revenue_at_risk_mean"] == pytest.approx(
        revenue_weeks[0]["short_mw_weeks_mean"] * 12e6 / 52)


def test_each_draw_is_repaid_over_the_debt_term_and_no_more() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["horizon"] = "2030-12-31"
    data["finance"]["debt_years"] = 1  # four quarters
    p = pipeline_from_dict(data)
    fin = summarise(p, simulate(p, 500, seed=0))["finance"]
    for q, row in enumerate(fin):
        drawn = sum(r["debt_drawn"] for r in fin[: q + 1])
        repaid = sum(r["debt_drawn"] * min(max(q - i, 0), 4) / 4 for i, r in enumerate(fin[: q + 1]))
        assert row["debt_outstanding"] == pytest.approx(drawn - repaid, abs=1e-3)
    peak = max(r["debt_outstanding"] for r in fin)
    assert all(r["debt_outstanding"] >= -1e-3 for r in fin) and fin[-1]["debt_outstanding"] < 0.01 * peak
