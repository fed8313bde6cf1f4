"""What a tenant asks for. A multi-node job is a gang: all of its nodes start together or none do.

The request carries the user's *estimate* of run time, never the truth: the scheduler decides
on what a real scheduler could know. The twin keeps true durations beside the trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PriorityClass(str, Enum):
    RESERVED = "reserved"
    ON_DEMAND = "on-demand"
    SPOT = "spot"

    @property
    def rank(self) -> int:
        """Lower runs first and is preempted last."""
        return _RANK[self]


_RANK = {PriorityClass.RESERVED: 0, PriorityClass.ON_DEMAND: 1, PriorityClass.SPOT: 2}
WHEN = ("afterok", "afterany", "afternotok")  # Slurm's dependency types: after success, any end, failure


@dataclass(frozen=True, slots=True)
class Dependency:
    """Wait for job `job` (an array's id stands for all its tasks, listed in `tasks`) to end as `when` says."""

    job: str
    when: str = "afterok"
    tasks: tuple[str, ...] = ()  # the job ids it stands for; empty means `job` alone

    @property
    def targets(self) -> tuple[str, ...]:
        return self.tasks or (self.job,)
SYSTEM = "system"  # the tenant of neocloud's own jobs (active health checks); no tenant may take the name


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    gpus: float  # whole GPUs, or a fraction (< 1) of one GPU
    gpus_per_node: int | None = None  # the gang's shape; None lets the scheduler pack it
    gpu_types: tuple[str, ...] = ()  # canonical catalog names allowed; empty means any
    cpu_milli: int = 0  # per node
    memory_mib: int = 0  # per node
    tenant: str = "default"
    priority: PriorityClass = PriorityClass.ON_DEMAND
    submit_s: float = 0.0
    estimate_s: float | None = None
    checkpoint_interval_s: float | None = None
    name: str = ""
    time_limit_s: float | None = None  # stopped once it has run this long (all attempts together)
    array_job: str | None = None  # the array it is a task of (the id of its first task)
    array_index: int | None = None
    throttle: int | None = None  # at most this many of its array's tasks queued or running at once
    depends_on: tuple[Dependency, ...] = ()

    @property
    def fractional(self) -> bool:
        return self.gpus < 1

    @property
    def gpu_milli(self) -> int:
        """GPU demand in thousandths of a GPU: exact arithmetic for shared GPUs."""
        return round(self.gpus * 1000)

    @property
    def whole_gpus(self) -> int:
        return 0 if self.fractional else int(self.gpus)

    def layout(self, max_gpus_per_node: int) -> tuple[int, ...]:
        """GPUs on each node of the gang, largest first, on nodes of `max_gpus_per_node` GPUs.

        A fractional or CPU-only job is one node with no whole GPU. With no shape given the gang
        is packed onto as few nodes as possible, the remainder on the last one.
        """
        if self.fractional or self.gpus == 0:
            return (0,)
        total = self.whole_gpus
        per_node = self.gpus_per_node or min(total, max_gpus_per_node)
        full, rest = divmod(total, per_node)
        return (per_node,) * full + ((rest,) if rest else ())
