"""A job's code on the server: hostile archives refused at upload, kept per tenant, unpacked safely."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from neocloud.backends.code import CodeStore, check, unpack
from neocloud.cli.workdir import pack
from neocloud.errors import NeocloudError


def _archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _code(tmp_path: Path) -> bytes:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('trained')\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    return pack(tmp_path)


@pytest.mark.parametrize("member, why", [
    ((_member("../escape.py"), b"x"), "outside the destination"),
    ((_member("passwd", tarfile.SYMTYPE, "/etc/passwd"), b""), "absolute"),
    ((_member("up", tarfile.SYMTYPE, "../../.."), b""), "outside the destination"),
    ((_member("null", tarfile.CHRTYPE), b""), "special file"),
])
def test_an_archive_that_would_reach_outside_its_directory_is_refused(member: tuple, why: str) -> None:
    with pytest.raises(NeocloudError, match="cannot be unpacked safely") as e:
        check(_archive((_member("ok.py"), b"fine"), member))
    assert why in str(e.value)


def test_size_count_and_format_are_bounded_with_the_fix_named(tmp_path: Path) -> None:
    with pytest.raises(NeocloudError, match="over 1 MiB.*neocloudignore"):
        check(_archive((_member("big.bin"), b"x" * (2 << 20))), max_bytes=1 << 20)
    with pytest.raises(NeocloudError, match="over 2 files"):
        check(_archive(*[(_member(f"f{i}"), b"x") for i in range(3)]), max_files=2)
    with pytest.raises(NeocloudError, match="not a gzipped tar"):
        check(b"PK\x03\x04 a zip file")
    assert check(_code(tmp_path)) == 3


def test_a_tenant_reaches_only_its_own_code_by_its_digest(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code")
    (tmp_path / "w").mkdir()
    data = _code(tmp_path / "w")
    digest, count = store.put("team-a", data)
    assert count == 3 and store.put("team-a", data) == (digest, 3)  # the same code is kept once
    assert store.get("team-a", digest) is not None and store.get("team-a", digest).read_bytes() == data
    assert store.get("team-b", digest) is None
    assert store.get("team-a", "sha256:../../team-b") is None


def test_unpacked_code_belongs_to_the_tenant_and_a_planted_link_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    archive = tmp_path / "code.tar.gz"
    archive.write_bytes(_code(tmp_path / "w"))
    staging, work = tmp_path / "staging", tmp_path / "work"
    staging.mkdir()
    work.mkdir()
    owner = (65534, 65534) if os.geteuid() == 0 else None
    unpack(archive, work / "code", staging, owner)
    assert (work / "code" / "src" / "train.py").read_text() == "print('trained')\n"
    assert os.access(work / "code" / "run.sh", os.X_OK)
    if owner is not None:
        assert {(p.lstat().st_uid, p.lstat().st_gid) for p in (work / "code").rglob("*")} == {owner}
    outside = tmp_path / "outside"
    outside.mkdir()
    (work / "again").symlink_to(outside)  # left by the tenant's earlier attempt
    with pytest.raises(OSError):
        unpack(archive, work / "again", staging, owner)
    assert list(outside.iterdir()) == [] and list(staging.iterdir()) == []


def test_each_rank_starts_in_its_own_copy_of_the_code_kept_across_attempts(tmp_path: Path) -> None:
    from neocloud.backends.base import Task
    from neocloud.backends.local import LocalBackend
    from tests.api.conftest import wait_for

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "train.py").write_text("import os\nprint('rank', os.environ['NEOCLOUD_NODE_RANK'], os.getcwd())\n")
    archive = tmp_path / "code.tar.gz"
    archive.write_bytes(pack(tmp_path / "w"))
    backend = LocalBackend(tmp_path / "files")
    command = "python3 train.py && ls && echo mine > own.txt"
    nodes = (("n0", (0,)), ("n0", (1,)))
    try:
        for attempt in (1, 2):
            assert backend.launch([Task(1, attempt, command, {}, nodes, tenant="alice", code=archive)]) == []
            ended: list = []
            wait_for(lambda: ended.extend(backend.poll()) or bool(ended), timeout=60)
            assert ended[0].codes == (0, 0)
        for rank in (0, 1):
            out = backend.log_path(1, rank, "stdout").read_text()
            where = "/job" if backend.sandbox.bwrap else str(tmp_path / "files" / "work" / "1" / f"rank-{rank}")
            assert out == f"rank {rank} {where}\ntrain.py\n" + f"rank {rank} {where}\nown.txt\ntrain.py\n"
            copy = tmp_path / "files" / "work" / "1" / f"rank-{rank}"
            if os.geteuid() == 0 and backend.as_tenants:
                assert copy.stat().st_uid == (copy / "train.py").stat().st_uid != 0
    finally:
        backend.reap_orphans(set())
        backend.close()
