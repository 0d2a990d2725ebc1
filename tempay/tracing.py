"""Tracing with OpenTelemetry: on when the standard variables name an OTLP endpoint
(OTEL_EXPORTER_OTLP_ENDPOINT, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), off otherwise, and then
nothing of OpenTelemetry is even imported.

When on, a process exports its spans over OTLP (OTEL_EXPORTER_OTLP_PROTOCOL: `http/protobuf`,
the default, or `grpc` where its exporter is installed) under OTEL_SERVICE_NAME (default
`tempay-{role}`), and:
- every Temporal client carries Temporal's OpenTelemetry plugin (`plugins()`, used by
  tempay/temporal.py): starts, updates and signals carry the trace to the worker, whose
  workflows and activities make spans of their own (replay-safe);
- the webhook service's apps are instrumented (`instrument_app`): a notification or an /api
  call is the root span of its trace;
- every httpx client (provider calls, merchant deliveries) makes a client span and passes
  the trace on in `traceparent`.

So one notification is one trace from the webhook through the signal, the workflow and its
activities to the merchant delivery. Spans carry no bodies, headers or query strings.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from typing import Any

from tempay.errors import InvalidInput

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
    provider = create_tracer_provider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(env)))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    _started["provider"] = provider
    atexit.register(provider.shutdown)
    return True


def stop_tracing() -> None:
    """Tests: export what is buffered and stop; clients made from now on carry no plugin.
    (OpenTelemetry's global tracer provider stays set: it can be set once per process.)"""
    provider = _started.pop("provider", None)
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    provider.shutdown()


def flush() -> None:
    """Export what is buffered now (before a process stops, or in tests)."""
    provider = _started.get("provider")
    if provider is not None:
        provider.force_flush()


def plugins() -> list[Any]:
    """The Temporal client plugins: OpenTelemetry's when tracing is on, none otherwise."""
    if not tracing_on():
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def instrument_app(app: Any) -> None:
    """A FastAPI app's requests as server spans (when tracing is on)."""
    if not tracing_on():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
