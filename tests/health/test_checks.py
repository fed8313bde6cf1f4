"""When active checks fall due: burn-in at once, idle production nodes on their interval, spread."""

from __future__ import annotations

from neocloud.health.checks import CheckSchedule
from neocloud.model.lifecycle import Stage


def test_idle_nodes_are_checked_on_their_interval_and_busy_ones_once_idle() -> None:
    sched = CheckSchedule(every_s=100.0, retry_s=10.0)
    stage = {"a": Stage.PRODUCTION, "b": Stage.PRODUCTION, "c": Stage.BURN_IN}
    busy = {"b"}
    for n, st in stage.items():
        sched.moved(n, st, 0.0)
    assert sched.due(0.0, stage.__getitem__, lambda n: n not in busy) == ["c"]  # burn-in: at once
    sched.started("j1", "c")
    assert sched.due(99.0, stage.__getitem__, lambda n: n not in busy) == []
    assert sched.due(100.0, stage.__getitem__, lambda n: n not in busy) == ["a"]  # b is busy: later
    busy.clear()
    assert sched.due(105.0, stage.__getitem__, lambda n: True) == []
    assert sched.due(110.0, stage.__getitem__, lambda n: True) == ["b"]
    assert sched.ended("j1", 120.0, verdict=True) == "c"
    assert sched.ended("nope", 120.0, verdict=True) is None


def test_a_node_out_of_production_is_dropped_and_a_stopped_check_is_tried_again() -> None:
    sched = CheckSchedule(every_s=0.0, retry_s=30.0)  # 0: only burn-in is checked
    stage = {"a": Stage.BURN_IN, "b": Stage.PRODUCTION}
    for n, st in stage.items():
        sched.moved(n, st, 0.0)
    assert sched.due(0.0, stage.__getitem__, lambda n: True) == ["a"]
    sched.started("j", "a")
    sched.moved("a", Stage.BURN_IN, 1.0)  # already under way: not planned twice
    assert sched.due(1.0, stage.__getitem__, lambda n: True) == []
    sched.ended("j", 5.0, verdict=False)  # stopped before its verdict
    assert sched.due(34.0, stage.__getitem__, lambda n: True) == []
    stage["a"] = Stage.TRIAGE
    assert sched.due(35.0, stage.__getitem__, lambda n: True) == []  # dropped: out of burn-in


def test_a_large_fleet_s_first_checks_are_spread_over_the_interval() -> None:
    sched = CheckSchedule(every_s=3600.0)
    names = [f"n{i}" for i in range(10_000)]
    for n in names:
        sched.start(n, Stage.PRODUCTION, 0.0)
    per_minute = [len(sched.due(60.0 * (m + 1), lambda n: Stage.PRODUCTION, lambda n: True)) for m in range(60)]
    assert sum(per_minute) == len(names)
    assert max(per_minute) < 2 * len(names) / 60  # no minute takes much more than its share
