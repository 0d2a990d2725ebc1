"""Driving a PaymentWorkflow on the time-skipping test server: the timing of the tests' orders,
a worker running it with the doubles of tests.support.workflow_doubles, a provider's
notification, a started payment, and what the workflow wrote and replays."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from tempay import search_attributes as sa
from tempay.domain import (
    PAYMENT_REVISION,
    PaymentObservation,
    PaymentOrder,
    PaymentView,
    ProviderPaymentState,
    SettlementTiming,
)
from tests.support.workflow_doubles import FakeBook, FakeMerchant, FakeProvider
from workflows.payment import PaymentWorkflow

TIMING = SettlementTiming(
    first_status_query_delay=timedelta(seconds=60),
    status_query_backoff_cap=timedelta(minutes=10),
    expires_after=timedelta(minutes=30),
    late_payment_window=timedelta(hours=2),
)


def order_at(order_id: str, revision: int = PAYMENT_REVISION) -> PaymentOrder:
    """A 10.00 CNY sandbox order at `revision` (the current one unless told)."""
    return PaymentOrder(
        provider="sandbox",
        order_id=order_id,
        amount=Decimal("10.00"),
        currency="CNY",
        subject="test",
        timing=TIMING,
        revision=revision,
    )


def payment_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    provider: FakeProvider,
    merchant: FakeMerchant,
    book: FakeBook | None = None,
) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[PaymentWorkflow],
        activities=[
            provider.create_payment,
            provider.query_payment,
            provider.poll_payment,
            provider.close_payment,
            merchant.notify_merchant,
            *(book or FakeBook()).activities(merchant),
        ],
    )


def notification(
    order: PaymentOrder,
    state: ProviderPaymentState,
    amount: str | None = "10.00",
    currency: str | None = "CNY",
    notification_id: str | None = None,
) -> PaymentObservation:
    paid = state is ProviderPaymentState.PAID
    return PaymentObservation(
        order_id=order.order_id,
        provider="sandbox",
        state=state,
        amount=Decimal(amount) if paid and amount else None,
        currency=currency if paid else None,
        source="notification",
        notification_id=notification_id or uuid.uuid4().hex,
    )


async def start(client: Client, order: PaymentOrder, task_queue: str) -> WorkflowHandle:
    handle = await client.start_workflow(
        PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    info = await handle.execute_update(PaymentWorkflow.checkout, order)
    assert info.payment_url == f"http://provider.test/checkout/T-{order.order_id}"
    return handle


async def status_upserts(handle: WorkflowHandle) -> list[str]:
    """Every PaymentStatus value the workflow wrote, in order."""
    values = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes
            payload = fields.search_attributes.indexed_fields.get(sa.PAYMENT_STATUS.name)
            if payload is not None:
                values.append(payload.data.decode().strip('"'))
    return values


async def wait_for(handle: WorkflowHandle, check) -> PaymentView:  # type: ignore[no-untyped-def]
    for _ in range(200):
        view = await handle.query(PaymentWorkflow.details)
        if check(view):
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached: {view}")


async def replay(history: WorkflowHistory) -> None:
    """Raises if the current PaymentWorkflow code does not replay `history` exactly."""
    replayer = Replayer(workflows=[PaymentWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
