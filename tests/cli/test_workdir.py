"""Packing a work directory: what git leaves out stays out, the size is bounded, the bytes are stable."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from neocloud.cli.workdir import files, pack
from neocloud.errors import NeocloudError


def _tree(root: Path, paths: dict[str, str]) -> Path:
    for rel, text in paths.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _names(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_what_git_ignores_and_what_neocloudignore_names_stay_out(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "train.py": "print('hi')\n",
        ".gitignore": "*.log\n!keep.log\nbuild/\n",
        ".neocloudignore": "data/\n",
        "run.log": "x", "keep.log": "x", "build/out.o": "x", "data/big.bin": "x",
        "src/model.py": "x", "src/.gitignore": "cache.txt\n", "src/cache.txt": "x", "cache.txt": "kept: not under src",
        ".git/HEAD": "ref",
    })
    sent = [rel for rel, _ in files(root)]
    assert sent == [".gitignore", ".neocloudignore", "cache.txt", "keep.log", "src", "src/.gitignore",
                    "src/model.py", "train.py"]
    assert set(_names(pack(root))) == set(sent)


def test_the_same_files_pack_to_the_same_bytes_with_no_owner(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a.py": "a", "b/c.py": "c"})
    data = pack(root)
    assert pack(root) == data
    assert all(m.uid == 0 and m.uname == "" for m in _names(data).values())


def test_links_stay_links_and_a_second_name_of_a_file_is_sent_whole(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train.py": "print(1)\n"})
    (root / "latest.py").symlink_to("train.py")
    os.link(root / "train.py", root / "copy.py")
    members = _names(pack(root))
    assert members["latest.py"].issym() and members["latest.py"].linkname == "train.py"
    assert members["copy.py"].isreg() and members["copy.py"].size == members["train.py"].size == 9


def test_past_the_limit_the_error_names_the_largest_files_and_the_fix(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train.py": "x" * 10, "data/shard-0": "y" * 3000, "data/shard-1": "z" * 2000})
    with pytest.raises(NeocloudError) as e:
        pack(root, limit=4096)
    msg = str(e.value)
    assert "4.9 KiB to send, over the 4.0 KiB limit" in msg and "data/shard-0 (2.9 KiB)" in msg
    assert "data/shard-0" in msg and "data/shard-1" in msg and ".neocloudignore" in msg


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NeocloudError, match="not a directory"):
        pack(tmp_path / "nope")
