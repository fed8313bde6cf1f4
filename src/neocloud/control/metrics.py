"""Prometheus metrics of one control plane, in a registry of its own."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from neocloud.model.job import PriorityClass
from neocloud.sched.scheduler import Scheduler


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("neocloud_queue_depth", "Jobs waiting, by priority class", ["priority"],
                                 registry=self.registry)
        self.gpus_allocated = Gauge("neocloud_gpus_allocated", "GPUs held by running jobs", ["tenant", "priority"],
                                    registry=self.registry)
        self.fleet_gpus = Gauge("neocloud_fleet_gpus", "GPUs in the fleet", registry=self.registry)
        self.jobs_running = Gauge("neocloud_jobs_running", "Jobs running", registry=self.registry)
        self.decisions = PromCounter("neocloud_scheduler_decisions", "Placement decisions made",
                                     registry=self.registry)
        self.submitted = PromCounter("neocloud_jobs_submitted", "Jobs accepted", registry=self.registry)
        self.outcomes = PromCounter("neocloud_jobs_finished", "Jobs that ended, by final state", ["state"],
                                    registry=self.registry)
        self.node_moves = PromCounter("neocloud_node_moves", "Node lifecycle moves", ["from_stage", "to_stage"],
                                      registry=self.registry)
        self.signals = PromCounter("neocloud_health_signals", "Health signals received, by kind and action",
                                   ["kind", "action"], registry=self.registry)
        self.nodes_by_stage = Gauge("neocloud_nodes", "Nodes by lifecycle stage", ["stage"], registry=self.registry)
        self.spares = Gauge("neocloud_hot_spares", "Nodes held back as hot spares", registry=self.registry)
        self.interruptions = PromCounter("neocloud_job_interruptions", "Job attempts ended by a node's failure",
                                         registry=self.registry)
        self._held: set[tuple[str, str]] = set()

    def observe(self, sched: Scheduler) -> None:
        """Set the gauges from the scheduler's state (called by the loop after each turn)."""
        waiting = Counter(rec.job.priority.value for rec in sched.jobs.values() if rec.state in ("PENDING", "HELD"))
        for p in PriorityClass:
            self.queue_depth.labels(priority=p.value).set(waiting.get(p.value, 0))
        held = Counter()
        for rec in sched.running.values():
            held[(rec.job.tenant, rec.job.priority.value)] += rec.job.gpus
        for key in self._held - held.keys():
            self.gpus_allocated.labels(*key).set(0)
        for key, gpus in held.items():
            self.gpus_allocated.labels(*key).set(gpus)
        self._held = set(held)
        self.fleet_gpus.set(sched.state.total_gpus)
        self.jobs_running.set(len(sched.running))
