"""`neocloud node check`: what a node really delivers, against what its GPUs should.

An active check for burn-in and for idle nodes: dense matmul throughput per GPU (BF16 and FP16),
memory bandwidth, GPU-to-GPU copy bandwidth and an all-reduce across the node's GPUs, a
silent-data-corruption probe (the same product on every device, against a float64 reference),
and NVML's view of each GPU's health (ECC, row remapping, temperature, power, clocks, throttling).
Each figure is compared with the catalog's datasheet value for the GPU; the verdict fails on any
check below its share of that value or on any health fault.

The measuring code is written once against a small device interface: torch on CUDA devices where
there are any (`pip install 'neocloud[gpu]'`), numpy on the CPU otherwise (FP32, no catalog
figures to meet unless given), so the CPU path that the tests run is the GPU path's code.
"""

from __future__ import annotations

import platform
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from neocloud.errors import NeocloudError
from neocloud.model.catalog import GpuType, gpu_type

# Share of the datasheet figure a healthy part reaches in these measurements.
MATMUL_SHARE = 0.55  # dense GEMM of 4-8k squares: 60-75% of datasheet on Hopper
MEMORY_SHARE = 0.70  # device-to-device copy: 80-90% of datasheet bandwidth
LINK_SHARE = 0.50  # peer copy and all-reduce bus bandwidth against one direction of NVLink
HOT_C = 85.0  # a GPU at or above this temperature, idle or in a short check, is too hot
SDC_TOLERANCE = 1e-4  # relative error of an FP32 product against its float64 reference


@dataclass(slots=True)
class Check:
    name: str
    value: float | None
    unit: str
    expected: float | None = None  # the datasheet figure compared against
    needed: float | None = None  # the least that passes
    ok: bool | None = None  # None: measured, with nothing to compare it with
    note: str = ""


@dataclass(slots=True)
class Report:
    node: str
    device: str  # "cuda" or "cpu"
    quick: bool
    gpus: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "device": self.device, "quick": self.quick, "passed": self.passed,
                "seconds": round(self.seconds, 2), "gpus": self.gpus, "checks": [asdict(c) for c in self.checks]}


# -- the devices ---------------------------------------------------------------------------------
class _Cpu:
    """The CPU, through numpy: FP32 only (numpy has no BF16 and no fast FP16)."""

    kind = "cpu"
    dtypes = ("fp32",)

    def __init__(self) -> None:
        self.name = platform.processor() or platform.machine()
        self.label = "cpu"

    def matrix(self, n: int, dtype: str, seed: int):
        return np.random.default_rng(seed).standard_normal((n, n), dtype=np.float32)

    def from_host(self, a: np.ndarray):
        return a.astype(np.float32)

    def to_host(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def empty_like(self, x):
        return np.empty_like(x)

    def matmul(self, a, b, out) -> None:
        np.matmul(a, b, out=out)

    def buffer(self, nbytes: int):
        return np.ones(nbytes, dtype=np.uint8)

    def copy(self, dst, src) -> None:
        np.copyto(dst, src)

    def sync(self) -> None:
        pass


class _Cuda:
    """One CUDA device, through torch."""

    kind = "cuda"
    dtypes = ("bf16", "fp16")

    def __init__(self, torch, index: int) -> None:
        self.torch, self.index = torch, index
        self.device = torch.device("cuda", index)
        self.name = torch.cuda.get_device_name(index)
        self.label = f"cuda:{index}"
        self._types = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

    def matrix(self, n: int, dtype: str, seed: int):
        g = self.torch.Generator(device=self.device).manual_seed(seed)
        return self.torch.randn(n, n, generator=g, device=self.device, dtype=self._types[dtype])

    def from_host(self, a: np.ndarray):
        return self.torch.from_numpy(a.astype(np.float32)).to(self.device)

    def to_host(self, x) -> np.ndarray:
        return x.float().cpu().numpy().astype(np.float64)

    def empty_like(self, x):
        return self.torch.empty_like(x)

    def matmul(self, a, b, out) -> None:
        self.torch.matmul(a, b, out=out)

    def buffer(self, nbytes: int):
        return self.torch.ones(nbytes, dtype=self.torch.uint8, device=self.device)

    def copy(self, dst, src) -> None:
        dst.copy_(src, non_blocking=True)

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)


def devices() -> list:
    """The node's CUDA devices through torch, or the CPU when there are none (or no torch)."""
    try:
        import torch
    except ImportError:
        return [_Cpu()]
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return [_Cpu()]
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32 in the corruption probe
    return [_Cuda(torch, i) for i in range(torch.cuda.device_count())]


# -- measurements (one code for every device) ------------------------------------------------------
def _timed(run: Callable[[], None], sync: Callable[[], None], min_s: float) -> float:
    """Seconds per call: one warm-up, then calls until `min_s` has passed (three at least)."""
    run()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_s:
        run()
        calls += 1
        if calls % 8 == 0 or calls < 3:
            sync()
    sync()
    return (time.perf_counter() - start) / calls


def matmul_tflops(dev, n: int, dtype: str, min_s: float) -> float:
    a, b = dev.matrix(n, dtype, 1), dev.matrix(n, dtype, 2)
    out = dev.empty_like(a)
    return 2 * n**3 / _timed(lambda: dev.matmul(a, b, out), dev.sync, min_s) / 1e12


def memory_gbps(dev, nbytes: int, min_s: float) -> float:
    """Device memory bandwidth from a copy: every byte read once and written once."""
    src, dst = dev.buffer(nbytes), dev.buffer(nbytes)
    return 2 * nbytes / _timed(lambda: dev.copy(dst, src), dev.sync, min_s) / 1e9


def corruption(dev, n: int = 256) -> float:
    """Relative error of an FP32 product on the device against float64 on the host."""
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    x, y = dev.from_host(a), dev.from_host(b)
    out = dev.empty_like(x)
    dev.matmul(x, y, out)
    dev.sync()
    ref = a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64)
    return float(np.abs(dev.to_host(out) - ref).max() / np.abs(ref).max())


def peer_gbps(src_dev, dst_dev, nbytes: int, min_s: float) -> float:
    src = src_dev.buffer(nbytes)
    dst = dst_dev.buffer(nbytes)

    def both() -> None:
        src_dev.sync()
        dst_dev.sync()

    return nbytes / _timed(lambda: dst_dev.copy(dst, src), both, min_s) / 1e9


def allreduce_busbw(devs: list, nbytes: int, min_s: float) -> float:
    """NCCL all-reduce across the node's GPUs, as bus bandwidth (nccl-tests' definition)."""
    torch = devs[0].torch
    from torch.cuda import nccl

    tensors = [torch.ones(nbytes // 4, dtype=torch.float32, device=d.device) for d in devs]

    def sync() -> None:
        for d in devs:
            d.sync()

    seconds = _timed(lambda: nccl.all_reduce(tensors), sync, min_s)
    k = len(devs)
    return nbytes * 2 * (k - 1) / k / seconds / 1e9


# -- NVML --------------------------------------------------------------------------------------------
def nvml_health() -> list[dict[str, Any]] | str:
    """Per GPU: ECC, row remapping, temperature, power, clocks, throttling; or why NVML is not there."""
    try:
        import pynvml as nv
    except ImportError:
        return "nvidia-ml-py is not installed (pip install 'neocloud[gpu]')"
    try:
        nv.nvmlInit()
    except nv.NVMLError as e:
        return f"NVML is not available: {e}"
    out = []
    try:
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            g: dict[str, Any] = {"index": i}
            probes = {
                "temperature_c": lambda h=h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                "power_w": lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000,
                "power_limit_w": lambda h=h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000,
                "sm_clock_mhz": lambda h=h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                "sm_clock_max_mhz": lambda h=h: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
                "ecc_uncorrected": lambda h=h: nv.nvmlDeviceGetTotalEccErrors(
                    h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC),
                "ecc_corrected": lambda h=h: nv.nvmlDeviceGetTotalEccErrors(
                    h, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_VOLATILE_ECC),
                "remap_failure": lambda h=h: bool(nv.nvmlDeviceGetRemappedRows(h)[3]),
                "throttle_reasons": lambda h=h: int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h)),
            }
            for key, probe in probes.items():
                try:
                    g[key] = probe()
                except nv.NVMLError:
                    g[key] = None  # not supported on this part
            out.append(g)
    finally:
        nv.nvmlShutdown()
    return out


HW_SLOWDOWN = 0x8 | 0x20 | 0x40  # NVML throttle reasons: HW slowdown, SW thermal, HW thermal


# -- the check ---------------------------------------------------------------------------------------
def _expected(name: str, given: str | None) -> GpuType | None:
    for candidate in (given, name.upper().replace("NVIDIA ", "").split(" ")[0], name):
        if candidate:
            try:
                return gpu_type(candidate)
            except NeocloudError:
                continue
    return None


def _against(name: str, value: float, unit: str, expected: float | None, share: float) -> Check:
    if expected is None:
        return Check(name, round(value, 3), unit)
    needed = expected * share
    return Check(name, round(value, 3), unit, expected, round(needed, 3), value >= needed)


def run_check(quick: bool = True, gpu: str | None = None, expect_tflops: float | None = None,
              expect_memory_gbps: float | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """Measure this node; compare with the catalog (or the figures given); return the report."""
    started = time.perf_counter()
    devs = devices()
    kind = devs[0].kind
    report = Report(socket.gethostname(), kind, quick)
    min_s = 0.3 if quick else 3.0
    n = (4096 if quick else 8192) if kind == "cuda" else (512 if quick else 2048)
    nbytes = (1 << 30 if quick else 4 << 30) if kind == "cuda" else (64 << 20 if quick else 512 << 20)
    step = progress or (lambda _: None)
    for dev in devs:
        spec = _expected(dev.name, gpu) if kind == "cuda" or gpu else None
        report.gpus.append({"device": dev.label, "name": dev.name, "catalog": spec.name if spec else None})
        for dtype in dev.dtypes:
            step(f"{dev.label} {dtype} matmul")
            tflops = expect_tflops if expect_tflops is not None else spec.dense_tflops if spec else None
            report.checks.append(_against(f"{dev.label} {dtype} matmul", matmul_tflops(dev, n, dtype, min_s),
                                          "TFLOPS", tflops, MATMUL_SHARE))
        step(f"{dev.label} memory bandwidth")
        gbps = expect_memory_gbps if expect_memory_gbps is not None else \
            spec.memory_tbps * 1000 if spec and spec.memory_tbps else None
        report.checks.append(_against(f"{dev.label} memory bandwidth", memory_gbps(dev, nbytes, min_s), "GB/s",
                                      gbps, MEMORY_SHARE))
        step(f"{dev.label} corruption probe")
        err = corruption(dev)
        report.checks.append(Check(f"{dev.label} FP32 product vs float64", err, "relative error (at most)", None,
                                   SDC_TOLERANCE, err <= SDC_TOLERANCE))
    if kind == "cuda" and len(devs) > 1:
        link = _expected(devs[0].name, gpu)
        one_way = link.nvlink_gbps / 2 if link and link.nvlink_gbps else None
        for i, src in enumerate(devs):
            dst = devs[(i + 1) % len(devs)]
            step(f"{src.label} -> {dst.label} copy")
            report.checks.append(_against(f"{src.label} -> {dst.label} copy", peer_gbps(src, dst, nbytes // 4, min_s),
                                          "GB/s", one_way, LINK_SHARE))
        step("all-reduce")
        report.checks.append(_against(f"all-reduce across {len(devs)} GPUs (bus bandwidth)",
                                      allreduce_busbw(devs, nbytes // 4, min_s), "GB/s", one_way, LINK_SHARE))
    elif kind == "cuda":
        report.checks.append(Check("GPU-to-GPU copy and all-reduce", None, "", note="one GPU: nothing to measure"))
    step("NVML")
    health = nvml_health()
    if isinstance(health, str):
        if kind == "cuda":
            report.checks.append(Check("NVML health", None, "", note=health))
    else:
        for g in health:
            i = g["index"]
            if g.get("ecc_uncorrected") is not None:
                report.checks.append(Check(f"cuda:{i} uncorrected ECC errors", g["ecc_uncorrected"], "errors", None,
                                           0, g["ecc_uncorrected"] == 0))
            if g.get("remap_failure") is not None:
                report.checks.append(Check(f"cuda:{i} row remapping failure", float(g["remap_failure"]), "", None, 0,
                                           not g["remap_failure"]))
            if g.get("temperature_c") is not None:
                report.checks.append(Check(f"cuda:{i} temperature", g["temperature_c"], "C", None, HOT_C,
                                           g["temperature_c"] < HOT_C))
            if g.get("throttle_reasons") is not None:
                slowed = bool(g["throttle_reasons"] & HW_SLOWDOWN)
                report.checks.append(Check(f"cuda:{i} thermal or hardware slowdown", float(slowed), "", None, 0,
                                           not slowed, note=f"throttle reasons 0x{g['throttle_reasons']:x}"))
            if i < len(report.gpus):
                report.gpus[i]["nvml"] = g
    report.seconds = time.perf_counter() - started
    return report
