"""The failure twin: checked against theory, and each mechanism buys what it should."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from neocloud.errors import NeocloudError
from neocloud.sim.failures import LOSSES, Scenario, neocloud, plain, run
from tests.cli.test_cli import neocloud as cli


def ettr(s: Scenario, seeds: int = 5) -> float:
    return statistics.mean(run(s, seed).ettr for seed in range(seeds))


def test_llama3_rates_give_llama3_interruptions() -> None:
    s = neocloud()
    assert s.rate * 54 * 86400 == pytest.approx(419, rel=0.01)  # 0.474 per 1,000 GPU-days x 16,384 x 54
    counts = [run(s, seed).interruptions for seed in range(5)]
    assert 380 < statistics.mean(counts) < 440


def test_the_twin_agrees_with_the_first_order_model_where_losses_are_small() -> None:
    for s in (neocloud(), neocloud(checkpoint_s=30.0), replace(neocloud(), interval_s=900.0)):
        assert abs(ettr(s) - s.analytic()) < 0.01, s


def test_neocloud_keeps_llama3_above_95_percent_and_each_mechanism_helps() -> None:
    steps = [plain(), plain(timeout_s=None), plain(timeout_s=None, spares_per_fabric=4), neocloud()]
    values = [ettr(s) for s in steps]
    assert values == sorted(values) and values[-1] >= 0.95 and values[0] < 0.9


def test_losses_add_up_and_a_seed_repeats() -> None:
    a, b = run(neocloud(), 3), run(neocloud(), 3)
    assert a == b and set(a.lost) == set(LOSSES)
    assert a.productive_s + sum(a.lost.values()) == pytest.approx(a.wall_s)
    assert sum(a.by_cause.values()) == a.interruptions


def test_daly_interval_matches_the_reference_example() -> None:
    s = neocloud(checkpoint_s=60.0)  # Llama 3 rates, C = 60 s: about 19 minutes
    assert s.daly(s.rate) / 60 == pytest.approx(19.4, abs=0.3)


def test_without_failures_only_checkpoints_cost() -> None:
    s = neocloud(causes=(), interval_s=600.0)
    out = run(s)
    assert out.interruptions == 0 and out.ettr == pytest.approx(600 / 605, abs=1e-4)


@pytest.mark.parametrize("bad", [{"gpus": 12}, {"days": 0}, {"interval_s": -5}, {"interval_s": "sometimes"},
                                 {"restart_s": -1}, {"spares_per_fabric": -1}])
def test_a_bad_scenario_is_refused_clearly(bad: dict) -> None:
    with pytest.raises(NeocloudError):
        neocloud(**bad)


def test_the_command_reports_ettr_and_losses() -> None:
    res = cli("failures", "--seeds", "2", "--days", "5")
    assert res.returncode == 0, res.stderr
    assert "ETTR (twin, mean)" in res.stdout and "lost to restart" in res.stdout
    bad = cli("failures", "--interval", "often")
    assert bad.returncode == 2 and "--interval takes seconds or 'auto'" in bad.stderr and "Traceback" not in bad.stderr
