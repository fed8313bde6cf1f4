"""Jobs on a Ray cluster, through the Ray Jobs API of its dashboard (`RAY_ADDRESS`, http://host:8265).

neocloud decides where a job runs; each attempt becomes one Ray job named
`neocloud-<instance>-<job>-<attempt>` (the instance is a random name kept in the data directory, as
Ray keeps job names for the cluster's life and other neocloud instances may share it),
whose driver (`ray_driver.py`, shipped as the job's working directory) pins one placement-group
bundle per rank to the node chosen for it and runs the command there with the rank's GPUs. The
driver prints each rank's output with a `[rank R]` prefix. The backend follows each live attempt's
log as Ray streams it (`ray_logs.py`), copies it into per-rank files as the job runs, and reads each
rank's exit status from the driver's last line. It asks Ray how an attempt ended only once its
stream has ended, so a poll costs what changed since the last one, not how many attempts run or
how long their logs are. A restarted neocloud finds its attempts by name; the `.seen` offset keeps
it from copying a line twice.

    DATA_DIR/jobs/<id>/rank-<r>.out, rank-<r>.err     logs, appended across attempts
    DATA_DIR/jobs/<id>/attempt-<a>.seen               how much of the attempt's Ray log is copied
    DATA_DIR/jobs/ray-instance                         this instance's name on the cluster

Ray has no cordon of its own that can be undone, so a cordon lives in neocloud alone; a node Ray
reports dead is taken out of service here until it is alive again.

The Ray head can go away under a running neocloud. Every question to it has a time limit
(`REQUEST_S`), so a dead or hung head makes calls fail (the service is degraded) rather than hang,
and a poll stops asking at the first question Ray leaves unanswered. Unless Ray keeps its state in
Redis, a head that comes back starts a new cluster: its nodes rejoin under new Ray node ids, and
the Ray jobs of the old one are gone with their drivers (each rank's watchdog stops what it ran:
`ray_driver.py`). So once Ray could not be reached, the nodes are listed again before the next
launch (a placement pinned to a dead node id would wait for ever); an attempt on a node whose Ray
id changed is asked about anew, as its stream may never end; and an attempt Ray no longer knows
ends with no rank's status: lost, as after a node failure. A node's name must stay the same across
such restarts: give each node a unique one (`ray start --node-name`), or nodes sharing a host are
told apart by their Ray ids, which do not.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neocloud.backends.base import Exit, Recovered, Task
from neocloud.backends.ray_logs import AttemptLog, LogStreams
from neocloud.errors import NeocloudError
from neocloud.model.catalog import GpuType, gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

PREFIX = "neocloud-"
DRIVER = "neocloud_ray_driver.py"
DEFAULT_GPU = "H100"  # a node whose accelerator type Ray does not know
LEAF_LABEL = "neocloud.io/leaf"  # `ray start --labels='{"neocloud.io/leaf": "leaf1"}'` groups nodes by switch
POLL_S = 1.0  # appended log lines are copied, and ended attempts settled, at most this often
REQUEST_S = 10  # a question to Ray not answered in this long (between two bytes of the answer) fails
_GOING = ("PENDING", "RUNNING")


@dataclass(slots=True)
class _Attempt:
    """A live attempt. `arrived` and `closed` are filled by its log stream, under the backend's
    lock; `log` is copied into by poll (or by recover, before poll runs)."""

    log: AttemptLog
    nodes: tuple[str, ...] = ()  # where its ranks run
    stopping: bool = False
    unstopped: bool = False  # a stop that could not reach Ray: tried again once Ray answers
    arrived: list[str] = field(default_factory=list)  # chunks received, not yet copied
    closed: str | None = None  # the stream ended: "" at the job's end, else why it broke
    stream: Future[None] | None = None  # the stream that follows it now
    generation: int = 0  # which stream that is: a cancelled one's late chunks are dropped


class RayBackend:
    name = "ray"
    isolation: str | None = "a Ray cluster runs every task of every job as one Unix user"  # one trust domain

    def __init__(self, root: Path, address: str | None = None) -> None:
        address = address or os.environ.get("RAY_ADDRESS")
        if not address or not address.startswith(("http://", "https://")):
            raise NeocloudError("the ray backend finds its cluster through RAY_ADDRESS: set it to the Ray dashboard's "
                                "address, such as http://127.0.0.1:8265")
        try:
            self.client = _client(address)
        except ImportError:
            raise NeocloudError("the ray backend needs Ray: pip install 'neocloud[ray]'") from None
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, a timeout
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
        self._ids: dict[str, str] = {}  # neocloud node name -> Ray node id, as last seen alive
        self._up: set[str] = set()  # the nodes alive when Ray was last asked
        self._stale = False  # a question to Ray went unanswered since its nodes were last listed
        self._live: dict[tuple[int, int], _Attempt] = {}
        self._changed: set[tuple[int, int]] = set()  # live attempts whose stream brought news since the last poll
        self._lock = threading.Lock()
        self._polled = 0.0
        self._streams = LogStreams(self.client)
        self.received = 0  # characters of Ray logs received: each once, however often poll runs
        self.asked = 0  # questions to Ray about one attempt's state: one per ended attempt

    # -- the cluster ------------------------------------------------------------------------------
    def _nodes(self) -> list[dict[str, Any]]:
        from ray.util.state import list_nodes

        try:
            nodes = [n.__dict__ if not isinstance(n, dict) else n
                     for n in list_nodes(address=self.address, detail=True, raise_on_missing_output=False,
                                         timeout=REQUEST_S)]
        except Exception as e:  # noqa: BLE001 - the state API raises plain exceptions for HTTP failures
            self._stale = True
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
        self._seen({n["name"]: n["node_id"] for n in nodes})
        return fleet

    def drained(self) -> dict[str, str]:
        """Nodes Ray does not report alive. (Stops Ray could not be reached for are made now.)"""
        alive = self._alive()
        with self._lock:
            stops = [key for key, att in self._live.items() if att.unstopped]
            for key in stops:
                self._live[key].unstopped = False
            drained = {name: "the node is not alive in Ray" for name in self._ids if name not in alive}
        for key in stops:
            self._stop(key)
        return drained

    def _alive(self) -> dict[str, str]:
        """The nodes alive in Ray now: name -> Ray node id."""
        alive = {n["name"]: n["node_id"] for n in self._nodes() if n["state"] == "ALIVE"}
        self._seen(alive)
        return alive

    def _seen(self, alive: dict[str, str]) -> None:
        """Ray listed these nodes alive. One whose Ray id changed restarted (with the head, or on its
        own): what ran there is gone, though its log stream may not say so, so Ray is asked."""
        with self._lock:
            restarted = {name for name, node_id in alive.items() if self._ids.get(name, node_id) != node_id}
            self._ids.update(alive)
            self._up, self._stale = set(alive), False
            for key, att in self._live.items():
                if restarted.intersection(att.nodes):
                    self._recheck(key, att)

    def set_node(self, name: str, cordoned: bool, reason: str) -> None:
        """Nothing to tell Ray: neocloud simply places no work on a cordoned node."""

    def image_missing(self, image: str) -> str | None:
        """Every image is missing here: a Ray cluster's workers run in the image Ray itself runs in."""
        return ("the ray backend runs jobs in its cluster's own worker image, not in one of a job's: leave "
                "`image` out, or submit to a server on the local or slurm backend")

    # -- running ------------------------------------------------------------------------------
    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        if self._stale:  # Ray went away meanwhile: its nodes may have restarted
            try:
                self._alive()
            except NeocloudError as e:
                return [(task.job_id, str(e)) for task in tasks]
        failed = []
        for task in tasks:
            try:
                self._submit(task)
            except NeocloudError as e:
                failed.append((task.job_id, str(e)))
                continue
            att = self._attempt(task.job_id, task.attempt, tuple(n for n, _ in task.nodes))
            with self._lock:
                self._live[(task.job_id, task.attempt)] = att
            self._follow((task.job_id, task.attempt), att)
        return failed

    def _submit(self, task: Task) -> None:
        job_dir = self.root / str(task.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            missing = [n for n, _ in task.nodes if n not in self._up]
            ranks = [{"node": n, "node_id": self._ids.get(n, ""), "gpus": len(g)} for n, g in task.nodes]
        if missing:
            raise NeocloudError(f"Ray has no live node named {', '.join(missing)}")
        name = self._name(task.job_id, task.attempt)
        attempt = {"name": name, "job_id": task.job_id, "attempt": task.attempt, "ranks": ranks, "env": _env(task),
                   "command": task.command if isinstance(task.command, str) else list(task.command)}
        (job_dir / f"attempt-{task.attempt}.seen").write_text("0")
        try:
            self.client.submit_job(entrypoint=f"python {DRIVER} {shlex.quote(json.dumps(attempt))}",
                                   submission_id=name,
                                   runtime_env={"working_dir": str(self._driver_dir)}, entrypoint_num_cpus=0)
        except Exception as e:  # noqa: BLE001 - the Jobs client raises RuntimeError and HTTP errors alike
            self._stale = True
            raise NeocloudError(f"Ray refused the job: {e}") from None

    def stop(self, job_id: int, attempt: int) -> None:
        with self._lock:
            att = self._live.get((job_id, attempt))
            if att is None or att.stopping:
                return
            att.stopping = True
        self._stop((job_id, attempt))

    def _stop(self, key: tuple[int, int]) -> None:
        """Ask Ray to stop the attempt; if Ray cannot be reached, ask again once it answers (drained)."""
        try:
            self.client.stop_job(self._name(*key))
        except RuntimeError:  # an HTTP answer: the job ended, or Ray never had it; poll settles it
            pass
        except Exception:  # noqa: BLE001 - no answer: the head is away
            self._stale = True
            with self._lock:
                if (att := self._live.get(key)) is not None:
                    att.unstopped = True

    def poll(self) -> list[Exit]:
        """Copy what the streams brought and settle the attempts whose stream ended: the work, and
        the questions to Ray, follow what changed, not how many attempts run or how long their logs are."""
        if time.monotonic() - self._polled < POLL_S:
            return []
        self._polled = time.monotonic()
        with self._lock:
            changed, self._changed = self._changed, set()
            news = []
            for key in changed:
                att = self._live.get(key)
                if att is not None:
                    news.append((key, att, att.arrived, att.closed))
                    att.arrived = []
        ended: list[Exit] = []
        failure: NeocloudError | None = None
        for key, att, chunks, closed in news:
            if chunks:
                att.log.feed("".join(chunks))
            if closed is None:
                continue
            try:
                if failure is not None:  # Ray left a question unanswered: the others wait for the next poll
                    raise failure
                done = self._settle(key, att)
            except NeocloudError as e:
                failure = e
                with self._lock:
                    self._changed.add(key)
                continue
            if done is not None:
                ended.append(done)
        if failure is not None and not ended:
            raise failure
        return ended

    def _settle(self, key: tuple[int, int], att: _Attempt) -> Exit | None:
        """An attempt whose stream ended: its Exit if the job ended, else (the stream broke) follow it
        anew. One Ray has no record of went with its cluster (a restarted head): lost, no rank's status."""
        info = self._info(self._name(*key))
        if info is not None and info.status.value in _GOING:
            self._follow(key, att)
            return None
        if info is None:
            self._stale = True  # its nodes are likely new ones too
        att.log.finish()
        with self._lock:
            self._live.pop(key, None)
        state, code = (info.status.value, info.driver_exit_code) if info is not None else ("LOST", None)
        return Exit(key[0], key[1], _codes(att.log.codes, state, code, att.log.ranks), lost=info is None)

    def _info(self, name: str) -> JobDetails | None:
        """The Ray job's state, None if Ray has no such job; NeocloudError if Ray cannot be asked."""
        self.asked += 1
        try:
            return self.client.get_job_info(name)
        except RuntimeError as e:  # the Jobs client's answer to any HTTP status but 200
            if "status code 404" in str(e):
                return None
            raise NeocloudError(f"cannot ask the Ray cluster about {name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - requests' connection errors and the like
            self._stale = True
            raise NeocloudError(f"cannot ask the Ray cluster about {name}: {e}") from None

    def _jobs(self) -> list[JobDetails]:
        try:
            return [j for j in self.client.list_jobs() if str(j.submission_id or "").startswith(self.prefix)]
        except Exception as e:  # noqa: BLE001
            self._stale = True
            raise NeocloudError(f"cannot list the Ray cluster's jobs: {e}") from None

    # -- the logs -----------------------------------------------------------------------------
    def _attempt(self, job_id: int, attempt: int, nodes: tuple[str, ...], ranks: int = 0) -> _Attempt:
        return _Attempt(AttemptLog.resume(self.root / str(job_id) / f"attempt-{attempt}.seen",
                                          lambda rank, stream: self.log_path(job_id, rank, stream),
                                          ranks or len(nodes)), nodes)

    def _follow(self, key: tuple[int, int], att: _Attempt) -> None:
        """Stream the attempt's log; what each chunk brings is copied at the next poll."""
        with self._lock:
            att.log.restart()
            att.closed, att.arrived = None, []
            att.generation += 1
            generation = att.generation

        def chunk(text: str) -> None:
            with self._lock:
                if att.generation == generation:
                    att.arrived.append(text)
                    self._changed.add(key)
                    self.received += len(text)

        def closed(why: str) -> None:
            with self._lock:
                if att.generation == generation:
                    att.closed = why
                    self._changed.add(key)

        stream = self._streams.follow(self._name(*key), chunk, closed)
        with self._lock:
            current = att.generation == generation
            if current:
                att.stream = stream
        if not current:  # rechecked meanwhile
            stream.cancel()

    def _recheck(self, key: tuple[int, int], att: _Attempt) -> None:
        """End the attempt's stream (under the lock): the next poll asks Ray what became of it."""
        att.generation += 1
        if att.stream is not None:
            att.stream.cancel()
            att.stream = None
        att.closed = "a node it runs on restarted in Ray"
        self._changed.add(key)

    # -- after a restart ----------------------------------------------------------------------
    def recover(self, job_id: int, attempt: int, ranks: int) -> Recovered:
        info = self._info(self._name(job_id, attempt))
        if info is None:
            return None
        att = self._attempt(job_id, attempt, _nodes_of(info.entrypoint), ranks)
        if info.status.value in _GOING:
            with self._lock:
                self._live[(job_id, attempt)] = att
            self._follow((job_id, attempt), att)
            return "running"
        try:  # ended meanwhile: its log is complete, and read once
            att.log.feed(self.client.get_job_logs(self._name(job_id, attempt)))
        except Exception:  # noqa: BLE001, S110 - no logs
            pass
        att.log.finish()
        return Exit(job_id, attempt, _codes(att.log.codes, info.status.value, info.driver_exit_code, ranks))

    def take_over(self) -> None:
        """Nothing to read again: Ray keeps the record; `recover` asks it."""

    def reap_orphans(self, keep: set[tuple[int, int]]) -> list[tuple[int, int]]:
        killed = []
        for j in self._jobs():
            m = re.fullmatch(rf"{re.escape(self.prefix)}(\d+)-(\d+)", j.submission_id or "")
            if m and j.status.value in _GOING and (int(m[1]), int(m[2])) not in keep:
                try:
                    self.client.stop_job(m[0])
                except Exception:  # noqa: BLE001, S112 - ended meanwhile
                    continue
                killed.append((int(m[1]), int(m[2])))
        return killed

    def log_path(self, job_id: int, rank: int, stream: str) -> Path:
        return self.root / str(job_id) / f"rank-{rank}.{'out' if stream == 'stdout' else 'err'}"

    def close(self) -> None:
        """Stop following logs (the Ray jobs themselves keep running)."""
        self._streams.close()

    def _name(self, job_id: int, attempt: int) -> str:
        return f"{self.prefix}{job_id}-{attempt}"


def _client(address: str) -> JobSubmissionClient:
    """A Jobs API client whose every request has a time limit (Ray's own waits for ever)."""
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", REQUEST_S)
            return super()._do_request(method, endpoint, **kwargs)

    return Client(address)


def _nodes_of(entrypoint: str) -> tuple[str, ...]:
    """Where an attempt's ranks run, from the driver's argument in its Ray job's entrypoint."""
    try:
        return tuple(r["node"] for r in json.loads(shlex.split(entrypoint)[-1])["ranks"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ()


def _gpu(node: dict[str, Any]) -> GpuType:
    """The catalog GPU of a Ray node, from its accelerator type (resource or label) when Ray knows it."""
    names = [k.split(":", 1)[1] for k in (node.get("resources_total") or {}) if k.startswith("accelerator_type:")]
    names.append((node.get("labels") or {}).get("ray.io/accelerator-type", ""))
    for name in names:
        try:
            return gpu_type(name)
        except NeocloudError:
            continue
    return gpu_type(DEFAULT_GPU)


def _codes(codes: tuple[int | None, ...] | None, state: str, driver_code: int | None,
           ranks: int) -> tuple[int | None, ...]:
    """Each rank's exit status: from the driver's last line, else from how the Ray job ended."""
    if codes is not None:
        return codes
    if state == "SUCCEEDED":
        return (0,) * ranks
    if state == "FAILED" and driver_code:  # the driver failed before any rank ran
        return (driver_code,) + (None,) * (ranks - 1)
    return (None,) * ranks  # stopped or lost


def _env(task: Task) -> dict[str, str]:
    return {**task.env, **({"NEOCLOUD_CHECKPOINT_DIR": str(task.checkpoint_dir)} if task.checkpoint_dir else {})}
