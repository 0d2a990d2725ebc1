"""tempay's sandbox adapter for refunds and transfers, against the real sandbox over HTTP:
signed notifications map to the core's observations, and a transfer whose answer is lost
raises ProviderOutcomeUnknown (never a plain, blindly retryable failure)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request

from providers.base import Acknowledgement, ProviderAdapter
from providers.sandbox.adapter import SandboxAdapter
from providers.sandbox.keys import PUBLIC_KEY_NAME, ensure_keypair, load_private_key
from providers.sandbox.notifier import utc_iso
from providers.sandbox.signature import SIGNATURE_HEADER, sign_body
from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    ProviderTransferState,
    RefundObservation,
    RefundRequest,
    TransferObservation,
    TransferRequest,
)
from tempay.errors import (
    MalformedNotification,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRefused,
    ProviderRejected,
    ProviderUnsupported,
    UnverifiedNotification,
)
from tests.support.providers.sandbox import (
    DEFAULT_FAULTS,
    Receiver,
    Sandbox,
    eventually,
    running_sandbox,
)
from tests.support.stack import bound_socket, serve, url_of

BASELINE = {
    **DEFAULT_FAULTS,
    "refund_delay_seconds": 0,
    "transfer_delay_seconds": 0,
    "transfer_timeout_seconds": 5,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapter")


@pytest.fixture(scope="module")
async def sandbox(data_dir: Path, receiver: Receiver) -> AsyncIterator[Sandbox]:
    async with running_sandbox(
        data_dir,
        receiver,
        refund_delay_seconds=0,
        transfer_delay_seconds=0,
        transfer_timeout_seconds=5,
    ) as sandbox:
        yield sandbox


@pytest.fixture
async def tuned(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    yield sandbox.client
    response = await sandbox.client.put("/sandbox/faults", json=BASELINE)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
async def adapter(sandbox: Sandbox, data_dir: Path) -> AsyncIterator[SandboxAdapter]:
    adapter = SandboxAdapter(
        sandbox.url, public_key_file=data_dir / "sandbox" / PUBLIC_KEY_NAME, timeout=0.5
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture(scope="module")
def key(data_dir: Path) -> rsa.RSAPrivateKey:
    private_path, _ = ensure_keypair(data_dir / "sandbox")
    return load_private_key(private_path)


async def paid_order(sandbox: Sandbox, amount: str = "10.00") -> str:
    out_trade_no = (await sandbox.create(amount=amount))["out_trade_no"]
    assert (await sandbox.pay(out_trade_no)).status_code == 200
    return out_trade_no


def refund_of(order_id: str, receiver: Receiver, amount: str = "4.00") -> RefundRequest:
    return RefundRequest(
        order_id=order_id,
        refund_id=f"rf-{uuid.uuid4().hex[:12]}",
        amount=Decimal(amount),
        currency="CNY",
        reason="returned",
        notify_url=receiver.notify_url,
    )


def transfer_of(receiver: Receiver, payee_account: str = "payee@example.com") -> TransferRequest:
    return TransferRequest(
        withdrawal_id=f"wd-{uuid.uuid4().hex[:12]}",
        amount=Decimal("25.00"),
        currency="CNY",
        payee_account=payee_account,
        payee_name="Li Lei",
        notify_url=receiver.notify_url,
    )


def raw_notification(receiver: Receiver, about: str) -> tuple[Mapping[str, str], bytes]:
    [raw] = [(h, b) for h, b in receiver.raw if about in json.loads(b).values()]
    return raw


async def _notified(receiver: Receiver, about: str) -> bool:
    return len(receiver.about(about)) == 1


def signed(key: rsa.RSAPrivateKey, payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    return {SIGNATURE_HEADER: sign_body(key, body)}, body


# Refunds


async def test_refund_create_query_and_its_notification(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order_id = await paid_order(sandbox)
    request = refund_of(order_id, sandbox.receiver)
    created = await adapter.create_refund(request)
    assert created.state is ProviderRefundState.PENDING
    assert (created.refund_id, created.order_id, created.source) == (
        request.refund_id,
        order_id,
        "create",
    )
    assert (created.amount, created.currency) == (Decimal("4.00"), "CNY")
    assert created.provider_refund_no and created.provider_refund_no.startswith("SBR")

    await eventually(lambda: _notified(sandbox.receiver, request.refund_id))
    headers, body = raw_notification(sandbox.receiver, request.refund_id)
    observed = adapter.parse_any_notification(headers, body)
    notification = json.loads(body)
    assert observed == RefundObservation(
        refund_id=request.refund_id,
        order_id=order_id,
        state=ProviderRefundState.SUCCEEDED,
        amount=Decimal("4.00"),
        currency="CNY",
        provider_refund_no=created.provider_refund_no,
        occurred_at=datetime.fromisoformat(notification["gmt_refund"]),
        source="notification",
        notification_id=notification["notify_id"],
    )
    # The payment-only entry point refuses it: it must never reach a payment.
    with pytest.raises(MalformedNotification, match="refund_status_sync"):
        adapter.parse_notification(headers, body)

    queried = await adapter.query_refund(request)
    assert queried == observed.model_copy(
        update={"source": "status_query", "notification_id": None}
    )
    assert await adapter.create_refund(request) == queried.model_copy(update={"source": "create"})
    assert await adapter.query_refund(refund_of(order_id, sandbox.receiver)) is None


async def test_refund_refusals_carry_the_provider_code(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order_id = await paid_order(sandbox)
    await adapter.create_refund(refund_of(order_id, sandbox.receiver, "8.00"))
    with pytest.raises(ProviderRefused) as exceeded:
        await adapter.create_refund(refund_of(order_id, sandbox.receiver, "3.00"))
    assert exceeded.value.code == "REFUND_AMOUNT_EXCEEDED"
    assert exceeded.value.details["refundable_amount"] == "2.00"

    unpaid = (await sandbox.create())["out_trade_no"]
    with pytest.raises(ProviderRefused) as not_paid:
        await adapter.create_refund(refund_of(unpaid, sandbox.receiver))
    assert not_paid.value.code == "TRADE_STATUS_ERROR"


async def test_failed_refund_notification(
    sandbox: Sandbox, adapter: SandboxAdapter, tuned: httpx.AsyncClient
) -> None:
    await tuned.put("/sandbox/faults", json={"refund_delay_seconds": 60})
    request = refund_of(await paid_order(sandbox), sandbox.receiver)
    await adapter.create_refund(request)
    await tuned.post(f"/sandbox/refunds/{request.refund_id}/fail")
    await eventually(lambda: _notified(sandbox.receiver, request.refund_id))
    observed = adapter.parse_any_notification(
        *raw_notification(sandbox.receiver, request.refund_id)
    )
    assert isinstance(observed, RefundObservation)
    assert (observed.state, observed.amount) == (ProviderRefundState.FAILED, Decimal("4.00"))


# Transfers


async def test_transfer_create_query_and_its_notification(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    request = transfer_of(sandbox.receiver)
    assert await adapter.query_transfer(request) is None  # never sent: safe to create
    created = await adapter.create_transfer(request)
    assert created.state is ProviderTransferState.PENDING
    assert (created.withdrawal_id, created.amount, created.currency, created.source) == (
        request.withdrawal_id,
        Decimal("25.00"),
        "CNY",
        "create",
    )
    await eventually(lambda: _notified(sandbox.receiver, request.withdrawal_id))
    headers, body = raw_notification(sandbox.receiver, request.withdrawal_id)
    notification = json.loads(body)
    observed = adapter.parse_any_notification(headers, body)
    assert observed == TransferObservation(
        withdrawal_id=request.withdrawal_id,
        state=ProviderTransferState.SUCCEEDED,
        amount=Decimal("25.00"),
        currency="CNY",
        provider_transfer_no=created.provider_transfer_no,
        fail_reason=None,
        occurred_at=datetime.fromisoformat(notification["gmt_finish"]),
        source="notification",
        notification_id=notification["notify_id"],
    )
    with pytest.raises(MalformedNotification, match="transfer_status_sync"):
        adapter.parse_notification(headers, body)
    queried = await adapter.query_transfer(request)
    assert queried == observed.model_copy(
        update={"source": "status_query", "notification_id": None}
    )


async def test_failed_transfer_notification(sandbox: Sandbox, adapter: SandboxAdapter) -> None:
    request = transfer_of(sandbox.receiver, payee_account="invalid-payee")
    await adapter.create_transfer(request)
    await eventually(lambda: _notified(sandbox.receiver, request.withdrawal_id))
    observed = adapter.parse_any_notification(
        *raw_notification(sandbox.receiver, request.withdrawal_id)
    )
    assert isinstance(observed, TransferObservation)
    assert observed.state is ProviderTransferState.FAILED
    assert observed.fail_reason and "invalid-payee" in observed.fail_reason


@pytest.mark.parametrize("fault", ["timeout", "error"])
async def test_lost_transfer_answer_is_an_unknown_outcome(
    sandbox: Sandbox, adapter: SandboxAdapter, tuned: httpx.AsyncClient, fault: str
) -> None:
    await tuned.put("/sandbox/faults", json={f"transfer_{fault}_rate": 1})
    request = transfer_of(sandbox.receiver)
    with pytest.raises(ProviderOutcomeUnknown):
        await adapter.create_transfer(request)
    await tuned.put("/sandbox/faults", json={f"transfer_{fault}_rate": 0})

    # What the caller must do: query first. The transfer is there, so it is not sent again.
    found = await adapter.query_transfer(request)
    assert found is not None and found.provider_transfer_no
    again = await adapter.create_transfer(request)
    assert again.provider_transfer_no == found.provider_transfer_no
    await eventually(lambda: _notified(sandbox.receiver, request.withdrawal_id))
    truth = await tuned.get("/sandbox/transfers", params={"out_biz_no": request.withdrawal_id})
    [transfer] = truth.json()
    assert (transfer["requests"], transfer["paid_out"]) == (2, 1)


@pytest.mark.parametrize(
    ("channel", "sent"), [(None, "alipay_wap"), ("alipay_page", "alipay_page")]
)
async def test_the_channel_is_sent_and_defaults_to_alipay_wap(
    channel: str | None, sent: str
) -> None:
    asked: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/payments")
    async def create(request: Request) -> dict[str, str]:
        asked.append(await request.json())
        return {"trade_no": "T1", "payment_url": "http://127.0.0.1:9/pay/T1"}

    order = PaymentOrder(
        order_id="ch-1", amount=Decimal("1.00"), currency="CNY", provider="sandbox",
        channel=channel,
    )  # fmt: skip
    async with serve(app) as url:
        adapter = SandboxAdapter(url, timeout=5)
        try:
            created = await adapter.create_payment(order)
        finally:
            await adapter.aclose()
    assert [a["channel"] for a in asked] == [sent]
    assert created.payment_url == "http://127.0.0.1:9/pay/T1"


async def test_a_channel_the_sandbox_does_not_offer_is_refused_before_asking_it() -> None:
    asked: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/payments")
    async def create(request: Request) -> dict[str, str]:
        asked.append(await request.json())
        return {"trade_no": "T1", "payment_url": "http://127.0.0.1:9/pay/T1"}

    order = PaymentOrder(
        order_id="ch-2", amount=Decimal("1.00"), currency="CNY", provider="sandbox",
        channel="qr",
    )  # fmt: skip
    async with serve(app) as url:
        adapter = SandboxAdapter(url, timeout=5)
        try:
            with pytest.raises(ProviderRejected, match="sandbox has no channel 'qr': one of"):
                await adapter.create_payment(order)
        finally:
            await adapter.aclose()
    assert asked == []


async def test_unreachable_provider_is_a_plain_error() -> None:
    closed = bound_socket()  # bound, never listening: the request never leaves
    adapter = SandboxAdapter(url_of(closed), timeout=0.5)
    try:
        with pytest.raises(ProviderError) as raised:
            await adapter.create_transfer(transfer_of(Receiver(url="http://127.0.0.1:9")))
        assert not isinstance(raised.value, ProviderOutcomeUnknown)
    finally:
        await adapter.aclose()
        closed.close()


# Notification checks


def refund_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "notify_id": uuid.uuid4().hex,
        "notify_time": utc_iso(datetime.now(UTC)),
        "notify_type": "refund_status_sync",
        "out_trade_no": "order-1",
        "trade_no": "SBX1",
        "out_request_no": "refund-1",
        "refund_no": "SBR1",
        "refund_status": "REFUND_SUCCESS",
        "refund_amount": "3.00",
        "currency": "cny",
        "gmt_refund": utc_iso(datetime.now(UTC)),
        **overrides,
    }


def transfer_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "notify_id": uuid.uuid4().hex,
        "notify_time": utc_iso(datetime.now(UTC)),
        "notify_type": "transfer_status_sync",
        "out_biz_no": "wd-1",
        "transfer_no": "SBT1",
        "transfer_status": "TRANSFER_SUCCESS",
        "amount": "25.00",
        "currency": "CNY",
        "fail_reason": None,
        "gmt_finish": utc_iso(datetime.now(UTC)),
        **overrides,
    }


def test_signed_payloads_map_by_notify_type(
    adapter: SandboxAdapter, key: rsa.RSAPrivateKey
) -> None:
    refund = adapter.parse_any_notification(*signed(key, refund_payload()))
    assert isinstance(refund, RefundObservation)
    assert (refund.refund_id, refund.order_id, refund.currency) == ("refund-1", "order-1", "CNY")
    transfer = adapter.parse_any_notification(*signed(key, transfer_payload()))
    assert isinstance(transfer, TransferObservation) and transfer.withdrawal_id == "wd-1"

    payment = {
        "notify_id": "n1",
        "notify_time": utc_iso(datetime.now(UTC)),
        "notify_type": "trade_status_sync",
        "out_trade_no": "order-1",
        "trade_no": "SBX1",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "10.00",
        "receipt_amount": "10.00",
        "currency": "CNY",
        "gmt_payment": None,
    }
    headers, body = signed(key, payment)
    observed = adapter.parse_any_notification(headers, body)
    assert isinstance(observed, PaymentObservation)
    assert observed == adapter.parse_notification(headers, body)
    assert observed.state is ProviderPaymentState.PAID


def _stale(hours: float) -> str:
    return utc_iso(datetime.now(UTC) + timedelta(hours=hours))


# Payloads are built when the test runs, not at collection: their notify_time must be fresh.
@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: refund_payload(refund_status="REFUND_MAYBE"), MalformedNotification),
        (lambda: refund_payload(out_request_no=None), MalformedNotification),
        (lambda: refund_payload(refund_amount="0.00"), MalformedNotification),
        (lambda: refund_payload(refund_amount=3), MalformedNotification),
        (lambda: refund_payload(currency=None), MalformedNotification),
        (lambda: transfer_payload(transfer_status="PAID"), MalformedNotification),
        (lambda: transfer_payload(out_biz_no=""), MalformedNotification),
        (lambda: transfer_payload(amount=None), MalformedNotification),
        (lambda: refund_payload(notify_time=_stale(-1)), UnverifiedNotification),
        (lambda: transfer_payload(notify_time=_stale(+1)), UnverifiedNotification),
    ],
    ids=[
        "refund-status",
        "no-request-no",
        "zero-refund",
        "number-amount",
        "no-currency",
        "transfer-status",
        "empty-biz-no",
        "no-amount",
        "stale",
        "future",
    ],
)
def test_bad_refund_and_transfer_notifications_are_refused(
    adapter: SandboxAdapter,
    key: rsa.RSAPrivateKey,
    build: Callable[[], dict[str, Any]],
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        adapter.parse_any_notification(*signed(key, build()))


def test_a_tampered_refund_notification_is_unverified(
    adapter: SandboxAdapter, key: rsa.RSAPrivateKey
) -> None:
    headers, body = signed(key, refund_payload())
    tampered = body.replace(b'"3.00"', b'"300.00"')
    with pytest.raises(UnverifiedNotification):
        adapter.parse_any_notification(headers, tampered)
    with pytest.raises(UnverifiedNotification):
        adapter.parse_any_notification({}, body)


# What every adapter gets from the base class


class PaymentsOnly(ProviderAdapter):
    name = "payments-only"

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        raise NotImplementedError

    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        raise NotImplementedError

    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        raise NotImplementedError

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        return PaymentObservation(
            order_id=body.decode(), provider=self.name, state=ProviderPaymentState.PAID
        )

    def acknowledgement(self) -> Acknowledgement:
        return Acknowledgement()


async def test_an_adapter_without_refunds_or_transfers_refuses_them() -> None:
    adapter = PaymentsOnly()
    receiver = Receiver(url="http://127.0.0.1:9")
    with pytest.raises(ProviderUnsupported):
        await adapter.create_refund(refund_of("order-1", receiver))
    with pytest.raises(ProviderUnsupported):
        await adapter.query_transfer(transfer_of(receiver))
    observed = adapter.parse_any_notification({}, b"order-1")
    assert isinstance(observed, PaymentObservation) and observed.order_id == "order-1"
