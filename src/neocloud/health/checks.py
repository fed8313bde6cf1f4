"""When each node's active check is due: a node in burn-in at once, an idle production node every
`every_s`. A due-time heap, so a turn looks only at the nodes whose time has come."""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable

from neocloud.model.lifecycle import Stage

RETRY_S = 60.0  # a node due but busy is looked at again this much later (it is checked once idle)


class CheckSchedule:
    def __init__(self, every_s: float, retry_s: float = RETRY_S) -> None:
        self.every_s = every_s  # 0: only nodes in burn-in are checked
        self.retry_s = min(retry_s, every_s) if every_s > 0 else retry_s
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}  # node -> when it is due (the heap's live entries)
        self.running: dict[str, str] = {}  # job id of a check under way -> its node
        self._checking: set[str] = set()  # nodes with a check under way

    def plan(self, node: str, at: float) -> None:
        """Look at the node at `at` (earlier than a time already planned wins)."""
        if node in self._checking or self._due.get(node, float("inf")) <= at:
            return
        self._due[node] = at
        heapq.heappush(self._heap, (at, node))

    def moved(self, node: str, to: Stage, now: float) -> None:
        """A node changed stage: burn-in is checked now, production after a full interval."""
        if to == Stage.BURN_IN:
            self.plan(node, now)
        elif to == Stage.PRODUCTION and self.every_s > 0:
            self.plan(node, now + self.every_s)

    def start(self, node: str, stage: Stage, now: float) -> None:
        """At start-up: burn-in now; a production node at its own point of the first interval (spread
        by its name), so that a large fleet's checks do not all fall due in one turn."""
        if stage == Stage.PRODUCTION and self.every_s > 0:
            self.plan(node, now + self.every_s * (zlib.crc32(node.encode()) + 1) / 2**32)
        else:
            self.moved(node, stage, now)

    def due(self, now: float, stage: Callable[[str], Stage], idle: Callable[[str], bool]) -> list[str]:
        """The nodes to check now; a production node due but busy is planned again `retry_s` later,
        a node in any other stage is dropped until a move plans it again."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            at, node = heapq.heappop(self._heap)
            if self._due.get(node) != at:
                continue  # superseded by an earlier plan
            del self._due[node]
            st = stage(node)
            if st == Stage.BURN_IN:
                out.append(node)
            elif st == Stage.PRODUCTION and self.every_s > 0:
                if idle(node):
                    out.append(node)
                else:
                    self.plan(node, now + self.retry_s)
        return out

    def started(self, job_id: str, node: str) -> None:
        self.running[job_id] = node
        self._checking.add(node)
        self._due.pop(node, None)

    def ended(self, job_id: str, now: float, verdict: bool) -> str | None:
        """The check's node, if `job_id` was a check. One that ended without a verdict (stopped) is
        tried again after `retry_s`; one with a verdict is next due a full interval on."""
        node = self.running.pop(job_id, None)
        if node is not None:
            self._checking.discard(node)
            self.plan(node, now + (self.every_s if verdict and self.every_s > 0 else self.retry_s))
        return node
