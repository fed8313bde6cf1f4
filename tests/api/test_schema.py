"""Hostile input: schemathesis generates requests from the OpenAPI schema; none may cause a 500.

The nodes are cordoned first, so the random commands it submits are queued, never run.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.api.conftest import ADMIN, Server


def test_no_request_makes_a_server_error(server: Server) -> None:
    admin = server.client()
    for node in admin.nodes():
        admin.node_action(node["name"], "cordon", "schema test: run nothing")
    admin.submit({"name": "existing", "command": "true"})
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:  # noqa: ANN001 - a schemathesis case
            case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}, checks=[not_a_server_error])

        no_server_error()
    assert admin.health()["status"] == "ok"
