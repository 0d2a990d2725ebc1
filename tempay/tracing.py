"""Tracing with OpenTelemetry: on when the standard variables name an OTLP endpoint
(OTEL_EXPORTER_OTLP_ENDPOINT, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), off otherwise: then no
tracer provider, exporter, instrumentation or Temporal plugin is set up (FastAPI itself imports
the OpenTelemetry API, which does nothing without a provider).

When on, a process exports its spans over OTLP (OTEL_EXPORTER_OTLP_PROTOCOL: `http/protobuf`,
the default, or `grpc` where its exporter is installed) under OTEL_SERVICE_NAME (default
`tempay-{role}`), and:
- every Temporal client carries Temporal's OpenTelemetry plugin (`plugins()`, used by
  tempay/temporal.py): starts, updates and signals carry the trace to the worker, whose
  workflows and activities make spans of their own (none while a workflow replays);
- FastAPI makes each request to the webhook service a server span (`fastapi_telemetry`):
  a notification or an /api call is the root span of its trace;
- every httpx client (provider calls, merchant deliveries) makes a client span and passes
  the trace on in `traceparent`.

So one notification is one trace from the webhook through the signal, the workflow and its
activities to the merchant delivery. Spans carry no bodies, headers or query strings, and
an outgoing call's span names only the origin it called (a merchant's webhook URL may hold
a secret in its path).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tempay.errors import InvalidInput

if TYPE_CHECKING:  # only the webhook service, which imports FastAPI anyway, calls for it
    from fastapi.telemetry import TelemetryConfig

OFF = ("", "none")
_started: dict[str, Any] = {}


def tracing_configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in OFF:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def tracing_on() -> bool:
    return "provider" in _started


def _exporter(env: Mapping[str, str]) -> Any:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    protocol = protocol.strip().lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise InvalidInput(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed; or use http/protobuf (the collector's port 4318)"
            ) from None
        return GrpcExporter()
    raise InvalidInput(
        f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not supported: http/protobuf or grpc"
    )


def start_tracing(role: str, exporter: Any = None) -> bool:
    """Turn tracing on for this process when the variables ask for it (or an `exporter` is
    given: tests pass an in-memory one). Idempotent; returns whether tracing is on. Spans
    are flushed at exit."""
    if tracing_on():
        return True
    env = os.environ
    if exporter is None and not tracing_configured(env):
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from temporalio.contrib.opentelemetry import create_tracer_provider

    name = env.get("OTEL_SERVICE_NAME") or f"tempay-{role}"
    # Replay-safe: a span started while a workflow replays is not recorded again.
    provider = create_tracer_provider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(_redacting())  # first: before anything exports a span
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(env)))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    _started["provider"] = provider
    atexit.register(provider.shutdown)
    return True


def _redacting() -> Any:
    """A span processor that, as each span starts, keeps of its URL only what is safe to
    export, whichever library made it: a client span's URL becomes its origin (a merchant's
    webhook URL may hold a secret in its path, a provider's query carries signatures), and
    no span keeps a query string. (Built here: the SDK is imported only when tracing is on.)"""
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import SpanKind

    class Redacting(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            attributes = span.attributes or {}
            for name in ("url.full", "http.url"):
                value = attributes.get(name)
                if isinstance(value, str):
                    span.set_attribute(name, _origin(value))
            if "url.query" in attributes:
                span.set_attribute("url.query", "")
            target = attributes.get("http.target")
            if isinstance(target, str):
                span.set_attribute("http.target", target.split("?", 1)[0])
            if attributes.get("url.path") and span.kind is SpanKind.CLIENT:
                span.set_attribute("url.path", "")

    return Redacting()


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/"


def stop_tracing() -> None:
    """Tests: export what is buffered and stop; clients made from now on carry no plugin.
    (OpenTelemetry's global tracer provider stays set: it can be set once per process.)"""
    provider = _started.pop("provider", None)
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    atexit.unregister(provider.shutdown)
    provider.shutdown()


def stop_tracing_at_exit() -> None:
    """Export what is buffered and stop, for a process about to leave by os._exit (which
    skips atexit). Nothing when tracing is off."""
    provider = _started.pop("provider", None)
    if provider is not None:
        atexit.unregister(provider.shutdown)
        provider.shutdown()


def flush() -> None:
    """Export what is buffered now (before a process stops, or in tests)."""
    provider = _started.get("provider")
    if provider is not None:
        provider.force_flush()


def plugins() -> list[Any]:
    """The Temporal client plugins: OpenTelemetry's when tracing is on, none otherwise.

    Temporal's OpenTelemetry plugin parents a workflow's signal, update and activity spans on
    the span of the call that caused them, so a notification's trace reaches into the
    worker. (The older TracingInterceptor only links a signal's handling to it, in the
    workflow's own trace.) A workflow's own span (RunWorkflow) ends with its run: for a
    payment, at the end of its refund window, and not at all once the worker has evicted the
    run from its cache; the spans under it are exported as they end."""
    if not tracing_on():
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    return [OpenTelemetryPlugin(add_temporal_spans=True)]


# Routes nobody needs a span of: probes and scrapes, every few seconds.
UNTRACED = ("/healthz", "/readyz", "/metrics")


def fastapi_telemetry() -> TelemetryConfig:
    """FastAPI's own telemetry settings (`FastAPI(telemetry=...)`): it makes each request's
    server span itself once a tracer provider is set (start_tracing): no probes or
    scrapes, no span per dependency or serialization, and no exception logs (a validation
    error's log would hold the input)."""
    return {
        "exclude": lambda scope: str(scope.get("path")) in UNTRACED,
        "operation_spans": False,
        "logs": False,
        "metrics": False,
    }
