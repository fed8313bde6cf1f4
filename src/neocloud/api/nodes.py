"""Nodes: what the fleet has and what is free, each node's stage in its life, and health signals."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from neocloud.api.auth import Principal, admin, caller
from neocloud.api.schemas import (
    MAX_ID,
    NodeAction,
    NodeDetail,
    NodeMove,
    NodeMoveOut,
    NodeOut,
    Signal,
    SignalOut,
    SignalResult,
)
from neocloud.api.views import view
from neocloud.control.controller import NotFound
from neocloud.model.health import RULES
from neocloud.model.lifecycle import Stage
from neocloud.sched.state import FULL
from neocloud.store.tables import HealthSignal, NodeEvent

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])
NodeName = Annotated[str, Path(max_length=255)]
Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]
HISTORY = 100  # moves and signals shown per node
MAX_NODES = 20_000  # nodes one page of /v1/nodes holds: a 160,000-GPU fleet of 8-GPU nodes


def node_list(request: Request, who: Principal, only: str | None = None, limit: int | None = None,
              offset: int = 0) -> list[dict[str, Any]]:
    """Nodes as the caller may see them (a tenant does not see whose jobs run where), in NodeOut's
    shape: plain dicts, as a fleet's worth of models would cost more than the rest of the answer.
    From a worker thread: the controller's turn only copies its state; the answer is built here."""
    service = request.app.state.service
    nodes = service.fleet.nodes
    if only is not None:
        index = service.controller.node_ids.get(only)
        chosen = [] if index is None else [nodes[index]]
    else:
        chosen = nodes[offset: None if limit is None else offset + limit]
    if not chosen:
        if only is not None:
            raise NotFound(f"no node {only!r}")
        return []
    ids = [n.id for n in chosen]

    def read(sched: Any) -> tuple:
        state, keeper = sched.state, service.controller.nodes
        free = (state.gpu_left[ids] == FULL).sum(axis=1)
        on_node = state.on_node
        jobs = [list(on_node[i]) for i in ids]
        if only is not None:
            return free, jobs, {only: keeper.stage[only]}, {only} & keeper.spare, {only: keeper.reason[only]}
        return free, jobs, dict(keeper.stage), set(keeper.spare), dict(keeper.reason)

    free, on, stage, spare, reason = view(request, read)
    fleet = service.fleet
    out = []
    for node, gpus_free, jobs in zip(chosen, free.tolist(), on, strict=True):
        leaf = fleet.leaves[node.leaf]
        fabric = fleet.fabrics[leaf.fabric]
        where = stage[node.name]
        held = node.name in spare
        out.append({"name": node.name, "gpu_type": node.gpu.name if node.gpu else None, "gpus": node.gpus,
                    "gpus_free": gpus_free, "leaf": leaf.name, "fabric": fabric.name, "site": fabric.site,
                    "state": _state(gpus_free, jobs, where, held), "stage": where.value, "spare": held,
                    "nvlink_domain": node.nvlink_domain, "reason": reason[node.name],
                    "jobs": sorted(int(j) for j in jobs) if who.admin else []})
    return out


def _state(free: int, jobs: list[int], stage: Stage, spare: bool) -> str:
    """Slurm's words: IDLE, MIXED, ALLOCATED; DRAINING until a drained node's jobs end; CORDONED;
    SPARE for a hot spare; OUT for a node in triage, repair, RMA, onboarding or burn-in."""
    if stage == Stage.DRAINING:
        return "DRAINING" if jobs else "DRAINED"
    if stage == Stage.CORDONED:
        return "CORDONED"
    if stage != Stage.PRODUCTION:
        return "OUT"
    if spare and not jobs:
        return "SPARE"
    if not jobs:
        return "IDLE"
    return "ALLOCATED" if free == 0 else "MIXED"


@router.get("", response_model=list[NodeOut])
def list_nodes(request: Request, who: Caller,
               limit: Annotated[int, Query(ge=1, le=MAX_NODES)] = MAX_NODES,
               offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> JSONResponse:
    """The fleet's nodes in its order, a page at a time: what each has free, its state and stage.
    Encoded here, in the worker thread, so the event loop only sends the bytes."""
    return JSONResponse(node_list(request, who, limit=limit, offset=offset))


@router.get("/{name}", response_model=NodeDetail, responses={404: {"description": "No such node"}})
def get_node(name: NodeName, request: Request, who: Caller) -> NodeDetail:
    """One node, with its lifecycle history and the health signals about it (newest first)."""
    node = node_list(request, who, name)[0]
    with request.app.state.service.sessions() as s:
        moves = s.scalars(select(NodeEvent).where(NodeEvent.node == name).order_by(NodeEvent.id.desc()).limit(HISTORY))
        history = [NodeMoveOut(at=m.at, from_stage=m.from_stage, to_stage=m.to_stage, reason=m.reason) for m in moves]
        signals = [SignalOut(at=h.at, observed_at=h.observed_at, kind=h.kind, payload=h.payload, rule=h.rule,
                             action=h.action)
                   for h in s.scalars(select(HealthSignal).where(HealthSignal.node == name)
                                      .order_by(HealthSignal.id.desc()).limit(HISTORY))]
    return NodeDetail(**node, history=history, signals=signals)


@router.post("/{name}/signals", response_model=SignalResult, status_code=201,
             responses={403: {"description": "Admin only"}, 404: {"description": "No such node"}})
async def post_signal(name: NodeName, body: Signal, request: Request, _: Admin) -> SignalResult:
    """A health signal from a node agent or exporter: recorded, judged by the rules, acted on."""
    payload = body.model_dump(mode="json", exclude={"observed_at"})
    result = await wrap_future(request.app.state.service.controller.signal(name, payload, body.observed_at))
    return SignalResult(**result)


@router.post("/{name}/move", responses={403: {"description": "Admin only"}, 404: {"description": "No such node"},
                                        409: {"description": "The lifecycle does not allow that move"}})
async def move_node(name: NodeName, body: NodeMove, request: Request, _: Admin) -> dict[str, str]:
    """Move a node to another stage of its life (triage to repair, repair to burn-in, ...)."""
    stage = await wrap_future(request.app.state.service.controller.move_node(name, body.to, body.reason))
    return {"node": name, "stage": stage}


def _act(action: str):  # noqa: ANN202 - a route per action
    async def route(name: NodeName, request: Request, _: Admin, body: NodeAction | None = None) -> dict[str, str]:
        reason = body.reason if body else ""
        await wrap_future(request.app.state.service.controller.set_node(name, action, reason))
        return {"node": name, "action": action}

    route.__name__ = f"{action}_node"
    return route


for _action in ("cordon", "uncordon", "drain"):
    router.add_api_route(f"/{{name}}/{_action}", _act(_action), methods=["POST"],
                         responses={403: {"description": "Admin only"}, 404: {"description": "No such node"},
                                    409: {"description": "The lifecycle does not allow that move"}})

rules_router = APIRouter(prefix="/v1/health", tags=["nodes"])


@rules_router.get("/rules")
async def rules(_: Caller) -> list[dict[str, str]]:
    """The rules that turn health signals into actions, in the order they are tried."""
    return [{"kind": r.kind, "when": r.when, "action": r.action.value} for r in RULES]
