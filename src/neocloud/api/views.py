"""Waiting on the controller from a route that runs in the server's threadpool.

A plain `def` route runs in a worker thread, so it may wait for the controller's answer there;
an `async def` route awaits it instead (`asyncio.wrap_future`), never calls `.result()`, which
would stall every request on the event loop until the controller's turn ends.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from fastapi import HTTPException, Request

T = TypeVar("T")
ANSWER_S = 30.0  # past this the controller is stuck or stopped: the route answers 503, not never


def wait(future: Future, timeout: float = ANSWER_S) -> Any:
    """The controller's answer to a command, waited for in this (worker) thread."""
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        raise HTTPException(503, f"the controller did not answer within {timeout:g} s; try again") from None


def view(request: Request, read: Callable[[Any], T]) -> T:
    """`read(scheduler)` run in the controller's next turn (a consistent view of its state), from a
    worker thread: keep `read` to copying what the route needs, and build the answer here."""
    result: T = wait(request.app.state.service.controller.view(read))
    return result
