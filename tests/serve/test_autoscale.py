"""The autoscaler: up at once to what the load needs, within its bounds; down only after the
cooldown has seen lower load all along."""

from __future__ import annotations

from neocloud.serve.autoscale import Autoscaler


def test_up_at_once_and_within_bounds() -> None:
    a = Autoscaler(min=1, max=4, target=2, cooldown_s=30)
    assert a.wanted(0, load=0, current=1) == 1
    assert a.wanted(1, load=5, current=1) == 3
    assert a.wanted(2, load=100, current=3) == 4


def test_down_only_after_the_cooldown() -> None:
    a = Autoscaler(min=0, max=4, target=1, cooldown_s=10)
    assert a.wanted(0, load=3, current=0) == 3
    assert a.wanted(5, load=0, current=3) == 3  # a lull: the burst may come back
    assert a.wanted(11, load=0, current=3) == 0  # idle for the whole cooldown: to zero


def test_a_load_near_the_target_changes_nothing() -> None:
    a = Autoscaler(min=1, max=10, target=10, cooldown_s=0)
    assert a.wanted(0, load=31, current=3) == 3  # 3.1 per replica's 3: within the tolerance
    assert a.wanted(1, load=40, current=3) == 4
