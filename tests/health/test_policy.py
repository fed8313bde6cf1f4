"""The health policy, pure: signals to moves, spares, NVLink domains, the engine's drains."""

from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.fleet.loader import load_fleet
from neocloud.health.policy import ENGINE, HealthPolicy
from neocloud.model.lifecycle import LifecycleError, Stage
from neocloud.sched.state import FULL, Allocation, ClusterState
from tests.control.test_nodes import RACKS  # 8 GB200 nodes, two NVLink domains of 4


@pytest.fixture
def policy(tmp_path: Path) -> HealthPolicy:
    path = tmp_path / "fleet.yaml"
    path.write_text(RACKS)
    fleet = load_fleet(path)
    return HealthPolicy(fleet, ClusterState(fleet), spares_per_fabric=1)


def test_a_hardware_fault_under_a_job_interrupts_it_and_frees_a_spare(policy: HealthPolicy) -> None:
    assert policy.top_up().spares == {"rack-n7": True}
    policy.state.allocate(Allocation("42", (0,), ((0, 1, 2, 3),), FULL))
    rule, moved = policy.signal("rack-n0", {"kind": "xid", "code": 79}, observed_at=5.0)
    assert rule.action.value == "triage" and policy.stage["rack-n0"] == Stage.TRIAGE
    assert moved.interrupted == {"42": "node rack-n0 went to triage: xid signal: code=79"}
    assert moved.spares == {"rack-n7": False} and policy.state.schedulable[7]
    assert not policy.state.schedulable[0]
    # An application's XID is kept on record only; a node never moves back towards production.
    assert not policy.signal("rack-n1", {"kind": "xid", "code": 13}, 6.0)[1]
    assert not policy.signal("rack-n0", {"kind": "thermal", "temperature_c": 95, "slowdown": True}, 7.0)[1].moves


def test_a_domain_is_cordoned_whole_and_counts_follow(policy: HealthPolicy) -> None:
    for n in ("rack-n0", "rack-n1"):
        policy.move(n, Stage.TRIAGE, "xid 79")
    moved = policy.move("rack-n2", Stage.TRIAGE, "xid 79")
    assert [(m.node, m.to) for m in moved.moves] == [("rack-n2", Stage.TRIAGE), ("rack-n3", Stage.CORDONED)]
    assert policy.counts[Stage.TRIAGE] == 3 and policy.counts[Stage.CORDONED] == 1
    assert policy.counts[Stage.PRODUCTION] == 4
    with pytest.raises(LifecycleError, match="from there it can go to"):
        policy.move("rack-n0", Stage.PRODUCTION, "too soon")


def test_the_engine_s_drains_are_followed_both_ways(policy: HealthPolicy) -> None:
    moved = policy.follow_engine({"rack-n4": "Kill task failed", "gone": "not ours"})
    assert [(m.node, m.to, m.reason) for m in moved.moves] == [("rack-n4", Stage.CORDONED, ENGINE + "Kill task failed")]
    assert not policy.follow_engine({"rack-n4": "Kill task failed"})  # nothing new: nothing moved
    policy.move("rack-n5", Stage.CORDONED, "the operator's")
    moved = policy.follow_engine({})
    assert [(m.node, m.to) for m in moved.moves] == [("rack-n4", Stage.PRODUCTION)]  # not the operator's
    assert policy.stage["rack-n5"] == Stage.CORDONED


def test_a_node_moved_since_the_engine_was_asked_is_left_as_it_is(policy: HealthPolicy) -> None:
    # The operator uncordoned rack-n6 after the engine was asked; the engine still reports the old
    # cordon (it has not heard yet): that is no drain of the engine's own.
    policy.move("rack-n6", Stage.CORDONED, "the operator's")
    policy.move("rack-n6", Stage.PRODUCTION, "uncordoned")
    assert not policy.follow_engine({"rack-n6": "the operator's"}, unsure={"rack-n6"})
    assert policy.stage["rack-n6"] == Stage.PRODUCTION
    policy.follow_engine({"rack-n4": "Kill task failed"})
    assert not policy.follow_engine({}, unsure={"rack-n4"})  # nor is an answer that may predate its cordon
    assert policy.stage["rack-n4"] == Stage.CORDONED
