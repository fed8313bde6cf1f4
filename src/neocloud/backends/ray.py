"""Jobs on a Ray cluster, through the Ray Jobs API of its dashboard (`RAY_ADDRESS`, http://host:8265).

neocloud decides where a job runs; each attempt becomes one Ray job named
`neocloud-<instance>-<job>-<attempt>` (the instance is a random name kept in the data directory, as
Ray keeps job names for the cluster's life and other neocloud instances may share it),
whose driver (`ray_driver.py`, shipped as the job's working directory) pins one placement-group
bundle per rank to the node chosen for it and runs the command there with the rank's GPUs. The
driver prints each rank's output with a `[rank R]` prefix; the backend copies it into per-rank
files as the job runs, and reads each rank's exit status from the driver's last line. A restarted
neocloud finds its attempts among the cluster's Ray jobs by name.

    DATA_DIR/jobs/<id>/rank-<r>.out, rank-<r>.err     logs, appended across attempts
    DATA_DIR/jobs/<id>/attempt-<a>.seen               how much of the attempt's Ray log is copied
    DATA_DIR/jobs/ray-instance                         this instance's name on the cluster

Ray has no cordon of its own that can be undone, so a cordon lives in neocloud alone; a node Ray
reports dead is taken out of service here until it is alive again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from neocloud.backends.base import Exit, Recovered, Task
from neocloud.errors import NeocloudError
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site

PREFIX = "neocloud-"
DRIVER = "neocloud_ray_driver.py"
DEFAULT_GPU = "H100"  # a node whose accelerator type Ray does not know
LEAF_LABEL = "neocloud.io/leaf"  # `ray start --labels='{"neocloud.io/leaf": "leaf1"}'` groups nodes by switch
POLL_S = 1.0  # Ray is asked about running attempts at most this often
_LINE = re.compile(r"^\[rank (\d+)( stderr)?\] ?(.*)$")
_CODES = "[neocloud] exit codes: "
_RAY_NOISE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|DEBUG)\b|Running entrypoint for job )")


@dataclass(slots=True)
class _Attempt:
    ranks: int
    stopping: bool = False


class RayBackend:
    name = "ray"
    isolation: str | None = "a Ray cluster runs every task of every job as one Unix user"  # one trust domain

    def __init__(self, root: Path, address: str | None = None) -> None:
        address = address or os.environ.get("RAY_ADDRESS")
        if not address or not address.startswith(("http://", "https://")):
            raise NeocloudError("the ray backend finds its cluster through RAY_ADDRESS: set it to the Ray dashboard's "
                                "address, such as http://127.0.0.1:8265")
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise NeocloudError("the ray backend needs Ray: pip install 'neocloud[ray]'") from None
        try:
            self.client = JobSubmissionClient(address)
        except (ConnectionError, RuntimeError) as e:
            raise NeocloudError(f"cannot reach the Ray cluster at {address}: {e}") from None
        self.address = address
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._driver_dir = self.root / ".ray-driver"
        self._driver_dir.mkdir(exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("ray_driver.py"), self._driver_dir / DRIVER)
        instance = self.root / "ray-instance"
        if not instance.exists():
            instance.write_text(secrets.token_hex(4))
        self.prefix = f"{PREFIX}{instance.read_text().strip()}-"
        self._ids: dict[str, str] = {}  # neocloud node name -> Ray node id
        self._live: dict[tuple[int, int], _Attempt] = {}
        self._lock = threading.Lock()
        self._polled = 0.0

    # -- the cluster ------------------------------------------------------------------------------
    def _nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        try:
            nodes = [n.__dict__ if not isinstance(n, dict) else n
                     for n in list_nodes(address=self.address, detail=True, raise_on_missing_output=False)]
        except Exception as e:  # noqa: BLE001 - the state API raises plain exceptions for HTTP failures
            raise NeocloudError(f"cannot list the Ray cluster's nodes at {self.address}: {e}") from None
        counts: dict[str, int] = {}
        for n in nodes:
            counts[n["node_name"]] = counts.get(n["node_name"], 0) + 1
        for n in nodes:  # a host's name, unless several Ray nodes share it (then with the node id)
            n["name"] = n["node_name"] if counts[n["node_name"]] == 1 else f"{n['node_name']}-{n['node_id'][:8]}"
        return nodes

    def inventory(self) -> Fleet:
        """The cluster's live nodes as a fleet: GPUs from Ray's resources, leaves from a node label."""
        nodes = sorted((n for n in self._nodes() if n["state"] == "ALIVE"),
                       key=lambda n: ((n.get("labels") or {}).get(LEAF_LABEL, "default"), n["name"]))
        leaves = sorted({(n.get("labels") or {}).get(LEAF_LABEL, "default") for n in nodes})
        fleet = Fleet(name="ray", sites=[Site("ray")], fabrics=[Fabric("ray", "ray")],
                      leaves=[Leaf(name, 0) for name in leaves])
        for n in nodes:
            count = int((n.get("resources_total") or {}).get("GPU", 0))
            leaf = leaves.index((n.get("labels") or {}).get(LEAF_LABEL, "default"))
            fleet.nodes.append(Node(len(fleet.nodes), n["name"], _gpu(n) if count else None, count, leaf))
            self._ids[n["name"]] = n["node_id"]
        return fleet

    def drained(self) -> dict[str, str]:
        """Nodes Ray does not report alive."""
        alive = {}
        for n in self._nodes():
            if n["state"] == "ALIVE":
                alive[n["name"]] = n["node_id"]
        with self._lock:
            self._ids.update(alive)
            return {name: "the node is not alive in Ray" for name in self._ids if name not in alive}

    def set_node(self, name: str, cordoned: bool, reason: str) -> None:
        """Nothing to tell Ray: neocloud simply places no work on a cordoned node."""

    # -- running ------------------------------------------------------------------------------
    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        failed = []
        for task in tasks:
            try:
                self._submit(task)
            except NeocloudError as e:
                failed.append((task.job_id, str(e)))
                continue
            with self._lock:
                self._live[(task.job_id, task.attempt)] = _Attempt(len(task.nodes))
        return failed

    def _submit(self, task: Task) -> None:
        job_dir = self.root / str(task.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            missing = [n for n, _ in task.nodes if n not in self._ids]
            ranks = [{"node": n, "node_id": self._ids.get(n, ""), "gpus": len(g)} for n, g in task.nodes]
        if missing:
            raise NeocloudError(f"Ray knows no node named {', '.join(missing)}")
        attempt = {"name": self._name(task.job_id, task.attempt), "job_id": task.job_id, "attempt": task.attempt,
                   "ranks": ranks, "env": _env(task),
                   "command": task.command if isinstance(task.command, str) else list(task.command)}
        (job_dir / f"attempt-{task.attempt}.seen").write_text("0")
        try:
            self.client.submit_job(entrypoint=f"python {DRIVER} {shlex.quote(json.dumps(attempt))}",
                                   submission_id=attempt["name"],
                                   runtime_env={"working_dir": str(self._driver_dir)}, entrypoint_num_cpus=0)
        except Exception as e:  # noqa: BLE001 - the Jobs client raises RuntimeError and HTTP errors alike
            raise NeocloudError(f"Ray refused the job: {e}") from None

    def stop(self, job_id: int, attempt: int) -> None:
        with self._lock:
            att = self._live.get((job_id, attempt))
        if att is None or att.stopping:
            return
        att.stopping = True
        try:
            self.client.stop_job(self._name(job_id, attempt))
        except Exception:  # noqa: BLE001 - already ended: poll settles it
            pass

    def poll(self) -> list[Exit]:
        if time.monotonic() - self._polled < POLL_S:
            return []
        self._polled = time.monotonic()
        with self._lock:
            items = list(self._live.items())
        if not items:
            return []
        status = {j.submission_id: (j.status.value, j.driver_exit_code) for j in self._jobs()}
        ended = []
        for (job_id, attempt), att in items:
            state, code = status.get(self._name(job_id, attempt), ("LOST", None))
            logs = self._mirror(job_id, attempt)
            if state in ("PENDING", "RUNNING"):
                continue
            with self._lock:
                self._live.pop((job_id, attempt), None)
            ended.append(Exit(job_id, attempt, _codes(logs, state, code, att.ranks)))
        return ended

    def _jobs(self) -> list:
        try:
            return [j for j in self.client.list_jobs() if str(j.submission_id or "").startswith(self.prefix)]
        except Exception as e:  # noqa: BLE001
            raise NeocloudError(f"cannot list the Ray cluster's jobs: {e}") from None

    def _mirror(self, job_id: int, attempt: int) -> str:
        """Copy the attempt's new complete log lines into the per-rank files; return the whole log."""
        try:
            text = self.client.get_job_logs(self._name(job_id, attempt))
        except Exception:  # noqa: BLE001 - no logs (yet)
            return ""
        job_dir = self.root / str(job_id)
        seen_file = job_dir / f"attempt-{attempt}.seen"
        try:
            seen = int(seen_file.read_text())
        except (OSError, ValueError):
            seen = 0
        end = text.rfind("\n") + 1
        if end <= seen:
            return text
        out: dict[Path, list[str]] = {}
        for line in text[seen:end].splitlines():
            if m := _LINE.match(line):
                path = self.log_path(job_id, int(m[1]), "stderr" if m[2] else "stdout")
                out.setdefault(path, []).append(m[3] + "\n")
            elif not line.startswith(_CODES) and not _RAY_NOISE.match(line):
                out.setdefault(self.log_path(job_id, 0, "stderr"), []).append(line + "\n")
        for path, lines in out.items():
            with open(path, "a") as f:
                f.writelines(lines)
        seen_file.write_text(str(end))
        return text

    # -- after a restart ----------------------------------------------------------------------
    def recover(self, job_id: int, attempt: int, ranks: int) -> Recovered:
        found = {j.submission_id: j for j in self._jobs()}.get(self._name(job_id, attempt))
        if found is None:
            return None
        logs = self._mirror(job_id, attempt)
        if found.status.value in ("PENDING", "RUNNING"):
            with self._lock:
                self._live[(job_id, attempt)] = _Attempt(ranks)
            return "running"
        return Exit(job_id, attempt, _codes(logs, found.status.value, found.driver_exit_code, ranks))

    def reap_orphans(self, keep: set[tuple[int, int]]) -> list[tuple[int, int]]:
        killed = []
        for j in self._jobs():
            m = re.fullmatch(rf"{re.escape(self.prefix)}(\d+)-(\d+)", j.submission_id)
            if m and j.status.value in ("PENDING", "RUNNING") and (int(m[1]), int(m[2])) not in keep:
                try:
                    self.client.stop_job(j.submission_id)
                except Exception:  # noqa: BLE001 - ended meanwhile
                    continue
                killed.append((int(m[1]), int(m[2])))
        return killed

    def log_path(self, job_id: int, rank: int, stream: str) -> Path:
        return self.root / str(job_id) / f"rank-{rank}.{'out' if stream == 'stdout' else 'err'}"

    def close(self) -> None:
        pass

    def _name(self, job_id: int, attempt: int) -> str:
        return f"{self.prefix}{job_id}-{attempt}"


def _gpu(node: dict) -> object:
    """The catalog GPU of a Ray node, from its accelerator type (resource or label) when Ray knows it."""
    names = [k.split(":", 1)[1] for k in (node.get("resources_total") or {}) if k.startswith("accelerator_type:")]
    names.append((node.get("labels") or {}).get("ray.io/accelerator-type", ""))
    for name in names:
        try:
            return gpu_type(name)
        except NeocloudError:
            continue
    return gpu_type(DEFAULT_GPU)


def _codes(logs: str, state: str, driver_code: int | None, ranks: int) -> tuple[int | None, ...]:
    """Each rank's exit status: from the driver's last line, else from how the Ray job ended."""
    for line in reversed(logs.splitlines()):
        if line.startswith(_CODES):
            codes = [None if c == "-" else int(c) for c in line[len(_CODES):].split()]
            if len(codes) == ranks:
                return tuple(codes)
    if state == "SUCCEEDED":
        return (0,) * ranks
    if state == "FAILED" and driver_code:  # the driver failed before any rank ran
        return (driver_code,) + (None,) * (ranks - 1)
    return (None,) * ranks  # stopped or lost


def _env(task: Task) -> dict[str, str]:
    return {**task.env, **({"NEOCLOUD_CHECKPOINT_DIR": str(task.checkpoint_dir)} if task.checkpoint_dir else {})}
