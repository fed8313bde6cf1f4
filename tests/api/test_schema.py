"""Hostile input: schemathesis generates requests from the OpenAPI schema, both those it allows
and those it does not (negative mode); none may cause a 500, and the server keeps answering.

The nodes are cordoned first, so the random commands it submits are queued, never run. Each
operation gets 10 allowed and 12 disallowed cases on each store: the cost grows with every route.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.api.conftest import ADMIN, Server

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.parametrize(("mode", "examples"), [(GenerationMode.POSITIVE, 10), (GenerationMode.NEGATIVE, 12)])
def test_no_request_makes_a_server_error(server: Server, mode: GenerationMode, examples: int) -> None:
    admin = server.client()
    for node in admin.nodes():
        admin.node_action(node["name"], "cordon", "schema test: run nothing")
    admin.submit({"name": "existing", "command": "true"})
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    exercised = 0
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:  # noqa: ANN001 - a schemathesis case
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

        try:
            no_server_error()
            exercised += 1
        except Unsatisfiable:  # nothing in it to get wrong (no parameters, no body)
            pass
    assert exercised >= 20
    assert httpx.get(f"{server.url}/v1/jobs", headers=AUTH).status_code == 200
    assert admin.health()["status"] == "ok"
