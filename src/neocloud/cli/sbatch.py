"""A Slurm batch script as a neocloud job spec, so that a Slurm user's script runs unchanged.

The `#SBATCH` lines at the head of the script (before its first command, as `sbatch` reads them)
become the spec's fields; the script itself becomes the command, run by its `#!` interpreter on
each of the job's nodes, with the `SLURM_*` variables a script most often reads set from
neocloud's own where the backend has not set them. A directive that would change what runs or
where, and that neocloud does not honour, is an error naming it; one that only says where Slurm
would write logs is taken with a note, as neocloud keeps every rank's logs itself.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from neocloud.errors import NeocloudError

# Short options that take a value, as sbatch spells them.
_SHORT = {"J": "job-name", "N": "nodes", "G": "gpus", "t": "time", "a": "array", "d": "dependency",
          "c": "cpus-per-task", "n": "ntasks", "o": "output", "e": "error", "p": "partition", "A": "account",
          "q": "qos", "C": "constraint", "w": "nodelist", "x": "exclude"}
NOTED = {"output", "error", "open-mode", "mail-type", "mail-user", "chdir", "export", "comment"}  # no effect here
_WHEN = {"afterok", "afterany", "afternotok"}
_SLURM_ENV = {  # what a script reads, from what neocloud gives every rank
    "SLURM_JOB_ID": "$NEOCLOUD_JOB_ID", "SLURM_NNODES": "$NEOCLOUD_NUM_NODES",
    "SLURM_JOB_NUM_NODES": "$NEOCLOUD_NUM_NODES", "SLURM_NODEID": "$NEOCLOUD_NODE_RANK",
    "SLURM_ARRAY_TASK_ID": "${NEOCLOUD_ARRAY_INDEX:-}", "SLURM_ARRAY_JOB_ID": "${NEOCLOUD_ARRAY_JOB_ID:-}",
    "SLURM_SUBMIT_DIR": "$PWD",
}


def is_script(text: str) -> bool:
    """Whether a submitted file is a batch script (a `#!` line, or `#SBATCH` directives) rather than a spec."""
    return text.startswith("#!") or any(line.startswith("#SBATCH") for line in text.splitlines()[:200])


def directives(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, long option name, value) of each `#SBATCH` option, up to the script's first command."""
    out: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if number == 1 and stripped.startswith("#!"):
            continue
        if stripped and not stripped.startswith("#"):
            break  # sbatch stops reading directives at the first command
        if not stripped.startswith("#SBATCH"):
            continue
        try:
            words = shlex.split(stripped[len("#SBATCH"):], comments=True)
        except ValueError as e:
            raise NeocloudError(f"line {number}: {stripped!r}: {e}") from None
        i = 0
        while i < len(words):
            word = words[i]
            if word.startswith("--"):
                option, eq, given = word[2:].partition("=")
                out.append((number, option, given if eq else None))
            elif word.startswith("-") and len(word) >= 2:
                short = _SHORT.get(word[1])
                if short is None:
                    raise NeocloudError(f"line {number}: #SBATCH {word}: not an option neocloud knows")
                value = word[2:] or (words[i + 1] if i + 1 < len(words) else None)
                if not word[2:]:
                    i += 1
                out.append((number, short, value))
            else:
                raise NeocloudError(f"line {number}: #SBATCH {word!r}: options begin with '-' or '--'")
            i += 1
    return out


def spec_from_script(text: str, name: str) -> tuple[dict[str, Any], list[str]]:
    """The job spec a batch script asks for, and notes on directives taken without effect.

    `name` names the job when the script gives no `--job-name` (the file's name, as sbatch does)."""
    spec: dict[str, Any] = {"name": name}
    notes: list[str] = []
    nodes, tasks_per_node, cpus_per_task = 1, 1, None
    gpus = gpus_per_node = None
    for number, option, value in directives(text):
        where = f"line {number}: #SBATCH --{option}"
        if option in NOTED:
            notes.append(f"{where}: taken, without effect: neocloud keeps each rank's logs "
                         "(`neocloud logs JOB --rank R`) and starts ranks in the job's work directory")
            continue
        if value is None or value == "":
            raise NeocloudError(f"{where}: needs a value")
        if option == "job-name":
            spec["name"] = value
        elif option == "nodes":
            nodes = _count(where, value)
        elif option == "ntasks-per-node":
            tasks_per_node = _count(where, value)
        elif option == "ntasks":
            if _count(where, value) != nodes * tasks_per_node:
                raise NeocloudError(f"{where}={value}: give --nodes and --ntasks-per-node instead "
                                    "(neocloud runs the script once per node)")
        elif option == "gpus":
            gpus = _gpu_count(where, value, spec)
        elif option == "gpus-per-node":
            gpus_per_node = _gpu_count(where, value, spec)
        elif option == "gres":
            gpus_per_node = _gres(where, value, spec)
        elif option == "time":
            spec["time_limit"] = slurm_time(where, value)
        elif option == "array":
            spec["array"] = value
        elif option == "dependency":
            spec["depends_on"] = dependencies(where, value)
        elif option == "cpus-per-task":
            cpus_per_task = _count(where, value)
        elif option == "mem":
            spec["memory"] = _memory(where, value)
        else:
            raise NeocloudError(f"{where}: not honoured by neocloud; remove it (supported: --job-name, --nodes, "
                                "--ntasks-per-node, --gpus, --gpus-per-node, --gres=gpu:N, --time, --array, "
                                "--dependency, --cpus-per-task, --mem)")
    if gpus_per_node is not None:
        spec["gpus_per_node"] = gpus_per_node
        spec["gpus"] = gpus if gpus is not None else gpus_per_node * nodes
    elif gpus is not None:
        spec["gpus"] = gpus
        if nodes > 1:
            if gpus % nodes:
                raise NeocloudError(f"--gpus={gpus} does not split evenly over --nodes={nodes}")
            spec["gpus_per_node"] = gpus // nodes
    else:
        spec["gpus"] = 0
        if nodes > 1:
            raise NeocloudError(f"--nodes={nodes} with no GPUs: neocloud places CPU-only jobs on one node")
    if cpus_per_task is not None:
        spec["cpus"] = cpus_per_task * tasks_per_node
    env = {"SLURM_NTASKS_PER_NODE": str(tasks_per_node)}
    if cpus_per_task is not None:
        env["SLURM_CPUS_PER_TASK"] = str(cpus_per_task)
    spec["env"] = env
    spec["command"] = [*_interpreter(text), "-c", _prologue(spec["name"]) + text, spec["name"]]
    return spec, notes


def slurm_time(where: str, value: str) -> int:
    """Seconds of a Slurm time: minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S."""
    days, _, rest = value.partition("-") if "-" in value else ("0", "", value)
    parts = rest.split(":")
    try:
        d, nums = int(days), [int(p) for p in parts]
    except ValueError:
        raise NeocloudError(f"{where}={value}: not a Slurm time (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S)") from None
    if "-" in value:
        h, m, s = (nums + [0, 0])[:3]
    elif len(nums) == 1:
        h, m, s = 0, nums[0], 0
    elif len(nums) == 2:
        h, m, s = 0, nums[0], nums[1]
    elif len(nums) == 3:
        h, m, s = nums
    else:
        raise NeocloudError(f"{where}={value}: not a Slurm time (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S)")
    total = ((d * 24 + h) * 60 + m) * 60 + s
    if total <= 0 or min(d, *nums) < 0:
        raise NeocloudError(f"{where}={value}: a time limit must be above zero")
    return total


def dependencies(where: str, value: str) -> list[dict[str, Any]]:
    """`afterok:12:13,afternotok:14` as neocloud's `depends_on`."""
    if "?" in value:
        raise NeocloudError(f"{where}={value}: '?' (any one of) is not honoured; use ',' (all of)")
    out: list[dict[str, Any]] = []
    for part in value.split(","):
        when, _, ids = part.partition(":")
        if when not in _WHEN:
            raise NeocloudError(f"{where}={value}: {when!r} is not honoured (use afterok, afterany or afternotok)")
        if not ids:
            raise NeocloudError(f"{where}={value}: {when} needs job ids, as {when}:12:13")
        for job in ids.split(":"):
            if not job.isdigit():
                raise NeocloudError(f"{where}={value}: {job!r} is not a job id")
            out.append({"job": int(job), "when": when})
    return out


def _count(where: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise NeocloudError(f"{where}={value}: give a whole number of at least 1")
    return int(value)


def _gpu_count(where: str, value: str, spec: dict[str, Any]) -> int:
    """`8` or `TYPE:8`: the count, the type (if given) set as the spec's GPU type."""
    kind, _, count = value.rpartition(":")
    if kind:
        spec["gpu_type"] = kind
    if not count.isdigit():
        raise NeocloudError(f"{where}={value}: give a count of GPUs, or TYPE:COUNT")
    return int(count)


def _gres(where: str, value: str, spec: dict[str, Any]) -> int:
    resources = value.split(",")
    gpu = [r for r in resources if r.split(":")[0] == "gpu"]
    if len(gpu) != 1 or len(resources) != 1:
        raise NeocloudError(f"{where}={value}: only gpu:N or gpu:TYPE:N is honoured")
    return _gpu_count(where, gpu[0].removeprefix("gpu:"), spec) if ":" in gpu[0] else 1


def _memory(where: str, value: str) -> str:
    """Slurm's --mem (MiB by default; K, M, G, T suffixes) as neocloud's memory."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", value, re.IGNORECASE)
    if m is None or int(m.group(1)) == 0:
        raise NeocloudError(f"{where}={value}: give a size such as 64G or 512M (0, all of a node's, is not honoured)")
    unit = m.group(2).upper() or "M"
    return f"{m.group(1)}{unit}i" if unit != "K" else f"{max(int(m.group(1)) // 1024, 1)}Mi"


def _interpreter(text: str) -> list[str]:
    first = text.splitlines()[0] if text else ""
    if first.startswith("#!"):
        words = first[2:].split()
        if words:
            return words
    return ["/bin/sh"]


def _prologue(name: str) -> str:
    """Lines set before the script: the SLURM_* variables it may read, where the backend set none."""
    sets = " ".join(f'"${{{k}:={v}}}"' for k, v in _SLURM_ENV.items())
    names = " ".join(_SLURM_ENV)
    return f': {sets} "${{SLURM_JOB_NAME:={name}}}"; export {names} SLURM_JOB_NAME\n'  # a name needs no quoting
