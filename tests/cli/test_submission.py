"""What `neocloud submit FILE` sends: specs and batch scripts, with their work directory packed."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from neocloud.cli.submission import read_submission, with_code
from neocloud.errors import NeocloudError


def test_a_spec_s_workdir_is_relative_to_the_spec_file_and_goes_up_as_code(tmp_path: Path) -> None:
    (tmp_path / "proj" / "jobs").mkdir(parents=True)
    (tmp_path / "proj" / "train.py").write_text("print(1)\n")
    spec_file = tmp_path / "proj" / "jobs" / "train.yaml"
    spec_file.write_text("name: t\ncommand: python3 train.py\nworkdir: ..\n")
    spec, workdir, notes = read_submission(spec_file)
    assert workdir == tmp_path / "proj" and "workdir" not in spec and notes == []
    sent: list[bytes] = []
    body = with_code(spec, workdir, lambda data: sent.append(data) or "sha256:" + "0" * 64)
    assert body["code"] == "sha256:" + "0" * 64
    with tarfile.open(fileobj=io.BytesIO(sent[0]), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["jobs", "jobs/train.yaml", "train.py"]
    other = tmp_path / "other"
    other.mkdir()
    assert read_submission(spec_file, workdir=other)[1] == other  # --workdir wins


def test_a_batch_script_sends_its_own_directory_and_is_named_by_its_file(tmp_path: Path) -> None:
    script = tmp_path / "my job!.sbatch"
    script.write_text("#!/bin/sh\n#SBATCH --gpus=2\npython3 train.py\n")
    spec, workdir, _ = read_submission(script)
    assert (spec["name"], spec["gpus"], workdir) == ("my-job", 2, tmp_path)


@pytest.mark.parametrize("text, message", [
    ("- just\n- a list\n", "a job spec is a mapping"),
    ("name: t\ncommand: x\nworkdir: 3\n", "workdir must be a path"),
    ("name: [unclosed\n", "not valid YAML or JSON"),
])
def test_bad_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(NeocloudError, match=message):
        read_submission(path)


def test_workdir_and_code_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NeocloudError, match="either workdir .* or code"):
        with_code({"name": "t", "code": "sha256:" + "1" * 64}, tmp_path, lambda data: "x")
