"""A job's code on the server's side: archives checked as they arrive, kept per tenant, unpacked
for each rank.

An archive is a tenant's and hostile: `check` refuses at upload what `tarfile`'s "data" filter
would refuse at extraction (`..`, links out of the directory, devices; a name from the root is
taken from the directory, as tar takes it) and bounds its size and its count of files, so a bad
archive is a clear 422 rather than a failed start.
`unpack` extracts as the server into a fresh directory no tenant can reach, hands the files to the
tenant's user, and only then moves the tree into place: a link the tenant's earlier attempt left
behind in its work directory is never followed by the server.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from neocloud.errors import NeocloudError

MAX_BYTES = 64 << 20  # of files, unpacked
MAX_FILES = 20_000
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check(data: bytes, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> int:
    """The count of files in a gzipped tar a job may unpack; NeocloudError saying what is wrong if none."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            total = count = 0
            for member in tar:
                count += 1
                total += member.size
                if count > max_files:
                    raise NeocloudError(f"code archive holds over {max_files:,} files: leave out what the job "
                                        "does not need (a .neocloudignore)")
                if total > max_bytes:
                    raise NeocloudError(f"code archive unpacks to over {max_bytes >> 20} MiB: leave out what the "
                                        "job does not need (a .neocloudignore)")
                try:
                    tarfile.data_filter(member, "/job")
                except tarfile.FilterError as e:
                    raise NeocloudError(f"code archive: {member.name!r} cannot be unpacked safely ({e})") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise NeocloudError(f"code archive is not a gzipped tar ({e})") from None
    return count


class CodeStore:
    """Archives by tenant and digest: a tenant reaches only its own, by the digest it was told."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, tenant: str, data: bytes) -> tuple[str, int]:
        """Keep a checked archive: its digest, which names it (the same code twice is kept once),
        and its count of files."""
        count = check(data)
        digest = digest_of(data)
        path = self.path(tenant, digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest, count

    def get(self, tenant: str, digest: str) -> Path | None:
        """The archive's path, or None if this tenant sent no such code."""
        if not DIGEST.match(digest):
            return None
        path = self.path(tenant, digest)
        return path if path.is_file() else None

    def path(self, tenant: str, digest: str) -> Path:
        return self.root / tenant / f"{digest.removeprefix('sha256:')}.tar.gz"


def unpack(archive: Path, dest: Path, staging: Path, owner: tuple[int, int] | None = None) -> None:
    """Unpack `archive` as `dest` (which must not exist yet), owned by `owner` (uid, gid) if given.

    `staging` is a directory of the server's own, on the same filesystem as `dest`: the tree is made
    there, out of any tenant's reach, then renamed into place."""
    work = Path(tempfile.mkdtemp(dir=staging, prefix=".code-"))
    try:
        tree = work / "tree"
        tree.mkdir()
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                tar.extractall(tree, filter="data")
        except (tarfile.TarError, EOFError) as e:
            raise NeocloudError(f"the job's code could not be unpacked: {e}") from None
        if owner is not None:
            for top, dirs, names in os.walk(tree):
                for name in dirs + names:
                    os.lchown(os.path.join(top, name), *owner)
            os.lchown(tree, *owner)
        os.rename(tree, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
