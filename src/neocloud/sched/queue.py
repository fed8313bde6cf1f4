"""Queue policies: the order in which pending jobs are offered to placement.

Every policy orders by priority class first (reserved, on-demand, spot), then by its own rule.
`las` is preemptive: a running job may be displaced by a pending one in a better queue.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from sortedcontainers import SortedKeyList

from neocloud.errors import NeocloudError
from neocloud.model.job import Job

Key = tuple[float, ...]  # a queue position: lower goes first


@dataclass(slots=True, eq=False)
class JobRecord:
    """The scheduler's view of a job: what it asked and what it has had so far."""

    job: Job
    seq: int
    state: str = "PENDING"
    attained_gpu_s: float = 0.0  # GPU-seconds of service so far (Tiresias' attained service)
    ran_s: float = 0.0  # wall seconds run before the current start
    started_s: float | None = None
    first_start_s: float | None = None
    preemptions: int = 0
    first_preempted_s: float | None = None  # when a preemption first stopped it
    key: Key = field(default=())
    pool: str | None = None  # while running: the quota it runs under (a tenant's guarantee, or on-demand)

    def attained(self, now: float) -> float:
        if self.started_s is None:
            return self.attained_gpu_s
        return self.attained_gpu_s + self.job.gpus * (now - self.started_s)

    def preempted(self, now: float) -> None:
        """Count a preemption at `now`; the first one's time is kept."""
        self.preemptions += 1
        if self.first_preempted_s is None:
            self.first_preempted_s = now

    def remaining_estimate(self, now: float) -> float | None:
        if self.job.estimate_s is None:
            return None
        ran = self.ran_s + (now - self.started_s if self.started_s is not None else 0.0)
        return max(self.job.estimate_s - ran, 1.0)

    def estimated_end(self) -> float:
        """When a running job is due to end by its estimate; never (infinity) without one."""
        if self.started_s is None:
            raise ValueError(f"job {self.job.id!r} is not running")
        est = self.remaining_estimate(self.started_s)
        return self.started_s + est if est is not None else float("inf")

    def __deepcopy__(self, memo: dict[int, object]) -> JobRecord:
        """A copy for a snapshot of the scheduler (sched/forecast.py): every field is a plain value
        but the job's request, which nothing changes, so it is shared."""
        new = object.__new__(JobRecord)
        for name in JobRecord.__slots__:
            setattr(new, name, getattr(self, name))
        return new


class QueuePolicy:
    """Pending jobs in a sorted list under a key fixed while they wait."""

    name = "fifo"
    preemptive = False

    def __init__(self) -> None:
        self._pending: SortedKeyList = SortedKeyList(key=lambda r: r.key)

    def key(self, rec: JobRecord) -> Key:
        return (rec.job.priority.rank, rec.job.submit_s, rec.seq)

    def add(self, rec: JobRecord) -> None:
        rec.key = self.key(rec)
        self._pending.add(rec)

    def remove(self, rec: JobRecord) -> None:
        self._pending.remove(rec)

    def order(self, usage: dict[str, float]) -> Iterator[JobRecord]:
        """Pending jobs, best first. `usage` is GPUs held per tenant, for fair share."""
        return iter(self._pending)

    # Preemptive policies rank running jobs too, and say when a pending job displaces one.
    def running_key(self, rec: JobRecord, now: float) -> Key:
        return rec.key

    def displaces(self, pending: JobRecord, running: JobRecord, now: float) -> bool:
        return False

    def next_review(self, rec: JobRecord, now: float) -> float | None:
        """When a running job's rank next changes, so the clock can wake the scheduler."""
        return None

    def __len__(self) -> int:
        return len(self._pending)


class Fifo(QueuePolicy):
    name = "fifo"


class ShortestJobFirst(QueuePolicy):
    """By the user's estimate; jobs without one go after those with one."""

    name = "sjf"

    def key(self, rec: JobRecord) -> Key:
        est = rec.job.estimate_s if rec.job.estimate_s is not None else float("inf")
        return (rec.job.priority.rank, est, rec.job.submit_s, rec.seq)


class LeastAttainedService(QueuePolicy):
    """Tiresias' discretised 2D-LAS: queues by attained GPU-seconds, FIFO inside a queue.

    Needs no estimate. A job that crosses a threshold drops a queue; a pending job in a better
    queue preempts running ones from worse queues.
    """

    name = "las"
    preemptive = True
    thresholds = (3_600.0, 36_000.0)  # GPU-seconds: under 1 GPU-hour, under 10, the rest

    def level(self, attained: float) -> int:
        return sum(attained >= t for t in self.thresholds)

    def key(self, rec: JobRecord) -> Key:
        return (rec.job.priority.rank, self.level(rec.attained_gpu_s), rec.job.submit_s, rec.seq)

    def running_key(self, rec: JobRecord, now: float) -> Key:
        return (rec.job.priority.rank, self.level(rec.attained(now)), rec.job.submit_s, rec.seq)

    def displaces(self, pending: JobRecord, running: JobRecord, now: float) -> bool:
        return self.running_key(running, now)[:2] > pending.key[:2]

    def next_review(self, rec: JobRecord, now: float) -> float | None:
        """When a running job next crosses a threshold and drops a queue."""
        attained = rec.attained(now)
        for t in self.thresholds:
            if attained < t and rec.job.gpus > 0:
                return now + (t - attained) / rec.job.gpus
        return None


class FairShare(QueuePolicy):
    """Weighted fair share: the tenant holding the fewest GPUs per unit of weight goes next."""

    name = "fair"

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = weights or {}
        self._by_tenant: dict[str, deque[JobRecord]] = defaultdict(deque)
        self._count = 0

    def add(self, rec: JobRecord) -> None:
        rec.key = (rec.job.priority.rank, rec.job.submit_s, rec.seq)
        q = self._by_tenant[rec.job.tenant]
        if q and q[-1].key > rec.key:  # a requeued job goes back to its place, not the end
            items = sorted([*q, rec], key=lambda r: r.key)
            q.clear()
            q.extend(items)
        else:
            q.append(rec)
        self._count += 1

    def remove(self, rec: JobRecord) -> None:
        q = self._by_tenant[rec.job.tenant]
        if q and q[0] is rec:
            q.popleft()
        else:
            q.remove(rec)
        if not q:
            del self._by_tenant[rec.job.tenant]
        self._count -= 1

    def order(self, usage: dict[str, float]) -> Iterator[JobRecord]:
        share = {t: usage.get(t, 0.0) / self.weights.get(t, 1.0) for t in self._by_tenant}
        heads = [(q[0].key[0], share[t], q[0].key, t, 0) for t, q in self._by_tenant.items()]
        heapq.heapify(heads)
        while heads:
            _, s, _, tenant, i = heapq.heappop(heads)
            q = self._by_tenant[tenant]
            rec = q[i]
            yield rec
            s += rec.job.gpus / self.weights.get(tenant, 1.0)
            if i + 1 < len(q):
                nxt = q[i + 1]
                heapq.heappush(heads, (nxt.key[0], s, nxt.key, tenant, i + 1))

    def __len__(self) -> int:
        return self._count


class VirtualDeadline(QueuePolicy):
    """neocloud's own policy: earliest virtual deadline first, preemptive, starvation-free.

    A job's virtual deadline is its submit time plus `stretch` times its expected run time: the
    user's estimate when there is one, else twice what it has run so far (at least `floor_s`), as
    least-attained-service would judge it. Short jobs overtake long ones, as shortest-job-first
    and LAS do, yet every job's deadline is fixed while it waits, so later arrivals can overtake
    it only until that deadline: no job starves, whatever its size. A pending job preempts a
    running one whose deadline is later by more than `margin_s`, so near-ties never thrash.

    A preempted job is owed its GPUs back: from its first preemption on, its deadline is at most
    `owed_s` after that moment. A long job's own deadline is far off, so after a preemption it
    would wait behind every job due before it: a burst of arrivals could hold it out for as long
    as they run, and take it again each time it resumes, and such jobs are the JCT's tail. Owed,
    it waits only for work due within the window, and nothing due later displaces it again: what
    it loses is bounded by the window, not by its own length. A shorter window cuts the tail
    further, but the jobs it protects then keep GPUs that a later burst of short jobs needs.
    """

    name = "neocloud"
    preemptive = True
    stretch = 1.0
    floor_s = 3_600.0
    margin_s = 3_600.0
    owed_s = 40 * 3_600.0

    def expected_s(self, rec: JobRecord, now: float | None = None) -> float:
        if rec.job.estimate_s is not None:
            return rec.job.estimate_s
        ran = rec.ran_s + (now - rec.started_s if now is not None and rec.started_s is not None else 0.0)
        return max(2 * ran, self.floor_s)

    def deadline(self, rec: JobRecord, now: float | None = None) -> float:
        """Submit time plus the stretched expected run, and never later than the window a preemption owes."""
        deadline = rec.job.submit_s + self.stretch * self.expected_s(rec, now)
        if rec.first_preempted_s is not None:
            deadline = min(deadline, rec.first_preempted_s + self.owed_s)
        return deadline

    def key(self, rec: JobRecord, now: float | None = None) -> Key:
        return (rec.job.priority.rank, self.deadline(rec, now), rec.seq)

    def running_key(self, rec: JobRecord, now: float) -> Key:
        """A job with no estimate is judged by what it has run so far, so its deadline moves on; one
        adopted where it runs (after a restart) was never queued here, and gets its key now."""
        return rec.key if rec.key and rec.job.estimate_s is not None else self.key(rec, now)

    def displaces(self, pending: JobRecord, running: JobRecord, now: float) -> bool:
        (p_rank, p_deadline, _), (r_rank, r_deadline, _) = pending.key, self.running_key(running, now)
        return r_rank > p_rank or (r_rank == p_rank and r_deadline > p_deadline + self.margin_s)

    def next_review(self, rec: JobRecord, now: float) -> float | None:
        """Without an estimate the deadline grows as the job runs: look again every `floor_s`."""
        return None if rec.job.estimate_s is not None else now + self.floor_s


QUEUES: dict[str, type[QueuePolicy]] = {
    q.name: q for q in (Fifo, ShortestJobFirst, LeastAttainedService, FairShare, VirtualDeadline)
}


def queue_policy(name: str) -> QueuePolicy:
    try:
        return QUEUES[name]()
    except KeyError:
        raise NeocloudError(f"unknown queue policy {name!r}; choose one of: {', '.join(QUEUES)}") from None

