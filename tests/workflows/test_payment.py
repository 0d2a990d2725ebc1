"""PaymentWorkflow on the time-skipping test server, one test per settlement path.

The provider is a scripted fake behind the real activity names: the workflow is the unit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tempay import search_attributes as sa
from tempay.domain import (
    PAYMENT_REVISION,
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
    start,
    status_upserts,
)
from tests.support.workflow_doubles import FakeMerchant, FakeProvider
from workflows.payment import PaymentWorkflow
from workflows.revisions import POLLING_REVISION, STEADY_TIMER_REVISION


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def merchant() -> FakeMerchant:
    return FakeMerchant()


@pytest.fixture
async def client(
    time_env: WorkflowEnvironment, task_queue: str, provider: FakeProvider, merchant: FakeMerchant
) -> AsyncIterator[Client]:
    async with payment_worker(time_env, task_queue, provider, merchant):
        yield time_env.client


# Every test runs on an order from before revisions (0: patch markers, a new timer at each
# wakeup) and on one built today, so both waits keep their guarantees.
@pytest.fixture(
    params=[0, STEADY_TIMER_REVISION, PAYMENT_REVISION], ids=["revision0", "revision2", "current"]
)
def order(order_id: str, request: pytest.FixtureRequest) -> PaymentOrder:
    return order_at(order_id, request.param)


async def test_paid_by_notification(client: Client, order: PaymentOrder, task_queue: str) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert view.next_status_query_at is None  # the one that was scheduled is off
    assert view.paid_amount == Decimal("10.00")
    assert await status_upserts(handle) == ["CREATED", "PENDING", "SUCCEEDED"]
    described = await handle.describe()
    assert described.typed_search_attributes.get(sa.PAYMENT_STATUS) == "SUCCEEDED"
    assert described.typed_search_attributes.get(sa.ORDER_ID) == order.order_id
    assert described.typed_search_attributes.get(sa.TRANSACTION_KIND) == "payment"


async def test_a_refused_order_fails_at_once_and_says_why(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.refuse_create = "INVALID_PARAMETER: subject too long"
    handle = await client.start_workflow(
        PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    info = await handle.execute_update(PaymentWorkflow.checkout, order)
    assert (info.status, info.payment_url) == (TransactionStatus.FAILED, None)
    assert info.reason is not None and "INVALID_PARAMETER: subject too long" in info.reason
    view = await handle.result()
    assert view.settled_by == "create" and view.review_reason == info.reason


async def test_a_pending_checkout_has_no_reason(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    info = await handle.execute_update(PaymentWorkflow.checkout, order)
    assert (info.status, info.reason) == (TransactionStatus.PENDING, None)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    await handle.result()


async def test_declined_fails(client: Client, order: PaymentOrder, task_queue: str) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.FAILED))
    view = await handle.result()
    assert view.status is TransactionStatus.FAILED


async def test_dropped_notification_settles_by_status_query(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.pay()  # paid, but the notification never arrives
    handle = await start(client, order, task_queue)
    view: PaymentView = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "status_query"
    assert view.status_queries == 1
    assert view.notifications_received == 0


async def test_status_queries_back_off_with_jitter_to_the_cap(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    handle = await start(client, order, task_queue)
    view = await handle.result()
    assert view.status is TransactionStatus.EXPIRED
    started = (await handle.describe()).start_time
    gaps = [
        (b - a).total_seconds()
        for a, b in zip([started, *provider.query_times], provider.query_times, strict=False)
    ]
    # 60 s, 120 s, 240 s, 480 s, then the 600 s cap, each +-20%; the last is the final query.
    for gap, nominal in zip(gaps, [60, 120, 240, 480, 600], strict=False):
        assert nominal * 0.8 - 1 <= gap <= nominal * 1.2 + 1, gaps
    assert provider.closes == 1


async def test_news_that_settles_nothing_keeps_the_query_schedule(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    """ "Still waiting" notifications and duplicates wake the workflow; the first status
    query still comes 60 s +-20% after the start. An order built today keeps one timer
    for that (no cancel and restart at each wakeup, which costs history and server work)."""
    handle = await start(client, order, task_queue)
    waiting = notification(order, ProviderPaymentState.PENDING, notification_id="wait-1")
    for _ in range(3):
        await handle.signal(PaymentWorkflow.notify, waiting)  # one, then two duplicates
        await handle.signal(
            PaymentWorkflow.notify, notification(order, ProviderPaymentState.PENDING)
        )
    view = await handle.query(PaymentWorkflow.details)
    assert (view.notifications_received, view.duplicate_notifications) == (4, 2)
    assert view.status is TransactionStatus.PENDING and view.status_queries == 0

    provider.pay()  # the notification of the payment is lost: the query finds it
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "status_query"
    started = (await handle.describe()).start_time
    first_query = (provider.query_times[0] - started).total_seconds()
    assert 60 * 0.8 - 1 <= first_query <= 60 * 1.2 + 1, first_query

    history = await handle.fetch_history()
    query_timers = {
        e.timer_started_event_attributes.timer_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
        and b"next status query" in e.user_metadata.summary.data
    }
    cancelled = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED
        and e.timer_canceled_event_attributes.timer_id in query_timers
    ]
    if order.revision >= STEADY_TIMER_REVISION:
        assert (len(query_timers), len(cancelled)) == (1, 0)  # one period, fired for the query
    else:  # restarted at each wakeup
        assert len(query_timers) > 1 and len(cancelled) == len(query_timers) - 1


async def test_notification_before_create_returns(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.create_gate = asyncio.Event()
    handle = await client.start_workflow(
        PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    provider.create_gate.set()
    info = await handle.execute_update(PaymentWorkflow.checkout, order)
    assert info.payment_url is not None
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.payment_url == info.payment_url


async def test_duplicate_and_out_of_order_notifications_change_nothing(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    paid = notification(order, ProviderPaymentState.PAID, notification_id="n-1")
    await handle.signal(PaymentWorkflow.notify, paid)
    await handle.signal(PaymentWorkflow.notify, paid)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PENDING))
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.FAILED))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.notifications_received == 3
    assert view.duplicate_notifications == 1
    assert await status_upserts(handle) == ["CREATED", "PENDING", "SUCCEEDED"]


async def test_stale_pending_after_decline_keeps_failed(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.FAILED))
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PENDING))
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.CLOSED))
    assert (await handle.result()).status is TransactionStatus.FAILED


async def test_status_api_failing_then_recovering(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.pay()
    provider.query_failures = 4
    handle = await start(client, order, task_queue)
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "status_query"
    if order.revision >= POLLING_REVISION:
        # Each failed call is asked again after about 10 s: the fifth call answers.
        assert view.status_queries == 5
        gaps = [
            (b - a).total_seconds()
            for a, b in zip(provider.query_times, provider.query_times[1:], strict=False)
        ]
        assert all(8 - 1 <= gap <= 12 + 1 for gap in gaps), gaps
    else:  # the first scheduled query fails all 3 attempts, the next one fails once more
        assert view.status_queries == 2


async def test_unpaid_order_expires_after_close(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    handle = await start(client, order, task_queue)
    view = await handle.result()
    assert view.status is TransactionStatus.EXPIRED
    assert provider.closes == 1
    assert view.settled_at is not None and view.expires_at is not None
    assert view.settled_at >= view.expires_at


async def test_payment_landing_during_close_succeeds(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.close_pays_first = True
    handle = await start(client, order, task_queue)
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "close"


async def test_money_after_close_needs_review(
    client: Client, order: PaymentOrder, task_queue: str, time_env: WorkflowEnvironment
) -> None:
    handle = await start(client, order, task_queue)
    await time_env.sleep(TIMING.expires_after + timedelta(minutes=1))
    assert (await handle.query(PaymentWorkflow.details)).status is TransactionStatus.EXPIRED
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.NEEDS_REVIEW
    assert view.review_reason == "money arrived after the order was closed"
    assert await status_upserts(handle) == ["CREATED", "PENDING", "EXPIRED", "NEEDS_REVIEW"]


@pytest.mark.parametrize(
    ("amount", "currency"), [("9.99", "CNY"), ("10.01", "CNY"), ("10.00", "USD")]
)
async def test_amount_or_currency_mismatch_needs_review(
    client: Client, order: PaymentOrder, task_queue: str, amount: str, currency: str
) -> None:
    handle = await start(client, order, task_queue)
    mismatched = notification(order, ProviderPaymentState.PAID, amount=amount, currency=currency)
    await handle.signal(PaymentWorkflow.notify, mismatched)
    view = await handle.result()
    assert view.status is TransactionStatus.NEEDS_REVIEW
    assert view.review_reason == f"paid {amount} {currency}, order is 10.00 CNY"


async def test_mismatch_found_by_status_query_needs_review(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.pay("1.00")
    handle = await start(client, order, task_queue)
    assert (await handle.result()).status is TransactionStatus.NEEDS_REVIEW


async def test_notification_racing_status_query_settles_once(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    provider.pay()
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert await status_upserts(handle) == ["CREATED", "PENDING", "SUCCEEDED"]


async def test_notification_during_a_slow_status_query_settles_at_once(
    client: Client,
    order: PaymentOrder,
    task_queue: str,
    provider: FakeProvider,
    time_env: WorkflowEnvironment,
) -> None:
    provider.pay()
    provider.query_gate = asyncio.Event()  # the status API hangs
    # Time stands still while an activity runs, so the first query comes after 1 s.
    timing = TIMING.model_copy(update={"first_status_query_delay": timedelta(seconds=1)})
    order = order.model_copy(update={"timing": timing})
    handle = await start(client, order, task_queue)
    await time_env.sleep(timedelta(seconds=2))
    assert len(provider.query_times) == 1
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    # Settled while the query still hangs: the notification did not wait for it.
    for _ in range(100):
        early = await handle.query(PaymentWorkflow.details)
        if early.status.is_terminal:
            break
        await asyncio.sleep(0.05)
    provider.query_gate.set()
    assert early.status is TransactionStatus.SUCCEEDED
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert await status_upserts(handle) == ["CREATED", "PENDING", "SUCCEEDED"]


async def test_same_order_id_with_other_terms_is_refused(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    again = await handle.execute_update(PaymentWorkflow.checkout, order)
    assert again.payment_url is not None
    for change in (
        {"amount": Decimal("11.00")},
        {"currency": "USD"},
        {"kind": TransactionKind.RECHARGE},
        {"account_id": "acct-1"},
    ):
        other = order.model_copy(update=change)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(PaymentWorkflow.checkout, other)
        assert "already exists with different terms" in str(refused.value.cause)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED


async def test_a_waiting_payment_is_polled_with_no_workflow_task_per_query(
    client: Client, task_queue: str, provider: FakeProvider, time_env: WorkflowEnvironment
) -> None:
    """After its first status query is due, a payment hands the schedule to one
    `poll_payment` activity: its retries ask the provider (60 s, then 120, 240, 480 s ...),
    and the workflow's history does not grow with them."""
    order = PaymentOrder(
        provider="sandbox",
        order_id=f"poll-{uuid.uuid4().hex[:8]}", amount=Decimal("10.00"), currency="CNY",
        timing=TIMING, revision=PAYMENT_REVISION,
    )  # fmt: skip
    handle = await start(client, order, task_queue)
    await time_env.sleep(timedelta(minutes=4))
    early = len((await handle.fetch_history()).events)
    await time_env.sleep(timedelta(minutes=16))  # queries at about 7 and 15 min meanwhile
    assert len(provider.query_times) >= 4
    history = await handle.fetch_history()
    assert len(history.events) == early  # no event for the queries in between
    view = await handle.query(PaymentWorkflow.details)
    assert view.polling_since is not None and view.next_status_query_at is None
    details = (await handle.describe()).raw_description
    (poll,) = details.pending_activities
    assert poll.activity_type.name == "poll_payment"
    assert poll.attempt >= len(provider.query_times)  # the attempt now due or running

    provider.pay()  # its notification is lost: the next attempt finds the money
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "status_query"
    assert view.status_queries == len(provider.query_times)
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled.count("poll_payment") == 1 and "query_payment" not in scheduled


async def test_a_notification_stops_the_poll(
    client: Client, task_queue: str, provider: FakeProvider, time_env: WorkflowEnvironment
) -> None:
    order = PaymentOrder(
        provider="sandbox",
        order_id=f"poll-{uuid.uuid4().hex[:8]}", amount=Decimal("10.00"), currency="CNY",
        timing=TIMING, revision=PAYMENT_REVISION,
    )  # fmt: skip
    handle = await start(client, order, task_queue)
    await time_env.sleep(timedelta(minutes=4))
    asked = len(provider.query_times)
    assert asked >= 2
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "notification"
    await time_env.sleep(timedelta(minutes=30))
    assert len(provider.query_times) == asked  # nothing asked after the settlement
    assert not (await handle.describe()).raw_description.pending_activities


# The trust boundary: a transaction takes news only from its own provider, about its own trade.


async def test_another_providers_notification_changes_nothing(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    """A sandbox-signed PAID for an Alipay order (issue 18): refused, counted, visible; the
    order's own notification with the same notification id still settles it."""
    alipay_order = order.model_copy(update={"provider": "alipay"})
    handle = await client.start_workflow(
        PaymentWorkflow.run, alipay_order, id=order.workflow_id, task_queue=task_queue
    )
    await handle.execute_update(PaymentWorkflow.checkout, alipay_order)
    forged = notification(order, ProviderPaymentState.PAID, notification_id="n-1")
    assert forged.provider == "sandbox"
    await handle.signal(PaymentWorkflow.notify, forged)
    view = await handle.query(PaymentWorkflow.details)
    assert view.status is TransactionStatus.PENDING
    assert (view.refused_observations, view.notifications_received) == (1, 0)
    assert view.last_refused is not None and "sandbox" in view.last_refused
    assert view.paid_amount is None

    real = forged.model_copy(update={"provider": "alipay"})
    await handle.signal(PaymentWorkflow.notify, real)
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert (view.notifications_received, view.duplicate_notifications) == (1, 0)
    assert view.refused_observations == 1
    assert await status_upserts(handle) == ["CREATED", "PENDING", "SUCCEEDED"]


async def test_a_notification_about_another_trade_changes_nothing(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    """The provider's trade number is known from the create: news naming another trade of
    the same provider (a trade someone else opened with this order number) is refused."""
    handle = await start(client, order, task_queue)
    other = notification(order, ProviderPaymentState.PAID).model_copy(
        update={"provider_trade_no": "T-someone-else"}
    )
    await handle.signal(PaymentWorkflow.notify, other)
    view = await handle.query(PaymentWorkflow.details)
    assert (view.status, view.refused_observations) == (TransactionStatus.PENDING, 1)
    assert view.provider_trade_no == "T-" + order.order_id
    mine = notification(order, ProviderPaymentState.PAID).model_copy(
        update={"provider_trade_no": "T-" + order.order_id}
    )
    await handle.signal(PaymentWorkflow.notify, mine)
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED


async def test_a_trade_named_first_by_a_notification_is_kept(
    client: Client, order: PaymentOrder, task_queue: str, provider: FakeProvider
) -> None:
    """Alipay and WeChat Pay answer a create without their trade number: the first news
    naming one pins it, and news about another trade is refused from then on."""
    provider.trade_no_at_create = False
    handle = await start(client, order, task_queue)
    assert (await handle.query(PaymentWorkflow.details)).provider_trade_no is None
    first = notification(order, ProviderPaymentState.PENDING).model_copy(
        update={"provider_trade_no": "T-" + order.order_id}
    )
    other = notification(order, ProviderPaymentState.FAILED).model_copy(
        update={"provider_trade_no": "T-other"}
    )
    await handle.signal(PaymentWorkflow.notify, first)
    await handle.signal(PaymentWorkflow.notify, other)
    view = await handle.query(PaymentWorkflow.details)
    assert (view.status, view.refused_observations) == (TransactionStatus.PENDING, 1)
    assert view.provider_trade_no == "T-" + order.order_id
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED


async def test_a_provider_amount_in_exponent_form_is_shown_in_minor_units(
    client: Client, order: PaymentOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(
        PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID, amount="1E1")
    )
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert str(view.paid_amount) == "10.00"


async def test_a_payment_settled_by_another_provider_before_the_boundary_replays() -> None:
    """Recorded with the code before the trust boundary: a sandbox-reported PAID settled an
    Alipay order. Its history still replays (the refusal is behind a patch), so upgrading
    does not wedge the workflows an attack already reached; operators find them by their
    PaymentStatus and Provider and review them by hand."""
    path = Path(__file__).parent / "histories" / "pre_trust_boundary_foreign_paid.json"
    history = WorkflowHistory.from_json("payment-pre-trust-foreign-paid", path.read_text())
    replayer = Replayer(workflows=[PaymentWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
