"""A rank in its tenant's OCI image on Slurm: an OCI bundle that each node's step runs with runc.

Slurm's own `srun --container` (22.05) gives every node's container the environment of the node
that ran srun (SLURM_NODEID 0 on all), so a rank could not tell which it is; so the step runs on
each node as usual, as the tenant's user, and starts the rank in a rootless runc itself, with that
node's own environment (an env file) and bundle (this job's config.json, its rank filled in). The
walls are written here, as the local backend's podman draws them: the image's own filesystem,
read-only, with a private /tmp; the job's directory at /job (also HOME) and its checkpoints at
/checkpoint; the node's GPU device files; no capability and no_new_privs; its own user, PID, IPC,
UTS and mount namespaces, on the host's network (a gang's ranks reach each other at MASTER_ADDR).
A rootless runc maps one user only, the step's, and must map the container's root: so the rank is
uid 0 inside, a root with no capability over anything, and the tenant's own user outside (the
owner of every file it writes, the user every process of it runs as on the node).

The image's filesystem comes from the server's podman store, exported once per image onto the
jobs directory the nodes share (no registry is pulled from, as on the local backend):

    JOBS/images/<image id>/rootfs            the image's files, read by every job in that image
    JOBS/<job>/bundle/config.json            the job's bundle, RANK where each node puts its rank
    JOBS/<job>/bundle/rank-<r>/config.json   and each node's, with the env file it reads first
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neocloud.backends.container import Containers
from neocloud.backends.identity import Identity
from neocloud.backends.sandbox import CHECKPOINT, GPU_SHARED, SAFE_PATH, WORK
from neocloud.errors import NeocloudError

OCI_VERSION = "1.0.2"
_NS = ("pid", "ipc", "uts", "mount", "user")  # not the network: the host's, as a sandboxed rank's
_MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
           "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi")
_POINTS = ("/proc", "/dev", "/sys", "/tmp", WORK, CHECKPOINT)  # what the bundle mounts over the image
_READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass
class Bundles:
    root: Path  # the shared jobs directory
    devices: Path = Path("/dev")  # where the nodes' GPU device files are
    podman: Containers = field(default_factory=Containers)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def missing(self, image: str) -> str | None:
        """Why `image` cannot run on this cluster, or None: asked at submit and at each start (a
        node without runc says so in the rank's stderr)."""
        return self.podman.missing(image)

    def rootfs(self, image: str) -> Path:
        """The image's files on shared storage, exported from podman's store the first time."""
        podman = self.podman.podman
        if podman is None:
            raise NeocloudError("podman is not installed on the server (apt install podman runc)")
        image_id = _podman(podman, "image", "inspect", "--format", "{{.Id}}", image).strip()
        if not image_id.isalnum():
            raise NeocloudError(f"podman answered no image id for {image!r}")
        home = self.root / "images" / image_id
        done = home / "rootfs"
        with self._lock:
            if done.is_dir():
                return done
            for d in (home.parent, home):  # traversed by every tenant's runc, listed by none
                d.mkdir(exist_ok=True)
                d.chmod(0o711)
            part = Path(tempfile.mkdtemp(prefix="rootfs.", dir=home))
            try:
                container = _podman(podman, "create", "--pull=never", image, "/bin/sh").strip()
                try:
                    export = subprocess.Popen([podman, "export", container], stdout=subprocess.PIPE)
                    untar = subprocess.run(["tar", "-x", "-C", str(part)], stdin=export.stdout, capture_output=True)
                    export.stdout.close()  # type: ignore[union-attr]
                    if export.wait(timeout=600) != 0 or untar.returncode != 0:
                        raise NeocloudError(f"the image {image!r} could not be exported for Slurm: "
                                            f"{untar.stderr.decode(errors='replace').strip()}")
                finally:
                    _podman(podman, "rm", "--force", container, check=False)
                for point in _POINTS:  # a rootless runc cannot make mount points in a tree root owns
                    (part / point.lstrip("/")).mkdir(mode=0o755, exist_ok=True)
                part.chmod(0o755)
                part.rename(done)
            except BaseException:
                shutil.rmtree(part, ignore_errors=True)
                raise
        return done

    def write(self, bundle: Path, image: str, who: Identity, job_dir: Path, checkpoint: Path | None,
              gpus_per_node: int, args: list[str]) -> None:
        """The job's bundle, the same on every node but for RANK in `args`: so every node's GPU
        device files are in it (Slurm's cgroups, where the cluster constrains devices, keep a step
        to its own)."""
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            _bind(job_dir, WORK),
        ]
        if checkpoint is not None:
            mounts.append(_bind(checkpoint, CHECKPOINT))
        if gpus_per_node:
            for d in [f"nvidia{g}" for g in range(gpus_per_node)] + [d for d in GPU_SHARED
                                                                     if (self.devices / d).exists()]:
                mounts.append(_bind(self.devices / d, f"/dev/{d}", device=True))
        config = {
            "ociVersion": OCI_VERSION,
            "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args,
                        "env": [f"PATH={SAFE_PATH}"], "cwd": WORK, "noNewPrivileges": True,
                        "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
            "root": {"path": str(self.rootfs(image)), "readonly": True},
            "hostname": "job",
            "mounts": mounts,
            "linux": {"uidMappings": [{"containerID": 0, "hostID": who.uid, "size": 1}],
                      "gidMappings": [{"containerID": 0, "hostID": who.gid, "size": 1}],
                      "namespaces": [{"type": t} for t in _NS],
                      "maskedPaths": list(_MASKED), "readonlyPaths": list(_READ_ONLY)},
        }
        bundle.mkdir(mode=0o700, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        if os.geteuid() == 0:  # the tenant's, as the rest of its job directory
            for p in (bundle, bundle / "config.json"):
                os.chown(p, who.uid, who.gid)


def _bind(source: Path, destination: str, device: bool = False, read_only: bool = False) -> dict[str, Any]:
    options = ["rbind", "nosuid"] + ([] if device else ["nodev"]) + (["ro"] if read_only else [])
    return {"destination": destination, "type": "none", "source": str(source), "options": options}


def _podman(podman: str, *args: str, check: bool = True) -> str:
    try:
        done = subprocess.run([podman, *args], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NeocloudError(f"podman {args[0]} failed: {e}") from None
    if check and done.returncode != 0:
        raise NeocloudError(f"podman {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout
