"""Placement answers kept while the state stays as it is.

A pass under a preemptive queue first asks, for each job near the head, whether it fits as things
are (else it may preempt); the pass then places the same jobs on the same state. Placement is a
function of the state, so the second answer is the first: kept, it costs a dictionary lookup.
"""

from __future__ import annotations

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.placement import Placement
from neocloud.sched.state import Allocation, ClusterState


class KeptPlacement:
    """`policy`'s answers for `state`, each kept until the state next changes (`state.changes`).

    Nothing is kept while nodes are withheld (a backfill trial hides them without a change), nor
    for another state. The policy itself is `policy`.
    """

    def __init__(self, policy: Placement, state: ClusterState) -> None:
        self.policy, self.state = policy, state
        self.name = policy.name
        self._kept: dict[str, tuple[Job, Allocation | None]] = {}
        self._at = -1  # the state's `changes` the kept answers hold for

    def place(self, state: ClusterState, job: Job, rng: np.random.Generator) -> Allocation | None:
        if state is not self.state or state.withholding:
            return self.policy.place(state, job, rng)
        if self._at != state.changes:
            self._kept, self._at = {}, state.changes
        else:
            kept = self._kept.get(job.id)
            if kept is not None and kept[0] is job:
                return kept[1]
        alloc = self.policy.place(state, job, rng)
        self._kept[job.id] = (job, alloc)
        return alloc
