"""Nodes: what the fleet has and what is free, each node's stage in its life, and health signals."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import select

from neocloud.api.auth import Principal, admin, caller
from neocloud.api.schemas import (
    NodeAction,
    NodeDetail,
    NodeMove,
    NodeMoveOut,
    NodeOut,
    Signal,
    SignalOut,
    SignalResult,
)
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


async def _nodes(request: Request, who: Principal, only: str | None = None) -> list[NodeOut]:
    service = request.app.state.service
    fleet = service.fleet
    chosen = [n for n in fleet.nodes if only is None or n.name == only]
    if not chosen:
        raise NotFound(f"no node {only!r}")

    def read(sched) -> list[tuple]:  # noqa: ANN001 - the scheduler, read in the loop's thread
        on_node: dict[int, list[int]] = {}
        for job_id, alloc in sched.state.allocations.items():
            for n in alloc.nodes:
                on_node.setdefault(n, []).append(int(job_id))
        left = sched.state.gpu_left
        keeper = service.controller.nodes
        return [(int((left[n.id, : n.gpus] == FULL).sum()), on_node.get(n.id, []), keeper.stage[n.name],
                 n.name in keeper.spare, keeper.reason[n.name]) for n in chosen]

    usage = await wrap_future(service.controller.view(read))
    out = []
    for node, (free, jobs, stage, spare, reason) in zip(chosen, usage):
        leaf = fleet.leaves[node.leaf]
        fabric = fleet.fabrics[leaf.fabric]
        out.append(NodeOut(name=node.name, gpu_type=node.gpu.name if node.gpu else None, gpus=node.gpus,
                           gpus_free=free, leaf=leaf.name, fabric=fabric.name, site=fabric.site,
                           state=_state(free, jobs, stage, spare), stage=stage.value, spare=spare,
                           nvlink_domain=node.nvlink_domain, reason=reason,
                           jobs=sorted(jobs) if (who.admin or not jobs) else []))
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
async def list_nodes(request: Request, who: Caller) -> list[NodeOut]:
    return await _nodes(request, who)


@router.get("/{name}", response_model=NodeDetail, responses={404: {"description": "No such node"}})
async def get_node(name: NodeName, request: Request, who: Caller) -> NodeDetail:
    """One node, with its lifecycle history and the health signals about it (newest first)."""
    node = (await _nodes(request, who, name))[0]
    with request.app.state.service.sessions() as s:
        moves = s.scalars(select(NodeEvent).where(NodeEvent.node == name).order_by(NodeEvent.id.desc()).limit(HISTORY))
        history = [NodeMoveOut(at=m.at, from_stage=m.from_stage, to_stage=m.to_stage, reason=m.reason) for m in moves]
        signals = [SignalOut(at=h.at, observed_at=h.observed_at, kind=h.kind, payload=h.payload, rule=h.rule,
                             action=h.action)
                   for h in s.scalars(select(HealthSignal).where(HealthSignal.node == name)
                                      .order_by(HealthSignal.id.desc()).limit(HISTORY))]
    return NodeDetail(**node.model_dump(), history=history, signals=signals)


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
