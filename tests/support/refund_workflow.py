"""Driving a RefundWorkflow on the time-skipping test server: the timing of the tests' orders
(refunds allowed for 30 days, no review window), a provider's refund notification, and a refund
settled by one."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from temporalio.client import Client, WorkflowHandle

from tempay.domain import (
    PaymentOrder,
    ProviderRefundState,
    RefundObservation,
    RefundView,
    SettlementTiming,
)
from workflows.refund import RefundWorkflow

TIMING = SettlementTiming(
    first_status_query_delay=timedelta(seconds=60),
    status_query_backoff_cap=timedelta(minutes=10),
    expires_after=timedelta(minutes=30),
    late_payment_window=timedelta(hours=2),
    refund_window=timedelta(days=30),
    review_window=timedelta(0),  # refunds in review end at once (tests of review set it)
)


def refund_notification(
    order: PaymentOrder,
    refund_id: str,
    amount: str | None,
    state: ProviderRefundState = ProviderRefundState.SUCCEEDED,
) -> RefundObservation:
    return RefundObservation(
        refund_id=refund_id,
        order_id=order.order_id,
        state=state,
        amount=None if amount is None else Decimal(amount),
        currency="CNY",
        provider_refund_no="R-" + refund_id,
        source="notification",
        notification_id=uuid.uuid4().hex,
    )


def refund_handle(client: Client, refund_id: str) -> WorkflowHandle[RefundWorkflow, RefundView]:
    return client.get_workflow_handle(f"refund-{refund_id}", result_type=RefundView)


async def settle_refund(
    client: Client, order: PaymentOrder, refund_id: str, amount: str | None, **kwargs: object
) -> RefundView:
    handle = refund_handle(client, refund_id)
    notification: RefundObservation = refund_notification(
        order,
        refund_id,
        amount,
        **kwargs,  # type: ignore[arg-type]
    )
    await handle.signal(
        RefundWorkflow.notify,
        notification,
    )
    return await handle.result()
