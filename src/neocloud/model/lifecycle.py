"""A node's life, as the best operators run it: onboarding, burn-in, production, and back.

A node only takes work in production. Out of production it is cordoned (no new work, jobs run
on), draining (the same, on the way to maintenance), or in triage (its jobs are stopped now and
requeued elsewhere); from triage it is repaired or sent back to its vendor (RMA), and whatever
comes back passes burn-in before it sees a customer's job again.
"""

from __future__ import annotations

from enum import StrEnum

from neocloud.errors import NeocloudError


class Stage(StrEnum):
    ONBOARDING = "onboarding"
    BURN_IN = "burn-in"
    PRODUCTION = "production"
    CORDONED = "cordoned"
    DRAINING = "draining"
    TRIAGE = "triage"
    REPAIR = "repair"
    RMA = "rma"


MOVES: dict[Stage, tuple[Stage, ...]] = {
    Stage.ONBOARDING: (Stage.BURN_IN,),
    Stage.BURN_IN: (Stage.PRODUCTION, Stage.TRIAGE),
    Stage.PRODUCTION: (Stage.CORDONED, Stage.DRAINING, Stage.TRIAGE),
    Stage.CORDONED: (Stage.PRODUCTION, Stage.DRAINING, Stage.TRIAGE),
    Stage.DRAINING: (Stage.PRODUCTION, Stage.CORDONED, Stage.TRIAGE),
    Stage.TRIAGE: (Stage.REPAIR, Stage.RMA, Stage.BURN_IN),
    Stage.REPAIR: (Stage.BURN_IN, Stage.RMA),
    Stage.RMA: (Stage.ONBOARDING,),
}
STOPS_JOBS = frozenset({Stage.TRIAGE, Stage.REPAIR, Stage.RMA})  # entering these ends the node's jobs now
# How far out of service each stage is: a signal's action never moves a node back towards production.
SEVERITY = {Stage.PRODUCTION: 0, Stage.CORDONED: 1, Stage.DRAINING: 2, Stage.TRIAGE: 3}


class LifecycleError(NeocloudError):
    """A move the lifecycle does not allow."""


def stage(value: str) -> Stage:
    try:
        return Stage(value)
    except ValueError:
        raise LifecycleError(f"{value!r} is not a node stage; use one of: {', '.join(s.value for s in Stage)}") from None


def check_move(node: str, frm: Stage, to: Stage) -> None:
    if to not in MOVES[frm]:
        raise LifecycleError(f"node {node!r} is in {frm.value}; from there it can go to: "
                             f"{', '.join(s.value for s in MOVES[frm])}")
