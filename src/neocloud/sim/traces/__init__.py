"""Trace loaders for the digital twin: public cluster traces and neocloud's own format.

Each loader turns one published format into the same `Trace` of `Job`s with their true
durations, so every scheduling idea is measured on real arrivals and sizes. `load_trace`
picks the loader from `fmt` or, when not given, from the file's name and header.
"""

from __future__ import annotations

from pathlib import Path

from neocloud.errors import ConfigError
from neocloud.sim.trace import Trace
from neocloud.sim.traces.gavel import load_gavel
from neocloud.sim.traces.native import load_native, write_native
from neocloud.sim.traces.openb import load_openb_pods
from neocloud.sim.traces.tiresias import load_tiresias

FORMATS = ("openb", "gavel", "tiresias", "native")

__all__ = [
    "FORMATS",
    "guess_format",
    "load_gavel",
    "load_native",
    "load_openb_pods",
    "load_tiresias",
    "load_trace",
    "write_native",
]


def guess_format(path: Path) -> str:
    """The format of a trace file, from its suffix or its first line."""
    if path.suffix == ".trace":
        return "gavel"
    if path.suffix == ".jsonl":
        return "native"
    try:
        with path.open(encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read the trace file: {e.strerror}") from None
    columns = [c.strip() for c in first.split(",")]
    if columns[:5] == ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"]:
        return "openb"
    if columns[:3] == ["job_id", "num_gpu", "submit_time"]:
        return "tiresias"
    if {"id", "submit_s", "gpus", "duration_s"} <= set(columns):
        return "native"
    if first.count("\t") == 6:
        return "gavel"
    raise ConfigError(
        str(path),
        "line 1",
        f"cannot tell the trace format from {first[:60]!r}; "
        f"pass the format explicitly, one of {', '.join(FORMATS)}",
    )


def load_trace(
    path: Path | str,
    fmt: str | None = None,
    *,
    gavel_gpu: str = "v100",
    gavel_throughputs: Path | None = None,
) -> Trace:
    """Load a trace file in any supported format (guessed when `fmt` is None)."""
    path = Path(path)
    fmt = fmt if fmt is not None else guess_format(path)
    if fmt == "openb":
        return load_openb_pods(path)
    if fmt == "gavel":
        return load_gavel(path, gpu=gavel_gpu, throughputs=gavel_throughputs)
    if fmt == "tiresias":
        return load_tiresias(path)
    if fmt == "native":
        return load_native(path)
    raise ConfigError(
        str(path), "format", f"unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}"
    )
