"""Backends run what the scheduler placed: local processes here; Slurm and Ray behind the same face;
an emulated engine that runs nothing, to drive the control plane at a fleet's full size."""

from __future__ import annotations

from pathlib import Path

from neocloud.backends.base import Backend, Exit, Task
from neocloud.errors import NeocloudError

BACKENDS = ("local", "slurm", "ray", "emulated")


def make_backend(name: str, data_dir: Path, jobs_dir: Path | None = None, gpu_devices: Path | None = None,
                 sandbox: bool = True) -> Backend:
    """`jobs_dir`: where jobs' files live (logs, work and checkpoint directories; default the data
    directory; a shared filesystem for Slurm); `gpu_devices`: where the GPUs' device files are on
    the nodes (default /dev); `sandbox` False: its jobs run as plain processes."""
    files = jobs_dir or data_dir
    if name == "local":
        from neocloud.backends.local import LocalBackend

        return LocalBackend(files, data_dir, devices=gpu_devices or Path("/dev"), sandbox=sandbox)
    if name == "slurm":
        from neocloud.backends.slurm import SlurmBackend

        return SlurmBackend(files / "jobs", private=data_dir, devices=gpu_devices or Path("/dev"))
    if name == "ray":
        from neocloud.backends.ray import RayBackend

        return RayBackend(files / "jobs")
    if name == "emulated":
        from neocloud.backends.emulated import EmulatedBackend

        return EmulatedBackend(files / "jobs", files)  # the record beside the jobs: a standby reads it too
    raise NeocloudError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Exit", "Task", "make_backend"]
