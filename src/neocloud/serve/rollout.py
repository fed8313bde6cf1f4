"""Which replicas to start and which to take out of service: Kubernetes' rolling update with no
unavailability (maxUnavailable 0, maxSurge a quarter), which is also how a service scales.

A replica of an older generation leaves only once enough of the current one are ready to carry
what it carried (the oldest first); one not ready serves nothing and leaves at once. Replicas of
the current generation beyond the wanted number leave unready ones first, then the newest."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Replica:
    id: int  # its job's
    generation: int  # of the service's spec it runs
    ready: bool  # its readiness probe answers: the gateway sends it requests


@dataclass(frozen=True, slots=True)
class Plan:
    start: int  # replicas of the current generation to add
    drain: tuple[int, ...]  # replicas to take out of the gateway's rotation, then stop


def surge_of(wanted: int) -> int:
    """Replicas a roll may run above the wanted number."""
    return max(1, math.ceil(wanted / 4))


def plan(wanted: int, generation: int, replicas: Sequence[Replica]) -> Plan:
    current = [r for r in replicas if r.generation == generation]
    old = [r for r in replicas if r.generation != generation]
    drain: list[int] = []
    if len(current) > wanted:
        by_worth = sorted(current, key=lambda r: (r.ready, -r.id))  # unready, then newest, leave first
        drain += [r.id for r in by_worth[: len(current) - wanted]]
        current = by_worth[len(current) - wanted:]
    ready_old = sorted((r for r in old if r.ready), key=lambda r: -r.id)  # the oldest leave first
    keep = ready_old[: max(0, wanted - sum(r.ready for r in current))]
    drain += [r.id for r in old if r not in keep]
    room = wanted + surge_of(wanted) - len(current) - len(keep)
    return Plan(start=max(0, min(wanted - len(current), room)), drain=tuple(drain))
