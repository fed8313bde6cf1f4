"""Gavel's (OSDI'20) Philly-derived traces, with run times from measured throughputs.

A trace line is tab-separated: job_type, command, num_steps_arg, needs_data_dir, total_steps,
arrival_time_s, scale_factor (= GPUs). `simulation_throughputs.json` holds measured steps/s of
a whole job running alone: d["v100"]["('ResNet-18 (batch size 16)', 4)"]["null"] with the job
consolidated on as few servers as possible, d["v100_unconsolidated"][...] with it spread. So

    duration_s        = total_steps / consolidated steps/s
    spread_duration_s = total_steps / spread steps/s    (multi-GPU jobs only)

The traces ask for scale factors (7, 12, 16, 20, 24, 32, 64, and several for job types measured
on one GPU only) that the JSON does not hold. For those we extrapolate from the largest
measured scale factor s0 <= sf of that job type:

    steps/s(sf) = steps/s(s0) * (sf / s0) * e ** log2(sf / s0)

where e, the parallel efficiency per doubling, comes from the job type's own two largest
measured scale factors s1 < s2: e = ((t2 / t1) / (s2 / s1)) ** (1 / log2(s2 / s1)), capped at 1
(never superlinear beyond what was measured). A job type measured at one scale factor only
takes the median e of the job types measured at several, in the same table. Each table
(consolidated, spread) is extrapolated on its own.

For some compute-bound job types the measured spread throughput is higher than the
consolidated one (on V100: the large-batch ResNets, by 2% to 35%, e.g. ResNet-50 batch 128 on
8 GPUs, 13.9 vs 10.3 steps/s; on K80 most ResNets), presumably packed workers contending for one
server's PCIe and host. The twin takes the lower of the two, so spreading a gang never makes it
faster: placement can only cost, and a scheduler is never rewarded for scattering jobs.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

from neocloud.errors import ConfigError
from neocloud.model.job import Job
from neocloud.sim.trace import Trace, TraceJob
from neocloud.sim.traces.native import number, open_text, sorted_trace, where

GPU_TYPES = {"k80": "K80", "p100": "P100", "v100": "V100"}
COLUMNS = (
    "job_type",
    "command",
    "num_steps_arg",
    "needs_data_dir",
    "total_steps",
    "arrival_time_s",
    "scale_factor",
)

Table = dict[str, dict[int, float]]  # job type -> scale factor -> steps/s


def _efficiency(points: dict[int, float]) -> float | None:
    """Parallel efficiency per doubling between the two largest measured scale factors."""
    if len(points) < 2:
        return None
    s1, s2 = sorted(points)[-2:]
    ratio = (points[s2] / points[s1]) / (s2 / s1)
    return min(1.0, float(ratio ** (1 / math.log2(s2 / s1))))


@dataclass(frozen=True, slots=True)
class Throughputs:
    """Measured steps/s of one GPU model, with the extrapolation rule of the module docstring."""

    table: Table
    default_efficiency: float

    @classmethod
    def of(cls, table: Table) -> Throughputs:
        effs = sorted(e for e in map(_efficiency, table.values()) if e is not None)
        median = effs[len(effs) // 2] if effs else 1.0
        return cls(table=table, default_efficiency=median)

    def steps_per_s(self, job_type: str, scale_factor: int) -> float | None:
        """Steps/s of a job of `scale_factor` GPUs; None where nothing below it was measured."""
        points = self.table.get(job_type)
        if not points:
            return None
        if scale_factor in points:
            return points[scale_factor]
        below = [s for s in points if s <= scale_factor]
        if not below:
            return None
        s0 = max(below)
        eff = _efficiency(points)
        eff = self.default_efficiency if eff is None else eff
        ratio = scale_factor / s0
        return float(points[s0] * ratio * eff ** math.log2(ratio))


def _table(raw: object, source: str, key: str) -> Table:
    if not isinstance(raw, dict):
        raise ConfigError(source, key, "is missing; expected measured throughputs for this GPU")
    table: Table = {}
    for name, entry in raw.items():
        try:
            job_type, scale = ast.literal_eval(name)
            steps = float(entry["null"])
        except (ValueError, SyntaxError, TypeError, KeyError):
            continue  # pairs of co-located jobs and other keys we do not use
        if isinstance(job_type, str) and isinstance(scale, int) and steps > 0:
            table.setdefault(job_type, {})[scale] = steps
    return table


def load_throughputs(path: Path, gpu: str) -> tuple[Throughputs, Throughputs]:
    """The consolidated and spread throughput models of one GPU model from Gavel's JSON."""
    source = str(path)
    with open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(source, f"line {e.lineno}", f"is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(source, "", "expected a JSON object keyed by GPU model (v100, ...)")
    consolidated = _table(data.get(gpu), source, gpu)
    spread = _table(data.get(f"{gpu}_unconsolidated", {}), source, f"{gpu}_unconsolidated")
    return Throughputs.of(consolidated), Throughputs.of(spread)


def load_gavel(
    path: Path | str, *, gpu: str = "v100", throughputs: Path | str | None = None
) -> Trace:
    """Read one Gavel trace; throughputs default to ../simulation_throughputs.json beside it."""
    path = Path(path)
    source = str(path)
    if gpu not in GPU_TYPES:
        raise ConfigError(
            source, "gavel_gpu", f"must be one of {', '.join(GPU_TYPES)}, got {gpu!r}"
        )
    json_path = (
        Path(throughputs)
        if throughputs is not None
        else path.resolve().parent.parent / "simulation_throughputs.json"
    )
    consolidated, spread = load_throughputs(json_path, gpu)
    gpu_types = (GPU_TYPES[gpu],)
    stem = path.stem
    jobs: list[TraceJob] = []
    with open_text(path) as f:
        for line, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) != len(COLUMNS):
                raise ConfigError(
                    source,
                    f"line {line}",
                    f"has {len(fields)} tab-separated fields; expected {len(COLUMNS)}: "
                    f"{', '.join(COLUMNS)}",
                )
            job_type = fields[0].strip()
            steps = number(fields[4], source, line, "total_steps", positive=True)
            arrival = number(fields[5], source, line, "arrival_time_s", minimum=0)
            scale = int(number(fields[6], source, line, "scale_factor", minimum=1, integer=True))
            rate = consolidated.steps_per_s(job_type, scale)
            if rate is None:
                known = ", ".join(sorted(consolidated.table))
                raise ConfigError(
                    source,
                    where(line, "job_type"),
                    f"no measured {gpu} throughput for {job_type!r} at {scale} GPU(s) or fewer "
                    f"in {json_path}; known job types: {known}",
                )
            spread_s: float | None = None
            if scale > 1:
                spread_rate = spread.steps_per_s(job_type, scale)
                spread_s = steps / min(rate, spread_rate if spread_rate is not None else rate)
            job = Job(
                id=f"{stem}-{line}",
                gpus=float(scale),
                gpu_types=gpu_types,
                submit_s=arrival,
                name=job_type,
            )
            jobs.append(TraceJob(job=job, duration_s=steps / rate, spread_duration_s=spread_s))
    return sorted_trace(stem, jobs)
