"""One large job on the twin's engine and the production health policy: checked against the
first-order model, and each mechanism buys what it should. At 2,048 GPUs (52 faults in 54 days),
so that each test runs in a fraction of a second; benchmarks run the 16,384-GPU job."""

from __future__ import annotations

import statistics

import pytest

from neocloud.errors import NeocloudError
from neocloud.sim.failures import (
    LOSSES,
    Scenario,
    asynchronous,
    fleet_for,
    neocloud,
    peers,
    plain,
    run,
)
from neocloud.sim.faults import Repairs

GPUS = 2048


def ettr(s: Scenario, seeds: int = 2) -> float:
    return statistics.mean(run(s, seed).ettr for seed in range(seeds))


def test_llama3_rates_give_llama3_interruptions() -> None:
    assert neocloud().rate * 54 * 86400 == pytest.approx(419, rel=0.01)  # 0.474 per 1,000 GPU-days x 16,384 x 54
    s = neocloud(gpus=GPUS, spares=8)
    counts = [run(s, seed).faults for seed in range(3)]
    assert 35 < statistics.mean(counts) < 60  # 52 at these rates, a few less: a broken node fails no more


def test_the_twin_agrees_with_the_first_order_model_where_losses_are_small() -> None:
    for s in (neocloud(gpus=GPUS, spares=8), neocloud(gpus=GPUS, spares=8, checkpoint_s=30.0),
              neocloud(gpus=GPUS, spares=8, interval_s=1800.0)):
        assert abs(ettr(s) - s.analytic()) < 0.01, s


def test_each_mechanism_helps() -> None:
    steps = [plain(gpus=GPUS), plain(gpus=GPUS, timeout_s=None),
             plain(gpus=GPUS, timeout_s=None, spares=8, repairs=Repairs()), neocloud(gpus=GPUS, spares=8),
             asynchronous(gpus=GPUS, spares=8), peers(gpus=GPUS, spares=8)]
    values = [ettr(s) for s in steps]
    assert values == sorted(values) and values[0] < 0.96 < values[-1]


def test_losses_add_up_and_a_seed_repeats() -> None:
    s = neocloud(gpus=GPUS, spares=8)
    a, b = run(s, 3), run(s, 3)
    assert (a.ettr, a.lost, a.by_cause) == (b.ettr, b.lost, b.by_cause) and set(a.lost) == set(LOSSES)
    assert a.productive_s + sum(a.lost.values()) == pytest.approx(a.wall_s)
    assert a.interruptions > 0 and a.node_h["hot spare"] > 0 and a.node_h["burn-in"] > 0
    assert len(fleet_for(s).nodes) == GPUS // 8 + 8 and len(fleet_for(s).fabrics) == 1


def test_daly_interval_matches_the_reference_example() -> None:
    s = neocloud(checkpoint_s=60.0)  # Llama 3 rates, C = 60 s: about 19 minutes
    assert s.daly(s.rate) / 60 == pytest.approx(19.4, abs=0.3)


def test_without_failures_only_checkpoints_cost() -> None:
    out = run(neocloud(gpus=GPUS, causes=(), interval_s=600.0, days=5.0))
    assert out.interruptions == 0 and out.ettr == pytest.approx(600 / 605, abs=1e-4)


@pytest.mark.parametrize("bad", [{"gpus": 12}, {"days": 0}, {"interval_s": -5}, {"interval_s": "sometimes"},
                                 {"restart_s": -1}, {"spares": -1}])
def test_a_bad_scenario_is_refused_clearly(bad: dict) -> None:
    with pytest.raises(NeocloudError):
        neocloud(**bad)
