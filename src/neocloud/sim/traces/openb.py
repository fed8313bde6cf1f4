"""Alibaba PAI's "openb" pod lists (cluster-trace-gpu-v2023, ATC'23 *Beware of Fragmentation*).

Columns: name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,
deletion_time,scheduled_time (seconds). A GPU request is `num_gpu` whole GPUs, or
`gpu_milli`/1000 of one GPU when `num_gpu` is 1 and `gpu_milli` < 1000; `num_gpu` 0 is a CPU-only
pod. `gpu_spec` ("P100|T4|V100M16") limits the GPU models the pod may use. QoS "BE" (best
effort) is spot; every other class is on-demand.

Times: submit = creation_time; duration = deletion_time - scheduled_time, or - creation_time for
a pod never scheduled (Pending), at least 1 s. The `multigpu50` variant has only the first five
columns: no times at all. Its pods all arrive at 0 with a duration of 1 s, a placeholder: that
variant is used only for the inflation experiment, where pods arrive one by one (in file order,
which the stable sort keeps) and never leave, so no duration is ever read.
"""

from __future__ import annotations

from pathlib import Path

from neocloud.errors import ConfigError
from neocloud.model.job import Job, PriorityClass
from neocloud.sim.trace import Trace, TraceJob
from neocloud.sim.traces.native import csv_rows, gpu_types, number, sorted_trace, where

REQUIRED = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
KNOWN = REQUIRED + (
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)


def load_openb_pods(path: Path | str) -> Trace:
    """Read an openb pod list (`openb_pod_list_*.csv`) as a trace of single-node jobs."""
    path = Path(path)
    source = str(path)
    columns, rows = csv_rows(path, REQUIRED, KNOWN)
    i_name, i_cpu, i_mem = columns["name"], columns["cpu_milli"], columns["memory_mib"]
    i_num, i_milli = columns["num_gpu"], columns["gpu_milli"]
    i_spec, i_qos = columns.get("gpu_spec"), columns.get("qos")
    i_create, i_delete = columns.get("creation_time"), columns.get("deletion_time")
    i_sched = columns.get("scheduled_time")
    timed = i_create is not None or i_delete is not None
    if timed and (i_create is None or i_delete is None):
        raise ConfigError(
            source, "line 1", "give both creation_time and deletion_time columns, or neither"
        )
    spec_cache: dict[str, tuple[str, ...]] = {}
    jobs: list[TraceJob] = []
    for line, row in rows:
        num_gpu = number(row[i_num], source, line, "num_gpu", minimum=0, integer=True)
        milli = number(row[i_milli], source, line, "gpu_milli", minimum=0, integer=True)
        if num_gpu == 1 and milli < 1000:
            if milli == 0:
                raise ConfigError(
                    source,
                    where(line, "gpu_milli"),
                    "a pod with num_gpu 1 must ask for 1-1000 milli-GPUs, got 0",
                )
            gpus = milli / 1000
        else:
            gpus = num_gpu
        spec = row[i_spec].strip() if i_spec is not None else ""
        if spec not in spec_cache:
            spec_cache[spec] = gpu_types(spec, source, line, "gpu_spec") if spec else ()
        qos = row[i_qos].strip() if i_qos is not None else ""
        if timed:
            assert i_create is not None and i_delete is not None
            submit = number(row[i_create], source, line, "creation_time", minimum=0)
            deleted = number(row[i_delete], source, line, "deletion_time", minimum=0)
            started_text = row[i_sched].strip() if i_sched is not None else ""
            started = (
                number(started_text, source, line, "scheduled_time", minimum=0)
                if started_text
                else submit
            )
            if deleted < started:
                raise ConfigError(
                    source,
                    where(line, "deletion_time"),
                    f"is before the pod started ({deleted:g} < {started:g}): a negative duration",
                )
            duration = max(deleted - started, 1.0)
        else:
            submit, duration = 0.0, 1.0
        job = Job(
            id=row[i_name].strip(),
            gpus=gpus,
            gpu_types=spec_cache[spec],
            cpu_milli=int(number(row[i_cpu], source, line, "cpu_milli", minimum=0, integer=True)),
            memory_mib=int(number(row[i_mem], source, line, "memory_mib", minimum=0, integer=True)),
            priority=PriorityClass.SPOT if qos == "BE" else PriorityClass.ON_DEMAND,
            submit_s=submit,
        )
        jobs.append(TraceJob(job=job, duration_s=duration))
    return sorted_trace(path.stem, jobs)
