"""The live queue's forecast, kept fresh off the control loop.

After a turn that changed what the scheduler decides from, the loop takes a snapshot of it
(sched/forecast.py) and a thread of its own runs the production scheduler forward from it;
readers get the latest forecast. The snapshot is all the loop pays, so snapshots are spaced to
keep that under `share` of its time whatever the fleet's size, and forecasts to keep the thread
under RUN_SHARE (it shares the interpreter with the loop). The last snapshot is kept as it was
taken: a dry run copies it (off the loop too), adds its job and runs it forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from neocloud.model.job import Job
from neocloud.sched.forecast import DEFAULT_S, Forecast, forecast, snapshot
from neocloud.sched.gates import Unmet, Waiting
from neocloud.sched.scheduler import Scheduler

log = logging.getLogger("neocloud.forecast")
SHARE = 0.05  # of the loop's time that snapshots may take
RUN_SHARE = 0.25  # of the time that running forecasts may take (the thread shares the interpreter)
MIN_GAP_S = 0.5  # between refreshes, however cheap the snapshot
REFRESH_S = 30.0  # a forecast is taken again this often even if nothing changed (estimates run out)
DRY_RUN = "dry-run"  # the id a dry run's job has in its snapshot (real ids are numbers)


@dataclass(frozen=True, slots=True)
class Base:
    """A snapshot as taken: never run itself, only copied."""

    sched: Scheduler
    at: float  # the scheduler's clock when it was taken
    mark: tuple[int, int, int]  # the scheduler's `changes` then


class Forecasts:
    def __init__(self, *, default_s: float = DEFAULT_S, share: float = SHARE, min_gap_s: float = MIN_GAP_S,
                 refresh_s: float = REFRESH_S) -> None:
        self.default_s, self.share, self.min_gap_s, self.refresh_s = default_s, share, min_gap_s, refresh_s
        self.base: Base | None = None
        self.latest: Forecast | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neocloud-forecast")
        self._running: Future[None] | None = None
        self._tried: Base | None = None  # the snapshot the last forecast ran from
        self._gap_until = 0.0  # perf_counter() before which no refresh takes a snapshot
        self._share_until = 0.0  # ... nor a dry run

    # -- on the loop ----------------------------------------------------------------------------
    def after_turn(self, sched: Scheduler, now: float) -> None:
        """Start a forecast from a fresh snapshot, if the last is out of date and none is running."""
        if (self._running is not None and not self._running.done()) or not (sched.running or len(sched.queue)):
            return
        base = self.fresh(sched, now)
        if base is not self._tried:
            self._tried = base
            self._running = self._pool.submit(self._run, base)

    def fresh(self, sched: Scheduler, now: float) -> Base:
        """The last snapshot, taken again first if the scheduler changed since (or it is old) and the
        loop's share and `min_gap_s` allow."""
        base = self.base
        stale = base is None or base.mark != sched.changes or now - base.at >= self.refresh_s
        if base is None or (stale and time.perf_counter() >= self._gap_until):
            base = self._take(sched, now)
        return base

    def current(self, sched: Scheduler, now: float) -> Base | float:
        """A snapshot of the scheduler as it is now, for a dry run; or, while the loop's share
        allows none, the seconds to wait before asking again."""
        if self.base is not None and self.base.mark == sched.changes:
            return self.base
        wait = self._share_until - time.perf_counter()
        return wait if wait > 0 else self._take(sched, now)

    def _take(self, sched: Scheduler, now: float) -> Base:
        started = time.perf_counter()
        base = self.base = Base(snapshot(sched), now, sched.changes)
        cost = time.perf_counter() - started
        self._share_until = started + cost / self.share
        self._gap_until = max(self._gap_until, started + max(self.min_gap_s, cost / self.share))
        return base

    # -- off the loop ---------------------------------------------------------------------------
    def _run(self, base: Base) -> None:
        started = time.perf_counter()
        try:
            out = forecast(base.sched, base.at, default_s=self.default_s)
        except Exception:  # noqa: BLE001 - a forecast that fails leaves the last one standing
            log.exception("forecast failed")
            return
        finally:
            took = time.perf_counter() - started
            self._gap_until = max(self._gap_until, started + took / RUN_SHARE)
        self.latest = out

    def dry_run(self, base: Base, job: Job, ended: Mapping[str, str] | None = None) -> Forecast:
        """When and where `job` would start if it were submitted into the snapshot (`ended`: how the
        jobs it depends on that are over ended). One its dependencies would hold is told no start,
        only why: when they end is not forecast."""
        twin = snapshot(base.sched)
        twin.submit(job, base.at, ended=ended)
        if twin.jobs[job.id].state != "PENDING":
            held = [n for n in twin.news(base.at) if n.job_id == job.id]
            return Forecast(why=held[0].reason if held and isinstance(held[0], Unmet | Waiting) else "")
        return forecast(twin, base.at, default_s=self.default_s, copy=False, until_started=job.id)

    def of(self, job_id: str, now: float) -> tuple[float | None, float | None]:
        """A job's expected start and end by the latest forecast (one already due: now)."""
        return (None, None) if self.latest is None else self.latest.expected(job_id, now)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
