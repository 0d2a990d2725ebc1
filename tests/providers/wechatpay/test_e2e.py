"""End to end on the real dev server: the webhook service and a worker with the wechatpay
adapter pointed at the fake WeChat Pay API. The fake pays (a Native QR code; a JSAPI order
with the checkout's signed parameters) and POSTs an encrypted, signed TRANSACTION.SUCCESS
notification to /notify/wechatpay; the notification alone settles it (the first status query
is a minute away)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

import transactions
from providers.wechatpay.adapter import WechatPayAdapter
from tempay.channels import JsapiAction
from tempay.domain import PaymentView, SettlementTiming, TransactionStatus
from tests.support.fakes.wechatpay_api import FakeWechatPay
from tests.support.providers.wechatpay import APPID
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

NOTIFICATION_ONLY = SettlementTiming(
    first_status_query_delay=timedelta(minutes=1),
    status_query_backoff_cap=timedelta(minutes=1),
    expires_after=timedelta(minutes=5),
    late_payment_window=timedelta(milliseconds=500),
    refund_window=timedelta(0),  # the payment's workflow ends at settlement
)


async def test_a_wechat_payment_settles_by_its_notification(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    fake: FakeWechatPay,
    adapter: WechatPayAdapter,
) -> None:
    order_id = f"wx-{uuid.uuid4().hex[:12]}"
    async with running_stack(
        dev_env.client,
        tmp_path / "stack",
        f"tq-wx-{uuid.uuid4().hex[:8]}",
        extra_adapters={"wechatpay": adapter},
    ) as stack:
        # As tests.support.stack.start_payment does it, with a WeChat channel.
        order = transactions.build_order(
            stack.settings,
            order_id=order_id,
            amount="10.00",
            currency="CNY",
            provider="wechatpay",
            channel="wechat_native",
            subject=f"Test order {order_id}",
            timing=NOTIFICATION_ONLY,
        )
        checkout = await transactions.start_payment(stack.client, stack.settings, order)
        assert checkout.status is TransactionStatus.PENDING
        assert checkout.payment_url is not None
        assert checkout.payment_url.startswith("weixin://wxpay/bizpayurl?pr=")
        assert fake.orders[order_id]["notify_url"] == f"{stack.webhook_url}/notify/wechatpay"
        assert fake.orders[order_id]["amount"] == {"total": 1000, "currency": "CNY"}

        # A forged notification is refused the way WeChat Pay expects, and changes nothing.
        headers, body = fake.payment_notification(order_id)
        forged = await fake.deliver(
            f"{stack.webhook_url}/notify/wechatpay",
            headers,
            body.replace(b"encrypt-resource", b"encrypt-resourcf"),
        )
        assert forged.status_code == 401
        assert forged.json()["code"] == "FAIL"

        fake.pay(order_id)
        answer = await fake.notify_payment(order_id)
        assert answer.status_code in (200, 204), answer.text
        assert answer.content == b""

        handle = stack.client.get_workflow_handle(order.workflow_id, result_type=PaymentView)
        view = await asyncio.wait_for(handle.result(), 15)
        assert view.status is TransactionStatus.SUCCEEDED
        assert view.settled_by == "notification"
        assert view.paid_amount == Decimal("10.00") and view.paid_currency == "CNY"
        assert view.status_queries == 0
        [event] = stack.merchant.events_for(order_id)
        assert event.type == "payment.succeeded"

        # WeChat Pay retries until acknowledged: a repeat is acknowledged again, bodiless.
        again = await fake.notify_payment(order_id)
        assert again.status_code in (200, 204) and again.content == b""


async def test_a_jsapi_payment_settles_by_its_notification(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    fake: FakeWechatPay,
    adapter: WechatPayAdapter,
) -> None:
    order_id = f"wxj-{uuid.uuid4().hex[:12]}"
    openid = fake.new_payer(APPID)  # the payer, as the official account knows them
    async with running_stack(
        dev_env.client,
        tmp_path / "stack",
        f"tq-wxj-{uuid.uuid4().hex[:8]}",
        extra_adapters={"wechatpay": adapter},
    ) as stack:
        order = transactions.build_order(
            stack.settings,
            order_id=order_id,
            amount="10.00",
            currency="CNY",
            provider="wechatpay",
            channel="wechat_jsapi",
            subject=f"Test order {order_id}",
            timing=NOTIFICATION_ONLY,
            payer_openid=openid,
        )
        checkout = await transactions.start_payment(stack.client, stack.settings, order)
        assert checkout.status is TransactionStatus.PENDING
        # No URL: the page hands the parameters to WeixinJSBridge.
        assert checkout.payment_url is None
        assert isinstance(checkout.payer_action, JsapiAction)
        parameters = checkout.payer_action.parameters
        stored = fake.orders[order_id]
        assert (stored["trade_type"], stored["appid"], stored["payer_openid"]) == (
            "JSAPI",
            APPID,
            openid,
        )
        assert parameters.package == f"prepay_id={stored['prepay_id']}"

        # The payer pays in WeChat with exactly what the checkout answered (the fake's client
        # checks the paySign with the merchant's key); WeChat Pay notifies.
        fake.pay_jsapi(parameters.model_dump(), openid)
        answer = await fake.notify_payment(order_id)
        assert answer.status_code in (200, 204), answer.text

        handle = stack.client.get_workflow_handle(order.workflow_id, result_type=PaymentView)
        view = await asyncio.wait_for(handle.result(), 15)
        assert view.status is TransactionStatus.SUCCEEDED
        assert view.settled_by == "notification"
        assert view.paid_amount == Decimal("10.00") and view.status_queries == 0
        [event] = stack.merchant.events_for(order_id)
        assert event.type == "payment.succeeded"
        # The payer's openid is personal data: not in the view or the merchant's event.
        assert openid not in view.model_dump_json() and openid not in event.model_dump_json()
