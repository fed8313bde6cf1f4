"""A trace: jobs as they arrived, with the truth about them that only the twin knows."""

from __future__ import annotations

from dataclasses import dataclass, field

from neocloud.model.job import Job


@dataclass(frozen=True, slots=True)
class TraceJob:
    job: Job
    duration_s: float  # true run time with the job consolidated on as few nodes as it can use
    spread_duration_s: float | None = None  # true run time when spread wider (None: no slowdown)


@dataclass(slots=True)
class Trace:
    name: str
    jobs: list[TraceJob] = field(default_factory=list)  # sorted by submit time

    def __len__(self) -> int:
        return len(self.jobs)
