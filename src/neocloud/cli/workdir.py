"""A job's code, as the CLI sends it: the work directory packed into one gzipped tar.

What git would leave out stays out: `.gitignore` files at any depth and a `.neocloudignore`
(the same syntax, for what git keeps but a job does not need: data, checkpoints), matched by
`pathspec` as git matches them; `.git` itself is never sent. Links are sent as links; the server
refuses one that points outside the directory. The archive is the same bytes for the same files
(sorted, owner-less), so a job submitted twice uploads its code once.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from neocloud.errors import NeocloudError

LIMIT = 64 << 20  # bytes of files a work directory may send, before compression
IGNORE_FILES = (".gitignore", ".neocloudignore")


@dataclass(slots=True)
class _Ignores:
    """The ignore files in force in one directory: (the directory relative to the root, its spec)."""

    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = field(default_factory=list)

    def within(self, root: Path, rel: str) -> _Ignores:
        own = []
        for name in IGNORE_FILES:
            path = root / rel / name
            if path.is_file():
                own.append((rel, pathspec.GitIgnoreSpec.from_lines(path.read_text(errors="replace").splitlines())))
        return _Ignores(self.specs + own) if own else self

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether git would leave `rel` out: the deepest file with a say has the last word."""
        verdict = False
        for base, spec in self.specs:
            inside = os.path.relpath(rel, base) if base else rel
            result = spec.check_file(inside + "/" if is_dir else inside)
            if result.include is not None:
                verdict = result.include
        return verdict


def files(root: Path) -> list[tuple[str, Path]]:
    """(path inside the archive, path here) of everything to send, sorted; directories first."""
    if not root.is_dir():
        raise NeocloudError(f"workdir {root}: not a directory")
    out: list[tuple[str, Path]] = []

    def walk(rel: str, ignores: _Ignores) -> None:
        ignores = ignores.within(root, rel)
        with os.scandir(root / rel if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.name == ".git" or ignores.ignored(path, is_dir):
                continue
            out.append((path, Path(entry.path)))
            if is_dir:
                walk(path, ignores)

    walk("", _Ignores())
    return out


def pack(root: Path, limit: int = LIMIT) -> bytes:
    """The work directory as a gzipped tar; a clear error past `limit` bytes of files, naming the largest."""
    chosen = files(root)
    sizes = [(p.lstat().st_size, rel) for rel, p in chosen if p.is_file() and not p.is_symlink()]
    total = sum(size for size, _ in sizes)
    if total > limit:
        largest = ", ".join(f"{rel} ({_size(size)})" for size, rel in sorted(sizes, reverse=True)[:3])
        raise NeocloudError(
            f"workdir {root} holds {_size(total)} to send, over the {_size(limit)} limit; the largest: {largest}. "
            "Leave out what the job does not need with lines in a .neocloudignore (as in .gitignore, e.g. "
            "'data/'), and keep datasets on storage the nodes share")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel, path in chosen:
            info = tar.gettarinfo(str(path), arcname=rel)
            if info.islnk():  # a second name of a file already sent: sent again, whole
                info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            elif info.isdir() or info.issym():
                tar.addfile(info)
            # sockets, FIFOs and devices are not code: left out
    return buf.getvalue()


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
