"""What goes over the wire. `JobSpec` is the one job schema, for the CLI's files and the API."""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from neocloud.fleet.schema import known_gpu
from neocloud.model.job import PriorityClass
from neocloud.sched.arrays import MAX_TASKS, parse_array

NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
GpuType = Annotated[str, Field(max_length=64), AfterValidator(known_gpu)]  # a catalog model, by its own name
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', beginning and ending with a letter or digit"
# An OCI image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path components.
IMAGE = (r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
         r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
MAX_GPUS = 1_000_000
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold a NUL character
MAX_ID = 2**31 - 1  # ids and offsets the store's integer columns can hold
RESERVED_ENV = {"CUDA_VISIBLE_DEVICES": "neocloud sets it to the job's GPUs",
                "NVIDIA_VISIBLE_DEVICES": "neocloud sets it to the job's GPUs",
                "MASTER_ADDR": "neocloud sets it for the gang's launcher",
                "MASTER_PORT": "neocloud sets it for the gang's launcher"}
RESERVED_PREFIXES = {"NEOCLOUD_": "neocloud's own variables are set by neocloud",
                     "LD_": "the dynamic loader would act on it before the sandbox drops privileges; "
                            "set it in the command instead"}


def seconds(value: Any) -> float | None:
    """A duration as seconds: a number of seconds, or a string such as '90s', '30m', '2h', '1.5d'."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30m' or '2h'")
    if isinstance(value, int | float):
        s = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        s = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"{excerpt(value)} is not a duration: give seconds, or a string like '30m' or '2h'")
    if not 0 < s <= 10 * 365 * 86400:
        raise ValueError("a duration must be above 0 and at most 10 years")
    return s


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|[KMGT]i?B?)\s*$", re.IGNORECASE)
_MIB = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
MAX_MEMORY_MIB = 64 << 20  # 64 TiB per node


def mebibytes(value: Any) -> int | None:
    """A size as MiB: a number of MiB, or a string such as '512Mi', '64Gi', '64G' or '2TiB'."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("memory is a number of MiB or a string like '64Gi'")
    if isinstance(value, int | float) and value == value:
        mib = float(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        mib = float(m.group(1)) * _MIB[m.group(2)[:1].lower()]
    else:
        raise ValueError(f"{str(value)[:40]!r} is not a size: give MiB, or a string like '512Mi' or '64Gi'")
    if not 1 <= mib <= MAX_MEMORY_MIB:
        raise ValueError("memory must be at least 1 MiB and at most 64 TiB")
    return int(mib)


def name(value: str) -> str:
    if not re.fullmatch(NAME, value):
        raise ValueError(f"{excerpt(value)} is not a valid name: use {NAME_RULE}")
    return value


def excerpt(value: Any, limit: int = 60) -> str:
    """`repr` of a value, cut short: error messages quote what was sent, never all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def plain(value: Any, where: str = "") -> Any:
    """The value, if every string in it is valid Unicode and every number in it is finite.

    JSON lets a client send lone surrogates ("\\ud800") and NaN or Infinity; neither can be stored
    (PostgreSQL refuses both) nor sent back as JSON, so they are refused at the door."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"{where or 'text'} holds U+{ord(value[e.start]):04X}, a lone surrogate at "
                                 f"character {e.start}: text must be valid Unicode") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or 'a number'} is {value}: numbers must be finite")
    elif isinstance(value, dict):
        for k, v in value.items():
            plain(k, f"{where}[key {excerpt(k)}]" if where else f"key {excerpt(k)}")
            plain(v, f"{where}[{excerpt(k)}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            plain(v, f"{where}[{i}]")
    return value


def reserved_env(key: str) -> str | None:
    """Why a job spec may not set this environment variable, if it may not (any case: NEOCLOUD_X
    and neocloud_x are both refused)."""
    upper = key.upper()
    if upper in RESERVED_ENV:
        return RESERVED_ENV[upper]
    return next((why for prefix, why in RESERVED_PREFIXES.items() if upper.startswith(prefix)), None)


class Input(BaseModel):
    """A request body: unknown fields, numbers that are not finite and text that is not Unicode
    are refused, each naming its field."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _plain(cls, v: Any, info: ValidationInfo) -> Any:
        return plain(v, info.field_name or "")


Duration = Annotated[float | None, Field(default=None, description="Seconds, or '90s', '30m', '2h', '1d'.")]


class DependencyIn(Input):
    """Start only after job `job` ends as `when` says (Slurm's --dependency); an array's id waits for all
    its tasks."""

    job: int = Field(ge=1, le=MAX_ID)
    when: Literal["afterok", "afterany", "afternotok"] = Field(
        default="afterok", description="afterok: once it completed; afterany: once it ended; afternotok: once it "
                                       "failed, was cancelled or timed out.")


class JobSpec(Input):
    """A job as a tenant writes it (YAML or JSON)."""

    kind: Literal["job"] = Field(default="job", description="'job' (the default) or 'service' (a ServiceSpec).")
    name: str = Field(description=NAME_RULE)
    command: str | list[str] = Field(description="A shell command line, or an argv list.")
    gpus: float = Field(default=1, ge=0, le=MAX_GPUS, description="Whole GPUs, or a fraction of one (< 1).")
    gpus_per_node: int | None = Field(default=None, ge=1, le=1024)
    gpu_type: GpuType | None = Field(default=None, description="A catalog GPU model; any if unset.")
    priority: PriorityClass = PriorityClass.ON_DEMAND
    estimated_duration: Duration = None
    time_limit: Duration = Field(default=None, description="Seconds, '30m', '2h': the job is stopped once it has run "
                                                           "this long (all attempts together) and ends TIMEOUT; "
                                                           "the scheduler's estimate when none is given.")
    array: int | str | None = Field(default=None, description=f"A job array: a number of tasks (0..N-1), or Slurm's "
                                                              "'0-15', '1,3,5-7', '0-20:5', with '%K' to run at most K "
                                                              f"at once; at most {MAX_TASKS} tasks.")
    depends_on: list[DependencyIn] = Field(default_factory=list, max_length=64,
                                           description="Jobs to wait for: ids (afterok) or {job, when}.")
    checkpoint_interval: float | Literal["auto"] | None = Field(
        default=None, description="Seconds, '30m', ..., or 'auto': Daly's interval from the fleet's failure rate "
                                  "and the job's checkpoint_cost and restart_cost (given as NEOCLOUD_CHECKPOINT_INTERVAL).")
    checkpoint_cost: Duration = None  # seconds one checkpoint save blocks training, for goodput accounting
    restart_cost: Duration = None  # seconds from a restart to training again, for goodput accounting
    max_restarts: int = Field(default=3, ge=0, le=100,
                              description="Restarts from checkpoint after node failures before the job fails.")
    cpus: float | None = Field(default=None, ge=0.001, le=4096,
                               description="CPUs per node, e.g. 8 or 0.5: counted by the scheduler, enforced as a quota.")
    memory: int | None = Field(default=None, description="Memory per node: MiB, or '512Mi', '64Gi', '64G': "
                                                        "counted by the scheduler; the rank is killed above it.")
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    image: str | None = Field(default=None, max_length=255, pattern=IMAGE,
                              description="An OCI image each rank runs in (podman on the local backend, runc on Slurm), as "
                                          "'localhost/train:1' or 'ghcr.io/org/img@sha256:...'; the node's own system "
                                          "if unset. It must be on the node already: no registry is pulled from.")
    code: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$",
                             description="The job's code: the digest POST /v1/code answered (`neocloud submit` "
                                         "uploads a spec's workdir and sets it). Each rank starts in its own copy.")
    workdir: str | None = Field(default=None, description="For `neocloud submit` only, which packs and uploads it.")
    tenant: str | None = Field(default=None, description="Admin only: submit for this tenant.")

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str | None) -> None:
        if v is not None:
            raise ValueError("workdir is a directory on the submitter's machine: `neocloud submit` packs and "
                             "uploads it; over the API, upload it to POST /v1/code and send its digest as `code`")
        return None

    @field_validator("name", "tenant")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return v if v is None else name(v)

    @field_validator("array", mode="before")
    @classmethod
    def _array(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("array is a number of tasks or a string like '0-15%4' or '1,3,5-7'")
        if isinstance(v, int | str):
            parse_array(v)
        return v

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"job": d} if isinstance(d, int) and not isinstance(d, bool) else d for d in v]
        return v

    @field_validator("estimated_duration", "time_limit", "checkpoint_interval", "checkpoint_cost", "restart_cost",
                     mode="before")
    @classmethod
    def _duration(cls, v: Any, info: ValidationInfo) -> float | str | None:
        return v if info.field_name == "checkpoint_interval" and v == "auto" else seconds(v)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int | None:
        return mebibytes(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | list[str]) -> str | list[str]:
        parts = [v] if isinstance(v, str) else v
        if not parts or not parts[0].strip():
            raise ValueError("command must not be empty")
        if sum(len(p) for p in parts) > 65_536:
            raise ValueError("command must be at most 64 KiB")
        if any("\x00" in p for p in parts):
            raise ValueError("command must not contain NUL characters")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"environment variable name {excerpt(key)} must match [A-Za-z_][A-Za-z0-9_]*")
            if why := reserved_env(key):
                raise ValueError(f"environment variable {key} may not be set by a job spec: {why}")
            if "\x00" in value or len(value) > 32_768:
                raise ValueError(f"environment variable {key!r}: value has a NUL or is over 32 KiB")
        return v

    @model_validator(mode="after")
    def _shape(self) -> JobSpec:
        if self.gpus >= 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus: {self.gpus:g} is neither whole GPUs nor a fraction of one below 1")
        if self.gpus_per_node and self.gpus < 1:
            raise ValueError("gpus_per_node needs gpus of at least 1")
        if self.gpus_per_node and int(self.gpus) % self.gpus_per_node:
            raise ValueError(f"gpus ({self.gpus:g}) must be a multiple of gpus_per_node ({self.gpus_per_node})")
        return self


EXPECTED_START = ("When a pending job is expected to start (seconds since the epoch), by the production scheduler "
                  "run forward from the live state with running jobs ending at their estimates; null when not yet "
                  "forecast or not within 30 days.")
EXPECTED_END = "When the job is expected to end by its estimate (seconds since the epoch); null without an estimate."


class JobOut(BaseModel):
    id: int
    name: str
    tenant: str
    state: str
    priority: str
    gpus: float
    command: str | list[str]
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    attempts: int
    placement: list[dict[str, Any]] | None
    exit_code: int | None
    reason: str
    cancel_requested: bool
    spec: dict[str, Any]
    expected_start: float | None = Field(None, description=EXPECTED_START)
    expected_end: float | None = Field(None, description=EXPECTED_END)
    array_job: int | None = Field(None, description="The array this job is a task of (its first task's id).")
    array_index: int | None = Field(None, description="This task's index in its array (NEOCLOUD_ARRAY_INDEX).")


class DryRunOut(BaseModel):
    """What a submit would get, by the live forecast; nothing is queued."""

    name: str
    tenant: str
    gpus: float
    expected_start: float | None = Field(description=EXPECTED_START)
    expected_end: float | None = Field(description=EXPECTED_END)
    placement: list[dict[str, Any]] | None = Field(description="The nodes and GPUs it would start on.")
    reason: str = Field(description="Why it would not start at once, or why no start is in view.")
    array_tasks: int | None = Field(default=None, description="An array's task count: the forecast above is "
                                                              "of its first task.")


class GoodputOut(BaseModel):
    allocated_gpu_s: float
    productive_gpu_s: float
    lost_gpu_s: dict[str, float] = Field(description="detection, restart, recomputation, checkpoint writes")
    queueing_after_failure_s: float = Field(description="Wall seconds waiting to run again after failures.")
    wall_s: float
    ettr: float | None = Field(description="Productive time over wall time since the first start.")


class JobGoodput(GoodputOut):
    job_id: int
    tenant: str
    interruptions: int


class TenantGoodput(BaseModel):
    tenant: str
    jobs: int
    interruptions: int
    allocated_gpu_s: float
    productive_gpu_s: float
    lost_gpu_s: dict[str, float]
    goodput: float | None = Field(description="Productive over allocated GPU-time.")


class EventOut(BaseModel):
    id: int = Field(description="Ask for the events `after` it to follow a job's events.")
    at: float
    kind: str
    message: str


class LogsOut(BaseModel):
    job_id: int
    rank: int
    stream: str
    offset: int = Field(description="Byte offset of `text` in the log file.")
    next_offset: int = Field(description="Ask from here to follow the log.")
    text: str
    done: bool = Field(description="The job has ended: nothing more will come.")


class NodeOut(BaseModel):
    name: str
    gpu_type: str | None
    gpus: int
    gpus_free: int
    leaf: str
    fabric: str
    site: str
    state: str = Field(description="IDLE, MIXED, ALLOCATED, DRAINING, DRAINED, CORDONED, SPARE or OUT.")
    stage: str = Field(description="Lifecycle stage: onboarding, burn-in, production, cordoned, draining, triage, "
                                   "repair or rma.")
    spare: bool = Field(description="Held back as a hot spare for jobs whose nodes fail.")
    nvlink_domain: str | None = None
    reason: str
    jobs: list[int]


class NodeMoveOut(BaseModel):
    at: float
    from_stage: str
    to_stage: str
    reason: str


class SignalOut(BaseModel):
    at: float
    observed_at: float
    kind: str
    payload: dict[str, Any]
    rule: str
    action: str


class NodeDetail(NodeOut):
    history: list[NodeMoveOut]
    signals: list[SignalOut]


class NodeMove(Input):
    to: str = Field(description="onboarding, burn-in, production, cordoned, draining, triage, repair or rma.",
                    max_length=16)
    reason: str = Field(default="", max_length=1024, pattern=NO_NUL)


class _Signal(Input):
    observed_at: float | None = Field(default=None, ge=0, le=2**40,
                                      description="When the agent saw it (seconds since the epoch); now if unset.")


class XidSignal(_Signal):
    kind: Literal["xid"]
    code: int = Field(ge=1, le=65535, description="The XID the driver logged, e.g. 79: fallen off the bus.")
    gpu: int | None = Field(default=None, ge=0, le=1023)
    message: str = Field(default="", max_length=4096, pattern=NO_NUL)


class EccSignal(_Signal):
    kind: Literal["ecc"]
    correctable: int = Field(default=0, ge=0, le=2**40)
    uncorrectable: int = Field(default=0, ge=0, le=2**40)
    gpu: int | None = Field(default=None, ge=0, le=1023)


class ThermalSignal(_Signal):
    kind: Literal["thermal"]
    temperature_c: float = Field(ge=-50, le=250)
    slowdown: bool = Field(default=False, description="The GPU throttles for heat.")
    gpu: int | None = Field(default=None, ge=0, le=1023)


class LinkFlapSignal(_Signal):
    kind: Literal["link_flap"]
    link: str = Field(max_length=255, pattern=NO_NUL, description="The port, e.g. mlx5_0/1.")
    flaps: int = Field(ge=1, le=2**31 - 1, description="Flaps seen since the last report.")


class StallSignal(_Signal):
    kind: Literal["stall"]
    for_s: float = Field(ge=0, le=10 * 365 * 86400, description="Seconds the GPUs have been busy without power.")
    gpu: int | None = Field(default=None, ge=0, le=1023)


class ActiveCheckSignal(_Signal):
    kind: Literal["active_check"]
    passed: bool
    report: dict[str, Any] = Field(default_factory=dict, description="`neocloud node check --json`'s report.")


Signal = Annotated[XidSignal | EccSignal | ThermalSignal | LinkFlapSignal | StallSignal | ActiveCheckSignal,
                   Field(discriminator="kind")]


class SignalResult(BaseModel):
    node: str
    rule: str
    action: str
    stage: str
    interrupted: list[int] = Field(description="Jobs stopped and requeued because of it.")


class QueueEntry(BaseModel):
    position: int
    id: int
    name: str
    tenant: str
    priority: str
    gpus: float
    waiting_s: float
    reason: str = ""  # why it waits: quota, capacity, topology, shape, reservation, held
    expected_start: float | None = Field(None, description=EXPECTED_START)


class TenantIn(Input):
    name: str = Field(description=NAME_RULE)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return name(v)


class TenantOut(BaseModel):
    name: str
    created_at: float
    tokens: int
    jobs_active: int


class TokenIn(Input):
    label: str = Field(default="", max_length=63, pattern=NO_NUL)
    expires_in: Duration = Field(default=None, description="Seconds, or '90s', '30m', '2h', '30d': the token "
                                                           "stops working then. Never, if unset.")

    _expires = field_validator("expires_in", mode="before")(classmethod(lambda cls, v: seconds(v)))


class ServiceKeyIn(TokenIn):
    service: str = Field(default="*", max_length=63, pattern=rf"^(\*|{NAME[1:-1]})$",
                         description="The service it calls, or '*' for any of the tenant's.")


class TokenOut(BaseModel):
    id: int
    tenant: str
    label: str
    expires_at: float | None = Field(description="When it stops working (seconds since the epoch); never if null.")
    token: str = Field(description="Shown once; the server keeps only its digest.")
    service: str | None = Field(default=None, description="A service key's service ('*': any of its tenant's).")


class TokenInfo(BaseModel):
    """A token as listed: never its secret."""

    id: int
    tenant: str
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    state: Literal["active", "expired", "revoked"]
    service: str | None = Field(default=None, description="A service key's service ('*': any of its tenant's).")


class NodeAction(Input):
    reason: str = Field(default="", max_length=1024, pattern=NO_NUL)


class AuditOut(BaseModel):
    id: int
    at: float
    actor: str
    method: str
    path: str
    client: str
    status: int
    detail: str


# -- billing --------------------------------------------------------------------------------------
Money = Annotated[Decimal, Field(ge=0, le=Decimal("1e9"), max_digits=14, decimal_places=4,
                                 description="US dollars per GPU-hour, to four decimals.")]
Time = Annotated[float, Field(ge=0, le=2**40, description="Seconds since the epoch (UTC).")]


def _instant(v: Any) -> Any:
    """Seconds since the epoch, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):  # as YAML reads a bare date
        v = dt.datetime(v.year, v.month, v.day)
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(v, str) and not v.replace(".", "", 1).isdigit():
        try:
            d = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{excerpt(v)} is not a time: give seconds since the epoch or an ISO date such as "
                             "2027-01-01 or 2027-01-01T00:00:00Z") from None
        return (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp()
    return v


class ContractIn(Input):
    tenant: str = Field(max_length=63, description=NAME_RULE)
    gpu_type: GpuType = Field(description="A catalog GPU model.")
    gpus: int = Field(ge=1, le=MAX_GPUS, description="GPUs reserved for the whole term.")
    start: Time
    end: Time
    price_per_gpu_hour: Money
    take_or_pay: bool = Field(default=True, description="The commitment is billed whether used or not.")
    site: str | None = Field(default=None, max_length=255, pattern=NO_NUL)
    fabric: str | None = Field(default=None, max_length=255, pattern=NO_NUL)
    note: str = Field(default="", max_length=1024, pattern=NO_NUL)

    _tenant = field_validator("tenant")(classmethod(lambda cls, v: name(v)))
    _times = field_validator("start", "end", mode="before")(classmethod(lambda cls, v: _instant(v)))

    @model_validator(mode="after")
    def _term(self) -> ContractIn:
        if self.end <= self.start:
            raise ValueError("a contract must end after it starts")
        return self


class ContractAmend(Input):
    gpus: int | None = Field(default=None, ge=1, le=MAX_GPUS)
    end: Time | None = None
    price_per_gpu_hour: Money | None = None
    note: str = Field(default="", max_length=1024, pattern=NO_NUL)

    _times = field_validator("end", mode="before")(classmethod(lambda cls, v: _instant(v)))


class ContractEnd(Input):
    at: Time | None = Field(default=None, description="When it ends (default: now).")
    note: str = Field(default="", max_length=1024, pattern=NO_NUL)

    _times = field_validator("at", mode="before")(classmethod(lambda cls, v: _instant(v)))


class ContractOut(BaseModel):
    contract: int
    version: int
    tenant: str
    gpu_type: str
    gpus: int
    start: float
    end: float
    price_per_gpu_hour: Decimal
    take_or_pay: bool
    site: str | None
    fabric: str | None
    valid_from: float
    valid_to: float | None
    note: str
    warning: str | None = Field(default=None, description="Set when it breaks the concentration limit.")


class PriceIn(Input):
    gpu_type: GpuType
    usage_class: Literal["on-demand", "spot", "service"] = Field(
        description="service: a service's replicas (billed on demand where no service price is set).")
    price_per_gpu_hour: Money


class TokenPriceIn(Input):
    model: str = Field(default="*", min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$",
                       description="A service's model (its spec's `model`, else its name), or '*' for any.")
    kind: Literal["prompt", "completion"]
    price_per_million_tokens: Money



class MetricPoint(BaseModel):
    step: int
    value: float
    timestamp: float = Field(description="When it was logged, seconds since the epoch.")


class JobMetrics(BaseModel):
    """A job's run in its tenant's MLflow experiment: what the job and neocloud logged to it."""

    job_id: int
    run_id: str
    experiment_id: str
    status: str = Field(description="MLflow's: RUNNING, FINISHED, FAILED or KILLED.")
    url: str | None = Field(description="The run in the tracking server's own UI, where it has one to link to.")
    tags: dict[str, str]
    metrics: dict[str, list[MetricPoint]] = Field(description="Each metric's points, by step (the job's own "
                                                              "first; neocloud's, `neocloud.*`, by attempt).")
