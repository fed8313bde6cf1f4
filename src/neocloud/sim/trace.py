"""A trace: jobs as they arrived, with the truth about them that only the twin knows."""

from __future__ import annotations

from dataclasses import dataclass, field

from neocloud.model.job import Job


@dataclass(frozen=True, slots=True)
class TraceJob:
    job: Job
    duration_s: float  # true run time with the job consolidated on as few nodes as it can use
    spread_duration_s: float | None = None  # true run time when spread wider (None: no slowdown)
    # What the job declares for a replay with failures (None: the failure model's defaults).
    checkpoint_s: float | None = None  # blocking cost of one checkpoint save
    restart_s: float | None = None  # from a restart to training again
    max_restarts: int | None = None  # restarts after node failures before it fails (None: MAX_RESTARTS)


@dataclass(slots=True)
class Trace:
    name: str
    jobs: list[TraceJob] = field(default_factory=list)  # sorted by submit time

    def __len__(self) -> int:
        return len(self.jobs)
