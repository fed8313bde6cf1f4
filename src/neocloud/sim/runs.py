"""A trace job's run in the twin: its progress, and where its wall time went between checkpoints.

An attempt starts with its restart (none the first time), then alternates `interval_s` of work with
a blocking save of `save_s`; no save follows its last piece of work. Cut short, it keeps the work up
to its last completed save, and what it ran since is recomputed on the next attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from neocloud.sim.trace import TraceJob


@dataclass(frozen=True, slots=True)
class Costs:
    interval_s: float | None  # None: no periodic checkpoint
    save_s: float
    restart_s: float


@dataclass(frozen=True, slots=True)
class Cut:
    """An attempt's wall time up to a moment, split."""

    kept_s: float  # work saved by its last checkpoint
    writes_s: float  # saves completed
    restart_s: float
    unsaved_s: float  # work (and any save under way) since the last checkpoint
    checkpoint_at: float | None  # when its last save completed, if one did


def saves(work_s: float, costs: Costs) -> int:
    """Saves an attempt with `work_s` of work left makes before it ends."""
    return max(math.ceil(work_s / costs.interval_s) - 1, 0) if costs.interval_s else 0


def end_of(start: float, restart_s: float, work_s: float, costs: Costs) -> float:
    return start + restart_s + work_s + saves(work_s, costs) * costs.save_s


def cut(start: float, restart_s: float, work_s: float, costs: Costs, at: float) -> Cut:
    ran = at - start
    if ran <= restart_s:
        return Cut(0.0, 0.0, max(ran, 0.0), 0.0, None)
    ran -= restart_s
    if not costs.interval_s:
        return Cut(0.0, 0.0, restart_s, ran, None)
    period = costs.interval_s + costs.save_s
    done = min(int(ran // period), saves(work_s, costs))
    at_save = start + restart_s + done * period if done else None
    return Cut(done * costs.interval_s, done * costs.save_s, restart_s, ran - done * period, at_save)


LOSSES = ("detection", "recomputation", "restart", "waiting", "checkpoint writes", "preemption")


@dataclass(slots=True)
class Run:
    """What the engine knows of a job that the scheduler does not: its true progress and costs."""

    trace: TraceJob
    done: float = 0.0  # fraction of the work completed
    started: float = 0.0  # of the current attempt (or, after a restart in place, of its last part)
    duration: float = 0.0  # of the whole job at the current placement's speed
    overhead: float = 0.0  # restart cost paid at the start of the current run
    version: int = 0
    first_start: float | None = None
    end: float | None = None
    gpu_s: float = 0.0
    spread_runs: int = 0
    preemptions: int = 0
    # Under a failure model:
    costs: Costs | None = None  # of the current attempt
    broken_at: float | None = None  # a fault stopped its progress then; not yet seen
    interruptions: int = 0  # by node failures, as the restart cap counts them
    restarts_in_place: int = 0
    attempts: int = 0
    interval_sum_s: float = 0.0  # of its attempts' checkpoint intervals
    stopped_at: float | None = None  # interrupted by a failure, waiting to run again since
    failed_at: float | None = None  # gave up after its restarts
    productive_s: float = 0.0
    lost_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSSES, 0.0))

    @property
    def work_left_s(self) -> float:
        return (1.0 - self.done) * self.duration

    def book(self, c: Cut, unsaved: str | None) -> None:
        """Add an attempt's cut to the ledger; its unsaved work is kept (None) or lost to `unsaved`."""
        kept = c.kept_s + (c.unsaved_s if unsaved is None else 0.0)
        self.productive_s += kept
        self.lost_s["checkpoint writes"] += c.writes_s
        self.lost_s["restart"] += c.restart_s
        if unsaved is not None:
            self.lost_s[unsaved] += c.unsaved_s
        if self.duration > 0:
            self.done = min(self.done + kept / self.duration, 1.0)
