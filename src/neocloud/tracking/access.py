"""Which MLflow calls a tenant may make through neocloud, and what each must be checked against.

MLflow's own server has no tenants: every run is anyone's who reaches it. neocloud keeps it where
only the server reaches it (a socket in its data directory) and passes on, to each tenant, only
the calls in this allowlist, whose runs and experiments are the tenant's own; everything else is
refused saying so. A request is read here once, and what is passed on is what was read (the body
re-serialised, the query re-encoded), so no second reading upstream can differ from this one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

PREFIXES = ("api/2.0/mlflow/", "ajax-api/2.0/mlflow/")  # the REST API, and the same as MLflow's UI calls it
ARTIFACTS = ("api/2.0/mlflow-artifacts/artifacts", "ajax-api/2.0/mlflow-artifacts/artifacts")
RUN_IDS = ("run_id", "run_uuid")  # MLflow's clients send both; the server takes either
# Calls about one run, which must be in the tenant's experiment: (method, endpoint)
ON_A_RUN = {
    ("GET", "runs/get"), ("POST", "runs/update"), ("POST", "runs/delete"), ("POST", "runs/restore"),
    ("POST", "runs/log-metric"), ("POST", "runs/log-parameter"), ("POST", "runs/log-batch"),
    ("POST", "runs/set-tag"), ("POST", "runs/delete-tag"), ("POST", "runs/log-inputs"),
    ("POST", "runs/log-outputs"), ("GET", "metrics/get-history"), ("GET", "artifacts/list"),
}
# Calls about experiments, by where they name them: (method, endpoint) -> (field, a list of ids?)
ON_EXPERIMENTS = {
    ("GET", "experiments/get"): ("experiment_id", False),
    ("POST", "runs/create"): ("experiment_id", False),
    ("POST", "runs/search"): ("experiment_ids", True),
    ("POST", "logged-models/search"): ("experiment_ids", True),
}
BY_NAME = ("GET", "experiments/get-by-name")
HARMLESS = {("GET", "api/3.0/mlflow/server-info")}  # what the client asks of any server: no one's data


class Denied(Exception):
    """A call neocloud does not pass on: `code` is MLflow's own error code, so its client says why."""

    def __init__(self, message: str, code: str = "PERMISSION_DENIED", status: int = 403) -> None:
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(frozen=True, slots=True)
class Call:
    """A call to pass on, once its runs, experiments and experiment names are found to be the tenant's."""

    path: str
    query: str
    body: bytes | None  # None: the request's own body, passed on as it comes (an artifact's bytes)
    runs: frozenset[str] = frozenset()
    experiments: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()


def read(method: str, path: str, query: str, body: bytes) -> Call:
    """The call a tenant's request makes, to be checked before it goes on; Denied if none may."""
    method = method.upper()
    pairs = parse_qsl(query, keep_blank_values=True)
    again = urlencode(pairs)
    if (method, path) in HARMLESS:
        return Call(path, again, b"")
    artifact = next((a for a in ARTIFACTS if path == a or path.startswith(a + "/")), None)
    if artifact is not None:
        return _artifact(method, path, artifact, pairs, again)
    prefix = next((p for p in PREFIXES if path.startswith(p)), None)
    endpoint = path[len(prefix):] if prefix else ""
    key = (method, endpoint)
    if key == BY_NAME:
        return Call(path, again, b"", names=frozenset(_values(pairs, "experiment_name", required=True)))
    if key not in ON_A_RUN and key not in ON_EXPERIMENTS:
        raise Denied(f"neocloud's tracking passes on a tenant's runs, metrics, parameters, tags and artifacts in "
                     f"its own experiment; not {method} {path[:200]}")
    fields = dict(pairs) if method == "GET" else _json(body)
    if method == "GET" and len(pairs) != len(fields):
        raise Denied("a query parameter is given twice", "INVALID_PARAMETER_VALUE", 400)
    sent = b"" if method == "GET" else json.dumps(fields).encode()
    if key in ON_A_RUN:
        runs = {str(fields[k]) for k in RUN_IDS if fields.get(k) not in (None, "")}
        if not runs:
            raise Denied(f"{endpoint} needs run_id", "INVALID_PARAMETER_VALUE", 400)
        if method == "GET" and "path" in fields:
            _safe(str(fields["path"]))
        return Call(path, again, sent, runs=frozenset(runs))
    name, many = ON_EXPERIMENTS[key]
    value = fields.get(name)
    ids = value if many else [value]
    if not isinstance(ids, list) or not ids or any(not isinstance(i, (str, int)) or i == "" for i in ids):
        raise Denied(f"{endpoint} needs {name}: your experiment's id (MLFLOW_EXPERIMENT_ID in a job)",
                     "INVALID_PARAMETER_VALUE", 400)
    return Call(path, again, sent, experiments=frozenset(str(i) for i in ids))


def _artifact(method: str, path: str, artifact: str, pairs: list[tuple[str, str]], again: str) -> Call:
    """mlflow-artifacts paths start EXPERIMENT/RUN/: both must be the tenant's."""
    if method not in ("GET", "PUT", "DELETE"):
        raise Denied(f"neocloud's tracking does not pass on {method} of artifacts")
    if path == artifact:  # a listing: ?path=EXPERIMENT/RUN/...
        if method != "GET":
            raise Denied("name the artifact in the path")
        where = _values(pairs, "path", required=True)[0]
        if len(_values(pairs, "path", required=True)) > 1:
            raise Denied("a query parameter is given twice", "INVALID_PARAMETER_VALUE", 400)
    else:
        where = unquote(path[len(artifact) + 1:])
    parts = _safe(where)
    if not parts:
        raise Denied("an artifact's path starts with your experiment's id", "INVALID_PARAMETER_VALUE", 400)
    runs = frozenset(parts[1:2]) if len(parts) > 1 else frozenset()
    if method != "GET" and not runs:
        raise Denied("an artifact is written within one of your runs: EXPERIMENT/RUN/artifacts/...")
    return Call(path, again, None if method == "PUT" else b"", runs=runs, experiments=frozenset(parts[:1]))


def _safe(where: str) -> list[str]:
    """A relative path's parts, none of them climbing out or hiding a separator."""
    if "\\" in where or "\x00" in where or where.startswith("/"):
        raise Denied(f"not a plain relative path: {where[:200]!r}", "INVALID_PARAMETER_VALUE", 400)
    parts = [p for p in where.split("/") if p != ""]
    if any(p in (".", "..") for p in parts):
        raise Denied(f"a path may not climb out of its run: {where[:200]!r}", "INVALID_PARAMETER_VALUE", 400)
    return parts


def _values(pairs: list[tuple[str, str]], name: str, *, required: bool = False) -> list[str]:
    found = [v for k, v in pairs if k == name]
    if required and not found:
        raise Denied(f"the query needs {name}", "INVALID_PARAMETER_VALUE", 400)
    return found


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise Denied("the body is not JSON", "MALFORMED_REQUEST", 400) from None
    if not isinstance(value, dict):
        raise Denied("the body is not a JSON object", "MALFORMED_REQUEST", 400)
    return value
