"""Placement policies by name: the basic ones, FGD and neocloud's own."""

from __future__ import annotations

from neocloud.errors import NeocloudError
from neocloud.sched.fgd import FragmentationGradientDescent
from neocloud.sched.packing import ShapeAwarePacking
from neocloud.sched.placement import (
    BestFit,
    Placement,
    RandomPlacement,
    TopologyPacking,
)

PLACEMENTS: dict[str, type[Placement]] = {
    p.name: p for p in (RandomPlacement, BestFit, TopologyPacking, FragmentationGradientDescent, ShapeAwarePacking)
}


def placement(name: str) -> Placement:
    try:
        return PLACEMENTS[name]()
    except KeyError:
        raise NeocloudError(f"unknown placement {name!r}; choose one of: {', '.join(PLACEMENTS)}") from None
