"""What a tenant's rank sees: the host read-only, its own work and checkpoint directories, a private
/tmp, its own GPUs' device files, and nothing of the server (its data directory, its code, its
environment, its processes).

As root, Debian's bubblewrap builds the sandbox (its own mount, PID, IPC and UTS namespaces,
made without a user namespace), then `setpriv` inside it becomes the tenant's user with no
capability left and no_new_privs, and `env -i` sets the job's environment, an allow-list, only
once privileges are gone: no tool that runs as root ever sees the job's variables. Not as root,
bubblewrap runs unprivileged (in a user namespace) as the server's user.

    inside: /job (work directory, HOME), /checkpoint (NEOCLOUD_CHECKPOINT_DIR), /tmp (private)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from neocloud.backends.identity import Identity

WORK, CHECKPOINT = "/job", "/checkpoint"
GPU_SHARED = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")  # every GPU job needs these
PASSED = ("PATH", "LANG")  # of the server's own environment, the only variables a job inherits
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ARGS_FD = 3  # the descriptor bubblewrap reads its environment arguments from


@dataclass(frozen=True, slots=True)
class Rank:
    """How to start one rank: argv and environment to exec, and bubblewrap's arguments by descriptor."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    fd_args: list[str] | None = None
    spare_top: bool = False  # the first process is bubblewrap's monitor: a graceful stop spares it
    stop: list[str] | None = None  # a graceful stop runs this instead of signalling (podman kill)
    after: list[str] | None = None  # run once the rank has ended (podman's container removed)


def tools() -> tuple[str | None, str | None]:
    return shutil.which("bwrap"), shutil.which("setpriv")


@dataclass(frozen=True, slots=True)
class Sandbox:
    hide: tuple[str, ...]  # host paths a rank must not see even read-only
    devices: Path = Path("/dev")  # where the GPUs' device files are (tests make fake ones)
    bwrap: str | None = None  # None: no namespaces (the backend then serves one tenant)
    setpriv: str | None = None

    def rank(self, command: list[str], env: dict[str, str], who: Identity | None, work: Path,
             checkpoint: Path | None, gpus: tuple[int, ...]) -> Rank:
        """`who` None: the rank runs as the server's own user (neocloud is not root)."""
        inherited = {k: os.environ[k] for k in PASSED if k in os.environ}
        bwrap = self.bwrap
        sandboxed = bwrap is not None
        paths = {"HOME": WORK if sandboxed else str(work)}
        if checkpoint is not None:
            paths["NEOCLOUD_CHECKPOINT_DIR"] = CHECKPOINT if sandboxed else str(checkpoint)
        inside = {**inherited, **env, **paths}
        if "=" in command[0]:  # `env` would take it for a variable
            command = ["/bin/sh", "-c", 'exec "$@"', "sh", *command]
        if who is not None and self.setpriv:
            # Root-run tools get a bare environment; `env -i` sets the job's once privileges are gone.
            command = [self.setpriv, f"--reuid={who.uid}", f"--regid={who.gid}", "--clear-groups", "--no-new-privs",
                       "--inh-caps=-all", "--bounding-set=-all", "--", "/usr/bin/env", "-i",
                       *(f"{k}={v}" for k, v in inside.items()), *command]
            inside = {"PATH": SAFE_PATH}
        if bwrap is None:
            return Rank(command, inside, str(work))
        args = self._mounts(work, checkpoint, gpus)
        if who is not None:  # privileged: setpriv needs these to become the tenant, then drops them all
            args += [x for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP") for x in ("--cap-add", cap)]
        else:
            args.append("--unshare-user")
        args.append("--clearenv")
        for k, v in inside.items():
            args += ["--setenv", k, v]
        return Rank([bwrap, "--args", str(ARGS_FD), "--", *command], {"PATH": SAFE_PATH}, "/", args,
                    spare_top=True)

    def _mounts(self, work: Path, checkpoint: Path | None, gpus: tuple[int, ...]) -> list[str]:
        args: list[str] = []
        for entry in sorted(os.listdir("/")):
            path = "/" + entry
            if entry in ("proc", "dev", "tmp"):
                continue
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        # As root, bubblewrap's tmpfs is root's (0755): the tenant's user could write neither.
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
                 "--perms", "1777", "--tmpfs", "/tmp"]
        for path in self.hide:
            args += ["--tmpfs", path]
        for d in [f"nvidia{g}" for g in gpus] + list(GPU_SHARED):
            if (self.devices / d).exists():
                args += ["--dev-bind", str(self.devices / d), f"/dev/{d}"]
        args += ["--bind", str(work), WORK, "--chdir", WORK]
        if checkpoint is not None:
            args += ["--bind", str(checkpoint), CHECKPOINT]
        return args + ["--remount-ro", "/", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                       "--hostname", "job", "--die-with-parent", "--new-session"]
