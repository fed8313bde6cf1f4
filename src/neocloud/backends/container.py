"""A rank in its tenant's OCI image: podman, with the same walls the sandbox builds.

The container sees the image's own filesystem, the job's work directory (/job, also HOME) and
checkpoint directory (/checkpoint), its own GPUs' device files and nothing of the host's; it
runs as the tenant's user with no capability and no_new_privs, in its own PID, IPC and UTS
namespaces, on the host's network (as a sandboxed rank is, so the ranks of a gang reach each
other at MASTER_ADDR). Podman runs with runc (crun cannot set rlimits in this machine kind's
hybrid cgroups), and the container's cgroup is made under the rank's own (`cgroup`), so the
limits the supervisor set there hold the container too, and a stop that kills the rank's cgroup
kills it. A small init (`--init`, Debian's catatonit) is the container's PID 1, so that the
rank's own first process gets the SIGTERM of a graceful stop (a PID 1 ignores what it has no
handler for).

The job's environment reaches the container through an env file on a descriptor (`ENV_FD`),
never through podman's own environment (a variable such as CONTAINERS_CONF would steer podman,
which runs as the server's user) nor its arguments (which every user on the host can read).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from neocloud.backends.identity import Identity
from neocloud.backends.sandbox import CHECKPOINT, GPU_SHARED, SAFE_PATH, WORK, Rank
from neocloud.errors import NeocloudError

ENV_FD = 3  # the descriptor the env file is read from, as bubblewrap's arguments are


def env_file(env: dict[str, str]) -> str:
    """The job's variables as podman's env file reads them: one KEY=VALUE a line."""
    bad = [k for k, v in env.items() if "\n" in v or "\r" in v]
    if bad:
        raise NeocloudError(f"environment variable {bad[0]}: a value with a line break cannot be passed into an image")
    return "".join(f"{k}={v}\n" for k, v in env.items())


@dataclass(frozen=True, slots=True)
class Containers:
    podman: str | None = shutil.which("podman")
    runtime: str = "runc"
    devices: Path = Path("/dev")

    def missing(self, image: str) -> str | None:
        """Why `image` cannot run here, or None if it can: a clear reason at start, never a hung rank."""
        if self.podman is None:
            return "podman is not installed on this node (apt install podman runc), so images cannot run"
        found = subprocess.run([self.podman, "image", "exists", image], capture_output=True, timeout=60)
        if found.returncode != 0:
            return (f"image {image!r} is not on this node (no registry is pulled from): load it first "
                    f"with `podman load` or `podman import`")
        return None

    def rank(self, image: str, command: list[str], env: dict[str, str], who: Identity | None, work: Path,
             checkpoint: Path | None, gpus: tuple[int, ...], name: str,
             cgroup: str | None = None) -> tuple[Rank, str]:
        """How to start the rank, and the env file to give it on `ENV_FD`; `cgroup`: the rank's
        cgroup, as a path under each hierarchy's root."""
        if self.podman is None:
            raise NeocloudError("podman is not installed on this node (apt install podman runc)")
        paths = {"HOME": WORK, **({"NEOCLOUD_CHECKPOINT_DIR": CHECKPOINT} if checkpoint is not None else {})}
        inside = {"PATH": SAFE_PATH, **env, **paths}
        argv = [self.podman, "--runtime", self.runtime, "run", "--name", name, "--pull=never", "--init",
                "--network=host", "--hostname=job", "--ipc=private", "--pid=private",
                "--cap-drop=all", "--security-opt=no-new-privileges", "--ulimit=nofile=1024:1024",
                "--ulimit=nproc=4096:4096", "--env-file", f"/dev/fd/{ENV_FD}", "--workdir", WORK,
                "--volume", f"{work}:{WORK}"]
        if checkpoint is not None:
            argv += ["--volume", f"{checkpoint}:{CHECKPOINT}"]
        if cgroup is not None:
            argv += ["--cgroup-manager=cgroupfs", f"--cgroup-parent=/{cgroup.strip('/')}"]
        if who is not None:
            argv += ["--user", f"{who.uid}:{who.gid}"]
        for d in [f"nvidia{g}" for g in gpus] + list(GPU_SHARED):
            if (self.devices / d).exists():
                argv += ["--device", f"{self.devices / d}:/dev/{d}"]
        argv += ["--", image, *command]
        # Not `--rm`: its removal races podman's wait for the exit status, which is then lost (0), and
        # may stop the container a second time. The supervisor removes it once podman has answered.
        # A graceful stop is `podman kill`, to the init, which hands it to the rank once. Not a signal
        # to `podman run`: its proxy drops one that comes while it has not yet marked the container
        # running, though the rank already runs, and podman then leaves with status 0.
        stop = [self.podman, "kill", "--signal=TERM", name]
        return Rank(argv, {"PATH": SAFE_PATH}, "/", stop=stop,
                    after=[self.podman, "rm", "--force", "--ignore", "--time=0", name]), env_file(inside)

    def leftovers(self, prefix: str) -> list[str]:
        """Containers named `prefix`..., running or not: a rank's podman killed with its server
        leaves its container behind (the supervisor removes it once podman has ended)."""
        if self.podman is None:
            return []
        try:
            done = subprocess.run([self.podman, "ps", "--all", "--filter", f"name=^{prefix}", "--format", "{{.Names}}"],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [n for n in done.stdout.split() if n.startswith(prefix)] if done.returncode == 0 else []

    def remove(self, names: list[str]) -> None:
        """Stop and remove these containers at once; one that will not go is tried at the next restart."""
        if self.podman is not None and names:
            subprocess.run([self.podman, "rm", "--force", "--time=0", *names], capture_output=True, timeout=120)
