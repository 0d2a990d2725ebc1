"""Tracing (tempay/tracing.py): off unless the OTEL variables name an endpoint; when on, a
notification is one trace across the webhook and the worker, and an /api call one trace
through update-with-start, the workflow and the provider's create. In process with an
in-memory exporter, and end to end: `tempay dev` exporting OTLP/HTTP to a local receiver."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.testing import WorkflowEnvironment

from tempay import tracing
from tempay.settings import Settings
from tempay.temporal import connect
from tests.support.cli import Dev, tempay
from tests.support.stack import Stack, running_stack

API_KEY = f"trace-key-{uuid.uuid4().hex}"


def test_off_unless_an_endpoint_is_named() -> None:
    assert not tracing.tracing_configured({})
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing.tracing_configured(on)
    assert tracing.tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"})
    assert not tracing.tracing_configured(on | {"OTEL_SDK_DISABLED": "true"})
    assert not tracing.tracing_configured(on | {"OTEL_TRACES_EXPORTER": "none"})
    # Off: no plugin on any client.
    assert not tracing.tracing_on() and tracing.plugins() == []


# In process: an in-memory exporter


@pytest.fixture
async def traced_stack(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[Stack, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    assert tracing.start_tracing("test", exporter)
    try:
        address = dev_env.client.service_client.config.target_host
        client = await connect(Settings(data_dir=tmp_path, temporal_address=address))
        async with running_stack(
            client, tmp_path / "stack", f"tq-trace-{uuid.uuid4().hex[:8]}",
            settings_overrides={"api_key": API_KEY},
        ) as stack:  # fmt: skip
            yield stack, exporter
    finally:
        tracing.stop_tracing()


def traces(spans: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    return by_trace


async def test_an_api_call_and_a_notification_are_one_trace_each(
    traced_stack: tuple[Stack, InMemorySpanExporter],
) -> None:
    stack, exporter = traced_stack
    order_id = f"trace-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(
        base_url=stack.webhook_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as api:
        created = await api.post(
            "/api/payments", json={"order_id": order_id, "amount": "5.00", "currency": "CNY"}
        )
        assert created.status_code == 200, created.text
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
            assert (await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})).is_success
        async with asyncio.timeout(20):
            while True:
                view = (await api.get(f"/api/payments/{order_id}")).json()
                if view["status"] == "SUCCEEDED":
                    break
                await asyncio.sleep(0.1)  # noqa: ASYNC110 - polling a server, no event to wait on
    tracing.flush()
    by_trace = traces(exporter.get_finished_spans())

    def trace_of(name_part: str) -> list[ReadableSpan]:
        found = [t for t in by_trace.values() if any(name_part in s.name for s in t)]
        assert found, sorted({s.name for s in exporter.get_finished_spans()})
        return found[0]

    # /api: the server span, the update-with-start, the workflow's run and the provider's
    # create (the activity and its HTTP call), all in one trace.
    api_trace = {s.name for s in trace_of("POST /api/payments")}
    assert any("UpdateWithStartWorkflow" in n or "StartWorkflow" in n for n in api_trace), api_trace
    assert any("RunActivity:create_payment" in n for n in api_trace), api_trace
    assert any(n == "POST" for n in api_trace), api_trace  # httpx: the sandbox's create
    # The notification: the webhook's server span and the workflow's signal handler.
    notify_trace = {s.name for s in trace_of("POST /notify/{provider}")}
    assert any("SignalWorkflow:notify" in n for n in notify_trace), notify_trace
    assert any("HandleSignal:notify" in n for n in notify_trace), notify_trace
    # An outgoing call's span names only the origin (a merchant URL may hold a secret in
    # its path or query); a server span keeps no query either.
    exporter.clear()
    secret_path, secret_query = "T0/B0/SECRETPATH", "token=SECRETQUERY"
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"{stack.sandbox_url}/{secret_path}?{secret_query}")
        await client.get(
            f"{stack.webhook_url}/api/payments/{order_id}?{secret_query}",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    tracing.flush()
    spans = exporter.get_finished_spans()
    # The test's two calls (a worker's call may land in the same window: any client span).
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(clients) >= 2 and any(s.name == "GET /api/payments/{order_id}" for s in spans)
    for span in spans:
        # A server span keeps its own route's path (the sandbox's here); never a query.
        shown = str(span.attributes)
        secrets = (secret_path, secret_query, API_KEY) if span in clients else (secret_query,)
        for secret in secrets:
            assert secret not in shown, (span.name, shown)
    urls = {str((c.attributes or {}).get("url.full", (c.attributes or {}).get("http.url")))
            for c in clients}  # fmt: skip
    assert urls >= {
        f"{stack.sandbox_url}/",
        f"{stack.webhook_url}/",
    }


# End to end: tempay dev exports OTLP/HTTP to a receiver


@dataclass
class Receiver:
    url: str
    spans: list[tuple[str, bytes, str]] = field(default_factory=list)  # service, trace, name


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP trace receiver (POST /v1/traces, protobuf), as a collector is."""
    got: list[tuple[str, bytes, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = self.path == "/v1/traces"
            if ok:
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    names = [
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ]
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            got.append((names[0] if names else "", span.trace_id, span.name))
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", got)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.e2e
def test_tempay_dev_exports_one_trace_across_webhook_and_worker(
    env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    traced = {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    dev = Dev(traced, tmp_path / "dev.log")
    order_id = f"otlp-{uuid.uuid4().hex[:8]}"
    try:
        paid = tempay("pay", "--order-id", order_id, "--amount", "2.20", "--currency", "CNY",
                      env=traced)  # fmt: skip
        assert paid.returncode == 0, paid.stderr
        sandbox = traced["TEMPAY_SANDBOX_URL"]
        assert httpx.post(f"{sandbox}/sandbox/payments/{order_id}/pay", json={}).is_success
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            by_trace: dict[bytes, set[str]] = {}
            for service, trace_id, name in list(receiver.spans):
                if "notify" in name:
                    by_trace.setdefault(trace_id, set()).add(service)
            if any({"tempay-webhook", "tempay-worker"} <= s for s in by_trace.values()):
                break
            time.sleep(0.3)
    finally:
        assert dev.stop() == 0
    services = {service for service, _, _ in receiver.spans}
    assert {"tempay-webhook", "tempay-worker"} <= services, services
    assert any({"tempay-webhook", "tempay-worker"} <= s for s in by_trace.values()), by_trace
