"""neocloud's own trace format: one job a row, as CSV with a header or as JSON Lines.

Every public format is converted into these fields, so the field parsers here are also the ones
the other loaders use: one place decides what a valid GPU count, time or GPU type is, and every
error names the file, the line and the column, and says what to write instead.

Fields (the first four are required):

    id                     unique job id
    submit_s               arrival, seconds from the trace's start, >= 0
    gpus                   whole GPUs, a fraction (< 1) of one GPU, or 0 for a CPU-only job
    duration_s             true run time, consolidated, in seconds, > 0
    gpus_per_node          the gang's shape, >= 1; empty lets the scheduler pack it
    gpu_type               allowed GPU models: one catalog name or alias, or several as "A|B"
    cpu_milli, memory_mib  per node, >= 0
    tenant                 default "default"
    priority               reserved | on-demand | spot (default on-demand)
    estimate_s             the user's run-time estimate, the only duration the scheduler sees
    checkpoint_interval_s  seconds between checkpoints
    spread_duration_s      true run time when the gang is spread wider than it needs
    name                   free text

In CSV an empty cell means "not given"; in JSON Lines a missing key or null does. Rows may come
in any order; the loaded trace is sorted by submit time (stably).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from neocloud.errors import ConfigError, NeocloudError
from neocloud.model.catalog import gpu_type
from neocloud.model.job import Job, PriorityClass
from neocloud.sim.trace import Trace, TraceJob

REQUIRED = ("id", "submit_s", "gpus", "duration_s")
OPTIONAL = (
    "gpus_per_node",
    "gpu_type",
    "cpu_milli",
    "memory_mib",
    "tenant",
    "priority",
    "estimate_s",
    "checkpoint_interval_s",
    "spread_duration_s",
    "name",
)
COLUMNS = REQUIRED + OPTIONAL


# --- field parsers shared by every loader ----------------------------------------------------


def where(line: int, column: str) -> str:
    """The `path` part of a ConfigError for one cell."""
    return f"line {line}, column '{column}'"


def number(
    value: object,
    source: str,
    line: int,
    column: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    integer: bool = False,
) -> float:
    """A finite number from a cell, checked against its bounds."""
    what = "a whole number" if integer else "a number"
    if minimum is not None:
        what += f" >= {minimum:g}"
    elif positive:
        what += " > 0"
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        x = float(value)
    except ValueError:
        raise ConfigError(source, where(line, column), f"must be {what}, got {value!r}") from None
    bad = not math.isfinite(x) or (integer and not x.is_integer())
    bad = bad or (minimum is not None and x < minimum) or (positive and x <= 0)
    if bad:
        raise ConfigError(source, where(line, column), f"must be {what}, got {value!r}")
    return x


def gpu_count(value: object, source: str, line: int, column: str) -> float:
    """GPUs a job asks for: 0 (CPU only), a fraction of one GPU, or a whole number."""
    x = number(value, source, line, column, minimum=0)
    if x > 1 and not x.is_integer():
        raise ConfigError(
            source,
            where(line, column),
            f"must be 0, a fraction of one GPU (< 1) or a whole number of GPUs, got {value!r}",
        )
    return x


def gpu_types(spec: str, source: str, line: int, column: str) -> tuple[str, ...]:
    """Canonical catalog names from "A|B|..."; duplicates dropped, sorted."""
    names: set[str] = set()
    for part in spec.split("|"):
        part = part.strip()
        if not part:
            continue
        try:
            names.add(gpu_type(part).name)
        except NeocloudError as e:
            raise ConfigError(source, where(line, column), str(e)) from None
    return tuple(sorted(names))


def open_text(path: Path) -> TextIO:
    """Open a trace file, turning 'no such file' into an error the user can act on."""
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read the trace file: {e.strerror}") from None


def csv_rows(
    path: Path, required: Sequence[str], known: Sequence[str] | None = None
) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The header's column indexes and the data rows (with their line numbers) of a CSV file.

    Checks that every required column is there, that no column is unknown (when `known` is
    given: a typo would otherwise silently drop a field), and that each row is complete.
    """
    source = str(path)
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ConfigError(source, "line 1", "the file is empty; expected a CSV header line")
        header = [h.strip() for h in header]
        columns = {name: i for i, name in enumerate(header)}
        missing = [c for c in required if c not in columns]
        if missing:
            raise ConfigError(
                source,
                "line 1",
                f"header lacks required column(s) {', '.join(missing)}; "
                f"expected at least: {','.join(required)}",
            )
        if known is not None:
            unknown = [c for c in header if c not in known]
            if unknown:
                raise ConfigError(
                    source,
                    "line 1",
                    f"unknown column(s) {', '.join(unknown)}; known columns: {', '.join(known)}",
                )
        rows: list[tuple[int, list[str]]] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise ConfigError(
                    source,
                    f"line {reader.line_num}",
                    f"has {len(row)} fields but the header has {len(header)}; "
                    "give every column a value (empty is allowed where optional)",
                )
            rows.append((reader.line_num, row))
    return columns, rows


def sorted_trace(name: str, jobs: list[TraceJob]) -> Trace:
    """A trace sorted by submit time; stable, so equal times keep file order."""
    jobs.sort(key=lambda tj: tj.job.submit_s)
    return Trace(name=name, jobs=jobs)


# --- the native format ----------------------------------------------------------------------


def _optional_number(
    fields: Mapping[str, object],
    name: str,
    source: str,
    line: int,
    *,
    minimum: float | None = None,
    positive: bool = False,
    integer: bool = False,
) -> float | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    return number(value, source, line, name, minimum=minimum, positive=positive, integer=integer)


def _text(fields: Mapping[str, object], name: str, source: str, line: int, default: str) -> str:
    value = fields.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(source, where(line, name), f"must be text, got {value!r}")
    return value


def job_from_fields(fields: Mapping[str, object], source: str, line: int) -> TraceJob:
    """One native row (CSV cells or a JSON object) as a TraceJob."""
    for name in REQUIRED:
        if fields.get(name) is None or fields.get(name) == "":
            raise ConfigError(source, where(line, name), f"is required; give the job's {name}")
    job_id = fields["id"]
    if isinstance(job_id, bool) or not isinstance(job_id, (str, int)):
        raise ConfigError(source, where(line, "id"), f"must be text, got {job_id!r}")
    per_node = _optional_number(fields, "gpus_per_node", source, line, minimum=1, integer=True)
    priority_text = _text(fields, "priority", source, line, PriorityClass.ON_DEMAND.value)
    try:
        priority = PriorityClass(priority_text)
    except ValueError:
        choices = " | ".join(p.value for p in PriorityClass)
        raise ConfigError(
            source, where(line, "priority"), f"must be one of {choices}, got {priority_text!r}"
        ) from None
    type_spec = fields.get("gpu_type")
    if isinstance(type_spec, list):
        type_spec = "|".join(str(t) for t in type_spec)
    if type_spec is not None and not isinstance(type_spec, str):
        raise ConfigError(source, where(line, "gpu_type"), f"must be a GPU name, got {type_spec!r}")
    types = gpu_types(type_spec, source, line, "gpu_type") if type_spec else ()
    job = Job(
        id=str(job_id),
        gpus=gpu_count(fields["gpus"], source, line, "gpus"),
        gpus_per_node=None if per_node is None else int(per_node),
        gpu_types=types,
        cpu_milli=int(
            _optional_number(fields, "cpu_milli", source, line, minimum=0, integer=True) or 0
        ),
        memory_mib=int(
            _optional_number(fields, "memory_mib", source, line, minimum=0, integer=True) or 0
        ),
        tenant=_text(fields, "tenant", source, line, "default"),
        priority=priority,
        submit_s=number(fields["submit_s"], source, line, "submit_s", minimum=0),
        estimate_s=_optional_number(fields, "estimate_s", source, line, positive=True),
        checkpoint_interval_s=_optional_number(
            fields, "checkpoint_interval_s", source, line, positive=True
        ),
        name=_text(fields, "name", source, line, ""),
    )
    return TraceJob(
        job=job,
        duration_s=number(fields["duration_s"], source, line, "duration_s", positive=True),
        spread_duration_s=_optional_number(
            fields, "spread_duration_s", source, line, positive=True
        ),
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    source = str(path)
    with open_text(path) as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    source,
                    f"line {line_no}",
                    f"is not valid JSON ({e.msg}); write one object a line",
                ) from None
            if not isinstance(obj, dict):
                raise ConfigError(source, f"line {line_no}", "must be a JSON object {...}")
            unknown = [k for k in obj if k not in COLUMNS]
            if unknown:
                raise ConfigError(
                    source,
                    f"line {line_no}",
                    f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(COLUMNS)}",
                )
            yield line_no, obj


def load_native(path: Path | str) -> Trace:
    """Read a native trace: JSON Lines for .jsonl, CSV with a header otherwise."""
    path = Path(path)
    source = str(path)
    jobs: list[TraceJob] = []
    if path.suffix == ".jsonl":
        for line, obj in _jsonl_rows(path):
            jobs.append(job_from_fields(obj, source, line))
    else:
        columns, rows = csv_rows(path, REQUIRED, COLUMNS)
        for line, row in rows:
            fields = {name: row[i].strip() for name, i in columns.items()}
            jobs.append(job_from_fields(fields, source, line))
    seen: set[str] = set()
    for tj in jobs:
        if tj.job.id in seen:
            raise ConfigError(
                source, f"job '{tj.job.id}'", "appears twice; give every job its own id"
            )
        seen.add(tj.job.id)
    return sorted_trace(path.stem, jobs)


# --- writing --------------------------------------------------------------------------------


def _num(x: float) -> int | float:
    """Whole numbers without '.0' (shorter files); repr of a float round-trips exactly."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _fields(tj: TraceJob) -> dict[str, object]:
    """A job's non-default fields, in column order."""
    j = tj.job
    out: dict[str, object] = {
        "id": j.id,
        "submit_s": _num(j.submit_s),
        "gpus": _num(j.gpus),
        "duration_s": _num(tj.duration_s),
    }
    optional: dict[str, object] = {
        "gpus_per_node": j.gpus_per_node,
        "gpu_type": "|".join(j.gpu_types) or None,
        "cpu_milli": j.cpu_milli or None,
        "memory_mib": j.memory_mib or None,
        "tenant": None if j.tenant == "default" else j.tenant,
        "priority": None if j.priority is PriorityClass.ON_DEMAND else j.priority.value,
        "estimate_s": None if j.estimate_s is None else _num(j.estimate_s),
        "checkpoint_interval_s": (
            None if j.checkpoint_interval_s is None else _num(j.checkpoint_interval_s)
        ),
        "spread_duration_s": None if tj.spread_duration_s is None else _num(tj.spread_duration_s),
        "name": j.name or None,
    }
    out.update((k, v) for k, v in optional.items() if v is not None)
    return out


def write_native(trace: Trace, path: Path | str) -> None:
    """Write a trace so that load_native(path) gives it back: JSONL for .jsonl, else CSV."""
    path = Path(path)
    rows = [_fields(tj) for tj in trace.jobs]
    with path.open("w", newline="", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for row in rows:
                f.write(json.dumps(row) + "\n")
            return
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
