"""Schemathesis (4.x) against the webhook service's own OpenAPI document, over real HTTP on the
fuzz stack: every operation in `/openapi.json`, with the schema's examples, valid (positive) and
invalid (negative) requests. No answer may be a 5xx, and where a response schema is declared the
answer must match it.

The operations come from the document, not from this file: a route added to the webhook app
(the backend API under /api, say) is fuzzed here as soon as it is in `/openapi.json`. The codec
(a sub-application without an OpenAPI document) is fuzzed in test_codec_and_ops_fuzz.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.fuzz.harness import FuzzStack, assert_nothing_changed
from tests.support.fuzz.tally import TALLY


@pytest.fixture
def unchanged_by_schemathesis(fuzz: FuzzStack) -> Iterator[None]:
    before = fuzz.snapshot()
    yield
    assert_nothing_changed(before, fuzz.snapshot())


def test_the_schema_lists_every_webhook_route(fuzz: FuzzStack) -> None:
    """What schemathesis will cover (so a route missing from the document is noticed)."""
    document = httpx.get(f"{fuzz.url}/openapi.json").json()
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert {
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/notify/{provider}"),
        ("POST", "/api/payments"),
        ("POST", "/api/withdrawals"),
    } <= operations


def test_every_operation_in_the_openapi_document(
    webhook_schema: schemathesis.BaseSchema, unchanged_by_schemathesis: None
) -> None:
    # Strategies over every operation (not `schema.parametrize()`: its lazy fixture loader does
    # not run under pytest 9, and the document is only known once the stack serves it).
    cases = webhook_schema.as_strategy(GenerationMode.POSITIVE) | webhook_schema.as_strategy(
        GenerationMode.NEGATIVE
    )

    @given(cases)
    def check(case: schemathesis.Case) -> None:
        response = case.call(timeout=30)
        TALLY.add(f"{case.method} {case.operation.path} (schemathesis)", response.status_code)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    check()
