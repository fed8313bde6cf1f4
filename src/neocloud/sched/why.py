"""Why a job is not running, in a user's words: why a pending job waits, and why a job could never
run on this fleet at all (refused at submit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.queue import JobRecord
from neocloud.sched.state import FULL, ClusterState

if TYPE_CHECKING:
    from neocloud.sched.scheduler import Scheduler


class Reasons:
    """Why each pending job waits, kept until the cluster or the quotas change, so a page that asks
    every few seconds costs no placement."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[str, str]] = {}  # job -> (its state, why it waits)
        self._at = (-1, -1)  # (state.changes, quota version) the kept reasons hold for

    def why(self, sched: Scheduler, rec: JobRecord) -> str:
        at = (sched.state.changes, sched.quota.version)
        if self._at != at:
            self._kept, self._at = {}, at
        kept = self._kept.get(rec.job.id)
        if kept is not None and kept[0] == rec.state:
            return kept[1]
        why = why_waiting(sched, rec)
        self._kept[rec.job.id] = (rec.state, why)
        return why


def why_waiting(sched: Scheduler, rec: JobRecord) -> str:
    """Held, quota, capacity, topology, shape, or a reservation (it fits, but backfill keeps those
    GPUs for an earlier job)."""
    job, state, quotas = rec.job, sched.state, sched.quota
    if rec.state == "HELD":
        return "held: its previous attempt is still stopping"
    borrows = bool(quotas.guaranteed) and quotas.pool(job) is None
    if borrows and not quotas.borrowing:
        return "quota: beyond its tenant's guarantee and the on-demand pool, and nothing is lent"
    rng = np.random.default_rng(0)  # a view: leave the scheduler's own draws alone
    if sched.placement.place(state, job, rng) is not None:
        if borrows:
            return "quota: it would borrow, and jobs within their guarantees come first"
        return "reservation: room is held for jobs ahead of it; it starts when they do, or at the next pass"
    left = state.gpu_left[state.schedulable]
    free = float(left[left > 0].sum()) / FULL  # on nodes that take work: not cordoned, drained, spare, ...
    if job.gpus > free:
        out = state.total_gpus - state.used_milli / FULL - free
        return f"capacity: needs {job.gpus:g} GPUs, {free:g} free" + \
            (f" ({out:g} more on nodes out of service)" if out > 0 else "")
    layout = state.layout(job)
    if int(((state.whole_free >= max(layout)) & state.schedulable).sum()) >= len(layout):
        return f"topology: {len(layout)} nodes with {max(layout)} free GPUs exist, but not in one fabric"
    return f"shape: {free:g} GPUs free, but not {len(layout)} node(s) with {max(layout)} free together"


def why_unsatisfiable(state: ClusterState, job: Job) -> str | None:
    """What no placement could ever give the job, even on an empty fleet; None if one could."""
    cells = state.cells_for(job.gpu_types)
    if len(cells) == 0:
        wanted = f"GPU type {'|'.join(job.gpu_types)}" if job.gpu_types else "GPUs"
        return f"asks for {wanted}, which this fleet does not have; it has {', '.join(state.type_names) or 'no GPUs'}"
    width = state.widest(job.gpu_types)
    if job.gpus_per_node and job.gpus_per_node > width:
        return f"asks for {job.gpus_per_node} GPUs per node but its nodes have at most {width}"
    layout = state.layout(job)
    best = 0
    for group in state.groups_for(job.gpu_types):
        nodes = np.concatenate([state.cell_nodes[c] for c in group])
        ok = (state.gpu_cap[nodes] >= max(layout[0], 1)) & (state.cpu_cap[nodes] >= job.cpu_milli) \
            & (state.mem_cap[nodes] >= job.memory_mib)
        best = max(best, int(ok.sum()))
    if best < len(layout):
        need = f"{len(layout)} node(s) of {layout[0]} GPUs" if layout[0] else "one node"
        extra = f" with {job.cpu_milli}m CPU and {job.memory_mib} MiB" if job.cpu_milli or job.memory_mib else ""
        return (f"needs {need}{extra} in one fabric, but the most this fleet has is {best}; "
                "ask for fewer GPUs or less CPU and memory")
    return None
