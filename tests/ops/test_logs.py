"""Servers' logs (tempay/logs.py, webhook/server.py AccessLog): TEMPAY_LOG_LEVEL and
TEMPAY_LOG_FORMAT; each line about a transaction carries its ids; JSON lines parse one by
one; access lines name no query string, header or body; and no secret reaches a line."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from temporalio.testing import ActivityEnvironment

from tempay.logs import JsonFormatter, TextFormatter, TransactionContext
from tempay.settings import Settings
from tests.support.cli import Dev, tempay
from webhook.server import AccessLog

module_log = logging.getLogger("tempay.test.module")


@pytest.fixture
def captured() -> Iterator[Callable[[str], list[str]]]:
    """Lines the root logger writes through a handler set up as configure_logging sets it."""
    streams: dict[str, io.StringIO] = {"json": io.StringIO(), "text": io.StringIO()}
    handlers = []
    for name, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
        handler = logging.StreamHandler(streams[name])
        handler.setFormatter(formatter)
        handler.addFilter(TransactionContext())
        handlers.append(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    yield lambda name: streams[name].getvalue().splitlines()
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


def test_settings_refuse_an_unknown_level_or_format(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, log_level=" debug ").log_level == "DEBUG"
    with pytest.raises(ValidationError, match="TEMPAY_LOG_LEVEL must be"):
        Settings(data_dir=tmp_path, log_level="loud")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, log_format="xml")  # type: ignore[arg-type]


async def test_a_line_written_in_an_activity_carries_the_transactions_ids(
    captured: Callable[[str], list[str]],
) -> None:
    def work() -> None:
        # A module logger, not Temporal's: the ids come from the activity's context.
        module_log.info("asked the provider")

    environment = ActivityEnvironment()
    environment.info = environment.info.__class__(
        **{**environment.info.__dict__, "workflow_id": "payment-A1001", "attempt": 3}
    )
    environment.run(work)
    module_log.info("outside any transaction")
    inside, outside = (json.loads(line) for line in captured("json"))
    assert inside["message"] == "asked the provider"
    assert inside["workflow_id"] == "payment-A1001" and inside["order_id"] == "A1001"
    assert inside["attempt"] == 3 and inside["activity"] == environment.info.activity_type
    assert inside["level"] == "INFO" and inside["logger"] == "tempay.test.module"
    assert "workflow_id" not in outside
    text = captured("text")[0]
    assert text.endswith("asked the provider [workflow_id=payment-A1001 order_id=A1001 "
                         f"activity={environment.info.activity_type} attempt=3]")  # fmt: skip


def test_ids_passed_by_the_caller_win_and_refunds_name_theirs(
    captured: Callable[[str], list[str]],
) -> None:
    module_log.warning("refund notification", extra={"workflow_id": "refund-RF9"})
    module_log.error("boom", exc_info=ValueError("x"))
    refund, failed = (json.loads(line) for line in captured("json"))
    assert refund["refund_id"] == "RF9" and "order_id" not in refund
    assert failed["exception"].startswith("ValueError") or "ValueError: x" in failed["exception"]


async def test_access_lines_name_method_path_status_and_nothing_else(
    captured: Callable[[str], list[str]],
) -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("secret-body-text", status_code=202)

    def count(status_class: str) -> float:
        labels = {"listener": "public", "status_class": status_class}
        return REGISTRY.get_sample_value("tempay_http_responses_total", labels) or 0.0

    before = {c: count(c) for c in ("2xx", "4xx")}
    app = AccessLog(Starlette(routes=[Route("/notify/x", ok, methods=["POST"])]), "public")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.post(
            "/notify/x?token=query-secret",
            content=b"body-secret",
            headers={"Authorization": "Bearer header-secret"},
        )
        await client.get("/nowhere")
        # A path that would end the line and forge another, or rewrite a terminal.
        await client.get("/notify/x%0A2026-12-06 INFO tempay.webhook payment settled%0D%1B[2K")
    lines = [json.loads(line) for line in captured("json") if "tempay.access" in line]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", "/notify/x", 202),
        ("GET", "/nowhere", 404),
        ("GET", "/notify/x\\n2026-12-06 INFO tempay.webhook payment settled\\r\\x1b[2K", 404),
    ]
    forged = [line for line in captured("text") if "tempay.access" in line][-1]
    assert "\n" not in forged and "\r" not in forged and "\x1b" not in forged
    assert lines[0]["listener"] == "public" and lines[0]["duration_ms"] >= 0
    # Counted for the alerts too (tempay_http_responses_total by status class).
    assert count("2xx") - before["2xx"] == 1 and count("4xx") - before["4xx"] == 2
    # httpx's own INFO line (the test's client) names the query: configure_logging holds
    # httpx at WARNING, and tempay's lines must not name it.
    everything = "\n".join(
        line for line in captured("json") + captured("text") if "httpx" not in line
    )
    for secret in ("query-secret", "body-secret", "header-secret", "secret-body-text"):
        assert secret not in everything


@pytest.mark.e2e
def test_tempay_dev_in_json_parses_line_by_line_carries_ids_and_no_secret(
    env: dict[str, str], tmp_path: Path
) -> None:
    api_key = f"api-{uuid.uuid4().hex}"
    merchant_secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="
    json_env = {
        **env,
        "TEMPAY_LOG_FORMAT": "json",
        "TEMPAY_API_KEY": api_key,
        "TEMPAY_MERCHANT_WEBHOOK_URL": "http://127.0.0.1:9/merchant",
        "TEMPAY_MERCHANT_WEBHOOK_SECRET": merchant_secret,
        # What a shell set up for Temporal Cloud exports: tempay dev, its children and the
        # CLI beside it talk to the stack's own plain-text server all the same.
        "TEMPORAL_API_KEY": "cloud-key-not-for-dev",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/nonexistent/ca.pem",
        "TEMPORAL_PROFILE": "cloud",
    }
    dev = Dev(json_env, tmp_path / "dev.log")
    order_id = f"logs-{uuid.uuid4().hex[:8]}"
    try:
        paid = tempay("pay", "--order-id", order_id, "--amount", "6.60", "--currency", "CNY",
                      env=json_env)  # fmt: skip
        assert paid.returncode == 0, paid.stderr
        sandbox = json_env["TEMPAY_SANDBOX_URL"]
        response = httpx.post(f"{sandbox}/sandbox/payments/{order_id}/pay", json={}, timeout=10)
        assert response.status_code == 200, response.text
        webhook = json_env["TEMPAY_WEBHOOK_URL"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view = httpx.get(
                f"{webhook}/api/payments/{order_id}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=10,
            ).json()
            if view["status"] == "SUCCEEDED":
                break
            time.sleep(0.3)
        assert view["status"] == "SUCCEEDED"
    finally:
        assert dev.stop() == 0
    logs = Path(json_env["TEMPAY_DATA_DIR"]) / "logs"
    secrets = [api_key, merchant_secret, merchant_secret.removeprefix("whsec_")]
    secrets.append("cloud-key-not-for-dev")
    codec_key = Path(json_env["TEMPAY_DATA_DIR"]) / "codec_keys"
    if codec_key.exists():
        # `key_id:base64-of-32-bytes` entries; comments aside.
        keys = re.findall(r"^[\w.\-]+:([A-Za-z0-9+/]{43}=)$", codec_key.read_text(), re.M)
        assert keys
        secrets += keys
    records = []
    for name in ("webhook.log", "worker.log"):
        for number, line in enumerate((logs / name).read_text().splitlines(), 1):
            for secret in secrets:
                assert secret not in line, f"{name}:{number}"
            records.append(json.loads(line))  # every line is one JSON object
    about = [r for r in records if r.get("workflow_id") == f"payment-{order_id}"]
    assert about and all(r["order_id"] == order_id for r in about)
    access = [r for r in records if r["logger"] == "tempay.access"]
    assert any(r["path"] == f"/api/payments/{order_id}" and r["status"] == 200 for r in access)
    assert any(r["path"] == "/notify/sandbox" for r in access)
