"""Failures in trace replay: faults reach the production health policy, which stops jobs; the
scheduler runs them again from their last checkpoint, on spares where the policy holds them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

from neocloud.fleet.loader import fleet_from_dict
from neocloud.health.restarts import MAX_RESTARTS
from neocloud.model.job import Job
from neocloud.model.lifecycle import Stage
from neocloud.sched.scheduler import Scheduler
from neocloud.sim.engine import simulate
from neocloud.sim.faults import LLAMA3_CAUSES, Cause, FailureModel, Repairs
from neocloud.sim.nodes import FleetHealth
from neocloud.sim.report import Report
from neocloud.sim.runs import LOSSES
from neocloud.sim.trace import Trace, TraceJob
from tests.conftest import make_fleet
from tests.control.test_nodes import RACKS
from tests.sim.test_engine import fleet as small_fleet
from tests.sim.test_engine import numbers, random_trace

GPU, SOFTWARE, SWITCH, HOST = LLAMA3_CAUSES[0], LLAMA3_CAUSES[1], LLAMA3_CAUSES[2], LLAMA3_CAUSES[3]
NCCL = LLAMA3_CAUSES[6]
REPAIRS = Repairs(triage_s=100.0, repair_s=200.0, burn_in_s=300.0)
# A 2-node gang: 10,000 s of work, a checkpoint every 1,000 s costing 10 s, a 30 s restart.
JOB = TraceJob(Job("j", 16.0, gpus_per_node=8, estimate_s=10_000.0, checkpoint_interval_s=1000.0), 10_000.0,
               checkpoint_s=10.0, restart_s=30.0)


def replay(nodes: int, *faults: tuple[float, int, Cause], spares: int = 0, job: TraceJob = JOB) -> Report:
    fleet = make_fleet(leaves=1, nodes_per_leaf=nodes, gpus=8)
    script = tuple((at, fleet.nodes[n].name, cause) for at, n, cause in faults)
    model = FailureModel(causes=(), name="script", repairs=REPAIRS, spares_per_fabric=spares, script=script)
    return simulate(fleet, Trace("one", [job]), policy="fifo", placement="topo", estimates="perfect", failures=model)


def lost(report: Report) -> dict[str, float]:
    """Seconds of the 16-GPU job's time lost, by cause."""
    return {k: round(v * 3600 / 16, 6) for k, v in report.extra["failures"]["lost_gpu_h"].items()}


@pytest.mark.parametrize(("cause", "seen_s", "back_s"), [
    (GPU, 7.5, 600.0),  # an XID: triage, repair, burn-in
    (SWITCH, 67.5, 600.0),  # a dead link: drained at once, triaged when the job's stall is seen
    (HOST, 35.0, 600.0),  # a lost host: three missed heartbeats, then triage
    (NCCL, 67.5, 400.0),  # a hung collective on a healthy node: no fault found, straight to burn-in
])
def test_a_fault_under_a_running_job_stops_it_and_it_resumes_from_its_checkpoint(
        cause: Cause, seen_s: float, back_s: float) -> None:
    r = replay(2, (2500.0, 0, cause))  # no spare: the job waits for its node to come back
    f = r.extra["failures"]
    assert r.jobs_completed == 1 and f["interruptions"] == 1 and f["faults"] == 1
    # 2 checkpoints (2 x 1,010 s) were done when it failed: 480 s recomputed; then 8,000 s and 7 saves.
    assert lost(r) == {"detection": seen_s, "recomputation": 480.0, "restart": 30.0, "waiting": back_s,
                       "checkpoint writes": 90.0, "preemption": 0.0}
    assert r.avg_jct_s == pytest.approx(2500 + seen_s + back_s + 30 + 8000 + 70)
    assert f["node_h"]["triage"] == pytest.approx(100 / 3600)
    assert f["node_h"].get("repair", 0.0) == pytest.approx(200 / 3600 if cause.takes_node else 0.0)
    assert f["node_h"]["burn-in"] == pytest.approx(300 / 3600)
    assert f["productive_gpu_h"] == pytest.approx(16 * 10_000 / 3600)


def test_the_policy_moves_the_node_to_triage_and_names_the_job() -> None:
    fleet = make_fleet(leaves=1, nodes_per_leaf=2, gpus=8)
    sched = Scheduler(fleet, queue="fifo", placement="topo")
    sched.submit(Job("j", 16.0, gpus_per_node=8), 0.0)
    sched.schedule(0.0)
    name = fleet.nodes[0].name
    model = FailureModel(causes=(), repairs=REPAIRS, script=((10.0, name, GPU),))
    health = FleetHealth(fleet, sched.state, model, np.random.default_rng(0), broken_job=lambda job: True)
    assert health.step(10.0).broken == {"j": 10.0} and health.policy.stage[name] == Stage.PRODUCTION
    fx = health.step(17.5)  # the XID reaches the policy: triage, the job interrupted
    assert health.policy.stage[name] == Stage.TRIAGE and not sched.state.schedulable[0]
    assert fx.interrupted == {"j": f"node {name} went to triage: xid signal: code=79"}
    sched.interrupt("j", 17.5)
    for at, stage in ((117.5, Stage.REPAIR), (317.5, Stage.BURN_IN), (617.5, Stage.PRODUCTION)):
        assert health.next_at() == at
        health.step(at)
        assert health.policy.stage[name] == stage
    assert sched.state.schedulable[0] and health.settled()


def test_a_hot_spare_takes_the_failed_node_s_place_at_once_and_the_pool_is_refilled() -> None:
    r = replay(3, (2500.0, 0, GPU), spares=1)
    f = r.extra["failures"]
    assert r.jobs_completed == 1 and lost(r)["waiting"] == 0.0
    assert r.avg_jct_s == pytest.approx(2507.5 + 30 + 8000 + 70)
    # The last node was held until the failure; the repaired node is the spare once back (3,107.5 s).
    assert f["node_h"]["hot spare"] == pytest.approx((2507.5 + r.avg_jct_s - 3107.5) / 3600)


def test_a_job_that_uses_up_its_restarts_fails() -> None:
    job = replace(JOB, max_restarts=1)
    r = replay(3, (2500.0, 0, GPU), (5000.0, 1, GPU), spares=1, job=job)
    f = r.extra["failures"]
    assert r.jobs_completed == 0 and f["interruptions"] == 2
    assert f["restart_capped"] == 1 and f["restart_capped_jobs"] == ["j"]
    assert f["by_size"]["9-64 GPUs"]["restart_capped"] == 1
    assert replace(JOB).max_restarts is None and MAX_RESTARTS == 3  # a job that says nothing gets production's 3


def test_a_crashed_process_restarts_in_place_without_an_interruption() -> None:
    r = replay(2, (2500.0, 0, SOFTWARE))
    f = r.extra["failures"]
    assert f["interruptions"] == 0 and f["restarts_in_place"] == 1 and "triage" not in f["node_h"]
    assert r.avg_jct_s == pytest.approx(2501 + 30 + 8000 + 70)
    assert lost(r)["detection"] == 1.0 and lost(r)["recomputation"] == 480.0


def test_a_fault_on_an_idle_node_takes_it_out_and_software_faults_need_work() -> None:
    r = replay(3, (1000.0, 2, GPU), (1500.0, 2, SOFTWARE), spares=1)  # the spare (the last node) is idle
    f = r.extra["failures"]
    assert f["faults"] == 1 and f["interruptions"] == 0 and r.avg_jct_s == pytest.approx(10_090.0)
    assert f["node_h"]["burn-in"] == pytest.approx(300 / 3600)
    assert f["node_h"]["hot spare"] == pytest.approx((1007.5 + r.avg_jct_s - 1607.5) / 3600)


def llama3_times(k: float) -> FailureModel:
    """Llama 3's causes k times as often, repairs in minutes: a two-hour trace on 64 GPUs sees faults."""
    return FailureModel(tuple(replace(c, per_1000_gpu_days=c.per_1000_gpu_days * k) for c in LLAMA3_CAUSES),
                        name=f"llama3 x{k:g}", repairs=REPAIRS)


def test_a_seeded_replay_with_failures_repeats_and_its_losses_add_up() -> None:
    trace = random_trace(1)
    a, b = (simulate(small_fleet(), trace, seed=3, failures=llama3_times(8000)) for _ in range(2))
    assert numbers(a) == numbers(b)
    other = simulate(small_fleet(), trace, seed=4, failures=llama3_times(8000))
    assert numbers(other) != numbers(a)
    f = a.extra["failures"]
    assert f["faults"] > 10 and f["interruptions"] > 0
    assert a.jobs_completed + f["restart_capped"] == len(trace)
    held = sum(v for k, v in f["lost_gpu_h"].items() if k != "waiting")
    assert f["productive_gpu_h"] + held == pytest.approx(f["allocated_gpu_h"])
    assert set(f["lost_gpu_h"]) == set(LOSSES) and 0 < f["goodput"] < 1 and 0 < f["ettr"] <= f["goodput"]
    assert sum(row["jobs"] for row in f["by_size"].values()) == len(trace)
    out = sum(f["node_h"].get(s.value, 0.0) for s in (Stage.TRIAGE, Stage.REPAIR, Stage.BURN_IN))
    assert 0 < out < f["node_h"]["production"] / 5  # each fault takes a node out for 10 minutes


def test_without_a_failure_model_the_replay_is_the_one_without_failures() -> None:
    trace = random_trace(2)
    plain = simulate(small_fleet(), trace, seed=1)
    assert "failures" not in plain.extra
    assert numbers(simulate(small_fleet(), trace, seed=1, failures=None)) == numbers(plain)


def test_guarantees_follow_jobs_requeued_after_a_failure() -> None:
    r = simulate(small_fleet(), random_trace(1), seed=3, quotas={"t0": 16.0, "t1": 8.0}, failures=llama3_times(8000))
    f = r.extra["failures"]
    assert f["interruptions"] > 0 and r.jobs_completed + f["restart_capped"] == 80
    assert 0 < r.extra["guarantees"]["t0"]["delivered_share"] <= 1


def test_an_nvlink_domain_with_three_nodes_out_is_cordoned_whole_then_given_back() -> None:
    fleet = fleet_from_dict(yaml.safe_load(RACKS))  # 8 GB200 nodes of 4 GPUs, two NVLink domains of 4
    script = tuple((100.0 * (i + 1), fleet.nodes[i].name, GPU) for i in range(3))
    model = FailureModel(causes=(), repairs=REPAIRS, script=script)
    job = TraceJob(Job("small", 4.0, estimate_s=5000.0), 5000.0)
    r = simulate(fleet, Trace("racks", [job]), policy="fifo", placement="topo", estimates="perfect", failures=model)
    f = r.extra["failures"]
    # The fourth node of the domain is cordoned from the third fault (307.5 s) until the first is back (707.5 s).
    assert f["node_h"]["cordoned"] == pytest.approx(400 / 3600)
    assert f["faults"] == 3 and r.jobs_completed == 1


def test_a_job_stopped_while_one_of_its_nodes_drains_gets_a_spare_for_each() -> None:
    # A dead link drains the second node (2,507.5 s); the first fails before the stall is seen: the
    # policy releases both spares, so the job runs again at once from its checkpoint at 2,020 s.
    r = replay(4, (2500.0, 1, SWITCH), (2510.0, 0, GPU), spares=2)
    f = r.extra["failures"]
    assert f["interruptions"] == 1 and lost(r)["waiting"] == 0.0 and lost(r)["detection"] == 17.5
    assert r.avg_jct_s == pytest.approx(2517.5 + 30 + 8000 + 70)
    assert f["node_h"]["triage"] == pytest.approx(200 / 3600)  # both nodes go through triage
