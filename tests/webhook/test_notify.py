"""`POST /notify/sandbox` on the real webhook service: real HTTP, real RSA signatures, the real
dev server and a real worker. Every answer the provider can get, and what each one changes."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from providers.sandbox.notifier import utc_iso
from providers.sandbox.signature import SIGNATURE_HEADER, sign_body
from tempay.domain import CheckoutInfo, PaymentView, SettlementTiming, TransactionStatus
from tests.support.stack import Stack, bound_socket, running_stack, serve, start_payment, url_of
from webhook.app import create_app
from workflows.payment import PaymentWorkflow

SETTLE_SECONDS = 10


# Fixtures


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    task_queue = f"tq-webhook-{uuid.uuid4().hex[:8]}"
    async with running_stack(dev_env.client, tmp_path_factory.mktemp("webhook"), task_queue) as s:
        yield s


@pytest.fixture(scope="module")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.webhook_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def key(stack: Stack) -> rsa.RSAPrivateKey:
    """The sandbox's notification key: what the webhook trusts."""
    return stack.sandbox_private_key()


@dataclass
class Payment:
    order_id: str
    handle: WorkflowHandle[PaymentWorkflow, PaymentView]
    checkout: CheckoutInfo

    async def details(self) -> PaymentView:
        return await self.handle.query(PaymentWorkflow.details)

    async def result(self) -> PaymentView:
        return await asyncio.wait_for(self.handle.result(), SETTLE_SECONDS)


async def new_payment(stack: Stack, timing: SettlementTiming | None = None) -> Payment:
    order_id = f"wh-{uuid.uuid4().hex[:12]}"
    handle, checkout = await start_payment(stack.client, stack.settings, order_id, timing=timing)
    assert checkout.status is TransactionStatus.PENDING
    return Payment(order_id, handle, checkout)


async def terminate_if_running(payment: Payment) -> None:
    """Stop what a test left open, so its status queries don't run on behind other tests."""
    description = await payment.handle.describe()
    if description.status is WorkflowExecutionStatus.RUNNING:
        await payment.handle.terminate("test finished")


@pytest.fixture
async def payment(stack: Stack) -> AsyncIterator[Payment]:
    """A fresh pending payment: the sandbox has its trade, the payer has not paid."""
    payment = await new_payment(stack)
    yield payment
    await terminate_if_running(payment)


# Notifications as the sandbox sends them


def notification(
    order_id: str,
    *,
    trade_no: str | None = None,
    trade_status: str = "TRADE_SUCCESS",
    amount: str | None = "10.00",
    currency: str = "CNY",
    notify_id: str | None = None,
    notify_time: datetime | None = None,
    **changes: Any,
) -> dict[str, Any]:
    paid = trade_status == "TRADE_SUCCESS"
    return {
        "notify_id": notify_id or uuid.uuid4().hex,
        "notify_time": utc_iso(notify_time or datetime.now(UTC)),
        "notify_type": "trade_status_sync",
        "out_trade_no": order_id,
        "trade_no": trade_no or f"SBX{uuid.uuid4().hex[:20].upper()}",
        "trade_status": trade_status,
        "total_amount": "10.00",
        "receipt_amount": amount if paid else None,
        "currency": currency,
        "gmt_payment": utc_iso(datetime.now(UTC)) if paid else None,
        **changes,
    }


def for_payment(payment: Payment, **overrides: Any) -> dict[str, Any]:
    return notification(payment.order_id, trade_no=payment.checkout.provider_trade_no, **overrides)


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def signed(key: rsa.RSAPrivateKey, body: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_body(key, body), "Content-Type": "application/json"}


async def post_signed(
    http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payload: Any, provider: str = "sandbox"
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else encode(payload)
    return await http.post(f"/notify/{provider}", content=body, headers=signed(key, body))


def assert_acknowledged(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.text == "success"
    assert response.headers["content-type"].startswith("text/plain")


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]


async def assert_untouched(payment: Payment) -> None:
    view = await payment.details()
    assert view.status is TransactionStatus.PENDING
    assert (view.notifications_received, view.duplicate_notifications) == (0, 0)
    assert view.settled_by is None and view.paid_amount is None


# Metrics


async def notification_counts(http: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "tempay_notifications_total":
                counts[sample.labels["provider"], sample.labels["outcome"]] = sample.value
    return counts


def increments(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# 200: held by Temporal, then acknowledged


async def test_valid_notification_settles_the_payment(
    http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    response = await post_signed(http, key, for_payment(payment))
    assert_acknowledged(response)
    view = await payment.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert (view.paid_amount, view.paid_currency) == (Decimal("10.00"), "CNY")
    assert view.notifications_received == 1


async def test_body_of_exactly_the_limit_is_accepted(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    body = encode(for_payment(payment))
    body += b" " * (stack.settings.notification_max_bytes - len(body))  # JSON allows it
    assert len(body) == stack.settings.notification_max_bytes
    assert_acknowledged(await post_signed(http, key, body))
    assert (await payment.result()).status is TransactionStatus.SUCCEEDED


async def test_notification_for_a_completed_payment_changes_nothing(
    http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    assert_acknowledged(await post_signed(http, key, for_payment(payment)))
    settled = await payment.result()
    assert settled.status is TransactionStatus.SUCCEEDED
    described = await payment.handle.describe()
    assert described.status is WorkflowExecutionStatus.COMPLETED

    before = await notification_counts(http)
    # A retry of the same notification, and a contradicting one: both acknowledged, so the
    # provider stops retrying, and neither moves a settled payment.
    for late in (
        for_payment(payment),
        for_payment(payment, trade_status="TRADE_FAILED"),
        for_payment(payment, amount="1.00"),
    ):
        assert_acknowledged(await post_signed(http, key, late))
    assert increments(before, await notification_counts(http)) == {
        ("sandbox", "already_settled"): 3
    }
    assert await payment.handle.result() == settled
    again = await payment.handle.describe()
    assert again.status is WorkflowExecutionStatus.COMPLETED
    assert again.history_length == described.history_length


async def test_duplicate_notification_is_counted_once(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey
) -> None:
    # A declined payment stays open for late money, so the workflow sees the repeat.
    timing = SettlementTiming(
        first_status_query_delay=timedelta(seconds=30),
        late_payment_window=timedelta(seconds=30),
        refund_window=timedelta(0),
    )
    payment = await new_payment(stack, timing)
    declined = for_payment(payment, trade_status="TRADE_FAILED")
    assert_acknowledged(await post_signed(http, key, declined))
    assert_acknowledged(await post_signed(http, key, declined))
    view = await payment.details()
    assert view.status is TransactionStatus.FAILED
    assert view.settled_by == "notification"
    assert (view.notifications_received, view.duplicate_notifications) == (1, 1)
    await terminate_if_running(payment)


async def test_money_after_the_late_payment_window_is_flagged(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey
) -> None:
    timing = SettlementTiming(
        first_status_query_delay=timedelta(seconds=30),
        late_payment_window=timedelta(seconds=0.5),
        refund_window=timedelta(0),
    )
    payment = await new_payment(stack, timing)
    assert_acknowledged(
        await post_signed(http, key, for_payment(payment, trade_status="TRADE_FAILED"))
    )
    assert (await payment.result()).status is TransactionStatus.FAILED

    before = await notification_counts(http)
    # Acknowledged, so the provider stops retrying, but counted apart from duplicates.
    assert_acknowledged(await post_signed(http, key, for_payment(payment)))
    assert increments(before, await notification_counts(http)) == {("sandbox", "late_money"): 1}
    assert (await payment.handle.result()).status is TransactionStatus.FAILED


# 401: not from the provider, or not now


def _tampered(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    # Signed for 0.01, delivered claiming 10.00.
    headers = signed(key, encode(for_payment(payment, amount="0.01")))
    return encode(for_payment(payment)), headers


def _not_base64(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    return encode(for_payment(payment)), {SIGNATURE_HEADER: "not base64 at all!"}


def _missing(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    return encode(for_payment(payment)), {"Content-Type": "application/json"}


def _empty(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    return encode(for_payment(payment)), {SIGNATURE_HEADER: ""}


def _other_key(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = encode(for_payment(payment))
    return body, signed(forger, body)


def _stale(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    # A captured notification replayed later: the signature is genuine, the time is not.
    old = datetime.now(UTC) - timedelta(minutes=6)
    body = encode(for_payment(payment, notify_time=old))
    return body, signed(key, body)


def _future(key: rsa.RSAPrivateKey, payment: Payment) -> tuple[bytes, dict[str, str]]:
    body = encode(for_payment(payment, notify_time=datetime.now(UTC) + timedelta(minutes=6)))
    return body, signed(key, body)


@pytest.mark.parametrize(
    "forge", [_tampered, _not_base64, _missing, _empty, _other_key, _stale, _future]
)
async def test_unverified_notification_is_refused_and_changes_nothing(
    http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment, forge: Any
) -> None:
    before = await notification_counts(http)
    body, headers = forge(key, payment)
    response = await http.post("/notify/sandbox", content=body, headers=headers)
    assert_refused(response, 401)
    assert increments(before, await notification_counts(http)) == {("sandbox", "bad_signature"): 1}
    await assert_untouched(payment)


# 400: signed, but not a notification


@pytest.mark.parametrize(
    "make_body",
    [
        pytest.param(lambda p: b"trade_status=TRADE_SUCCESS&out_trade_no=x", id="not-json"),
        pytest.param(lambda p: b"\xff\xfe{}", id="not-utf8"),
        pytest.param(lambda p: b"[" * 5000 + b"]" * 5000, id="nested-past-the-parser-limit"),
        pytest.param(lambda p: encode([for_payment(p)]), id="json-array"),
        pytest.param(lambda p: encode({**for_payment(p), "notify_id": None}), id="no-notify-id"),
        pytest.param(lambda p: encode({**for_payment(p), "notify_time": ""}), id="no-notify-time"),
        pytest.param(
            lambda p: encode({**for_payment(p), "notify_time": "yesterday"}), id="bad-notify-time"
        ),
        pytest.param(
            lambda p: encode({k: v for k, v in for_payment(p).items() if k != "trade_status"}),
            id="no-trade-status",
        ),
        pytest.param(
            lambda p: encode(for_payment(p, trade_status="TRADE_MAYBE")), id="unknown-status"
        ),
        pytest.param(lambda p: encode(for_payment(p, amount="ten")), id="amount-not-decimal"),
        pytest.param(lambda p: encode(for_payment(p, amount=10)), id="amount-json-number"),
        pytest.param(lambda p: encode(for_payment(p, amount="NaN")), id="amount-nan"),
        pytest.param(lambda p: encode(for_payment(p, amount="-10.00")), id="amount-negative"),
        pytest.param(lambda p: encode(for_payment(p, amount="0")), id="amount-zero"),
        pytest.param(lambda p: encode(for_payment(p, amount=None)), id="paid-without-amount"),
        pytest.param(lambda p: encode(for_payment(p, currency="")), id="paid-without-currency"),
        pytest.param(lambda p: encode({**for_payment(p), "trade_no": 7}), id="trade-no-not-text"),
    ],
)
async def test_malformed_notification_for_a_payment_is_refused(
    http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment, make_body: Any
) -> None:
    before = await notification_counts(http)
    assert_refused(await post_signed(http, key, make_body(payment)), 400)
    assert increments(before, await notification_counts(http)) == {("sandbox", "malformed"): 1}
    await assert_untouched(payment)


@pytest.mark.parametrize(
    "order_id",
    ["../payment-x", "order with spaces", "ord/1", "-starts-with-dash", "x" * 65, "订单"],
)
async def test_bad_order_id_is_refused(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey, order_id: str
) -> None:
    assert_refused(await post_signed(http, key, notification(order_id)), 400)
    with pytest.raises(RPCError) as raised:
        await stack.client.get_workflow_handle(f"payment-{order_id}").describe()
    assert raised.value.status is RPCStatusCode.NOT_FOUND


async def test_missing_order_id_is_refused(http: httpx.AsyncClient, key: rsa.RSAPrivateKey) -> None:
    payload = notification("unused")
    del payload["out_trade_no"]
    assert_refused(await post_signed(http, key, payload), 400)


# 413: over the size limit, refused before it is read


async def test_body_over_the_limit_with_content_length(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    before = await notification_counts(http)
    body = encode(for_payment(payment))
    body += b" " * (stack.settings.notification_max_bytes + 1 - len(body))
    response = await http.post("/notify/sandbox", content=body, headers=signed(key, body))
    assert response.request.headers["content-length"] == str(len(body))
    assert_refused(response, 413)
    assert increments(before, await notification_counts(http)) == {("sandbox", "too_large"): 1}
    await assert_untouched(payment)


async def test_body_over_the_limit_streamed_in_chunks(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    body = encode(for_payment(payment))
    body += b" " * (stack.settings.notification_max_bytes + 1 - len(body))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    before = await notification_counts(http)
    response = await http.post("/notify/sandbox", content=chunks(), headers=signed(key, body))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_refused(response, 413)
    assert increments(before, await notification_counts(http)) == {("sandbox", "too_large"): 1}
    await assert_untouched(payment)


async def test_declared_oversize_body_is_refused_before_it_arrives(stack: Stack) -> None:
    """A 1 GB Content-Length with no body sent: the answer comes without waiting for it."""
    host, port = stack.webhook_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /notify/sandbox HTTP/1.1\r\n"
            + f"Host: {host}:{port}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + b"Content-Length: 1000000000\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413 ")


# 404: nobody to tell


async def test_unknown_provider(http: httpx.AsyncClient, key: rsa.RSAPrivateKey) -> None:
    before = await notification_counts(http)
    response = await post_signed(http, key, notification("any-order"), provider="paypal")
    assert_refused(response, 404)
    assert increments(before, await notification_counts(http)) == {
        ("unknown", "unknown_provider"): 1
    }


async def test_unknown_order_creates_no_workflow(
    stack: Stack,
    http: httpx.AsyncClient,
    key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    order_id = f"never-started-{uuid.uuid4().hex[:8]}"
    before = await notification_counts(http)
    with caplog.at_level(logging.WARNING, logger="tempay.webhook"):
        assert_refused(await post_signed(http, key, notification(order_id)), 404)
    assert any(f"payment-{order_id}" in r.getMessage() for r in caplog.records)
    assert increments(before, await notification_counts(http)) == {("sandbox", "unknown_order"): 1}
    with pytest.raises(RPCError) as raised:
        await stack.client.get_workflow_handle(f"payment-{order_id}").describe()
    assert raised.value.status is RPCStatusCode.NOT_FOUND


# 503: Temporal unreachable, so the provider retries later


async def test_temporal_unreachable_is_503_and_the_retry_succeeds(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    closed = bound_socket()  # bound, never listening: connections are refused
    try:
        settings = stack.settings.model_copy(
            update={
                "temporal_address": url_of(closed).removeprefix("http://"),
                "signal_timeout": timedelta(seconds=1),
            }
        )
        async with (
            serve(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as cut_off,
        ):
            before = await notification_counts(cut_off)
            started = asyncio.get_running_loop().time()
            response = await post_signed(cut_off, key, for_payment(payment))
            elapsed = asyncio.get_running_loop().time() - started
            assert_refused(response, 503)
            assert elapsed < 10
            assert increments(before, await notification_counts(cut_off)) == {
                ("sandbox", "temporal_unavailable"): 1
            }
            assert (await cut_off.get("/healthz")).status_code == 200
    finally:
        closed.close()
    await assert_untouched(payment)

    # The provider retries (re-stamped and re-signed) and this time Temporal holds it.
    assert_acknowledged(await post_signed(http, key, for_payment(payment)))
    assert (await payment.result()).status is TransactionStatus.SUCCEEDED


# Operations


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_metrics_count_every_outcome(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey, payment: Payment
) -> None:
    before = await notification_counts(http)
    stale = for_payment(payment, notify_time=datetime.now(UTC) - timedelta(hours=1))
    await post_signed(http, key, stale)  # bad_signature
    await post_signed(http, key, b"{")  # malformed
    await post_signed(http, key, notification("any"), provider="nobody")  # unknown_provider
    await post_signed(http, key, notification(f"nobody-{uuid.uuid4().hex[:8]}"))  # unknown_order
    too_large = b" " * (stack.settings.notification_max_bytes + 1)
    await http.post("/notify/sandbox", content=too_large)  # too_large
    await post_signed(http, key, for_payment(payment))  # signalled
    await payment.result()
    await post_signed(http, key, for_payment(payment))  # already_settled

    after = await notification_counts(http)
    assert increments(before, after) == {
        ("sandbox", "bad_signature"): 1,
        ("sandbox", "malformed"): 1,
        ("unknown", "unknown_provider"): 1,
        ("sandbox", "unknown_order"): 1,
        ("sandbox", "too_large"): 1,
        ("sandbox", "signalled"): 1,
        ("sandbox", "already_settled"): 1,
    }
    response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE tempay_notifications_total counter" in response.text
    assert 'tempay_notification_ack_seconds_count{provider="sandbox"}' in response.text


# Refund and transfer notifications share the endpoint, routed by their notify_type


async def test_refund_notification_for_an_unknown_refund_creates_no_workflow(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey
) -> None:
    refund_id = f"rf-{uuid.uuid4().hex[:8]}"
    payload = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": utc_iso(datetime.now(UTC)),
        "notify_type": "refund_status_sync",
        "out_trade_no": "some-order",
        "out_request_no": refund_id,
        "refund_status": "REFUND_SUCCESS",
        "refund_amount": "1.00",
        "currency": "CNY",
    }
    before = await notification_counts(http)
    response = await post_signed(http, key, payload)
    assert_refused(response, 404)
    assert response.json()["error"] == f"unknown order (refund-{refund_id})"
    assert increments(before, await notification_counts(http)) == {("sandbox", "unknown_order"): 1}
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle(f"refund-{refund_id}").describe()


async def test_transfer_notification_for_an_unknown_withdrawal_creates_no_workflow(
    stack: Stack, http: httpx.AsyncClient, key: rsa.RSAPrivateKey
) -> None:
    withdrawal_id = f"never-started-{uuid.uuid4().hex[:8]}"
    payload = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": utc_iso(datetime.now(UTC)),
        "notify_type": "transfer_status_sync",
        "out_biz_no": withdrawal_id,
        "transfer_no": "SBT0001",
        "transfer_status": "TRANSFER_SUCCESS",
        "amount": "1.00",
        "currency": "CNY",
    }
    assert_refused(await post_signed(http, key, payload), 404)
    with pytest.raises(RPCError) as raised:
        await stack.client.get_workflow_handle(f"withdrawal-{withdrawal_id}").describe()
    assert raised.value.status is RPCStatusCode.NOT_FOUND
