"""Every job's run in its tenant's MLflow experiment, and what neocloud tells it.

A job's run is made before its first attempt starts: its id goes to the job as MLFLOW_RUN_ID (with
the experiment's, and a token that reaches the tenant's own runs through neocloud alone) and is
kept in the store, so every later attempt, requeued after a preemption or a node's failure, or
after a restart of the server, logs into the same run. As the job goes, neocloud logs what it
knows: each attempt's placement and end, the GPU-hours, goodput and restarts, and the job's exit.

Tracking never holds a job back: a tracking server that fails leaves the job running untracked,
and the service degraded ("tracking") until it answers again. The logging is off the loop, on a
thread of its own, after the turn that decided it is committed."""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

from neocloud.backends.base import Task
from neocloud.control.degraded import Degraded
from neocloud.control.jobs import goodput_of, placement_text
from neocloud.store.tables import JobRow
from neocloud.tracking.mlflow import MLflow, TrackingError, Upstream

log = logging.getLogger("neocloud.tracking")
TOKEN = "ncr_"  # a job's tracking token: its tenant's runs, through neocloud's /v1/tracking, while it runs
QUIET_S = 30.0  # after a failed call, launches go untracked this long rather than wait on a dead server
STATUS = {"COMPLETED": "FINISHED", "FAILED": "FAILED", "TIMEOUT": "FAILED", "CANCELLED": "KILLED"}


@dataclass(frozen=True, slots=True)
class Launching:
    """A job's attempt about to start, as its run is to be tagged."""

    job_id: int
    attempt: int
    tenant: str
    name: str
    run: str | None  # the job's run, made at an earlier attempt
    placement: str
    tags: dict[str, str]  # the job's own: its array and index
    params: dict[str, str]  # what it asked for: GPUs, priority, image
    own_run: bool = True  # False: a service's replica, which reaches its tenant's runs but has none


@dataclass(frozen=True, slots=True)
class Ended:
    """An attempt's end (requeued) or the job's (settled), with the job's figures so far."""

    job_id: int
    attempt: int
    run: str | None
    state: str
    reason: str
    exit_code: int | None
    gpu_hours: float
    goodput: float | None
    ettr: float | None
    restarts: int
    final: bool


class Tracker:
    def __init__(self, upstream: Upstream, key: bytes, *, url: str = "", ui: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self.url = url  # MLFLOW_TRACKING_URI, as jobs reach it: neocloud's /v1/tracking (set once it listens)
        self.ui = ui  # the tracking server's own UI, for links to a run, where people can reach it
        self.mlflow = MLflow(upstream)
        self.clock = clock
        self.degraded: Degraded | None = None  # the controller's, once it has this tracker
        self._key = key
        self._experiments: dict[str, str] = {}  # tenant -> its experiment's id
        self._runs: dict[int, str] = {}  # job -> run, for those made before the store had it
        self.made: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()  # (job, run): for the loop to store
        self._failed_at = float("-inf")
        self._lock = threading.Lock()
        self._logger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neocloud-tracking")

    def close(self) -> None:
        self._logger.shutdown(wait=True)
        self.mlflow.close()

    # -- who may use it ----------------------------------------------------------------------
    def token(self, job_id: int) -> str:
        return f"{TOKEN}{job_id}_{self._mac(job_id)}"

    def job_of(self, token: str) -> int | None:
        """The job whose tracking token this is, if it is one."""
        job, _, mac = token.removeprefix(TOKEN).partition("_")
        if not token.startswith(TOKEN) or not job.isdigit() or len(job) > 18:
            return None
        return int(job) if hmac.compare_digest(mac, self._mac(int(job))) else None

    def _mac(self, job_id: int) -> str:
        return hmac.new(self._key, f"tracking job {job_id}".encode(), hashlib.sha256).hexdigest()[:40]

    def experiment(self, tenant: str) -> str:
        with self._lock:
            found = self._experiments.get(tenant)
        if found is None:
            found = self.mlflow.experiment(tenant)
            with self._lock:
                self._experiments[tenant] = found
        return found

    def run_url(self, experiment: str, run: str) -> str | None:
        return None if self.ui is None else f"{self.ui.rstrip('/')}/#/experiments/{experiment}/runs/{run}"

    # -- as jobs go --------------------------------------------------------------------------
    def prepare(self, tasks: list[Task], launching: dict[int, Launching]) -> list[Task]:
        """The tasks, each tracked job's with its run in its environment (made now at its first
        attempt). On the backend's thread, just before the launch."""
        out = []
        for task in tasks:
            attempt = launching.get(task.job_id)
            if attempt is not None and self.clock() - self._failed_at >= QUIET_S:
                try:
                    task = replace(task, env={**self._env(attempt), **task.env})
                except TrackingError as e:
                    self._failed(e)
            out.append(task)
        return out

    def _env(self, a: Launching) -> dict[str, str]:
        experiment = self.experiment(a.tenant)
        env = {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_TOKEN": self.token(a.job_id),
               "MLFLOW_EXPERIMENT_ID": experiment}
        if not a.own_run:
            return env
        tags = {"neocloud.attempt": str(a.attempt), "neocloud.placement": a.placement, "neocloud.state": "RUNNING"}
        run = a.run or self._runs.get(a.job_id)
        if run is None:
            run = self.mlflow.create_run(experiment, f"{a.name}-{a.job_id}", {
                "neocloud.tenant": a.tenant, "neocloud.job": str(a.job_id), **a.tags, **tags}, a.params)
            with self._lock:
                self._runs[a.job_id] = run
            self.made.put((a.job_id, run))
        else:  # a later attempt: the same run, told where this one runs
            self._logger.submit(self._call, lambda: self.mlflow.log(run, tags=tags))
        self._ok()
        return {**env, "MLFLOW_RUN_ID": run}

    def tracks(self, job_id: int) -> bool:
        """Whether the job has a run the store does not have yet."""
        with self._lock:
            return job_id in self._runs

    def ended(self, ends: list[Ended]) -> None:
        """Log each end, in order, off the caller's thread."""
        for e in ends:
            if (run := e.run or self._runs.get(e.job_id)) is not None:
                self._logger.submit(self._call, partial(self._log_end, e, run))

    def _log_end(self, e: Ended, run: str) -> None:
        metrics = {"neocloud.gpu_hours": round(e.gpu_hours, 6), "neocloud.restarts": float(e.restarts)}
        if e.goodput is not None:
            metrics["neocloud.goodput"] = e.goodput
        if e.ettr is not None:
            metrics["neocloud.ettr"] = e.ettr
        if e.exit_code is not None:
            metrics["neocloud.exit_code"] = float(e.exit_code)
        self.mlflow.log(run, metrics=metrics, step=e.attempt,
                        tags={"neocloud.state": e.state, "neocloud.reason": e.reason})
        if e.final:
            self.mlflow.end(run, STATUS.get(e.state, "FAILED"))
            with self._lock:
                self._runs.pop(e.job_id, None)

    def _call(self, call: Callable[[], None]) -> None:
        try:
            call()
        except TrackingError as e:
            self._failed(e)
        except Exception as e:  # noqa: BLE001 - whatever broke, the jobs go on untracked
            log.exception("tracking call failed")
            self._failed(e)
        else:
            self._ok()

    def _ok(self) -> None:
        if self.degraded is not None:
            self.degraded.ok("tracking")

    def _failed(self, e: Exception) -> None:
        self._failed_at = self.clock()
        log.warning("tracking: %s", e)
        if self.degraded is not None:
            self.degraded.fail("tracking", str(e))


def launching_of(row: JobRow) -> Launching:
    spec = row.spec
    tags = {} if row.array_job is None else {"neocloud.array_job": str(row.array_job),
                                              "neocloud.array_index": str(row.array_index)}
    params = {"neocloud.gpus": f"{row.gpus:g}", "neocloud.priority": row.priority,
              **({"neocloud.image": spec["image"]} if spec.get("image") else {})}
    return Launching(row.id, row.attempts, row.tenant, row.name, row.tracking_run, placement_text(row.placement),
                     tags, params,
                     own_run=row.service_id is None)


def ended_of(row: JobRow, final: bool, why: str, now: float) -> Ended:
    g = goodput_of(row, now)
    share = round(g.productive_gpu_s / g.allocated_gpu_s, 4) if g.allocated_gpu_s else None
    return Ended(row.id, row.attempts, row.tracking_run, row.state if final else "REQUEUED", why,
                 row.exit_code if final else None, row.run_s * row.gpus / 3600, share, g.ettr,
                 max(row.attempts - 1, 0), final)
