"""Operator actions on the time-skipping test server: force a status query, cancel an unpaid
payment, resolve a NEEDS_REVIEW transaction. Each is a validated update, recorded with the
operator and reason; an action that does not apply is refused and changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tempay.domain import (
    PAYMENT_REVISION,
    MerchantDeliveryState,
    OperatorAction,
    PaymentOrder,
    PaymentView,
    ProviderPaymentState,
    ProviderRefundState,
    ReviewResolution,
    TransactionKind,
    TransactionStatus,
)
from tempay.errors import ActionRefused, RefundRefused
from tempay.settings import Settings
from tests.support.payment_workflow import notification, wait_for
from tests.support.refund_workflow import TIMING, refund_handle, refund_notification, settle_refund
from tests.support.workflow_doubles import FakeProvider, FakeRefundProvider
from transactions import operator_action, start_refund
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow

REVIEWABLE = TIMING.model_copy(update={"review_window": timedelta(days=3)})
BY = OperatorAction(operator="ann", reason="customer called")


def resolution(decision: str) -> ReviewResolution:
    return ReviewResolution(operator="ann", reason="checked with the provider", decision=decision)


async def started(
    client: Client, task_queue: str, timing=TIMING, revision: int = PAYMENT_REVISION
) -> tuple[PaymentOrder, WorkflowHandle[PaymentWorkflow, PaymentView]]:
    order = PaymentOrder(
        provider="sandbox",
        order_id=f"op-{uuid.uuid4().hex[:10]}",
        amount=Decimal("10.00"),
        currency="CNY",
        timing=timing,
        revision=revision,
    )
    handle = await client.start_workflow(
        PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    await handle.execute_update(PaymentWorkflow.checkout, order)
    return order, handle


async def in_review(
    client: Client, task_queue: str, timing=TIMING
) -> tuple[PaymentOrder, WorkflowHandle[PaymentWorkflow, PaymentView]]:
    order, handle = await started(client, task_queue, timing)
    await handle.signal(
        PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID, amount="9.99")
    )
    await wait_for(handle, lambda v: v.status is TransactionStatus.NEEDS_REVIEW)
    return order, handle


async def accepted_updates(handle: WorkflowHandle) -> list[str]:
    names = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            names.append(
                event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            )
    return names


async def act(client: Client, order: PaymentOrder, action: str, by=BY) -> PaymentView:
    view = await operator_action(client, TransactionKind.PAYMENT, order.order_id, action, by)
    assert isinstance(view, PaymentView)
    return view


@pytest.mark.parametrize(
    "revision", [0, 2, PAYMENT_REVISION], ids=["revision0", "revision2", "current"]
)
async def test_force_status_query_settles_a_payment_whose_notification_was_lost(
    client: Client, task_queue: str, provider: FakeProvider, revision: int
) -> None:
    order, handle = await started(client, task_queue, revision=revision)
    provider.pay()  # the provider has the money; its notification never comes
    view = await act(client, order, "status_query")
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "status_query" and view.status_queries == 1
    assert [(a.action, a.operator, a.reason) for a in view.operator_actions] == [
        ("status_query", "ann", "customer called")
    ]
    assert await accepted_updates(handle) == ["checkout", "force_status_query"]
    with pytest.raises(
        ActionRefused, match="is SUCCEEDED: status queries are for a payment still waiting"
    ):
        await act(client, order, "status_query")
    assert await accepted_updates(handle) == ["checkout", "force_status_query"]


@pytest.mark.parametrize(
    "revision", [0, 2, PAYMENT_REVISION], ids=["revision0", "revision2", "current"]
)
async def test_cancel_closes_an_unpaid_payment(
    client: Client, task_queue: str, provider: FakeProvider, revision: int
) -> None:
    order, handle = await started(client, task_queue, revision=revision)
    view = await act(client, order, "cancel")
    assert view.status is TransactionStatus.EXPIRED
    assert view.settled_by == "operator"
    assert view.review_reason == "cancelled by ann: customer called"
    assert provider.closes == 1
    with pytest.raises(ActionRefused, match="is EXPIRED: only an unpaid payment"):
        await act(client, order, "cancel")
    assert provider.closes == 1


@pytest.mark.parametrize(
    "revision", [0, 2, PAYMENT_REVISION], ids=["revision0", "revision2", "current"]
)
async def test_cancel_racing_the_payer_ends_succeeded(
    client: Client, task_queue: str, provider: FakeProvider, revision: int
) -> None:
    provider.close_pays_first = True  # the payer pays while our close is in flight
    order, _ = await started(client, task_queue, revision=revision)
    view = await act(client, order, "cancel")
    assert view.status is TransactionStatus.SUCCEEDED


async def test_resolve_accept_keeps_what_was_paid(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, handle = await in_review(client, task_queue)
    with pytest.raises(RefundRefused, match="is NEEDS_REVIEW"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id="x" + order.order_id, amount="1"
        )
    view = await act(client, order, "resolve", resolution("accept"))
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "operator"
    assert view.refundable_amount == Decimal("9.99")  # what the payer paid, not the order
    with pytest.raises(RefundRefused, match=r"remains refundable.*9\.99 CNY"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id="y" + order.order_id, amount="10"
        )
    await start_refund(
        client, settings, order_id=order.order_id, refund_id="z" + order.order_id, amount="9.99"
    )
    await settle_refund(client, order, "z" + order.order_id, "9.99")
    view = await wait_for(handle, lambda v: v.status is TransactionStatus.REFUNDED)
    with pytest.raises(ActionRefused, match="only a NEEDS_REVIEW payment can be resolved"):
        await act(client, order, "resolve", resolution("fail"))


async def test_resolve_fail_ends_the_payment(client: Client, task_queue: str) -> None:
    order, handle = await in_review(client, task_queue)
    view = await act(client, order, "resolve", resolution("fail"))
    assert view.status is TransactionStatus.FAILED
    assert view.review_reason == "fail by ann: checked with the provider"
    final = await handle.result()  # nothing left to wait for
    assert final.status is TransactionStatus.FAILED
    assert [e.type for e in final.merchant_events] == ["payment.needs_review", "payment.failed"]
    # Delivered before the run ended (revisions before 5 ended with it PENDING, never sent).
    assert [e.state for e in final.merchant_events] == [MerchantDeliveryState.DELIVERED] * 2


async def test_a_status_reached_twice_gets_an_event_id_of_its_own(
    client: Client, task_queue: str
) -> None:
    """Declined, then paid late (NEEDS_REVIEW), then failed by an operator: the second
    FAILED event must not reuse the first one's id, or a receiver that drops repeated ids
    drops it."""
    order, handle = await started(client, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.FAILED))
    await wait_for(handle, lambda v: v.status is TransactionStatus.FAILED)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    await wait_for(handle, lambda v: v.status is TransactionStatus.NEEDS_REVIEW)
    await act(client, order, "resolve", resolution("fail"))
    final = await handle.result()
    wid = order.workflow_id
    assert [(e.event_id, e.state) for e in final.merchant_events] == [
        (f"evt_{wid}_failed", MerchantDeliveryState.DELIVERED),
        (f"evt_{wid}_needs_review", MerchantDeliveryState.DELIVERED),
        (f"evt_{wid}_failed_2", MerchantDeliveryState.DELIVERED),
    ]


async def test_resolve_refund_gives_back_what_was_paid(
    client: Client, task_queue: str, refunds: FakeRefundProvider
) -> None:
    order, handle = await in_review(client, task_queue)
    view = await act(client, order, "resolve", resolution("refund"))
    assert view.status is TransactionStatus.NEEDS_REVIEW
    [entry] = view.refunds
    assert (entry.amount, entry.currency) == (Decimal("9.99"), "CNY")
    assert [o.amount for o in refunds.creates] == [Decimal("9.99")]
    with pytest.raises(ActionRefused, match="already under way"):
        await act(client, order, "resolve", resolution("accept"))
    await settle_refund(client, order, entry.refund_id, "9.99")
    view = await wait_for(handle, lambda v: v.status is TransactionStatus.REFUNDED)
    assert view.refunded_amount == Decimal("9.99")


async def test_a_review_refund_that_fails_later_leaves_the_review_open(
    client: Client, task_queue: str, refunds: FakeRefundProvider
) -> None:
    """The refund of what was paid is taken by the provider, then fails: the operator can
    decide again (it used to stay "already under way" until the refund window ended)."""
    order, handle = await in_review(client, task_queue)
    view = await act(client, order, "resolve", resolution("refund"))
    [entry] = view.refunds
    await settle_refund(client, order, entry.refund_id, "9.99", state=ProviderRefundState.FAILED)
    await wait_for(handle, lambda v: v.refunds[0].status is TransactionStatus.FAILED)
    view = await act(client, order, "resolve", resolution("accept"))
    assert view.status is TransactionStatus.SUCCEEDED and view.settled_by == "operator"


async def test_refund_in_review_resolved_by_an_operator(
    client: Client, task_queue: str, settings: Settings, refund_env
) -> None:
    order, handle = await started(
        client, task_queue, TIMING.model_copy(update={"review_window": timedelta(days=3)})
    )
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    await wait_for(handle, lambda v: v.status is TransactionStatus.SUCCEEDED)
    refund_id = "rr-" + order.order_id
    await start_refund(client, settings, order_id=order.order_id, refund_id=refund_id, amount="4")
    refund = refund_handle(client, refund_id)
    await refund.signal(
        RefundWorkflow.notify, refund_notification(order, refund_id, "4.40")
    )  # the provider refunded more than asked
    view = await wait_for(handle, lambda v: v.refunds[0].status is TransactionStatus.NEEDS_REVIEW)
    assert view.refundable_amount == Decimal("6.00")  # held while in review
    with pytest.raises(ActionRefused, match="'refund' resolves payments only"):
        await operator_action(
            client, TransactionKind.REFUND, refund_id, "resolve", resolution("refund")
        )
    resolved = await operator_action(
        client, TransactionKind.REFUND, refund_id, "resolve", resolution("accept")
    )
    assert resolved.status is TransactionStatus.SUCCEEDED
    view = await wait_for(handle, lambda v: v.status is TransactionStatus.PARTIALLY_REFUNDED)
    assert view.refunded_amount == Decimal("4.00")
    # Decided: the refund's workflow ends once the merchant has heard.
    with pytest.raises(ActionRefused, match="is SUCCEEDED: only a NEEDS_REVIEW|has ended"):
        await operator_action(
            client, TransactionKind.REFUND, refund_id, "resolve", resolution("fail")
        )


async def test_actions_on_unknown_transactions(client: Client) -> None:
    with pytest.raises(LookupError, match="no payment 'nope'"):
        await operator_action(client, TransactionKind.PAYMENT, "nope", "cancel", BY)
    with pytest.raises(ValueError, match="only a payment can be cancelled"):
        await operator_action(client, TransactionKind.REFUND, "nope", "cancel", BY)


async def test_operator_actions_stop_a_running_poll(
    client: Client, task_queue: str, provider: FakeProvider, refund_env: WorkflowEnvironment
) -> None:
    """A payment whose status queries are a `poll_payment` activity's retries: a forced
    query asks at once (the poll stops), then a cancel closes it; nothing asks afterwards."""
    order, handle = await started(client, task_queue)
    await refund_env.sleep(timedelta(minutes=4))
    (poll,) = (await handle.describe()).raw_description.pending_activities
    assert poll.activity_type.name == "poll_payment" and poll.attempt >= 2
    asked = len(provider.query_times)

    view = await act(client, order, "status_query")
    assert view.status is TransactionStatus.PENDING
    assert len(provider.query_times) == asked + 1
    assert view.polling_since is None and view.next_status_query_at is not None

    view = await act(client, order, "cancel")
    assert view.status is TransactionStatus.EXPIRED and provider.closes == 1
    asked = len(provider.query_times)
    await refund_env.sleep(timedelta(minutes=30))
    assert len(provider.query_times) == asked
