"""Backends run what the scheduler placed: local processes here; Slurm and Ray behind the same face."""

from __future__ import annotations

from pathlib import Path

from neocloud.backends.base import Backend, Exit, Task
from neocloud.errors import NeocloudError

BACKENDS = ("local", "slurm", "ray")


def make_backend(name: str, data_dir: Path) -> Backend:
    if name == "local":
        from neocloud.backends.local import LocalBackend

        return LocalBackend(data_dir / "jobs")
    if name == "slurm":
        from neocloud.backends.slurm import SlurmBackend

        return SlurmBackend(data_dir / "jobs")
    if name == "ray":
        from neocloud.backends.ray import RayBackend

        return RayBackend(data_dir / "jobs")
    raise NeocloudError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Exit", "Task", "make_backend"]
