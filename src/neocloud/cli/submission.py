"""What `neocloud submit FILE` sends: a job spec (YAML or JSON) or a Slurm batch script, its
work directory packed and uploaded first when it names one.

`workdir` is a path on the submitter's machine, relative to the spec file (`--workdir` on the
command line wins, relative to where the command runs): the CLI packs it (`workdir.py`), uploads
it once (`POST /v1/code`), and the spec the server gets names the upload by digest (`code`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from neocloud.cli.sbatch import is_script, spec_from_script
from neocloud.cli.workdir import pack
from neocloud.errors import NeocloudError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def read_submission(path: Path, workdir: Path | None = None) -> tuple[dict[str, Any], Path | None, list[str]]:
    """(the spec, the work directory to send with it or None, notes to show the user)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise NeocloudError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise NeocloudError(f"{path}: not text; give a job spec (YAML or JSON) or a batch script") from None
    notes: list[str] = []
    if is_script(text):
        spec, notes = spec_from_script(text, _name_of(path))
        # A batch script runs where it was submitted from, as sbatch runs it: its directory is the work directory.
        default: Any = "."
    else:
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise NeocloudError(f"{path}: not valid YAML or JSON: {e}") from None
        if not isinstance(spec, dict):
            raise NeocloudError(f"{path}: a job spec is a mapping with at least 'name' and 'command'")
        default = spec.pop("workdir", None)
    if workdir is not None:
        return spec, workdir, notes
    if default is None:
        return spec, None, notes
    if not isinstance(default, str) or not default:
        raise NeocloudError(f"{path}: workdir must be a path (relative to the spec file), e.g. 'workdir: .'")
    return spec, (path.parent / default).resolve(), notes


def with_code(spec: dict[str, Any], workdir: Path | None, upload: Callable[[bytes], str]) -> dict[str, Any]:
    """The spec to send: naming the uploaded work directory as its `code`, if it has one."""
    if workdir is None:
        return spec
    if "code" in spec:
        raise NeocloudError("give either workdir (packed and uploaded here) or code (uploaded before), not both")
    return {**spec, "code": upload(pack(workdir))}


def _name_of(path: Path) -> str:
    """A job name from a script's file name, as sbatch names a job it is not told the name of."""
    name = _UNSAFE.sub("-", path.stem).strip("-._")[:63].strip("-._")
    return name or "job"
