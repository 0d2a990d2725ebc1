"""End to end on the real dev server: a payment through the Alipay adapter, against the fake
Alipay gateway. The payer opens the signed URL (or the app order string in the Alipay app, or
scans the precreated QR code), pays, and the fake POSTs Alipay's signed notification to the
webhook's /notify/alipay; the notification, not a query, settles it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tempay.channels import AppAction, QrCodeAction
from tempay.domain import RefundView, SettlementTiming, TransactionStatus
from tempay.errors import RefundRefused
from tests.support.fakes.alipay_gateway import AlipayError, FakeAlipayGateway
from tests.support.providers.alipay import MerchantKeys, make_adapter
from tests.support.stack import running_stack, start_payment
from transactions import start_refund
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow

pytestmark = pytest.mark.e2e

# Only the notification can settle it: the first status query is far away.
NOTIFICATION_ONLY = SettlementTiming(
    first_status_query_delay=timedelta(minutes=1),
    status_query_backoff_cap=timedelta(minutes=1),
    expires_after=timedelta(minutes=5),
    late_payment_window=timedelta(milliseconds=500),
    refund_window=timedelta(0),  # the payment's workflow ends at settlement
)


async def test_alipay_payment_settles_by_its_signed_notification(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    fake: FakeAlipayGateway,
    merchant_keys: MerchantKeys,
    gateway_url: str,
) -> None:
    adapter = make_adapter(fake, merchant_keys, gateway_url)
    task_queue = f"tq-alipay-{uuid.uuid4().hex[:8]}"
    order_id = f"ali-{uuid.uuid4().hex[:12]}"
    async with running_stack(
        dev_env.client, tmp_path, task_queue, extra_adapters={"alipay": adapter}
    ) as stack:
        handle, checkout = await start_payment(
            stack.client,
            stack.settings,
            order_id,
            amount="88.80",
            timing=NOTIFICATION_ONLY,
            provider="alipay",
        )
        assert checkout.status is TransactionStatus.PENDING
        assert checkout.payment_url and checkout.payment_url.startswith(gateway_url + "?")

        async with httpx.AsyncClient(timeout=10) as browser:
            page = await browser.get(checkout.payment_url)
        assert page.status_code == 200 and "88.80 CNY" in page.text
        assert fake.trades[order_id].notify_url == f"{stack.webhook_url}/notify/alipay"

        notification = fake.pay(order_id)
        # Forged first: refused, and nothing settles.
        forged = await fake.deliver({**notification, "total_amount": "0.01"})
        assert forged.status_code == 401 and forged.text != "success"

        answer = await fake.deliver(notification)
        assert (answer.status_code, answer.text) == (200, "success")
        assert answer.headers["content-type"].startswith("text/plain")

        view = await asyncio.wait_for(handle.result(), 15)
        assert view.status is TransactionStatus.SUCCEEDED
        assert view.settled_by == "notification"
        assert (view.paid_amount, view.paid_currency) == (Decimal("88.80"), "CNY")
        assert (view.notifications_received, view.status_queries) == (1, 0)
        assert fake.requests == []  # no status query reached Alipay

        # Alipay resends until it reads `success`: a resend is acknowledged, nothing changes.
        again = await fake.deliver(notification)
        assert (again.status_code, again.text) == (200, "success")

        # The duplicated-parameter form is malformed: 400.
        async with httpx.AsyncClient(timeout=10) as client:
            duplicated = await client.post(
                f"{stack.webhook_url}/notify/alipay",
                content=(urlencode(notification) + "&trade_status=TRADE_SUCCESS").encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert duplicated.status_code == 400


@pytest.mark.parametrize("channel", ["alipay_qr", "alipay_app"])
async def test_an_alipay_qr_or_app_payment_settles_by_its_signed_notification(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    fake: FakeAlipayGateway,
    merchant_keys: MerchantKeys,
    gateway_url: str,
    channel: str,
) -> None:
    adapter = make_adapter(fake, merchant_keys, gateway_url)
    task_queue = f"tq-alipay-{uuid.uuid4().hex[:8]}"
    order_id = f"ali-{channel[7:]}-{uuid.uuid4().hex[:12]}"
    async with running_stack(
        dev_env.client, tmp_path, task_queue, extra_adapters={"alipay": adapter}
    ) as stack:
        handle, checkout = await start_payment(
            stack.client,
            stack.settings,
            order_id,
            amount="66.60",
            timing=NOTIFICATION_ONLY,
            provider="alipay",
            channel=channel,
        )
        assert checkout.status is TransactionStatus.PENDING
        action = checkout.payer_action
        if channel == "alipay_qr":
            # The checkout answer carries Alipay's QR code; the payer's wallet scans it.
            assert isinstance(action, QrCodeAction)
            assert checkout.payment_url == action.content == fake.precreated[order_id].qr_code
            trade = fake.scan(action.content)
        else:
            # The merchant's app hands the order string to the Alipay app; no URL.
            assert isinstance(action, AppAction) and action.order_string is not None
            assert checkout.payment_url is None and fake.trades == {}
            trade = fake.open_app(action.order_string)
        assert trade.notify_url == f"{stack.webhook_url}/notify/alipay"
        assert trade.total_amount == Decimal("66.60")

        notification = fake.pay(order_id)
        forged = await fake.deliver({**notification, "total_amount": "0.01"})
        assert forged.status_code == 401
        answer = await fake.deliver(notification)
        assert (answer.status_code, answer.text) == (200, "success")

        view = await asyncio.wait_for(handle.result(), 15)
        assert view.status is TransactionStatus.SUCCEEDED
        assert view.settled_by == "notification"
        assert (view.paid_amount, view.paid_currency) == (Decimal("66.60"), "CNY")
        assert view.provider_trade_no == trade.trade_no
        assert (view.notifications_received, view.status_queries) == (1, 0)
        assert view.payer_action is None  # settled: a credential that pays nothing more
        # Only the precreate reached the gateway: no status query was needed.
        assert [p["method"] for p in fake.requests] == (
            ["alipay.trade.precreate"] if channel == "alipay_qr" else []
        )
        assert [e.type for e in stack.merchant.events_for(order_id)] == ["payment.succeeded"]


async def delivered(sandbox: httpx.AsyncClient, **which: str) -> dict[str, object]:
    """The sandbox's first notification about `which`, once the webhook acknowledged it."""
    for _ in range(200):
        answer = await sandbox.get("/sandbox/notifications", params=which)
        if answer.status_code == 200 and any(d["delivered"] for d in answer.json()):
            return next(d for d in answer.json() if d["delivered"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the sandbox never delivered its notification about {which}")


async def test_an_outsider_cannot_settle_an_alipay_order_through_the_sandbox(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    fake: FakeAlipayGateway,
    merchant_keys: MerchantKeys,
    gateway_url: str,
) -> None:
    """Issue 18, as the review reproduced it: with the sandbox on (as under `tempay dev`),
    anyone can ask the sandbox's public API for a trade with an Alipay order's number and
    the webhook's /notify/sandbox, and have it signed and delivered. It is acknowledged
    (the signature is the sandbox's), and changes nothing: the Alipay order stays PENDING
    and its merchant hears nothing; the same for a pending Alipay refund."""
    adapter = make_adapter(fake, merchant_keys, gateway_url)
    task_queue = f"tq-alipay-{uuid.uuid4().hex[:8]}"
    order_id = f"victim-{uuid.uuid4().hex[:12]}"
    timing = NOTIFICATION_ONLY.model_copy(update={"refund_window": timedelta(minutes=5)})
    async with (
        running_stack(
            dev_env.client, tmp_path, task_queue, extra_adapters={"alipay": adapter}
        ) as stack,
        httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as outsider,
    ):
        handle, checkout = await start_payment(
            stack.client, stack.settings, order_id, "2500.00", timing=timing, provider="alipay"
        )
        assert checkout.status is TransactionStatus.PENDING
        notify_sandbox = f"{stack.webhook_url}/notify/sandbox"
        made = await outsider.post(
            "/payments",
            json={
                "out_trade_no": order_id,
                "amount": "2500.00",
                "currency": "cny",
                "notify_url": notify_sandbox,
            },
        )
        assert made.status_code == 200, made.text
        assert (await outsider.post(f"/sandbox/payments/{order_id}/pay", json={})).is_success
        delivery = await delivered(outsider, out_trade_no=order_id)
        assert delivery["last_response_status"] == 200  # held by Temporal, then refused there

        view = await handle.query(PaymentWorkflow.details)
        for _ in range(100):
            if view.refused_observations:
                break
            await asyncio.sleep(0.05)
            view = await handle.query(PaymentWorkflow.details)
        assert view.status is TransactionStatus.PENDING
        assert (view.refused_observations, view.notifications_received) == (1, 0)
        assert view.paid_amount is None and "sandbox" in (view.last_refused or "")
        assert stack.merchant.events_for(order_id) == []

        # The payer opens Alipay's page and pays: Alipay's own notification settles it.
        assert checkout.payment_url is not None
        assert (await outsider.get(checkout.payment_url)).status_code == 200
        answer = await fake.deliver(fake.pay(order_id))
        assert (answer.status_code, answer.text) == (200, "success")
        for _ in range(100):
            view = await handle.query(PaymentWorkflow.details)
            if view.status is TransactionStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.05)
        assert view.status is TransactionStatus.SUCCEEDED
        assert view.provider_trade_no == fake.trades[order_id].trade_no

        # A pending Alipay refund: Alipay took it, its confirming query is held unanswered.
        real_query = fake._alipay_trade_fastpay_refund_query
        held = asyncio.Event()

        def busy(biz: dict[str, object]) -> dict[str, object]:
            if not held.is_set():
                raise AlipayError("20000", "Service Currently Unavailable", "isp.unknow-error", "")
            return real_query(biz)

        fake._alipay_trade_fastpay_refund_query = busy  # type: ignore[method-assign]
        refund_id = f"rf-{order_id}"
        accepted = await start_refund(
            stack.client, stack.settings, order_id=order_id, refund_id=refund_id, amount="2500"
        )
        assert accepted.status is TransactionStatus.PENDING
        made = await outsider.post(
            f"/payments/{order_id}/refunds",
            json={
                "out_request_no": refund_id,
                "refund_amount": "2500.00",
                "currency": "cny",
                "notify_url": notify_sandbox,
            },
        )
        assert made.status_code == 200, made.text
        assert (await outsider.post(f"/sandbox/refunds/{refund_id}/fail", json={})).is_success
        await delivered(outsider, out_request_no=refund_id)
        refund = stack.client.get_workflow_handle(f"refund-{refund_id}", result_type=RefundView)
        for _ in range(100):
            refund_view = await refund.query(RefundWorkflow.details)
            if refund_view.refused_observations:
                break
            await asyncio.sleep(0.05)
        assert refund_view.status is TransactionStatus.PENDING
        assert refund_view.refused_observations == 1
        ledger = await handle.query(PaymentWorkflow.details)
        assert (ledger.refunding_amount, ledger.refundable_amount) == (Decimal("2500.00"), 0)
        with pytest.raises(RefundRefused, match="exceeds what remains refundable"):
            await start_refund(
                stack.client, stack.settings, order_id=order_id, refund_id="rf2-x", amount="1"
            )
        held.set()  # Alipay answers again: the refund's own query confirms it
        assert (await asyncio.wait_for(refund.result(), 30)).status is TransactionStatus.SUCCEEDED
