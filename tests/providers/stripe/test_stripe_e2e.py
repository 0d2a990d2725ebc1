"""End to end on the real dev server: the payment workflow with the Stripe adapter pointed at
the fake Stripe API, the webhook service and a worker, all over real HTTP. Both channels:
Checkout (a redirect) and PaymentIntents (a client_secret the merchant's page confirms)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from providers.stripe.adapter import CHECKOUT, PAYMENT_INTENT, StripeAdapter
from tempay.channels import ClientSecretAction
from tempay.domain import PaymentView, RefundView, SettlementTiming, TransactionStatus
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import API_KEY, WEBHOOK_SECRET
from tests.support.stack import Stack, running_stack, start_payment
from transactions import start_refund
from workflows.payment import PaymentWorkflow

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
        channel=CHECKOUT,
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
        stack.client, stack.settings, order_id, currency="USD", provider="stripe", channel=CHECKOUT
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
        stack.client,
        stack.settings,
        order_id,
        currency="USD",
        provider="stripe",
        channel=CHECKOUT,
        timing=timing,
    )
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.EXPIRED and view.settled_by == "close"
    assert fake.session_for(order_id)["status"] == "expired"


# ---- PaymentIntents ------------------------------------------------------------------------


async def start_intent(
    stack: Stack, order_id: str, timing: SettlementTiming | None = NOTIFICATION_ONLY
) -> tuple[WorkflowHandle[PaymentWorkflow, PaymentView], str]:
    """A stripe_payment_intent payment started as `tempay pay` does; its handle and the
    client_secret the checkout answer hands the merchant's page."""
    handle, checkout = await start_payment(
        stack.client,
        stack.settings,
        order_id,
        amount="25.00",
        currency="USD",
        timing=timing,
        provider="stripe",
        channel=PAYMENT_INTENT,
    )
    assert checkout.status is TransactionStatus.PENDING
    assert isinstance(checkout.payer_action, ClientSecretAction) and checkout.payment_url is None
    return handle, checkout.payer_action.client_secret


async def test_payment_intent_settles_by_payment_intent_succeeded(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    handle, secret = await start_intent(stack, order_id)
    intent = fake.intent_for(order_id)
    assert secret == intent["client_secret"] and fake.sessions == {}
    assert (intent["amount"], intent["currency"]) == (2500, "usd")

    event = fake.confirm_intent(secret)  # the merchant's page confirms with Stripe.js
    answer = await fake.send(event, f"{stack.webhook_url}/notify/stripe")
    assert (answer.status_code, answer.json()) == (200, {"received": True})

    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification" and view.status_queries == 0
    assert (view.paid_amount, view.paid_currency) == (Decimal("25.00"), "USD")
    assert view.provider_trade_no == intent["id"]
    [merchant_event] = stack.merchant.events_for(order_id)
    assert merchant_event.type == "payment.succeeded"
    assert secret not in merchant_event.model_dump_json()


async def test_a_declined_card_does_not_fail_the_payment(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    handle, secret = await start_intent(stack, order_id)
    notify = f"{stack.webhook_url}/notify/stripe"
    # The first card is declined (PENDING news), the second pays. Signals are taken in
    # order: had the decline been FAILED, the payment would have ended there and the money
    # would be late money in review, not SUCCEEDED.
    assert (await fake.send(fake.decline_intent(secret), notify)).status_code == 200
    assert (await fake.send(fake.confirm_intent(secret), notify)).status_code == 200
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "notification"
    assert view.notifications_received == 2


async def test_a_declined_and_abandoned_payment_intent_is_canceled_at_expiry(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    timing = NOTIFICATION_ONLY.model_copy(update={"expires_after": timedelta(seconds=2)})
    handle, secret = await start_intent(stack, order_id, timing)
    notify = f"{stack.webhook_url}/notify/stripe"
    assert (await fake.send(fake.decline_intent(secret), notify)).status_code == 200
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.EXPIRED and view.settled_by == "close"
    intent = fake.intent_for(order_id)
    assert (intent["status"], intent["cancellation_reason"]) == ("canceled", "abandoned")
    with pytest.raises(Exception, match="status is canceled"):
        fake.confirm_intent(secret)  # the payer can no longer pay it


async def test_lost_payment_intent_event_settles_by_status_query(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    handle, secret = await start_intent(stack, order_id, timing=None)
    fake.confirm_intent(secret)  # its event never arrives
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "status_query"
    assert (view.paid_amount, view.paid_currency) == (Decimal("25.00"), "USD")
    assert len(fake.intents) == 1  # status queries found the PaymentIntent, made no other


async def test_payment_intent_payment_is_refunded(
    stripe_stack: Stack, fake: FakeStripe, order_id: str
) -> None:
    stack = stripe_stack
    timing = NOTIFICATION_ONLY.model_copy(update={"refund_window": timedelta(minutes=5)})
    handle, secret = await start_intent(stack, order_id, timing)
    await fake.send(fake.confirm_intent(secret), f"{stack.webhook_url}/notify/stripe")
    refund_id = f"rf-{order_id}"
    accepted = None
    for _ in range(200):  # until the payment has settled and takes refunds
        view = await handle.query(PaymentWorkflow.details)
        if view.status is TransactionStatus.SUCCEEDED:
            accepted = await start_refund(
                stack.client, stack.settings, order_id=order_id, refund_id=refund_id, amount="10"
            )
            break
        await asyncio.sleep(0.05)
    assert accepted is not None, "the payment never settled"
    refund = stack.client.get_workflow_handle(f"refund-{refund_id}", result_type=RefundView)
    refunded = await asyncio.wait_for(refund.result(), SETTLE_SECONDS)
    assert (refunded.status, refunded.amount) == (TransactionStatus.SUCCEEDED, Decimal("10.00"))
    [stored] = fake.refunds.values()
    assert stored["payment_intent"] == fake.intent_for(order_id)["id"]
    assert (stored["amount"], stored["metadata"]["refund_id"]) == (1000, refund_id)
