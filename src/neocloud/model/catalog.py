"""The built-in GPU catalog: what each model offers and what it draws.

Figures are vendor datasheet values per GPU: memory and its bandwidth, dense (non-sparse) BF16
tensor TFLOPS (FP16 where the part has no BF16), NVLink bandwidth (both directions together; 0 for
PCIe-only parts), and board power. `system_kw` is the power of one server
(or one rack-scale tray) built around the part, used to turn megawatts into GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from neocloud.errors import NeocloudError


@dataclass(frozen=True, slots=True)
class GpuType:
    name: str
    memory_gb: int
    dense_tflops: float | None  # dense BF16 (FP16 on parts without BF16); None where unpublished
    board_watts: int
    gpus_per_system: int
    system_kw: float
    nvlink_domain: int = 0  # GPUs sharing one NVLink domain beyond a server (72 for NVL72)
    aliases: tuple[str, ...] = ()
    memory_tbps: float | None = None  # memory bandwidth, TB/s
    nvlink_gbps: float = 0.0  # NVLink bandwidth per GPU, GB/s, both directions


_TYPES = (
    GpuType("GB200", 186, 2500.0, 1200, 4, 6.7, nvlink_domain=72, aliases=("GB200-NVL72",), memory_tbps=8.0,
            nvlink_gbps=1800),
    GpuType("B200", 180, 2250.0, 1000, 8, 14.3, aliases=("B200-SXM",), memory_tbps=8.0, nvlink_gbps=1800),
    GpuType("H200-SXM", 141, 989.0, 700, 8, 10.2, aliases=("H200",), memory_tbps=4.8, nvlink_gbps=900),
    GpuType("H100-SXM", 80, 989.0, 700, 8, 10.2, aliases=("H100",), memory_tbps=3.35, nvlink_gbps=900),
    GpuType("A100-SXM", 80, 312.0, 400, 8, 6.5, aliases=("A100",), memory_tbps=2.04, nvlink_gbps=600),
    GpuType("L40S", 48, 362.0, 350, 8, 4.5, memory_tbps=0.864),
    GpuType("A10", 24, 125.0, 150, 4, 1.5, memory_tbps=0.6),
    GpuType("V100", 32, 125.0, 300, 8, 3.5, aliases=("V100-SXM2", "V100M32"), memory_tbps=0.9, nvlink_gbps=300),
    GpuType("V100-16GB", 16, 125.0, 300, 8, 3.5, aliases=("V100M16",), memory_tbps=0.9, nvlink_gbps=300),
    GpuType("P100", 16, 21.2, 300, 4, 1.6, memory_tbps=0.732, nvlink_gbps=160),
    GpuType("T4", 16, 65.0, 70, 4, 0.8, memory_tbps=0.32),
    GpuType("K80", 12, 4.4, 150, 8, 1.6, memory_tbps=0.24),
    # Anonymised models of the Alibaba openb trace: only their names are public.
    GpuType("G2", 0, None, 0, 8, 0.0),
    GpuType("G3", 0, None, 0, 8, 0.0),
)

CATALOG: dict[str, GpuType] = {}
for _t in _TYPES:
    for _name in (_t.name, *_t.aliases):
        CATALOG[_name.upper()] = _t


def gpu_type(name: str) -> GpuType:
    """Look a GPU model up by name or alias, case-insensitively."""
    try:
        return CATALOG[name.upper()]
    except KeyError:
        known = ", ".join(t.name for t in _TYPES)
        raise NeocloudError(f"unknown GPU type {name!r}; known types: {known}") from None
