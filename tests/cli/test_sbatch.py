"""`#SBATCH` scripts as job specs: Slurm's directives in neocloud's words, the rest a clear error."""

from __future__ import annotations

import os
import subprocess

import pytest

from neocloud.api.schemas import JobSpec
from neocloud.cli.sbatch import is_script, slurm_time, spec_from_script
from neocloud.errors import NeocloudError

SCRIPT = """#!/bin/bash
#SBATCH --job-name=llama-ft
#SBATCH -N 2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --time=1-02:30:00
#SBATCH --array=0-15%4
#SBATCH --dependency=afterok:12:13,afternotok:14
#SBATCH --cpus-per-task=16 --mem=64G
#SBATCH --output=slurm-%j.out
echo "task $SLURM_ARRAY_TASK_ID of job $SLURM_JOB_ID on node $SLURM_NODEID"
#SBATCH --partition=ignored-after-the-first-command
"""


def test_a_batch_script_becomes_the_spec_it_asks_for() -> None:
    assert is_script(SCRIPT) and not is_script("name: x\ncommand: echo\n")
    spec, notes = spec_from_script(SCRIPT, "train")
    assert {k: spec[k] for k in ("name", "gpus", "gpus_per_node", "time_limit", "array", "depends_on", "cpus",
                                 "memory")} == {
        "name": "llama-ft", "gpus": 16, "gpus_per_node": 8, "time_limit": 95_400, "array": "0-15%4",
        "depends_on": [{"job": 12, "when": "afterok"}, {"job": 13, "when": "afterok"},
                       {"job": 14, "when": "afternotok"}],
        "cpus": 16, "memory": "64Gi"}
    assert len(notes) == 1 and "--output" in notes[0] and "neocloud logs" in notes[0]
    assert spec["command"][:2] == ["/bin/bash", "-c"]
    JobSpec(**{k: v for k, v in spec.items() if k in JobSpec.model_fields})  # the API's own check takes it


def test_the_script_runs_with_the_slurm_variables_it_reads_set_from_neocloud_s() -> None:
    spec, _ = spec_from_script(SCRIPT, "train")
    env = {"PATH": os.environ["PATH"], "NEOCLOUD_JOB_ID": "7", "NEOCLOUD_NUM_NODES": "2", "NEOCLOUD_NODE_RANK": "1",
           "NEOCLOUD_ARRAY_INDEX": "3"}
    out = subprocess.run(spec["command"], env=env, capture_output=True, text=True, check=True).stdout
    assert out == "task 3 of job 7 on node 1\n"
    inside_slurm = subprocess.run(spec["command"], env={**env, "SLURM_JOB_ID": "900"}, capture_output=True,
                                  text=True, check=True).stdout
    assert inside_slurm == "task 3 of job 900 on node 1\n"  # the backend's own Slurm id wins


@pytest.mark.parametrize("line, message", [
    ("#SBATCH --partition=gpu", "--partition: not honoured by neocloud; remove it"),
    ("#SBATCH --dependency=singleton", "'singleton' is not honoured"),
    ("#SBATCH --dependency=afterok:12?afterok:13", "'?' (any one of) is not honoured"),
    ("#SBATCH --time=soon", "not a Slurm time"),
    ("#SBATCH --nodes=2-4", "give a whole number"),
    ("#SBATCH --gres=gpu:4,nic:1", "only gpu:N"),
    ("#SBATCH --mem=0", "0, all of a node's, is not honoured"),
    ("#SBATCH -Z", "not an option neocloud knows"),
    ("#SBATCH --ntasks=3", "give --nodes and --ntasks-per-node"),
])
def test_a_directive_neocloud_does_not_honour_is_an_error_naming_it(line: str, message: str) -> None:
    with pytest.raises(NeocloudError, match="line 2: ") as e:
        spec_from_script(f"#!/bin/sh\n{line}\nhostname\n", "job")
    assert message in str(e.value)


def test_slurm_time_formats() -> None:
    assert [slurm_time("t", v) for v in ("30", "5:30", "2:00:00", "1-0", "1-2:30", "0-0:0:45")] == [
        1800, 330, 7200, 86_400, 95_400, 45]


def test_gres_and_gpus_split_over_nodes() -> None:
    spec, _ = spec_from_script("#SBATCH --gres=gpu:4\n#SBATCH --nodes=3\nhostname\n", "j")
    assert (spec["gpus"], spec["gpus_per_node"]) == (12, 4) and spec["command"][0] == "/bin/sh"
    spec, _ = spec_from_script("#SBATCH --gpus=16 -N 2\nhostname\n", "j")
    assert (spec["gpus"], spec["gpus_per_node"]) == (16, 8)
    with pytest.raises(NeocloudError, match="does not split evenly"):
        spec_from_script("#SBATCH --gpus=3 -N 2\nhostname\n", "j")
