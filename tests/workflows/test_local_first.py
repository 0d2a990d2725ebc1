"""The provider create and the first merchant delivery as local activities (revision 4),
on the time-skipping test server: on the happy path no activity task at all; a failed
attempt hands over to the regular activity and its schedule; a refusal is final at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tempay.domain import (
    PAYMENT_REVISION,
    MerchantDeliveryState,
    ProviderPaymentState,
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
from tests.support.temporal import start_time_skipping
from tests.support.workflow_doubles import FakeMerchant, FakeProvider
from workflows.payment import PaymentWorkflow
from workflows.revisions import BOOK_REVISION, LOCAL_FIRST_REVISION


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


async def calls(handle: WorkflowHandle) -> tuple[list[str], list[str], list[str]]:
    """(activities scheduled, local activity markers, timer summaries) in history order."""
    scheduled, local, timers = [], [], []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity":
                local.append(event.user_metadata.summary.data.decode())
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            timers.append(event.user_metadata.summary.data.decode())
    return scheduled, local, timers


def test_new_orders_are_at_the_local_first_revision() -> None:
    assert PAYMENT_REVISION >= LOCAL_FIRST_REVISION


async def test_a_paid_payment_schedules_no_activity(
    client: Client, order_id: str, task_queue: str, merchant: FakeMerchant
) -> None:
    order = order_at(order_id)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    [progress] = view.merchant_events
    assert (progress.state, progress.attempts) == (MerchantDeliveryState.DELIVERED, 1)
    assert len(merchant.received) == 1
    scheduled, local, timers = await calls(handle)
    assert scheduled == []
    # The settlement's book write rides the merchant delivery's local attempt, the book
    # first; the PENDING write waited for the first status query, which never came.
    assert [summary.strip('"') for summary in local] == [
        "create payment at provider",
        "write the book, then notify merchant",
    ]
    # The first status query's (cancelled by the notification), then the refund window's.
    assert timers == ['"next status query"', '"refund window"']
    await replay(await handle.fetch_history())


async def test_an_order_of_the_book_revision_keeps_its_writes(
    client: Client, order_id: str, task_queue: str
) -> None:
    order = order_at(order_id, revision=BOOK_REVISION)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED
    scheduled, local, _ = await calls(handle)
    assert scheduled == []
    # PENDING and SUCCEEDED each written on their own before the merchant hears.
    assert [summary.strip('"') for summary in local] == [
        "create payment at provider",
        "write the book",
        "write the book",
        "notify merchant",
    ]
    await replay(await handle.fetch_history())


async def test_an_order_from_before_keeps_its_activities(
    client: Client, order_id: str, task_queue: str
) -> None:
    order = order_at(order_id, revision=LOCAL_FIRST_REVISION - 1)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED
    scheduled, local, _ = await calls(handle)
    # Its book writes (from the upgrade on, each behind its own patch: workflows/book.py)
    # are new commands, so they may run locally like every new run's.
    assert scheduled == ["create_payment", "notify_merchant"]
    assert [summary.strip('"') for summary in local] == ["write the book"] * 2
    await replay(await handle.fetch_history())


async def test_a_failed_create_goes_to_the_activity_at_once(
    client: Client, order_id: str, task_queue: str, provider: FakeProvider
) -> None:
    provider.create_failures = 2  # the local attempt and the activity's first
    order = order_at(order_id)
    handle = await start(client, order, task_queue)  # the payer still gets the URL
    assert provider.creates == 3
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED
    scheduled, local, _ = await calls(handle)
    assert scheduled == ["create_payment"]
    assert len(local) == 2  # the failed create attempt, the book write with the delivery
    await replay(await handle.fetch_history())


async def test_a_refused_create_fails_with_no_activity(
    client: Client, order_id: str, task_queue: str, provider: FakeProvider
) -> None:
    provider.refuse_create = "INVALID_PARAMETER: amount"
    order = order_at(order_id)
    handle = await client.start_workflow(
        PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    info = await handle.execute_update(PaymentWorkflow.checkout, order)
    assert info.status is TransactionStatus.FAILED
    assert info.reason is not None and "INVALID_PARAMETER: amount" in info.reason
    view = await handle.result()
    assert view.settled_by == "create"
    assert provider.creates == 1  # refused: not retried
    scheduled, _, _ = await calls(handle)
    assert scheduled == []
    await replay(await handle.fetch_history())


async def test_a_refused_first_delivery_waits_then_goes_to_the_activity(
    client: Client,
    order_id: str,
    task_queue: str,
    merchant: FakeMerchant,
    time_env: WorkflowEnvironment,
) -> None:
    # Down for the local attempt and the activity's first (5 s later), up 10 s after that.
    merchant.refuse_until = await time_env.get_current_time() + TIMING.merchant_retry_interval * 2
    order = order_at(order_id)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    [progress] = view.merchant_events
    assert (progress.state, progress.attempts) == (MerchantDeliveryState.DELIVERED, 3)
    ids = {event_id for event_id, _ in merchant.attempts}
    assert ids == {progress.event_id} == {event.id for event in merchant.received}
    times = [when for _, when in merchant.attempts]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    interval = TIMING.merchant_retry_interval.total_seconds()
    assert gaps == [pytest.approx(interval, abs=1), pytest.approx(2 * interval, abs=1)]
    scheduled, local, timers = await calls(handle)
    assert scheduled == ["notify_merchant"]
    assert '"retry merchant delivery"' in timers
    await replay(await handle.fetch_history())


async def test_an_order_from_newer_code_waits_for_a_worker_that_knows_it(
    order_id: str, task_queue: str, provider: FakeProvider, merchant: FakeMerchant
) -> None:
    """A worker older than the starter fails the workflow task (retried), not the
    payment, and calls nobody: a newer worker takes the payment up where it stands.
    On a test server of its own: the shared one stops skipping time after it."""
    env = await start_time_skipping()
    try:
        async with payment_worker(env, task_queue, provider, merchant):
            order = order_at(order_id, revision=PAYMENT_REVISION + 1)
            handle = await env.client.start_workflow(
                PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
            )
            failure = None
            async with asyncio.timeout(10):
                while failure is None:
                    async for event in handle.fetch_history_events():
                        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                            attributes = event.workflow_task_failed_event_attributes
                            failure = attributes.failure.message
                    await asyncio.sleep(0.05)
            assert f"revision {PAYMENT_REVISION + 1}" in failure
            assert "upgrade the worker" in failure
            assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
            assert provider.creates == 0
            await handle.terminate("test done")
    finally:
        await env.shutdown()
