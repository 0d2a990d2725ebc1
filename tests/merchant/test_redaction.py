"""The merchant URL's credentials (user:password@, ?token=) never reach a log line, an
activity error, workflow history or a details line: real sockets, a real server, and the real
notify_merchant activity in a worker on the time-skipping server."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.merchant import MerchantActivities
from tempay.domain import (
    MerchantDelivery,
    MerchantDeliveryState,
    MerchantEvent,
    MerchantEventProgress,
    PaymentView,
    TransactionKind,
    TransactionStatus,
    merchant_event,
)
from tempay.merchant_webhooks import generate_secret, redact_url, redact_urls, url_secrets
from tempay.settings import Settings
from tests.support.stack import bound_socket, serve
from workflows.merchant import deliver_merchant_event, merchant_lines

SECRET = generate_secret()
PASSWORD = "hunter2-merchant-password"
TOKEN = "tok-0123456789-merchant-token"
SECRETS = (PASSWORD, TOKEN)


def event() -> MerchantEvent:
    view = PaymentView(
        workflow_id="payment-ord-1",
        order_id="ord-1",
        kind=TransactionKind.PAYMENT,
        provider="sandbox",
        status=TransactionStatus.SUCCEEDED,
        amount=Decimal("10.00"),
        currency="CNY",
        paid_amount=Decimal("10.00"),
        paid_currency="CNY",
        settled_at=datetime(2026, 1, 2, tzinfo=UTC),
        settled_by="notification",
    )
    return merchant_event(view, datetime(2026, 1, 2, tzinfo=UTC))


def with_credentials(base: str) -> str:
    """`base` (http://127.0.0.1:PORT) with a user, a password and a token in the query."""
    host = base.removeprefix("http://")
    return f"http://shop:{PASSWORD}@{host}/hooks/tempay?token={TOKEN}&v=1"


def activities_for(url: str) -> MerchantActivities:
    return MerchantActivities(Settings(merchant_webhook_url=url, merchant_webhook_secret=SECRET))


def assert_no_secrets(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"{secret!r} shown in {text!r}"


def refusal_text(error: ApplicationError) -> list[object]:
    return [str(error), error.message, repr(error), *error.details, error.__cause__]


# redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://shop:pw@merchant.example:8443/hooks?token=t&x=1",
            "https://***@merchant.example:8443/…",
        ),
        ("https://shop@merchant.example/hooks", "https://***@merchant.example/…"),
        ("https://sk_live_x@merchant.example", "https://***@merchant.example"),
        ("https://merchant.example/hooks?token=t#frag", "https://merchant.example/…"),
        ("https://merchant.example/?token=t", "https://merchant.example/…"),
        ("https://merchant.example/#frag", "https://merchant.example/…"),
        ("https://hooks.example/services/T0/B0/SECRET", "https://hooks.example/…"),
        ("https://merchant.example/hook;token=t", "https://merchant.example/…"),
        ("http://127.0.0.1:9000/hooks/tempay", "http://127.0.0.1:9000/…"),
        ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),
        ("https://merchant.example", "https://merchant.example"),
        ("http://[::1]:8000/x", "http://[::1]:8000/…"),
        ("https://a:b@c@merchant.example/", "https://***@merchant.example"),
        # httpx cannot parse them (nor send to them): nothing of them is shown.
        ("https://shop:p/w@merchant.example/hook", "***"),
        ("https://shop:ab#cd@merchant.example/hook", "***"),
        ("https://shop:a?b@merchant.example/hook", "***"),
        ("http://[::1", "***"),
        ("http:///hook", "***"),  # no host
    ],
)
def test_redact_url_keeps_where_and_hides_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_redacts_each_url_in_a_message() -> None:
    message = (
        f"POST https://u:{PASSWORD}@m.example/h?token={TOKEN} failed; see http://docs.example/x "
        "(or http://docs.example)."
    )
    assert redact_urls(message) == (
        "POST https://***@m.example/… failed; see http://docs.example/… (or http://docs.example)."
    )


def test_redact_urls_scrubs_the_parts_of_a_url_it_is_given() -> None:
    url = f"https://sk_live_{TOKEN}@hooks.example/services/T0/B0/{PASSWORD};token={TOKEN}2?a=1"
    echo = f"POST /services/T0/B0/{PASSWORD};token={TOKEN}2?a=1 HTTP/1.1 as sk_live_{TOKEN}"
    scrubbed = redact_urls(echo, url_secrets(url))
    assert scrubbed == "POST ***?a=1 HTTP/1.1 as ***"  # the whole path, as one secret
    assert_no_secrets(scrubbed)


# Settings refuse a URL httpx cannot send to, without showing it


@pytest.mark.parametrize(
    "url",
    [
        f"https://shop:{PASSWORD}/x@merchant.example/hook",
        f"https://shop:{PASSWORD}#x@merchant.example/hook",
        f"https://shop:{PASSWORD}?x@merchant.example/hook",
        f"https://shop:{PASSWORD}@merchant.example/ho ok",
        f"https://shop:{PASSWORD}@merchant.example:99999/hook",
        f"https://shop:{PASSWORD}@merchant.example:0/hook",
        f"https://shop:{PASSWORD}@merchant.example:port/hook",
        f"https://shop:{PASSWORD}@merchant.example/hook\x00",
        f"ftp://shop:{PASSWORD}@merchant.example/hook",
        f"https://shop:{PASSWORD}@/hook",
    ],
)
def test_settings_refuse_a_url_httpx_cannot_use_without_showing_it(url: str) -> None:
    with pytest.raises(ValidationError, match="TEMPAY_MERCHANT_WEBHOOK_URL") as refused:
        Settings(merchant_webhook_url=url, merchant_webhook_secret=SECRET)
    shown = [str(refused.value), repr(refused.value), refused.value.json(include_input=False)]
    shown += [str(error["msg"]) for error in refused.value.errors(include_input=False)]
    for text in shown:
        assert PASSWORD not in text and "merchant.example" not in text and "shop" not in text
    assert refused.value.__cause__ is None


def test_settings_refuse_the_reviewed_urls_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three URLs of the review, as the worker reads them at start."""
    monkeypatch.setenv("TEMPAY_MERCHANT_WEBHOOK_SECRET", SECRET)
    for url, password in (
        ("https://shop:p/w@merchant.example/hook", "p/w"),
        ("https://shop:ab#cd@merchant.example/hook", "ab#cd"),
        ("https://shop:a?b@merchant.example/hook", "a?b"),
    ):
        monkeypatch.setenv("TEMPAY_MERCHANT_WEBHOOK_URL", url)
        with pytest.raises(ValidationError, match="httpx can parse") as refused:
            Settings()
        assert password not in str(refused.value) and "merchant.example" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://merchant.example",
        "HTTPS://merchant.example/hook",
        "http://127.0.0.1:65535/hooks/tempay;token=t?x=1",
        "https://shop:p%2Fw@merchant.example/hook",
        "http://[::1]:8000/hook",
    ],
)
def test_settings_accept_a_url_httpx_can_use(url: str) -> None:
    assert Settings(merchant_webhook_url=url, merchant_webhook_secret=SECRET).merchant_webhook_url


# The activity, on real sockets


@pytest.fixture
def caplog_everything(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, httpx's too (`python worker.py` logs httpx at INFO)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    return caplog


async def test_unreachable_merchant_error_and_logs_hide_credentials(
    caplog_everything: pytest.LogCaptureFixture,
) -> None:
    closed = bound_socket()  # bound, never listening: connections are refused
    url = with_credentials(f"http://127.0.0.1:{closed.getsockname()[1]}")
    try:
        with pytest.raises(ApplicationError) as unreachable:
            await ActivityEnvironment().run(activities_for(url).notify_merchant, event())
    finally:
        closed.close()
    assert unreachable.value.type == "MerchantUnreachable"
    assert redact_url(url) in str(unreachable.value)  # the operator still sees where
    assert_no_secrets(*refusal_text(unreachable.value))
    assert caplog_everything.records
    assert_no_secrets(*(r.getMessage() for r in caplog_everything.records))


def leaky_merchant(status: int) -> FastAPI:
    """A merchant whose answer echoes the URL it was called on, as debug error pages do."""
    app = FastAPI()

    @app.post("/hooks/tempay")
    async def hook(request: Request) -> PlainTextResponse:
        echo = f"{request.method} {request.url} (query {request.url.query})"
        return PlainTextResponse(echo, status_code=status)

    return app


@pytest.fixture
async def merchant_500() -> AsyncIterator[str]:
    async with serve(leaky_merchant(500)) as url:
        yield url


@pytest.fixture
async def merchant_200() -> AsyncIterator[str]:
    async with serve(leaky_merchant(200)) as url:
        yield url


async def test_refusing_merchant_error_and_logs_hide_credentials(
    merchant_500: str, caplog_everything: pytest.LogCaptureFixture
) -> None:
    url = with_credentials(merchant_500)
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities_for(url).notify_merchant, event())
    assert refused.value.type == "MerchantRefused"
    assert "HTTP 500" in str(refused.value) and redact_url(url) in str(refused.value)
    assert_no_secrets(*refusal_text(refused.value))
    assert any("HTTP 500" in r.getMessage() for r in caplog_everything.records)
    assert_no_secrets(*(r.getMessage() for r in caplog_everything.records))


async def test_delivered_event_logs_hide_credentials(
    merchant_200: str, caplog_everything: pytest.LogCaptureFixture
) -> None:
    url = with_credentials(merchant_200)
    delivery = await ActivityEnvironment().run(activities_for(url).notify_merchant, event())
    assert delivery.state is MerchantDeliveryState.DELIVERED
    # httpx's own INFO line for the request ("HTTP Request: POST <url> ...") included.
    assert any(r.name == "httpx" for r in caplog_everything.records)
    assert_no_secrets(*(r.getMessage() for r in caplog_everything.records))


PATH_SECRET = "xoxb-path-secret-0123456789"
PARAM_TOKEN = "param-token-9876543210"
USER_TOKEN = "sk_live_user0123456789"


def echoing_merchant(received: list[str]) -> FastAPI:
    """A merchant on any path whose 500 answer echoes its request line, the URL and the
    Authorization header, as debug error pages do."""
    app = FastAPI()

    @app.post("/{rest:path}")
    async def hook(request: Request, rest: str) -> PlainTextResponse:
        target = request.scope["raw_path"].decode()
        if request.url.query:
            target += f"?{request.url.query}"
        echo = (
            f"{request.method} {target} HTTP/{request.scope['http_version']}\n"
            f"authorization: {request.headers.get('authorization')}\nurl: {request.url}"
        )
        received.append(echo)
        return PlainTextResponse(echo, status_code=500)

    return app


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("{base}/services/T0/B0/" + PATH_SECRET, PATH_SECRET),  # Slack-style
        ("{base}/hooks/tempay;token=" + PARAM_TOKEN, PARAM_TOKEN),
        ("http://" + USER_TOKEN + "@{host}/hooks/tempay", USER_TOKEN),  # no password
    ],
    ids=["path-segment", "param", "username-only"],
)
async def test_secrets_in_path_params_and_username_never_shown(
    url: str, secret: str, caplog_everything: pytest.LogCaptureFixture
) -> None:
    received: list[str] = []
    async with serve(echoing_merchant(received)) as base:
        url = url.format(base=base, host=base.removeprefix("http://"))
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(activities_for(url).notify_merchant, event())
    # The merchant did get (and echo) the secret: the test has something to hide.
    assert received and all(secret in echo or "authorization: Basic" in echo for echo in received)
    error = refused.value
    assert error.type == "MerchantRefused" and redact_url(url) in str(error)
    assert "HTTP 500: POST *** HTTP/1.1" in str(error)  # the echo is kept, scrubbed
    texts = [*refusal_text(error), *(r.getMessage() for r in caplog_everything.records)]
    assert any("HTTP 500" in r.getMessage() for r in caplog_everything.records)
    for text in texts:
        for hidden in (secret, PATH_SECRET, PARAM_TOKEN, USER_TOKEN):
            assert hidden not in str(text), f"{hidden!r} shown in {text!r}"
    if secret == USER_TOKEN:  # the Basic authorization httpx made of it, echoed too
        basic = base64.b64encode(f"{USER_TOKEN}:".encode()).decode()
        assert basic in received[0] and all(basic not in str(text) for text in texts)


# Workflow history and details


@workflow.defn(sandboxed=False)
class DeliverOneEvent:
    """deliver_merchant_event, as every transaction workflow runs it."""

    @workflow.run
    async def run(self, sent: MerchantEvent) -> MerchantEventProgress:
        progress = MerchantEventProgress(event_id=sent.id, type=sent.type)
        await deliver_merchant_event(sent, progress, timedelta(minutes=10), lambda: None)
        return progress


async def deliver(
    env: WorkflowEnvironment, activity_fn: Callable[..., Any]
) -> tuple[MerchantEventProgress, str]:
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client, task_queue=task_queue, workflows=[DeliverOneEvent], activities=[activity_fn]
    ):
        handle = await env.client.start_workflow(
            DeliverOneEvent.run,
            event(),
            id=f"deliver-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        progress = await handle.result()
        history = await handle.fetch_history()
    return progress, history.to_json()


async def test_history_and_details_hide_credentials(
    time_env: WorkflowEnvironment, caplog_everything: pytest.LogCaptureFixture
) -> None:
    closed = bound_socket()
    url = with_credentials(f"http://127.0.0.1:{closed.getsockname()[1]}")
    try:
        # Three days of retries against a refused port, in skipped time.
        progress, history = await deliver(time_env, activities_for(url).notify_merchant)
    finally:
        closed.close()
    assert progress.state is MerchantDeliveryState.FAILED
    assert progress.error and redact_url(url) in progress.error
    # As JSON spells it: the marker's ellipsis is `\u2026` there.
    assert "ACTIVITY_TASK_FAILED" in history and json.dumps(redact_url(url))[1:-1] in history
    assert_no_secrets(progress.error, history, *merchant_lines([progress]))
    assert_no_secrets(*(r.getMessage() for r in caplog_everything.records))


@activity.defn(name="notify_merchant")
async def leaky_notify_merchant(event: MerchantEvent) -> MerchantDelivery:
    """The activity as it was before redaction: the URL, credentials and all, in its error."""
    raise ApplicationError(
        f"merchant webhook http://shop:{PASSWORD}@127.0.0.1:9/hooks?token={TOKEN} unreachable",
        type="MerchantUnreachable",
        non_retryable=True,
    )


async def test_an_error_recorded_before_redaction_is_redacted_in_details(
    time_env: WorkflowEnvironment,
) -> None:
    progress, _ = await deliver(time_env, leaky_notify_merchant)
    assert progress.error == (
        "MerchantUnreachable: merchant webhook http://***@127.0.0.1:9/… unreachable"
    )
    assert_no_secrets(*merchant_lines([progress]))
