"""The core's view of a batch spec: the time limit as the estimate, array tasks and their throttle."""

from __future__ import annotations

from neocloud.control.jobs import job_of
from neocloud.model.job import Dependency


def test_the_time_limit_is_the_estimate_when_none_is_given() -> None:
    job = job_of("1", "t", {"name": "a", "time_limit": 600.0}, 0)
    assert job.time_limit_s == 600 and job.estimate_s == 600
    job = job_of("1", "t", {"name": "a", "time_limit": 600.0, "estimated_duration": 60.0}, 0)
    assert job.time_limit_s == 600 and job.estimate_s == 60
    assert job_of("1", "t", {"name": "a"}, 0).estimate_s is None


def test_an_array_task_carries_its_array_and_throttle() -> None:
    deps = (Dependency("3", "afterany"),)
    job = job_of("7", "t", {"name": "a", "array": "0-15%4"}, 0, array_job=5, array_index=2, depends_on=deps)
    assert (job.array_job, job.array_index, job.throttle, job.depends_on) == ("5", 2, 4, deps)
    assert job_of("7", "t", {"name": "a", "array": 8}, 0, array_job=7, array_index=0).throttle is None
