"""A service as a tenant writes it (`kind: service`, beside jobs) and as the API shows it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from neocloud.api.schemas import Input, JobSpec, seconds

MAX_REPLICAS = 1000
PATH = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,254}$"
NOT_FOR_SERVICES = {"array": "a job array", "time_limit": "a time limit",
                    "checkpoint_interval": "checkpoints"}


class Autoscale(Input):
    """Replicas from the load: as many as keep each near `target`, between `min` and `max`."""

    min: int = Field(default=1, ge=0, le=MAX_REPLICAS, description="0: none while idle; the first request "
                                                                    "waits for one to start.")
    max: int = Field(ge=1, le=MAX_REPLICAS)
    target: float = Field(gt=0, le=1e6, description="Per replica: requests in flight, or requests per second.")
    metric: Literal["in_flight", "rps"] = "in_flight"
    cooldown: float = Field(default=30.0, description="Seconds, or '2m': replicas go only once the load has "
                                                      "called for fewer that long (to zero, if min is 0).")

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, v: Any) -> float | None:
        return seconds(v)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscale:
        if self.min > self.max:
            raise ValueError(f"autoscale: min ({self.min}) is above max ({self.max})")
        return self


class Readiness(Input):
    path: str = Field(default="/health", max_length=255,
                      description="Asked by GET until it answers 2xx or 3xx: only then does the replica get requests.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.fullmatch(PATH, v):
            raise ValueError("a URL path beginning with '/' (letters, digits and URL punctuation), e.g. /health")
        return v


class ServiceSpec(JobSpec):
    """A long-running service: replicas of one spec behind the gateway, each listening on $PORT."""

    kind: Literal["service"]  # type: ignore[assignment]  # the one value a ServiceSpec has
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS, description="How many, if not autoscaled.")
    autoscale: Autoscale | None = None
    readiness: Readiness = Field(default_factory=Readiness)
    model: str | None = Field(default=None, max_length=255, description="The model it serves, for its users.")

    @model_validator(mode="before")
    @classmethod
    def _service_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, what in NOT_FOR_SERVICES.items():
                if data.get(key) not in (None, [], ()):
                    raise ValueError(f"{key}: a service runs until stopped, so it takes no {what}; "
                                     "submit a job (no `kind: service`) for that")
            if "replicas" in data and data.get("autoscale") is not None:
                raise ValueError("give replicas or autoscale, not both")
            if data.get("priority") == "spot":
                raise ValueError("priority: a service is never spot, which any job may preempt: leave priority "
                                 "out (on-demand, or reserved within your contract)")
            for name in ("HOST", "PORT"):
                if name in (data.get("env") or {}):
                    raise ValueError(f"environment variable {name} may not be set by a service spec: neocloud gives "
                                     "each replica the address to listen on in HOST and PORT")
        return data

    @model_validator(mode="after")
    def _one_node(self) -> ServiceSpec:
        if self.gpus_per_node is not None and self.gpus_per_node != self.gpus:
            raise ValueError("a replica runs on one node: leave gpus_per_node out, or make it equal to gpus")
        return self


class ReplicaOut(BaseModel):
    job: int = Field(description="The replica's job: its logs, events and bill are the job's.")
    state: str
    generation: int
    ready: bool
    draining: bool
    in_flight: int
    address: str | None = Field(description="host:port where it listens, while it runs.")
    node: str | None
    problem: str | None = Field(default=None, description="Why it is not probed: what keeps it out of rotation.")


class ServiceOut(BaseModel):
    name: str
    tenant: str
    state: Literal["RUNNING", "STOPPED"]
    generation: int = Field(description="Of its spec: one more at each update, to which the replicas roll.")
    replicas: int = Field(description="Wanted now.")
    ready: int = Field(description="Replicas answering their readiness probe.")
    endpoint: str = Field(description="Its gateway path: every request under it goes to a ready replica.")
    model: str | None
    spec: dict[str, Any]
    created_at: float
    updated_at: float
    replica_list: list[ReplicaOut]


class ScaleIn(Input):
    replicas: int = Field(ge=0, le=MAX_REPLICAS)
