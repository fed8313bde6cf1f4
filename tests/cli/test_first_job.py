"""An ML team's first job through the CLI, over a real server: their code from a work directory,
and a Slurm user's #SBATCH script as it is, on the local and the Slurm backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ADMIN, Server, serving
from tests.cli.test_client_cli import User

TRAIN = "import os, sys\nprint('loss 0.1 on rank', os.environ['NEOCLOUD_NODE_RANK'], 'args', sys.argv[1:])\n"
SCRIPT = """#!/bin/bash
#SBATCH --job-name=sweep
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --time=10:00
#SBATCH --array=0-3%2
#SBATCH --output=slurm-%j.out
python3 train.py --lr-index "$SLURM_ARRAY_TASK_ID"
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(Server(tmp_path_factory.mktemp("first-job") / "data", None)) as s:
        yield s


def _project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "data" / "shard.bin").write_bytes(b"x" * 1000)
    (root / ".neocloudignore").write_text("data/\n")
    (root / "job.yaml").write_text("name: first\ncommand: python3 train.py --epochs 1 && ls\ngpus: 1\nworkdir: .\n")
    (root / "sweep.sbatch").write_text(SCRIPT)
    return root


def test_a_work_directory_goes_with_the_job_and_its_output_comes_back(srv: Server, tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    user = User(tmp_path / "home")
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    done = user.run("submit", str(project / "job.yaml"), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "COMPLETED" and job["spec"]["code"].startswith("sha256:")
    out = user.ok("logs", str(job["id"]))
    assert out.startswith("loss 0.1 on rank 0 args ['--epochs', '1']\n")
    assert "train.py" in out and "data" not in out.split("\n", 1)[1]  # .neocloudignore kept data/ home


def test_an_sbatch_script_runs_unchanged_on_the_local_backend(srv: Server, tmp_path: Path) -> None:
    _check_sweep(srv, User(tmp_path / "home"), _project(tmp_path / "project"))


def _check_sweep(srv: Server, user: User, project: Path) -> None:
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    done = user.run("submit", str(project / "sweep.sbatch"), "--json")
    assert done.returncode == 0, done.stderr
    assert "--output: taken, without effect" in done.stderr
    first = json.loads(done.stdout)
    c = srv.client()
    tasks = c.jobs(array=first["array_job"])
    assert sorted(t["array_index"] for t in tasks) == [0, 1, 2, 3]
    for t in tasks:
        assert c.wait(t["id"], timeout=120)["state"] == "COMPLETED", c.logs(t["id"], stream="stderr")["text"][-600:]
        assert c.logs(t["id"])["text"] == f"loss 0.1 on rank 0 args ['--lr-index', '{t['array_index']}']\n"


def test_an_sbatch_script_runs_unchanged_on_the_slurm_backend(tmp_path: Path, slurm_cluster) -> None:  # noqa: ANN001
    from tests.backends.slurm_cluster import available, slurm_server

    if available() is not None:
        pytest.skip(str(available()))
    with slurm_server(tmp_path, slurm_cluster) as srv:
        _check_sweep(srv, User(tmp_path / "home"), _project(tmp_path / "project"))
