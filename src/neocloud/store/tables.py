"""What the control plane keeps: tenants, tokens, jobs and their events, nodes and their health,
contracts, prices and usage, the audit log.

Times are seconds since the epoch (floats), as the core counts them; the API renders them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class Token(Base):
    """A tenant's API token or service key, kept only as its SHA-256 digest; it may expire, and be revoked."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: never
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # A service key: the gateway takes it for this service of its tenant ('*': any), the API never.
    service: Mapped[str | None] = mapped_column(String(63), nullable=True)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[str] = mapped_column(String(16))
    gpus: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    run_s: Mapped[float] = mapped_column(Float, default=0.0)  # wall seconds run in earlier attempts
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    placement: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)  # [{node, gpus}]
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)  # attempts ended by a node's failure
    # Measured goodput losses (model/goodput.py): first_start, detection_s, recomputation_s, queueing_s,
    # and failed_at while the job waits to run again after a failure.
    ledger: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    usage_class: Mapped[str] = mapped_column(String(16), default="")  # how the running attempt is billed
    array_job: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # its array's id (first task)
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)  # told to stop at its time limit
    # A service's replica: its service, the generation of the service's spec it runs, and where it
    # listens (the node's address and the port given to it in $PORT) while it runs.
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True, index=True)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tracking_run: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its MLflow run, every attempt's


class ServiceRow(Base):
    """A long-running service: its spec (a replica's job spec, and how many replicas), the
    generation of that spec (one more at each update, which rolls the replicas), and its state."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    replicas: Mapped[int] = mapped_column(Integer, default=1)  # wanted now (the autoscaler's, or the spec's)
    state: Mapped[str] = mapped_column(String(16), default="RUNNING")  # RUNNING or STOPPED
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")


class NodeRow(Base):
    """A node's stage in its life and whether it is a hot spare; the node itself comes from the fleet."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), default="production")
    spare: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[float] = mapped_column(Float)


class NodeEvent(Base):
    """One move of a node from stage to stage, with its reason."""

    __tablename__ = "node_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(255), index=True)
    at: Mapped[float] = mapped_column(Float)
    from_stage: Mapped[str] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")


class HealthSignal(Base):
    """A health signal about a node as it came in, and the rule and action it set off."""

    __tablename__ = "health_signals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(255), index=True)
    at: Mapped[float] = mapped_column(Float)  # when the control plane got it
    observed_at: Mapped[float] = mapped_column(Float)  # when the agent saw it
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    rule: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(16))


class ContractRow(Base):
    """One version of a contract. An amendment or an early end adds a version valid from its time;
    the one before keeps its terms and is closed then, so nothing is overwritten."""

    __tablename__ = "contracts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # of this version
    contract: Mapped[int] = mapped_column(Integer, index=True)  # the contract's number, shared by its versions
    version: Mapped[int] = mapped_column(Integer)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    gpu_type: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[float] = mapped_column(Float)
    end_at: Mapped[float] = mapped_column(Float)
    price: Mapped[Decimal] = mapped_column(Numeric(14, 4))  # per GPU-hour
    take_or_pay: Mapped[bool] = mapped_column(Boolean, default=True)
    site: Mapped[str | None] = mapped_column(String(255), nullable=True)
    fabric: Mapped[str | None] = mapped_column(String(255), nullable=True)
    valid_from: Mapped[float] = mapped_column(Float)
    valid_to: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the current version
    note: Mapped[str] = mapped_column(Text, default="")


class PriceRow(Base):
    """A price from a time on (older prices stay for old usage): per GPU-hour of a GPU type, on
    demand, spot or serving (a service's replicas); or per million tokens of a model (its name, or
    '*' for any), prompt or completion."""

    __tablename__ = "prices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(64))
    usage_class: Mapped[str] = mapped_column(String(16))  # on-demand, spot, service; prompt-tokens, completion-tokens
    price: Mapped[Decimal] = mapped_column(Numeric(14, 4))  # per GPU-hour, or per million tokens
    since: Mapped[float] = mapped_column(Float)


class ServiceUsageRow(Base):
    """What a service's gateway answered in one hour: requests, and tokens of OpenAI-compatible answers."""

    __tablename__ = "service_usage"
    __table_args__ = (UniqueConstraint("tenant", "service", "model", "hour"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    service: Mapped[str] = mapped_column(String(63))
    model: Mapped[str] = mapped_column(String(255))  # the spec's model, else the service's name
    hour: Mapped[float] = mapped_column(Float)  # its start
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageRow(Base):
    """One attempt's GPU-time, written in the same transaction that ends it: once, and kept."""

    __tablename__ = "usage"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    usage_class: Mapped[str] = mapped_column(String(16))  # reserved, on-demand or spot
    gpu_type: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(255))
    gpus: Mapped[float] = mapped_column(Float)
    start_at: Mapped[float] = mapped_column(Float, index=True)
    end_at: Mapped[float] = mapped_column(Float, index=True)


class CreditRow(Base):
    """GPU-hours a guarantee lost to a node failure under one of its jobs: owed back as an SLA credit."""

    __tablename__ = "credits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    job_id: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float, index=True)
    gpu_type: Mapped[str] = mapped_column(String(64))
    gpu_hours: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    reason: Mapped[str] = mapped_column(Text, default="")


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(63))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    client: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")


class Leadership(Base):
    """Which server leads (one row): the epoch grows at each takeover, and every turn of the leader's
    control loop checks it is still its own, so a server that lost the lead writes nothing more."""

    __tablename__ = "leadership"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    holder: Mapped[str] = mapped_column(String(255), default="")  # host and pid
    url: Mapped[str] = mapped_column(String(255), default="")  # where it serves
    since: Mapped[float] = mapped_column(Float, default=0.0)
