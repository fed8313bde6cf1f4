"""The fleet's shape: site > fabric > leaf > node > GPU, plus optional NVLink domains.

A fabric is one InfiniBand/RoCE network (a job never spans two); a leaf is the set of nodes one
switch hop apart. Nodes are numbered densely so the scheduler can keep its state in arrays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from neocloud.model.catalog import GpuType


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    kind: str = "owned"  # "owned" or "colocation"
    it_mw: float = 0.0
    pue: float = 1.3


@dataclass(frozen=True, slots=True)
class Fabric:
    name: str
    site: str


@dataclass(frozen=True, slots=True)
class Leaf:
    name: str
    fabric: int  # index into Fleet.fabrics


@dataclass(frozen=True, slots=True)
class Node:
    id: int  # dense index into Fleet.nodes
    name: str
    gpu: GpuType | None
    gpus: int
    leaf: int  # index into Fleet.leaves
    cpu_milli: int = 0  # 0 = not tracked
    memory_mib: int = 0  # 0 = not tracked
    nvlink_domain: str | None = None

    @property
    def it_kw(self) -> float:
        """Power its GPU systems draw at full load, from the catalog's per-system figure."""
        return self.gpu.system_kw * self.gpus / self.gpu.gpus_per_system if self.gpu else 0.0


@dataclass(slots=True)
class Fleet:
    """The whole fleet, flattened into dense lists the scheduler indexes by position."""

    name: str
    sites: list[Site] = field(default_factory=list)
    fabrics: list[Fabric] = field(default_factory=list)
    leaves: list[Leaf] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    def gpus_by_type(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for n in self.nodes:
            if n.gpu is not None and n.gpus:
                counts[n.gpu.name] += n.gpus
        return counts

    def fabric_of(self, node: Node) -> int:
        return self.leaves[node.leaf].fabric

    def site_of(self, node: Node) -> Site:
        return next(s for s in self.sites if s.name == self.fabrics[self.fabric_of(node)].site)

    def it_power_kw(self) -> float:
        """Power the GPU systems draw at full load, from the catalog's per-system figure."""
        return sum(n.it_kw for n in self.nodes)

