"""End to end on the real dev server: the payment workflow with the Stripe adapter pointed at
the fake Stripe API, the webhook service and a worker, all over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from providers.stripe.adapter import StripeAdapter
from tempay.domain import SettlementTiming, TransactionStatus
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import API_KEY, WEBHOOK_SECRET
from tests.support.stack import Stack, running_stack, start_payment

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 20

# Only the notification can settle these: the first status query is far away.
NOTIFICATION_ONLY = SettlementTiming(
    first_status_query_delay=timedelta(minutes=2),
    status_query_backoff_cap=timedelta(minutes=2),
    expires_after=timedelta(minutes=5),
    late_payment_window=timedelta(milliseconds=500),
    refund_window=timedelta(0),  # the payment's workflow ends at settlement
)


@pytest.fixture
async def stripe_stack(
    dev_env: WorkflowEnvironment, fake: FakeStripe, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    adapter = StripeAdapter(API_KEY, [WEBHOOK_SECRET], api_base=fake.base_url, timeout=5)
    task_queue = f"tq-stripe-{uuid.uuid4().hex[:8]}"
    async with running_stack(
        dev_env.client,
        tmp_path_factory.mktemp("stripe-e2e"),
        task_queue,
        extra_adapters={"stripe": adapter},
    ) as stack:
        yield stack


@pytest.fixture
def order_id() -> str:
    return f"str-{uuid.uuid4().hex[:12]}"


async def test_paid_checkout_settles_by_the_signed_event(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    handle, checkout = await start_payment(
        stack.client,
        stack.settings,
        order_id,
        amount="25.00",
        currency="USD",
        timing=NOTIFICATION_ONLY,
        provider="stripe",
    )
    session = fake.session_for(order_id)
    assert checkout.status is TransactionStatus.PENDING
    assert (checkout.payment_url, checkout.provider_trade_no) == (session["url"], session["id"])
    assert (session["amount_total"], session["currency"]) == (2500, "usd")

    event = fake.pay(order_id)
    answer = await fake.send(event, f"{stack.webhook_url}/notify/stripe")
    assert (answer.status_code, answer.json()) == (200, {"received": True})

    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification" and view.status_queries == 0
    assert (view.paid_amount, view.paid_currency) == (Decimal("25.00"), "USD")
    assert view.provider_trade_no == session["id"] and view.provider == "stripe"
    [merchant_event] = stack.merchant.events_for(order_id)
    assert merchant_event.type == "payment.succeeded"

    # Stripe delivers again (say our 200 was lost): acknowledged, nothing changes.
    again = await fake.send(event, f"{stack.webhook_url}/notify/stripe")
    assert again.status_code == 200
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
    assert (await handle.result()).notifications_received == 1


async def test_lost_event_settles_by_status_query(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    handle, _ = await start_payment(
        stack.client, stack.settings, order_id, currency="USD", provider="stripe"
    )
    fake.pay(order_id)  # its event never arrives
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "status_query"
    assert (view.paid_amount, view.paid_currency) == (Decimal("10.00"), "USD")
    assert len(fake.sessions) == 1  # status queries found the session, made no other


async def test_unpaid_checkout_is_expired_at_stripe(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    timing = NOTIFICATION_ONLY.model_copy(update={"expires_after": timedelta(seconds=2)})
    handle, _ = await start_payment(
        stack.client, stack.settings, order_id, currency="USD", provider="stripe", timing=timing
    )
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.EXPIRED and view.settled_by == "close"
    assert fake.session_for(order_id)["status"] == "expired"
