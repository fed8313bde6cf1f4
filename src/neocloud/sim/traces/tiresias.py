"""The Tiresias (NSDI'19) testbed trace, `60_job.csv`.

Columns: job_id,num_gpu,submit_time,iterations,model_name,duration,interval (seconds). The
measured `duration` is the run time; `iterations` and `interval` (the gap to the next arrival)
add nothing the other columns do not already say, so they are read past.
"""

from __future__ import annotations

from pathlib import Path

from neocloud.model.job import Job
from neocloud.sim.trace import Trace, TraceJob
from neocloud.sim.traces.native import csv_rows, gpu_count, number, sorted_trace

REQUIRED = ("job_id", "num_gpu", "submit_time", "model_name", "duration")


def load_tiresias(path: Path | str) -> Trace:
    """Read a Tiresias job CSV as a trace."""
    path = Path(path)
    source = str(path)
    columns, rows = csv_rows(path, REQUIRED)
    i_id, i_gpu, i_submit = columns["job_id"], columns["num_gpu"], columns["submit_time"]
    i_model, i_duration = columns["model_name"], columns["duration"]
    jobs: list[TraceJob] = []
    for line, row in rows:
        job = Job(
            id=row[i_id].strip(),
            gpus=gpu_count(row[i_gpu], source, line, "num_gpu"),
            submit_s=number(row[i_submit], source, line, "submit_time", minimum=0),
            name=row[i_model].strip(),
        )
        duration = number(row[i_duration], source, line, "duration", positive=True)
        jobs.append(TraceJob(job=job, duration_s=duration))
    return sorted_trace(path.stem, jobs)
