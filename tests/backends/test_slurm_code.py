"""A job's code on Slurm: through the job directory the nodes share, each node its own copy."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from neocloud.backends.base import Task
from neocloud.cli.workdir import pack
from tests.api.conftest import wait_for
from tests.backends.slurm_cluster import SlurmCluster, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


def test_each_node_unpacks_the_code_as_the_tenant_and_starts_in_its_own_copy(
        tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from neocloud.backends.slurm import SlurmBackend

    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "train.py").write_text("import os\nprint('node', os.environ['SLURM_NODEID'], os.getcwd())\n")
    archive = tmp_path / "code.tar.gz"
    archive.write_bytes(pack(tmp_path / "w"))
    jobs = Path(tempfile.mkdtemp(prefix="neocloud-jobs-"))
    jobs.chmod(0o711)
    backend = SlurmBackend(jobs)
    try:
        nodes = (("gpu1", (0,)), ("gpu2", (0,)))
        for attempt in (1, 2):
            assert backend.launch([Task(41, attempt, "python3 train.py && touch ran-$NEOCLOUD_ATTEMPT && ls", {},
                                        nodes, tenant="alice", code=archive)]) == []
            ended: list = []
            wait_for(lambda: ended.extend(backend.poll()) or bool(ended), timeout=60)
            assert ended[0].codes == (0, 0)
        for rank in (0, 1):
            copy = jobs / "41" / "work" / f"rank-{rank}"
            out = backend.log_path(41, rank, "stdout").read_text()
            assert out == f"node {rank} {copy}\nran-1\ntrain.py\n" f"node {rank} {copy}\nran-1\nran-2\ntrain.py\n"
            if backend.as_tenants:
                assert (copy / "train.py").stat().st_uid == (jobs / "41").stat().st_uid != 0
        assert not (jobs / "41" / "work" / "rank-0.part").exists()
    finally:
        shutil.rmtree(jobs, ignore_errors=True)
