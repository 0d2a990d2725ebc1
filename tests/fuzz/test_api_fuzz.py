"""Schemathesis over the backend API (/api) with its key: positive and negative requests to
every /api operation in `/openapi.json`, authorized with the stack's TEMPAY_API_KEY. No answer
may be a 5xx, every answer must match its declared schema, and only the answers that say a
transaction was started may leave a new workflow behind: a 4xx changes nothing.

(Without the key, the same operations are fuzzed by test_openapi.py: every /api answer is then
401 and nothing at all changes.)"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from tests.support.fuzz.harness import BACKEND_API_KEY, FuzzStack
from tests.support.fuzz.tally import TALLY

# The answers whose body names a transaction that now exists: a started (or repeated)
# payment, recharge, refund or withdrawal, and a refund the provider refused (422, with the
# refund in the body: it was sent, so it is recorded).
STARTED = {200, 201, 422}


async def workflows(client: Client) -> dict[str, WorkflowExecutionStatus | None]:
    return {w.id: w.status async for w in client.list_workflows()}


def started_workflow(response: Any) -> str | None:
    if response.status_code not in STARTED:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    workflow_id = body.get("workflow_id") if isinstance(body, dict) else None
    return workflow_id if isinstance(workflow_id, str) else None


@pytest.fixture
def api_schema(webhook_schema: schemathesis.BaseSchema) -> schemathesis.BaseSchema:
    return webhook_schema.include(path_regex="^/api/")


def test_the_api_with_its_key(api_schema: schemathesis.BaseSchema, fuzz: FuzzStack) -> None:
    operations = {
        (op.method.upper(), op.path)
        for op in (r.ok() for r in api_schema.get_all_operations())  # type: ignore[union-attr]
    }
    assert {
        ("POST", "/api/payments"),
        ("GET", "/api/payments/{order_id}"),
        ("POST", "/api/payments/{order_id}/refunds"),
        ("GET", "/api/refunds/{refund_id}"),
        ("POST", "/api/recharges"),
        ("POST", "/api/withdrawals"),
        ("GET", "/api/withdrawals/{withdrawal_id}"),
    } <= operations

    before = fuzz.run(workflows(fuzz.client))
    reported: set[str] = set()
    cases = api_schema.as_strategy(GenerationMode.POSITIVE) | api_schema.as_strategy(
        GenerationMode.NEGATIVE
    )

    @given(cases)
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {BACKEND_API_KEY}"}, timeout=60)
        TALLY.add(f"{case.method} {case.operation.path} (with key)", response.status_code)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if case.method.upper() == "POST" and (workflow_id := started_workflow(response)):
            reported.add(workflow_id)

    try:
        check()
    finally:
        after = fuzz.run(workflows(fuzz.client))
        new = set(after) - set(before)
        # Nothing the fuzz started may run on into the other fuzz tests' no-change checks.
        for workflow_id in new:
            if after[workflow_id] is WorkflowExecutionStatus.RUNNING:
                fuzz.run(stop(fuzz.client, workflow_id))
    assert new <= reported, f"workflows no 2xx answer reported: {sorted(new - reported)[:10]}"


async def stop(client: Client, workflow_id: str) -> None:
    try:
        await client.get_workflow_handle(workflow_id).terminate("fuzz suite finished")
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:  # it ended meanwhile
            raise
