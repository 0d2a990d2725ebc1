"""End to end on the real dev server: a payment through the Alipay adapter, against the fake
Alipay gateway. The payer opens the signed URL, pays, and the fake POSTs Alipay's signed
notification to the webhook's /notify/alipay; the notification, not a query, settles it."""

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

from tempay.domain import SettlementTiming, TransactionStatus
from tests.fakes.alipay_gateway import FakeAlipayGateway
from tests.providers.alipay.conftest import MerchantKeys, make_adapter
from tests.stack import running_stack, start_payment

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
