"""Prometheus metrics of one control plane, in a registry of its own."""

from __future__ import annotations

from collections import Counter, defaultdict

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

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
        self.degraded = Gauge("neocloud_degraded", "1 while a part of the service (backend, store) is failing",
                              ["part"], registry=self.registry)
        self.degraded_episodes = PromCounter("neocloud_degraded_episodes", "Times a part of the service became "
                                             "degraded", ["part"], registry=self.registry)
        self.errors = PromCounter("neocloud_part_errors", "Failed calls to a part of the service (backend, store)",
                                  ["part"], registry=self.registry)
        self.turn_seconds = Histogram("neocloud_controller_turn_seconds", "How long one turn of the control loop took",
                                      buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                                      registry=self.registry)
        self._held: set[tuple[str, str]] = set()

    def observe(self, sched: Scheduler) -> None:
        """Set the gauges from the scheduler's state: inside the loop (`Controller.view`), at each
        scrape, so that what costs the number of jobs is paid per scrape, not per turn."""
        waiting = Counter(rec.job.priority.value for rec in sched.jobs.values() if rec.state in ("PENDING", "HELD", "WAITING"))
        for p in PriorityClass:
            self.queue_depth.labels(priority=p.value).set(waiting.get(p.value, 0))
        held: defaultdict[tuple[str, str], float] = defaultdict(float)
        for rec in sched.running.values():
            held[(rec.job.tenant, rec.job.priority.value)] += rec.job.gpus
        for key in self._held - held.keys():
            self.gpus_allocated.labels(*key).set(0)
        for key, gpus in held.items():
            self.gpus_allocated.labels(*key).set(gpus)
        self._held = set(held)
        self.fleet_gpus.set(sched.state.total_gpus)
        self.jobs_running.set(len(sched.running))
