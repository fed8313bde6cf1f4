"""Capacity planning over the API: a pipeline in (the YAML file's mapping, as JSON), the plan out."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator

from neocloud.api.auth import Principal, admin
from neocloud.api.schemas import plain
from neocloud.capacity.montecarlo import simulate
from neocloud.capacity.plan import summarise
from neocloud.capacity.schema import pipeline_from_dict

router = APIRouter(prefix="/v1/capacity", tags=["capacity"])


@router.post("/plan", responses={400: {"description": "Invalid pipeline: the message says where and what to fix"},
                                 403: {"description": "Admin only"}})
def plan(pipeline: Annotated[dict[str, Any], Body(description="The pipeline, as in docs/capacity.md."),
                             AfterValidator(lambda v: plain(v, "pipeline"))],
         _: Annotated[Principal, Depends(admin)],
         request: Request,
         runs: Annotated[int, Query(ge=100, le=200_000)] = 10_000,
         seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
         independent: bool = False,
         format: Annotated[Literal["json", "html"], Query()] = "json") -> Any:
    """Play the pipeline's delays out: MW and GPUs live per week and quarter, the target's
    probability, contracts at risk, the denominator effect, capex and funding."""
    p = pipeline_from_dict(pipeline, "pipeline")
    result = summarise(p, simulate(p, runs, seed, correlated=not independent))
    if format == "html":
        from neocloud.web.capacity import report_html

        nonce = request.state.csp_nonce  # the report's inline scripts run under the server's CSP
        return HTMLResponse(report_html(result).replace("<script>", f'<script nonce="{nonce}">'))
    return JSONResponse(result)
