"""The job spec: one schema for files and the API, with errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from neocloud.api.schemas import JobSpec, mebibytes, seconds
from neocloud.control.jobs import job_of


@pytest.mark.parametrize(("given", "want"), [(90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
                                             ("1.5d", 129600.0), (" 45 ", 45.0)])
def test_durations(given: object, want: float) -> None:
    assert seconds(given) == want


@pytest.mark.parametrize("bad", ["soon", "-5m", 0, True, "2 weeks", 10**12])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        seconds(bad)


def test_a_full_spec_normalises() -> None:
    spec = JobSpec(name="train-7b", command=["python", "train.py"], gpus=16, gpus_per_node=8, gpu_type="h100",
                   priority="spot", estimated_duration="2h", checkpoint_interval="30m", env={"SEED": "1"})
    assert (spec.gpu_type, spec.estimated_duration, spec.checkpoint_interval) == ("H100-SXM", 7200.0, 1800.0)
    assert spec.model_dump(mode="json")["priority"] == "spot"


@pytest.mark.parametrize(("fields", "bad"), [
    ({"gpus": 1.5}, "gpus"),
    ({"gpus": 12, "gpus_per_node": 8}, "multiple"),
    ({"gpus": 0.5, "gpus_per_node": 1}, "gpus_per_node"),
    ({"gpu_type": "Z9000"}, "Z9000"),
    ({"env": {"1BAD": "x"}}, "1BAD"),
    ({"command": "  "}, "empty"),
    ({"command": "echo \x00"}, "NUL"),
    ({"name": "no spaces"}, "name"),
    ({"colour": "red"}, "colour"),
])
def test_bad_specs_name_what_is_wrong(fields: dict, bad: str) -> None:
    with pytest.raises(ValidationError) as e:
        JobSpec(**{"name": "j", "command": "true", **fields})
    assert bad in str(e.value)


@pytest.mark.parametrize(("given", "want"), [(512, 512), ("512Mi", 512), ("64Gi", 65536), ("2G", 2048),
                                             ("1.5GiB", 1536), ("1Ti", 1 << 20)])
def test_memory_sizes(given: object, want: int) -> None:
    assert mebibytes(given) == want


@pytest.mark.parametrize("bad", ["lots", "-1Gi", 0, True, "64Pi", float("nan")])
def test_bad_memory_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        mebibytes(bad)


def test_cpus_and_memory_reach_the_core_per_node() -> None:
    spec = JobSpec(name="train", command="true", gpus=16, gpus_per_node=8, cpus=2.5, memory="64Gi")
    job = job_of("1", "lab", spec.model_dump(mode="json", exclude={"tenant"}), 0.0)
    assert (job.cpu_milli, job.memory_mib) == (2500, 65536)
    unset = job_of("2", "lab", JobSpec(name="t", command="true").model_dump(mode="json"), 0.0)
    assert (unset.cpu_milli, unset.memory_mib) == (0, 0)
