"""Merchant events on the time-skipping test server: one event per settlement, delivered
durably (through hours of merchant outage), and never in the way of settlement.

The merchant's endpoint is a fake behind the real `notify_merchant` activity name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from tempay.domain import (
    PAYMENT_REVISION,
    MerchantDeliveryState,
    PaymentOrder,
    PaymentView,
    ProviderPaymentState,
    TransactionKind,
    TransactionStatus,
)
from tests.support.payment_workflow import (
    TIMING,
    notification,
    order_at,
    payment_worker,
    replay,
    start,
)
from tests.support.workflow_doubles import FakeMerchant, FakeProvider
from workflows.merchant import MERCHANT_DELIVERY_TIMEOUT
from workflows.payment import PaymentWorkflow

OUTAGE = timedelta(hours=5)
# Histories recorded by PaymentWorkflow before merchant events existed (paid; expired, then
# late money): workflows in flight at the upgrade must replay on the new code.
HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def merchant(time_env: WorkflowEnvironment) -> FakeMerchant:
    return FakeMerchant(clock=time_env.get_current_time)


@pytest.fixture
async def client(
    time_env: WorkflowEnvironment, task_queue: str, provider: FakeProvider, merchant: FakeMerchant
) -> AsyncIterator[Client]:
    async with payment_worker(time_env, task_queue, provider, merchant):
        yield time_env.client


# Every test runs on an order from before revisions (the merchant called by the activity
# alone) and on one built today (its first attempt a local activity, then the activity).
@pytest.fixture(params=[0, PAYMENT_REVISION], ids=["revision0", "current"])
def order(order_id: str, request: pytest.FixtureRequest) -> PaymentOrder:
    return order_at(order_id, request.param)


async def wait_for(
    handle: WorkflowHandle, status: TransactionStatus, events: int = 1
) -> PaymentView:
    """The details once the workflow shows `status` and `events` merchant events."""
    async with asyncio.timeout(10):
        while True:
            view: PaymentView = await handle.query(PaymentWorkflow.details)
            if view.status is status and len(view.merchant_events) >= events:
                return view
            await asyncio.sleep(0.02)


async def current_details(handle: WorkflowHandle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


# Each settlement path raises exactly one event, of the settled status's type


async def test_paid_delivers_payment_succeeded(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    [event] = merchant.received
    assert event.id == f"evt_payment-{order.order_id}_succeeded"
    assert event.type == "payment.succeeded"
    assert event.created_at == view.settled_at
    data = event.data
    assert (data.order_id, data.workflow_id, data.kind) == (
        order.order_id,
        order.workflow_id,
        TransactionKind.PAYMENT,
    )
    assert (data.status, data.amount, data.currency) == (
        TransactionStatus.SUCCEEDED,
        Decimal("10.00"),
        "CNY",
    )
    assert (data.paid_amount, data.paid_currency) == (Decimal("10.00"), "CNY")
    assert data.provider_trade_no == f"T-{order.order_id}"
    assert (data.settled_by, data.settled_at) == ("notification", view.settled_at)
    assert data.account_id is None and data.review_reason is None
    # Amounts are strings on the wire.
    assert '"amount":"10.00"' in event.model_dump_json()

    [progress] = view.merchant_events
    assert (progress.event_id, progress.type) == (event.id, "payment.succeeded")
    assert (progress.state, progress.attempts) == (MerchantDeliveryState.DELIVERED, 1)
    assert progress.finished_at is not None and progress.error is None
    details = await current_details(handle)
    assert f"merchant event `payment.succeeded` ({event.id}): **delivered** after 1 attempt" in (
        details
    )


async def test_declined_delivers_payment_failed(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.FAILED))
    view = await handle.result()
    assert view.status is TransactionStatus.FAILED
    [event] = merchant.received
    assert (event.type, event.id) == ("payment.failed", f"evt_{order.workflow_id}_failed")
    assert event.data.review_reason == "payer declined or payment failed"
    assert event.data.paid_amount is None


async def test_expiry_delivers_payment_expired(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    handle = await start(client, order, task_queue)
    view = await handle.result()
    assert view.status is TransactionStatus.EXPIRED
    [event] = merchant.received
    assert event.type == "payment.expired"
    assert event.data.settled_by == "close"


async def test_mismatch_delivers_payment_needs_review(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    handle = await start(client, order, task_queue)
    paid = notification(order, ProviderPaymentState.PAID, amount="9.99")
    await handle.signal(PaymentWorkflow.notify, paid)
    await handle.result()
    [event] = merchant.received
    assert event.type == "payment.needs_review"
    assert (event.data.paid_amount, event.data.amount) == (Decimal("9.99"), Decimal("10.00"))
    assert event.data.review_reason == "paid 9.99 CNY, order is 10.00 CNY"


async def test_recharge_delivers_recharge_events(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    recharge = order.model_copy(update={"kind": TransactionKind.RECHARGE, "account_id": "acct-7"})
    handle = await start(client, recharge, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    await handle.result()
    [event] = merchant.received
    assert event.type == "recharge.succeeded"
    assert (event.data.kind, event.data.account_id) == (TransactionKind.RECHARGE, "acct-7")


async def test_not_configured_is_recorded_not_failed(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    merchant.configured = False
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    [progress] = view.merchant_events
    assert progress.state is MerchantDeliveryState.NOT_CONFIGURED
    assert len(merchant.attempts) == 1


# The merchant's application is down for hours


async def test_merchant_down_for_hours_gets_the_same_event_later(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    merchant.refuse_until = await time_env.get_current_time() + OUTAGE
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))

    # Settled at once; the event is pending while the merchant refuses.
    early = await wait_for(handle, TransactionStatus.SUCCEEDED)
    assert early.merchant_events[0].state is MerchantDeliveryState.PENDING
    assert "**pending**, retrying until the merchant answers 2xx" in await current_details(handle)

    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_at == early.settled_at
    [event] = merchant.received
    ids = {event_id for event_id, _ in merchant.attempts}
    assert ids == {f"evt_{order.workflow_id}_succeeded"} == {event.id}
    times = [when for _, when in merchant.attempts]
    assert times[-1] >= merchant.refuse_until > times[-2]
    # Backoff: 5 s doubling to the one-hour cap, so a five-hour outage costs ~15 attempts.
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] == pytest.approx(5, abs=1)
    assert max(gaps) == pytest.approx(3600, abs=1)
    assert 10 <= len(times) <= 20
    [progress] = view.merchant_events
    assert (progress.state, progress.attempts) == (MerchantDeliveryState.DELIVERED, len(times))


async def test_merchant_down_past_the_delivery_timeout_fails_the_event_only(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    merchant.refuse_until = await time_env.get_current_time() + timedelta(days=30)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    [progress] = view.merchant_events
    assert progress.state is MerchantDeliveryState.FAILED
    assert progress.error
    assert merchant.received == []
    times = [when for _, when in merchant.attempts]
    assert times[-1] - times[0] >= timedelta(days=1)
    assert times[-1] - times[0] <= MERCHANT_DELIVERY_TIMEOUT


# Late money: two settlements, two events


async def test_late_money_delivers_expired_then_needs_review(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    handle = await start(client, order, task_queue)
    await time_env.sleep(TIMING.expires_after + timedelta(minutes=1))
    await wait_for(handle, TransactionStatus.EXPIRED)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.NEEDS_REVIEW
    expired, review = merchant.received
    assert (expired.type, review.type) == ("payment.expired", "payment.needs_review")
    assert expired.id == f"evt_{order.workflow_id}_expired"
    assert review.id == f"evt_{order.workflow_id}_needs_review"
    assert review.data.review_reason == "money arrived after the order was closed"
    assert (review.data.paid_amount, review.data.paid_currency) == (Decimal("10.00"), "CNY")
    assert [p.type for p in view.merchant_events] == ["payment.expired", "payment.needs_review"]
    assert all(p.state is MerchantDeliveryState.DELIVERED for p in view.merchant_events)


async def test_merchant_outage_does_not_delay_the_late_money_watch(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    merchant.refuse_until = await time_env.get_current_time() + OUTAGE
    handle = await start(client, order, task_queue)
    await time_env.sleep(TIMING.expires_after + timedelta(minutes=1))
    expired = await wait_for(handle, TransactionStatus.EXPIRED)
    assert expired.merchant_events[0].state is MerchantDeliveryState.PENDING

    # Money inside the late-payment window is flagged at once, the merchant still down.
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    review = await wait_for(handle, TransactionStatus.NEEDS_REVIEW, events=2)
    assert review.settled_at is not None and expired.settled_at is not None
    assert review.settled_at - expired.settled_at < TIMING.late_payment_window
    assert [p.state for p in review.merchant_events] == [MerchantDeliveryState.PENDING] * 2

    view = await handle.result()
    assert [event.type for event in merchant.received] == [
        "payment.expired",
        "payment.needs_review",
    ]
    assert all(p.state is MerchantDeliveryState.DELIVERED for p in view.merchant_events)
    attempted = {event_id for event_id, _ in merchant.attempts}
    assert attempted == {event.id for event in merchant.received}


async def test_money_after_the_window_while_delivering_is_still_reviewed(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    """Past the late-payment window the workflow stays open only for a pending delivery;
    a notification it accepts then must not be dropped."""
    merchant.refuse_until = await time_env.get_current_time() + OUTAGE
    handle = await start(client, order, task_queue)
    await time_env.sleep(TIMING.expires_after + TIMING.late_payment_window + timedelta(hours=1))
    waiting = await handle.query(PaymentWorkflow.details)
    assert waiting.status is TransactionStatus.EXPIRED
    assert waiting.merchant_events[0].state is MerchantDeliveryState.PENDING
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.NEEDS_REVIEW
    # Both events arrive once each. Their order is not guaranteed: the expired event's
    # retries had backed off further, so the needs_review event can land first.
    assert sorted(event.type for event in merchant.received) == [
        "payment.expired",
        "payment.needs_review",
    ]
    assert len({event.id for event in merchant.received}) == 2


# Replay: deliveries are deterministic, and older workflows replay unchanged


async def test_concurrent_deliveries_replay_deterministically(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    merchant.refuse_until = await time_env.get_current_time() + timedelta(hours=1)
    handle = await start(client, order, task_queue)
    await time_env.sleep(TIMING.expires_after + timedelta(minutes=1))
    await wait_for(handle, TransactionStatus.EXPIRED)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    await handle.result()
    await replay(await handle.fetch_history())


@pytest.mark.parametrize("name", ["paid", "late_money"])
async def test_workflows_settled_before_merchant_events_replay(name: str) -> None:
    path = HISTORIES / f"pre_merchant_events_{name}.json"
    await replay(WorkflowHistory.from_json(f"payment-pre-merchant-{name}", path.read_text()))


# Orders started at the current revision need no patch markers


async def _patch_markers(handle: WorkflowHandle) -> list[str]:
    """Patch markers only: local activities record markers of their own (core_local_activity)."""
    history = await handle.fetch_history()
    return [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


@pytest.mark.parametrize("revision", [0, PAYMENT_REVISION])
async def test_a_current_order_settles_with_no_patch_marker(
    client: Client, order: PaymentOrder, task_queue: str, merchant: FakeMerchant, revision: int
) -> None:
    """Revision 0 (an order from before the field) goes through workflow.patched, which
    records a marker; an order built today behaves the same with none in its history."""
    order = order.model_copy(update={"revision": revision})
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert [event.type for event in merchant.received] == ["payment.succeeded"]
    markers = await _patch_markers(handle)
    # Revision 0: one for merchant events, one for the refund window, and one per book
    # write asked for (PENDING, SUCCEEDED, the refund totals the window opens), which runs
    # from before the book ask (workflows/book.py).
    assert markers == ([] if revision >= PAYMENT_REVISION else ["core_patch"] * 5)
    await replay(await handle.fetch_history())
