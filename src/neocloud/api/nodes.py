"""Nodes: what the fleet has, what is free, and the operator's cordon, drain and uncordon."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import select

from neocloud.api.auth import Principal, admin, caller
from neocloud.api.schemas import NodeAction, NodeOut
from neocloud.sched.state import FULL
from neocloud.store.tables import NodeRow

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])
NodeName = Annotated[str, Path(max_length=255)]


@router.get("", response_model=list[NodeOut])
async def list_nodes(request: Request, who: Annotated[Principal, Depends(caller)]) -> list[NodeOut]:
    service = request.app.state.service
    fleet = service.fleet

    def read(sched) -> list[tuple]:  # noqa: ANN001 - the scheduler, read in the loop's thread
        on_node: dict[int, list[int]] = {}
        for job_id, alloc in sched.state.allocations.items():
            for n in alloc.nodes:
                on_node.setdefault(n, []).append(int(job_id))
        left = sched.state.gpu_left
        return [(int((left[n.id, : n.gpus] == FULL).sum()), on_node.get(n.id, [])) for n in fleet.nodes]

    usage = await wrap_future(service.controller.view(read))
    with service.sessions() as s:
        marks = {r.name: r for r in s.scalars(select(NodeRow))}
    out = []
    for node, (free, jobs) in zip(fleet.nodes, usage):
        leaf = fleet.leaves[node.leaf]
        fabric = fleet.fabrics[leaf.fabric]
        mark = marks.get(node.name)
        out.append(NodeOut(name=node.name, gpu_type=node.gpu.name if node.gpu else None, gpus=node.gpus,
                           gpus_free=free, leaf=leaf.name, fabric=fabric.name, site=fabric.site,
                           state=_state(node.gpus, free, jobs, mark), reason=mark.reason if mark else "",
                           jobs=sorted(jobs) if (who.admin or not jobs) else []))
    return out


def _state(gpus: int, free: int, jobs: list[int], mark: NodeRow | None) -> str:
    """Slurm's words: IDLE, MIXED, ALLOCATED; DRAINING until a drained node's jobs end; CORDONED."""
    if mark is not None and mark.draining:
        return "DRAINING" if jobs else "DRAINED"
    if mark is not None and mark.cordoned:
        return "CORDONED"
    if not jobs:
        return "IDLE"
    return "ALLOCATED" if free == 0 else "MIXED"


def _act(action: str):  # noqa: ANN202 - a route per action
    async def route(name: NodeName, request: Request, _: Annotated[Principal, Depends(admin)],
                    body: NodeAction | None = None) -> dict[str, str]:
        reason = body.reason if body else ""
        await wrap_future(request.app.state.service.controller.set_node(name, action, reason))
        return {"node": name, "action": action}

    route.__name__ = f"{action}_node"
    return route


for _action in ("cordon", "uncordon", "drain"):
    router.add_api_route(f"/{{name}}/{_action}", _act(_action), methods=["POST"],
                         responses={403: {"description": "Admin only"}, 404: {"description": "No such node"}})
