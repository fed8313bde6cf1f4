"""The core's vocabulary: events in, actions out. Time always arrives with the event."""

from __future__ import annotations

from dataclasses import dataclass

from neocloud.model.job import Job


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    job: Job


@dataclass(frozen=True, slots=True)
class JobFinished:
    job_id: str
    ok: bool = True


@dataclass(frozen=True, slots=True)
class JobCancelled:
    job_id: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Nothing happened but time passed: a chance to revisit decisions (preemption, quotas)."""


Event = JobSubmitted | JobFinished | JobCancelled | Tick


@dataclass(frozen=True, slots=True)
class Launch:
    job_id: str
    nodes: tuple[int, ...]
    gpus: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class Preempt:
    """Stop the job and put it back in the queue; it resumes from its last checkpoint."""

    job_id: str
    reason: str


Action = Launch | Preempt
