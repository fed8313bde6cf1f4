"""Jobs on a Slurm cluster, driven through Slurm's own command-line tools (`SLURM_CONF` finds it).

neocloud decides where a job runs; each attempt becomes one `sbatch` on exactly the nodes it was
given (`--nodelist`, one task per node, the GPUs per node as GRES), whose single `srun` step runs
the command on every node under the same small wrapper as the local backend: it writes each
node's exit status to a file, so an attempt that ended while neocloud was down is settled from
its files (the test cluster keeps no accounting database, so there is no `sacct`). Attempts are
named `neocloud-<job>-<attempt>`, which is how a restarted neocloud finds its jobs in `squeue`.

As root, each tenant's job runs as its own Unix user (`sbatch --uid/--gid`, `identity.py`), in a
job directory only that user can enter, with none of the server's environment (`--export=NIL`:
the batch script sets the job's allow-listed variables itself).

    DATA_DIR/jobs/<id>/rank-<r>.out, rank-<r>.err          logs, appended across attempts (tenant's)
    DATA_DIR/jobs/<id>/attempt-<a>.rank-<r>.exit           each node's exit status (tenant's)
    DATA_DIR/jobs/<id>/code.tar.gz, work/rank-<r>/         the job's code, and each node's copy of it (tenant's)

The job directories must be on storage the nodes share with the server (as a Slurm site's home
or scratch filesystem is): logs and exit statuses come back through it, and a job's code reaches
its nodes through it, each node unpacking its own copy as the tenant's user at the first attempt.
A job in an image runs each node's rank in a rootless runc (bundle.py), its bundle and the image's
files on the same storage.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.backends.base import Exit, Recovered, Task, read_file
from neocloud.backends.bundle import Bundles
from neocloud.backends.identity import Identity, tenant_identity
from neocloud.backends.sandbox import CHECKPOINT, PASSED, SAFE_PATH, WORK
from neocloud.errors import NeocloudError
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site

PREFIX = "neocloud-"
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
# Per node: run the command ("$@"), then record its status in <attempt prefix>.rank-<node>.exit.
# Each node's rank and name are given as the other backends give them.
WRAPPER = ('export NEOCLOUD_NODE_RANK="$SLURM_NODEID" NEOCLOUD_NODE="$SLURMD_NODENAME"; '
           '"$@"; rc=$?; printf "%s" "$rc" > "$0.rank-$SLURM_NODEID.exit"; exit "$rc"')
# With code: first, on its first attempt, each node unpacks the job's code ($1) into its own copy
# ($2/rank-N, the tenant's own files, as the tenant's user) and starts there; then WRAPPER.
WITH_CODE = ('c="$1"; d="$2/rank-$SLURM_NODEID"; shift 2; '
             '{ [ -e "$d" ] || { rm -rf "$d.part" && mkdir -p "$d.part" && tar -xzf "$c" -C "$d.part" '
             '--no-same-owner && mv "$d.part" "$d"; }; } && cd "$d" || '
             '{ echo "neocloud: the job\'s code could not be unpacked into $d" >&2; '
             'printf 1 > "$0.rank-$SLURM_NODEID.exit"; exit 1; }; ' + WRAPPER)
# In an image, each node's step starts its rank in a rootless runc (bundle.py): first it keeps its
# own environment for the rank (the env file), with the GPUs Slurm gave it named as on the host (the
# bundle binds each device file at its own path), and fills its rank into the job's bundle.
RANK = "@NEOCLOUD_RANK@"
RUN_IN_IMAGE = ('j="$1"; r="$SLURM_NODEID"; b="$j/bundle/rank-$r"; '
                'command -v runc >/dev/null || { echo "neocloud: runc is not installed on $SLURMD_NODENAME, so '
                'images cannot run there (apt install runc)" >&2; printf 127 > "$0.rank-$r.exit"; exit 127; }; '
                'export NEOCLOUD_NODE_RANK="$r" NEOCLOUD_NODE="$SLURMD_NODENAME" '
                'CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-${SLURM_STEP_GPUS:-$SLURM_JOB_GPUS}}"; '
                f'mkdir -p "$b" && export -p > "$b/env" && sed "s/{RANK}/$r/g" "$j/bundle/config.json" > "$b/config.json" '
                '&& exec runc --rootless=true --root="$j/runc" run --bundle "$b" "neocloud-$SLURM_JOB_ID-$r"')
# The rank's first process in its container, PID 1 there: it reads the node's environment, and
# passes a stop's signal on to the rank (a PID 1 with no handler would ignore it). Once stopped, it
# waits for every process left in the container before it exits, as its exit would kill them all:
# a rank's own handler of the signal (to checkpoint, to say goodbye) runs to its end.
INIT = ('. "$0" || exit 1; trap \'s=1; trap "" TERM INT HUP; kill -TERM 0\' TERM INT HUP; "$@" & '
        'wait $!; rc=$?; while kill -0 $! 2>/dev/null; do wait $!; rc=$?; done; '
        'if [ -n "$s" ] || [ "$rc" -gt 128 ]; then while kill -0 -1 2>/dev/null; do sleep 0.1; done; fi; exit "$rc"')
DEFAULT_GPU = "H100"  # a node whose GRES names no GPU model


@dataclass(slots=True)
class _Attempt:
    slurm_id: int
    ranks: int
    stopping: bool = False


class SlurmBackend:
    name = "slurm"

    def __init__(self, root: Path, private: Path | None = None, devices: Path = Path("/dev")) -> None:
        """`root` holds the jobs' directories; `private` (the data directory) is never opened to tenants;
        `devices`: where the nodes' GPU device files are, for jobs in images."""
        if not os.environ.get("SLURM_CONF"):
            raise NeocloudError("the slurm backend finds its cluster through SLURM_CONF: set it to the path of "
                                "slurm.conf")
        missing = [t for t in ("sbatch", "squeue", "scancel", "sinfo", "scontrol") if shutil.which(t) is None]
        if missing:
            raise NeocloudError(f"the slurm backend needs Slurm's tools on PATH; missing: {', '.join(missing)}")
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.as_tenants = os.geteuid() == 0  # sbatch --uid is root's alone
        self.isolation = None if self.as_tenants else "neocloud is not running as root, so every job runs as its user"
        for d in (self.root.parent, self.root):
            if d != private:
                d.chmod(0o711)  # tenants reach their own job directories, and list nothing
        shut = [str(p) for p in self.root.resolve().parents if not p.stat().st_mode & 0o001]
        if self.as_tenants and shut:
            raise NeocloudError(f"the slurm backend runs each tenant's job as its own user, who cannot reach "
                                f"{self.root} ({shut[0]} is closed to others): give neocloud up --jobs-dir a "
                                "directory on the cluster's shared filesystem whose parents others may enter")
        self._live: dict[tuple[int, int], _Attempt] = {}
        self._lock = threading.Lock()
        self.bundles = Bundles(self.root, devices)
        self._gpus: dict[str, int] = {}  # each node's GPU count, as the last inventory found it
        self._addresses: dict[str, str] = {}  # each node's NodeAddr, where its replicas are reached

    # -- the cluster ------------------------------------------------------------------------------
    def inventory(self) -> Fleet:
        """The cluster as a fleet: nodes and their GPUs from `sinfo`, leaves from the switch tree."""
        nodes = _json("sinfo")["nodes"]
        leaf_of: dict[str, str] = {}
        for line in _tool("scontrol", "show", "topology").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("Level") == "0" and fields.get("Nodes"):
                for host in _tool("scontrol", "show", "hostnames", fields["Nodes"]).split():
                    leaf_of[host] = fields["SwitchName"]
        leaves = sorted({leaf_of.get(n["name"], "default") for n in nodes})
        fleet = Fleet(name="slurm", sites=[Site("slurm")], fabrics=[Fabric("slurm", "slurm")],
                      leaves=[Leaf(name, 0) for name in leaves])
        index = {name: i for i, name in enumerate(leaves)}
        for n in sorted(nodes, key=lambda n: (leaves.index(leaf_of.get(n["name"], "default")), n["name"])):
            model, count = _gpus(n.get("gres", ""))
            fleet.nodes.append(Node(len(fleet.nodes), n["name"], gpu_type(model) if count else None, count,
                                    index[leaf_of.get(n["name"], "default")]))
        self._gpus = {n.name: n.gpus for n in fleet.nodes}
        self._addresses = {n["name"]: n.get("address") or n["name"] for n in nodes}
        return fleet

    def drained(self) -> dict[str, str]:
        """Nodes Slurm will not run new work on (drained, down, ...), with its reason."""
        out = {}
        for n in _json("sinfo")["nodes"]:
            flags = {f.upper() for f in n.get("state_flags", [])} | {str(n.get("state", "")).upper()}
            if flags & {"DRAIN", "DRAINED", "DRAINING", "DOWN", "FAIL", "FAILING"}:
                out[n["name"]] = n.get("reason") or "drained in Slurm"
        return out

    def set_node(self, name: str, cordoned: bool, reason: str) -> None:
        """Keep Slurm in step with a cordon (DRAIN) or uncordon (RESUME) made in neocloud."""
        if cordoned:
            _tool("scontrol", "update", f"NodeName={name}", "State=DRAIN", f"Reason={reason or 'cordoned by neocloud'}")
        else:
            _tool("scontrol", "update", f"NodeName={name}", "State=RESUME")

    # -- running ------------------------------------------------------------------------------
    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        failed = []
        for task in tasks:
            try:
                slurm_id = self._submit(task)
            except NeocloudError as e:
                failed.append((task.job_id, str(e)))
                continue
            with self._lock:
                self._live[(task.job_id, task.attempt)] = _Attempt(slurm_id, len(task.nodes))
        return failed

    def _submit(self, task: Task) -> int:
        job_dir = self.root / str(task.job_id)
        who = tenant_identity(task.tenant) if self.as_tenants and not task.trusted else None
        for d in (job_dir, task.checkpoint_dir):  # the tenant's alone: others cannot even list them
            if d is not None:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                d.parent.chmod(0o711)
                if who is not None:
                    os.chown(d, who.uid, who.gid)
        stem = job_dir / f"attempt-{task.attempt}"
        for r in range(len(task.nodes)):
            Path(f"{stem}.rank-{r}.exit").unlink(missing_ok=True)
        argv = ["/bin/sh", "-c", task.command] if isinstance(task.command, str) else list(task.command)
        per_node = max((len(g) for _, g in task.nodes), default=0)
        # Where the step sees the job's files: as they are, or at /job and /checkpoint in an image.
        home, checkpoint = (str(job_dir), str(task.checkpoint_dir)) if task.image is None else (WORK, CHECKPOINT)
        wrapper, code_args = WRAPPER, []
        if task.code is not None:  # through the job directory, which the nodes and the server share
            archive = job_dir / "code.tar.gz"
            shutil.copyfile(task.code, archive)
            if who is not None:
                os.chown(archive, who.uid, who.gid)
            wrapper, code_args = WITH_CODE, [f"{home}/{archive.name}", f"{home}/work"]
        step = ["/bin/sh", "-c", wrapper, f"{home}/{stem.name}", *code_args, *argv]
        if task.image is not None:
            self._bundle(task, job_dir, who, ["/bin/sh", "-c", INIT, f"{WORK}/bundle/rank-{RANK}/env", *step])
            step = ["/bin/sh", "-c", RUN_IN_IMAGE, str(stem), str(job_dir)]
        env = {**task.env, "NEOCLOUD_JOB_ID": str(task.job_id), "NEOCLOUD_ATTEMPT": str(task.attempt),
               "NEOCLOUD_NUM_NODES": str(len(task.nodes)), "HOME": home,
               **({"NEOCLOUD_CHECKPOINT_DIR": checkpoint} if task.checkpoint_dir else {}),
               **{k: os.environ[k] for k in PASSED if k in os.environ},
               **({"PATH": SAFE_PATH} if task.image is not None else {})}
        script = "\n".join([
            "#!/bin/sh",
            *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
            "exec srun --export=ALL --kill-on-bad-exit=1 --ntasks-per-node=1 --open-mode=append "
            f"--output={job_dir}/rank-%n.out --error={job_dir}/rank-%n.err "
            + shlex.join(step),
            "",
        ])
        cmd = ["sbatch", "--parsable", f"--job-name={PREFIX}{task.job_id}-{task.attempt}",
               f"--nodes={len(task.nodes)}", f"--nodelist={','.join(n for n, _ in task.nodes)}",
               "--ntasks-per-node=1", f"--chdir={job_dir}", f"--output={stem}.sbatch.out",
               "--export=NIL"]  # the job gets the script's variables, none of the server's
        if who is not None:
            cmd += [f"--uid={who.uid}", f"--gid={who.gid}"]
        if per_node:
            cmd.append(f"--gres=gpu:{per_node}")
        if task.cpu_milli:
            cmd.append(f"--cpus-per-task={-(-task.cpu_milli // 1000)}")
        if task.memory_mib:
            cmd.append(f"--mem={task.memory_mib}M")
        out = _tool(*cmd, stdin=script)
        return int(out.strip().split(";")[0])

    def _bundle(self, task: Task, job_dir: Path, who: Identity | None, args: list[str]) -> None:
        """The job's OCI bundle for this attempt, its image's files exported first if need be."""
        assert task.image is not None
        if why := self.bundles.missing(task.image):
            raise NeocloudError(why)
        gpus = max((self._gpus.get(node, len(g)) for node, g in task.nodes), default=0)
        self.bundles.write(job_dir / "bundle", task.image, who or Identity("", os.getuid(), os.getgid()), job_dir,
                           task.checkpoint_dir, gpus, args)

    def service_address(self, node: str) -> str:
        """Where a service's replica on `node` is reached: the node's address in Slurm (NodeAddr)
        and a port (its $PORT) drawn from 20000-29999, as no one here can ask the node which are free."""
        return f"{self._addresses.get(node, node)}:{20000 + secrets.randbelow(10000)}"

    def image_missing(self, image: str) -> str | None:
        """Why `image` cannot run on this cluster, or None: asked at submit, so that a missing image
        is a 422 rather than a failed start."""
        return self.bundles.missing(image)

    def stop(self, job_id: int, attempt: int) -> None:
        with self._lock:
            att = self._live.get((job_id, attempt))
        if att is None or att.stopping:
            return
        att.stopping = True
        _tool("scancel", str(att.slurm_id), check=False)

    def poll(self) -> list[Exit]:
        with self._lock:
            items = list(self._live.items())
        if not items:
            return []
        states = {j["job_id"]: j["job_state"] for j in self._squeue()}
        ended = []
        for (job_id, attempt), att in items:
            if states.get(att.slurm_id) in ACTIVE:
                continue
            with self._lock:
                self._live.pop((job_id, attempt), None)
            ended.append(Exit(job_id, attempt, self._codes(job_id, attempt, att.ranks)))
        return ended

    def _codes(self, job_id: int, attempt: int, ranks: int) -> tuple[int | None, ...]:
        codes: list[int | None] = []
        for r in range(ranks):
            try:  # written by the tenant's user: read with care (see read_file)
                codes.append(int(read_file(self.root / str(job_id) / f"attempt-{attempt}.rank-{r}.exit", limit=32)))
            except (OSError, ValueError):
                codes.append(None)
        return tuple(codes)

    def _squeue(self) -> list[dict]:
        return [j for j in _json("squeue")["jobs"] if str(j.get("name", "")).startswith(PREFIX)]

    # -- after a restart ----------------------------------------------------------------------
    def recover(self, job_id: int, attempt: int, ranks: int) -> Recovered:
        name = f"{PREFIX}{job_id}-{attempt}"
        for j in self._squeue():
            if j["name"] == name and j["job_state"] in ACTIVE:
                with self._lock:
                    self._live[(job_id, attempt)] = _Attempt(int(j["job_id"]), ranks)
                return "running"
        codes = self._codes(job_id, attempt, ranks)
        return None if any(c is None for c in codes) else Exit(job_id, attempt, codes)

    def take_over(self) -> None:
        """Nothing to read again: Slurm keeps the record; `recover` asks it."""

    def reap_orphans(self, keep: set[tuple[int, int]]) -> list[tuple[int, int]]:
        killed = []
        for j in self._squeue():
            m = re.fullmatch(rf"{PREFIX}(\d+)-(\d+)", j["name"])
            if m and j["job_state"] in ACTIVE and (int(m[1]), int(m[2])) not in keep:
                _tool("scancel", str(j["job_id"]), check=False)
                killed.append((int(m[1]), int(m[2])))
        return killed

    def log_path(self, job_id: int, rank: int, stream: str) -> Path:
        return self.root / str(job_id) / f"rank-{rank}.{'out' if stream == 'stdout' else 'err'}"

    def close(self) -> None:
        pass


def _gpus(gres: str) -> tuple[str, int]:
    """('H100', 8) from a GRES string such as 'gpu:8' or 'gpu:h100:8(S:0-1)'."""
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            model = parts[1] if len(parts) == 3 else DEFAULT_GPU
            try:
                gpu_type(model)
            except NeocloudError:
                model = DEFAULT_GPU
            return model, int(parts[-1])
    return DEFAULT_GPU, 0


def _json(tool: str) -> dict[str, Any]:
    """`tool --json`'s answer. Without its controller, squeue answers exit 0 and no jobs, with the
    failure in "errors": taken at its word, every job would look ended."""
    try:
        data = json.loads(_tool(tool, "--json"))
    except ValueError as e:
        raise NeocloudError(f"{tool} --json answered no JSON: {e}") from None
    if data.get("errors"):
        why = "; ".join(str(e.get("description") or e) if isinstance(e, dict) else str(e) for e in data["errors"])
        raise NeocloudError(f"{tool} failed: {why}")
    return data


def _tool(*cmd: str, stdin: str | None = None, env: dict[str, str] | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(cmd, input=stdin, env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NeocloudError(f"{cmd[0]} failed: {e}") from None
    if check and done.returncode != 0:
        raise NeocloudError(f"{' '.join(cmd[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout
