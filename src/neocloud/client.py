"""A Python client of the neocloud API, on httpx; the CLI is built on it.

    from neocloud.client import Client
    c = Client("http://127.0.0.1:8420", token="nct_...")
    job = c.submit({"name": "train", "command": "python train.py", "gpus": 16, "gpus_per_node": 8})
    print(c.job(job["id"])["state"])
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from neocloud.errors import NeocloudError

DEFAULT_SERVER = "http://127.0.0.1:8420"
DEFAULT_DATA_DIR = Path("~/.neocloud")
ACTIVE = ("PENDING", "RUNNING")  # a job in any other state has ended


def data_dir(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("NEOCLOUD_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()


class ApiError(NeocloudError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


class Client:
    """Talks to one server, or to whichever of several leads, with one token: NEOCLOUD_SERVER and
    NEOCLOUD_TOKEN by default, and, on the server's own machine, the admin token it wrote to its
    data directory. Several URLs (a list, or comma-separated) are servers sharing one database: a
    request goes to the one that answered last, and on to the next while one is unreachable or
    answers 503 (a standby, or a leader whose store fails), for up to `failover_s`. Only requests
    no server can have acted on are sent again: one whose answer was lost on the way is not."""

    def __init__(self, server: str | Sequence[str] | None = None, token: str | None = None, timeout: float = 30.0,
                 failover_s: float = 30.0) -> None:
        given = server or os.environ.get("NEOCLOUD_SERVER") or DEFAULT_SERVER
        urls = given.split(",") if isinstance(given, str) else list(given)
        self.servers = [u.strip().rstrip("/") for u in urls if u.strip()] or [DEFAULT_SERVER]
        for url in self.servers:
            if not url.startswith(("http://", "https://")):
                raise NeocloudError(f"server {url!r}: give its URL, e.g. {DEFAULT_SERVER}")
        self.server = self.servers[0]
        self.failover_s = failover_s
        token = token or os.environ.get("NEOCLOUD_TOKEN") or _local_admin_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)  # at the last to answer

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        several = len(self.servers) > 1
        deadline = time.monotonic() + (self.failover_s if several else 0.0)
        at = self.servers.index(self.server)
        for tried in itertools.count(1):
            server = self.servers[at % len(self.servers)]
            try:
                r = self.http.request(method, server + path, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # never reached it: safe to send elsewhere
                failure: NeocloudError = NeocloudError(
                    f"cannot reach the neocloud server at {server} ({e}); is `neocloud up` running, and is "
                    "--server (or NEOCLOUD_SERVER) right?")
            except httpx.TransportError as e:
                if method != "GET":
                    raise NeocloudError(f"the connection to {server} broke before its answer ({e}): the request "
                                        "may or may not have been done; look before sending it again") from None
                failure = NeocloudError(f"the connection to {server} broke ({e})")
            else:
                if r.status_code == 503 and several:  # a standby, or a store failing: nothing was done
                    failure = ApiError(r.status_code, _message(r))
                else:
                    if server != self.server:
                        self.server = self.http.base_url = server
                    if r.status_code >= 400:
                        raise ApiError(r.status_code, _message(r))
                    return r.json() if r.content else None
            at += 1
            if tried % len(self.servers) == 0:  # each was tried once more
                if time.monotonic() >= deadline:
                    raise failure
                time.sleep(0.2)
        raise AssertionError("unreachable")

    # -- jobs -----------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Queue a job; a dry run answers when and where it would start, and queues nothing."""
        return self._call("POST", "/v1/jobs", json=spec, params={"dry_run": "true"} if dry_run else None)

    def upload_code(self, archive: bytes, tenant: str | None = None) -> str:
        """Upload a packed work directory (cli/workdir.py); its digest, for a spec's `code`."""
        out = self._call("POST", "/v1/code", content=archive, headers={"Content-Type": "application/gzip"},
                         params={"tenant": tenant} if tenant else None)
        return str(out["digest"])

    def jobs(self, state: str | None = None, tenant: str | None = None, limit: int = 100,
             array: int | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"state": state, "tenant": tenant, "limit": limit, "array": array}.items()
                  if v is not None}
        return self._call("GET", "/v1/jobs", params=params)

    def array_tasks(self, array: int) -> list[dict[str, Any]]:
        """Every task of an array, in index order (read a page of 1,000 at a time)."""
        tasks: list[dict[str, Any]] = []
        while True:
            params = {"array": array, "limit": 1000, **({"before": tasks[-1]["id"]} if tasks else {})}
            page = self._call("GET", "/v1/jobs", params=params)
            tasks += page
            if len(page) < 1000:
                return sorted(tasks, key=lambda t: t["array_index"])

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def metrics(self, job_id: int) -> dict[str, Any]:
        """The job's run in its tenant's MLflow experiment, with each metric's points."""
        return self._call("GET", f"/v1/jobs/{job_id}/metrics")

    # -- services -------------------------------------------------------------------------------
    def services(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/services", params={"tenant": tenant} if tenant else None)

    def service(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        return self._call("GET", f"/v1/services/{name}", params={"tenant": tenant} if tenant else None)

    def update_service(self, spec: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return self._call("PUT", f"/v1/services/{spec.get('name', '')}", json=spec,
                          params={"tenant": tenant} if tenant else None)

    def scale_service(self, name: str, replicas: int, tenant: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/v1/services/{name}/scale", json={"replicas": replicas},
                          params={"tenant": tenant} if tenant else None)

    def stop_service(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/services/{name}", params={"tenant": tenant} if tenant else None)

    def create_service_key(self, service: str = "*", label: str = "", expires_in: str | float | None = None,
                           tenant: str | None = None) -> dict[str, Any]:
        """A new key that calls the service ('*': any of the tenant's) at the gateway, and nothing
        else; its secret is in `token`, shown only this once."""
        body: dict[str, Any] = {"service": service, "label": label}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._call("POST", "/v1/service-keys", json=body, params={"tenant": tenant} if tenant else None)

    def service_keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/service-keys", params={"tenant": tenant} if tenant else None)

    def revoke_service_key(self, key_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/service-keys/{key_id}")

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/jobs/{job_id}/events")

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def logs(self, job_id: int, offset: int = 0, rank: int = 0, stream: str = "stdout",
             limit: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "rank": rank, "stream": stream}
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", f"/v1/jobs/{job_id}/logs", params=params)

    def follow(self, job_id: int, rank: int = 0, stream: str = "stdout", poll_s: float = 0.5) -> Iterator[str]:
        """The log as it grows, until the job has ended and all of it was read."""
        offset = 0
        while True:
            chunk = self.logs(job_id, offset, rank, stream)
            if chunk["text"]:
                yield chunk["text"]
            offset = chunk["next_offset"]
            if chunk["done"] and not chunk["text"]:
                return
            if not chunk["text"]:
                time.sleep(poll_s)

    def wait(self, job_id: int, states: tuple[str, ...] | None = None, timeout: float | None = 300.0,
             poll_s: float = 0.2, max_poll_s: float | None = None) -> dict[str, Any]:
        """The job once it is in one of `states`; by default once it has ended, in whichever end
        state (any but PENDING and RUNNING, so a state added later ends the wait too). The poll
        slows from `poll_s` to `max_poll_s` (default: it stays at `poll_s`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = poll_s
        while True:
            job = self.job(job_id)
            if job["state"] in states if states is not None else job["state"] not in ACTIVE:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise NeocloudError(f"job {job_id} still {job['state']} after {timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 1.5, max_poll_s or poll_s)

    def tail(self, job_id: int, rank: int = 0, stream: str = "stderr", lines: int = 20,
             window: int = 64 * 1024) -> str:
        """The last `lines` lines of a rank's log, read from near its end: its length is found by
        probing (a few tiny reads), so a long log is not read whole."""
        has = lambda at: bool(self.logs(job_id, at, rank, stream, limit=4)["text"])  # noqa: E731
        if not has(0):
            return ""
        lo, hi = 0, window  # the log reaches lo; find an hi it does not reach
        while has(hi):
            lo, hi = hi, hi * 4
        while hi - lo > window // 4:  # the end lies in [lo, hi): narrow it to a fraction of the window
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if has(mid) else (lo, mid)
        start = max(hi - window, 0)
        text, at = "", start
        while True:
            chunk = self.logs(job_id, at, rank, stream)
            text += chunk["text"]
            if chunk["next_offset"] == at:
                break
            at = chunk["next_offset"]
        kept = text.splitlines()
        if start > 0 and kept:
            kept = kept[1:]  # the first line was cut by the window
        return "\n".join(kept[-lines:])

    def queue(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/queue")

    # -- fleet and admin ------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/nodes")

    def node_action(self, name: str, action: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/v1/nodes/{name}/{action}", json={"reason": reason})

    def goodput(self, job_id: int | None = None, tenant: str | None = None) -> Any:
        if job_id is not None:
            return self._call("GET", f"/v1/jobs/{job_id}/goodput")
        return self._call("GET", "/v1/goodput", params={"tenant": tenant} if tenant else None)

    def node(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/nodes/{name}")

    def move_node(self, name: str, to: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/v1/nodes/{name}/move", json={"to": to, "reason": reason})

    def signal(self, name: str, signal: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/v1/nodes/{name}/signals", json=signal)

    def health_rules(self) -> list[dict[str, str]]:
        return self._call("GET", "/v1/health/rules")

    def tenants(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/tenants")

    def create_tenant(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/v1/tenants", json={"name": name})

    def create_token(self, tenant: str, label: str = "", expires_in: str | float | None = None) -> str:
        """A new token for the tenant (its secret, shown only this once)."""
        return self.issue_token(tenant, label, expires_in)["token"]

    def issue_token(self, tenant: str, label: str = "", expires_in: str | float | None = None) -> dict[str, Any]:
        """A new token for the tenant with its id and expiry; `expires_in` is seconds or '30d'-style."""
        body: dict[str, Any] = {"label": label}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._call("POST", f"/v1/tenants/{tenant}/tokens", json=body)

    def tokens(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """A tenant's tokens (admin), or else the caller's own; never their secrets."""
        return self._call("GET", f"/v1/tenants/{tenant}/tokens" if tenant else "/v1/tokens")

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/tokens/{token_id}")

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/audit", params={"limit": limit})

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")


def local_admin_token_path(directory: str | Path | None = None) -> Path:
    """Where a server on this machine keeps its admin token (in `directory`, else NEOCLOUD_DATA_DIR,
    else ~/.neocloud)."""
    return data_dir(directory) / "admin.token"


def _local_admin_token() -> str | None:
    path = local_admin_token_path()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _message(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail")
    except ValueError:
        return r.text[:500] or r.reason_phrase
    if isinstance(detail, list):  # FastAPI's validation errors: name each bad field
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: "
                         f"{str(d.get('msg')).removeprefix('Value error, ')}" for d in detail)
    return str(detail)
