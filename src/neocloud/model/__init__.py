"""Plain data: the GPU catalog, the fleet's shape and the work asked of it."""

from neocloud.model.catalog import CATALOG, GpuType, gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site
from neocloud.model.job import Job, PriorityClass

__all__ = [
    "CATALOG", "GpuType", "gpu_type", "Fabric", "Fleet", "Leaf", "Node", "Site", "Job", "PriorityClass",
]
