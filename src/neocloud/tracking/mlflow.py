"""MLflow's REST API, the few calls neocloud makes itself: a tenant's experiment, a job's run, what
neocloud knows of it, and its metrics for the dashboard.

Over httpx rather than MLflow's own client: the server needs five calls, not MLflow's dependencies,
and reaches an embedded tracking server through its private socket."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from neocloud.errors import NeocloudError

TIMEOUT_S = 10.0
HISTORY = 2000  # points of one metric the dashboard draws at most


class TrackingError(NeocloudError):
    """The tracking server failed or refused a call."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the tracking server is: a URL, reached through a Unix socket where one is given."""

    url: str
    socket: str | None = None

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=self.socket) if self.socket else None
        return httpx.Client(base_url=self.url, transport=transport, timeout=TIMEOUT_S)

    def async_client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=self.socket) if self.socket else None
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=httpx.Timeout(TIMEOUT_S, read=300))


def experiment_name(tenant: str) -> str:
    return f"neocloud/{tenant}"


class MLflow:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._http = upstream.client()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = self._http.request(method, f"api/2.0/mlflow/{endpoint}", **kwargs)
        except httpx.HTTPError as e:
            raise TrackingError(f"the tracking server at {self.upstream.url} did not answer ({e})") from None
        if r.status_code != 200:
            raise TrackingError(f"the tracking server refused {endpoint} ({r.status_code}: {r.text[:300]})",
                                ) from None
        answer: dict[str, Any] = r.json()
        return answer

    def experiment(self, tenant: str) -> str:
        """The id of the tenant's experiment, made at its first job."""
        name = experiment_name(tenant)
        try:
            return str(self.call("GET", "experiments/get-by-name", params={"experiment_name": name})
                       ["experiment"]["experiment_id"])
        except TrackingError as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e):
                raise
        try:
            return str(self.call("POST", "experiments/create", json={"name": name})["experiment_id"])
        except TrackingError as e:  # made meanwhile by another server
            if "RESOURCE_ALREADY_EXISTS" not in str(e):
                raise
            return self.experiment(tenant)

    def create_run(self, experiment: str, name: str, tags: dict[str, str], params: dict[str, str]) -> str:
        run = self.call("POST", "runs/create", json={
            "experiment_id": experiment, "run_name": name, "start_time": _ms(),
            "tags": [{"key": k, "value": v} for k, v in tags.items()]})["run"]["info"]["run_id"]
        if params:
            self.log(run, params=params)
        return str(run)

    def log(self, run: str, *, metrics: dict[str, float] | None = None, params: dict[str, str] | None = None,
            tags: dict[str, str] | None = None, step: int = 0) -> None:
        at = _ms()
        self.call("POST", "runs/log-batch", json={
            "run_id": run,
            "metrics": [{"key": k, "value": v, "timestamp": at, "step": step} for k, v in (metrics or {}).items()],
            "params": [{"key": k, "value": v} for k, v in (params or {}).items()],
            "tags": [{"key": k, "value": v[:5000]} for k, v in (tags or {}).items()]})

    def end(self, run: str, status: str) -> None:
        self.call("POST", "runs/update", json={"run_id": run, "status": status, "end_time": _ms()})

    def run(self, run: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", "runs/get", params={"run_id": run})["run"]
        return found

    def history(self, run: str, key: str) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = self.call("GET", "metrics/get-history", params={
            "run_id": run, "metric_key": key, "max_results": HISTORY}).get("metrics", [])
        return points


def _ms() -> int:
    return int(time.time() * 1000)
