"""The jobs' side of failures in the twin: a fault stops a job's progress, the health policy stops
the job, and the scheduler runs it again from its last checkpoint, until its restarts are used.

The arithmetic and the cap are production's (neocloud.health.restarts.interruption, MAX_RESTARTS),
the requeue the scheduler's own (`interrupt`, then `unhold` once the attempt has stopped, at once
here), the `auto` interval production's (neocloud.model.goodput.auto_interval, from the failures
the fleet has shown). What only the twin knows, each job's true progress, splits every second of
its run by where it went: the causes add up to the time lost.

A trace job says nothing of checkpoints: unless it declares them (TraceJob), it saves at the
`auto` interval at the model's `checkpoint_s` and restarts in the engine's restart time. A
preempted job that named no interval suspends to a checkpoint, as in a replay without failures.
A crashed process (a software fault) is restarted in place by the job's own launcher, as
torchrun's --max-restarts does: the control plane sees no node fault, so it counts no interruption.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from neocloud.health.restarts import interruption
from neocloud.model.fleet import Fleet
from neocloud.model.goodput import auto_interval
from neocloud.sched.scheduler import Scheduler
from neocloud.sim.faults import FailureModel
from neocloud.sim.nodes import FleetHealth
from neocloud.sim.report import reliability
from neocloud.sim.runs import Costs, Cut, Run, cut, end_of, saves

FAULT_STREAM = 0x6661  # the faults' random stream, apart from the scheduler's


class Recovery:
    def __init__(self, fleet: Fleet, sched: Scheduler, runs: dict[str, Run], model: FailureModel, *, seed: int,
                 restart_s: float, arm: Callable[[str, float | None], None]) -> None:
        self.sched, self.runs, self.model, self.restart_s = sched, runs, model, restart_s
        self.arm = arm  # re-arm (a time) or void (None) a job's finish event
        self.names = [n.name for n in fleet.nodes]
        self.fleet = FleetHealth(fleet, sched.state, model, np.random.default_rng([seed, FAULT_STREAM]),
                                 broken_job=lambda job: runs[job].broken_at is not None)
        self.nodes_of: dict[str, list[str]] = {}  # a running job's nodes
        self.interruptions = 0  # by node failures, fleet-wide: the `auto` interval's rate
        self.gpu_s = 0.0  # GPU-seconds run by ended attempts, fleet-wide: the same
        self.capped: list[str] = []

    def next_at(self) -> float:
        return self.fleet.next_at()

    def settled(self) -> bool:
        """Nothing runs and every node is back in production: jobs still waiting would wait forever
        (on a fleet that cannot hold them while spares are held back), whatever else fails."""
        return not self.sched.running and self.fleet.settled()

    def costs(self, run: Run) -> Costs:
        tj = run.trace
        save = self.model.checkpoint_s if tj.checkpoint_s is None else tj.checkpoint_s
        restart = self.restart_s if tj.restart_s is None else tj.restart_s
        interval = tj.job.checkpoint_interval_s or auto_interval(tj.job.gpus, self.interruptions, self.gpu_s, save,
                                                                 restart)
        return Costs(interval, save, restart)

    # -- what the engine tells ------------------------------------------------------------------
    def launched(self, run: Run, nodes: tuple[int, ...], now: float) -> float:
        """The attempt starts: when it will end, or inf when it landed on a broken node."""
        if run.stopped_at is not None:
            run.lost_s["waiting"] += now - run.stopped_at
            run.stopped_at = None
        run.costs = self.costs(run)
        run.attempts += 1
        run.interval_sum_s += run.costs.interval_s or 0.0
        run.overhead = run.costs.restart_s if run.first_start is not None else 0.0
        run.first_start = now if run.first_start is None else run.first_start
        run.started = now
        job_id = run.trace.job.id
        self.nodes_of[job_id] = [self.names[n] for n in nodes]
        if self.fleet.placed(self.nodes_of[job_id], now):
            run.broken_at = now
            return math.inf
        return end_of(now, run.overhead, run.work_left_s, run.costs)

    def finished(self, run: Run, now: float) -> None:
        assert run.costs is not None
        work = run.work_left_s
        run.productive_s += work
        run.lost_s["restart"] += run.overhead
        run.lost_s["checkpoint writes"] += saves(work, run.costs) * run.costs.save_s
        run.done = 1.0
        self._ended(run, now)
        self.nodes_of.pop(run.trace.job.id, None)

    def preempted(self, run: Run, now: float) -> None:
        """Progress kept across a preemption (the engine has counted its GPU time)."""
        assert run.costs is not None
        if run.broken_at is not None:  # it could save nothing since the fault
            run.book(self._cut(run, run.broken_at), "recomputation")
            run.lost_s["detection"] += now - run.broken_at
            run.broken_at = None
        else:
            run.book(self._cut(run, now), "preemption" if run.trace.job.checkpoint_interval_s else None)
        self._ended(run, now)
        self.fleet.tend(self.nodes_of.pop(run.trace.job.id, ()), now)

    def step(self, now: float) -> list[str]:
        """The node events due now, and what they do to jobs: the jobs requeued."""
        fx = self.fleet.step(now)
        requeued = []
        for job_id, at in fx.broken.items():
            run = self.runs[job_id]
            if run.broken_at is None:
                run.broken_at = at
                self.arm(job_id, None)
        for job_id, why in fx.interrupted.items():
            if self._interrupt(self.runs[job_id], why, now):
                requeued.append(job_id)
        for job_id, at in fx.crashed:
            run = self.runs[job_id]
            if run.broken_at == at and job_id in self.sched.running:
                self._restart_in_place(run, now)
        return requeued

    def close(self, now: float) -> None:
        """The replay ends: running work is counted as saved at the end, a fault's not."""
        self.fleet.account(now)
        for job_id in list(self.sched.running):
            run = self.runs[job_id]
            if run.broken_at is not None:
                run.book(self._cut(run, run.broken_at), "recomputation")
                run.lost_s["detection"] += now - run.broken_at
            else:
                run.book(self._cut(run, now), None)
            run.gpu_s += run.trace.job.gpus * (now - run.started)
        for run in self.runs.values():
            if run.stopped_at is not None and run.failed_at is None:
                run.lost_s["waiting"] += now - run.stopped_at

    # -- inside --------------------------------------------------------------------------------
    def _cut(self, run: Run, at: float) -> Cut:
        assert run.costs is not None
        return cut(run.started, run.overhead, run.work_left_s, run.costs, at)

    def _ended(self, run: Run, now: float) -> None:
        self.gpu_s += run.trace.job.gpus * (now - run.started)

    def _interrupt(self, run: Run, why: str, now: float) -> bool:
        """Stop the attempt; requeue the job onto healthy nodes unless it has used its restarts
        (whether it was requeued)."""
        job_id = run.trace.job.id
        if job_id not in self.sched.running:
            return False
        broken = now if run.broken_at is None else run.broken_at
        c = self._cut(run, broken)
        cost = interruption(now=now, started_at=run.started, checkpoint_at=c.checkpoint_at, observed_at=broken,
                            interruptions=run.interruptions, limit=run.trace.max_restarts,
                            restart_cost=run.costs.restart_s if run.costs else None)
        run.book(c, "recomputation")
        run.lost_s["detection"] += cost.detection_s
        run.gpu_s += run.trace.job.gpus * (now - run.started)
        self._ended(run, now)
        run.interruptions = cost.interruptions
        self.interruptions += 1
        run.broken_at = None
        self.arm(job_id, None)
        if cost.gives_up:
            self.sched.finish(job_id, now, "FAILED")
            run.failed_at = now
            self.capped.append(job_id)
        else:
            self.sched.interrupt(job_id, now)
            self.sched.unhold(job_id)  # its processes are gone at once
            run.stopped_at = now
        self.fleet.tend(self.nodes_of.pop(job_id, ()), now)
        return not cost.gives_up

    def _restart_in_place(self, run: Run, now: float) -> None:
        assert run.costs is not None and run.broken_at is not None
        run.book(self._cut(run, run.broken_at), "recomputation")
        run.lost_s["detection"] += now - run.broken_at
        run.gpu_s += run.trace.job.gpus * (now - run.started)
        self._ended(run, now)
        run.broken_at = None
        run.restarts_in_place += 1
        run.started, run.overhead = now, run.costs.restart_s
        job_id = run.trace.job.id
        if self.fleet.placed(self.nodes_of[job_id], now):
            run.broken_at = now
            self.arm(job_id, None)
        else:
            self.arm(job_id, end_of(now, run.overhead, run.work_left_s, run.costs))

    # -- the report ----------------------------------------------------------------------------
    def summary(self, until: float) -> dict[str, Any]:
        """The fleet's side (faults, interruptions, node-hours by stage) and the jobs' (report.py)."""
        return {
            "failures": self.model.name, "per_1000_gpu_days": self.model.per_1000_gpu_days,
            "spares_per_fabric": self.model.spares_per_fabric,
            "faults": int(sum(self.fleet.by_cause.values())), "faults_by_cause": dict(self.fleet.by_cause),
            "interruptions": self.interruptions,
            **reliability(self.runs.values(), until),
            "node_h": {k: v / 3600 for k, v in self.fleet.node_s.items()}, "node_events": self.fleet.events,
        }
