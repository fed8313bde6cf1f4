"""Code: a tenant uploads its job's work directory once, and its jobs name it by digest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from neocloud.api.auth import Principal, caller
from neocloud.api.schemas import NAME
from neocloud.backends.code import MAX_BYTES, CodeStore
from neocloud.control.controller import DEFAULT_TENANT
from neocloud.errors import NeocloudError

router = APIRouter(prefix="/v1", tags=["code"])
Caller = Annotated[Principal, Depends(caller)]
MAX_UPLOAD = MAX_BYTES  # compressed, an archive is no larger than what it unpacks to


class CodeOut(BaseModel):
    digest: str = Field(description="Name it in a job spec as `code`.")
    files: int
    bytes: int


def code_store(request: Request) -> CodeStore:
    """The server's store of tenants' code, the one its controller hands the backend from."""
    store: CodeStore | None = request.app.state.service.controller.code
    assert store is not None  # `open_service` gives every served controller one
    return store


@router.post("/code", status_code=201, response_model=CodeOut,
             responses={413: {"description": "Over the upload limit"}, 422: {"description": "Not a safe archive"}})
async def upload(request: Request, who: Caller,
                 tenant: Annotated[str | None, Query(max_length=63, pattern=NAME,
                                                     description="Admin only: whose code it is.")] = None,
                 ) -> CodeOut:
    """A gzipped tar of a work directory (as `neocloud submit` packs it): checked, kept, named by digest."""
    if tenant is not None and not who.admin and tenant != who.tenant:
        raise HTTPException(403, f"a tenant token uploads only its own tenant's code ({who.tenant})")
    owner = tenant or who.tenant or DEFAULT_TENANT
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_UPLOAD:
            raise HTTPException(413, f"code over {MAX_UPLOAD >> 20} MiB: leave out what the job does not need "
                                     "(a .neocloudignore), and keep datasets on storage the nodes share")
    store = code_store(request)
    try:
        digest, files = await run_in_threadpool(store.put, owner, bytes(data))
    except NeocloudError as e:
        raise HTTPException(422, str(e)) from None
    return CodeOut(digest=digest, files=files, bytes=len(data))
