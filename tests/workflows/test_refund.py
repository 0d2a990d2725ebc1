"""Refunds on the time-skipping test server: the payment's ledger and the refund workflow.

The provider is a scripted fake behind the real activity names. Above all: the refunds of a
payment that succeeded or are in flight never exceed what was paid, however they arrive.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tempay.domain import (
    PaymentOrder,
    PaymentView,
    ProviderPaymentState,
    ProviderRefundState,
    SettlementTiming,
    TransactionStatus,
)
from tempay.errors import RefundRefused
from tempay.settings import Settings
from tests.support.payment_workflow import notification, status_upserts, wait_for
from tests.support.refund_workflow import TIMING, refund_handle, refund_notification, settle_refund
from tests.support.workflow_doubles import FakeMerchant, FakeProvider, FakeRefundProvider
from transactions import refund_view, start_refund
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow


async def paid_payment(
    client: Client, task_queue: str, amount: str = "10.00", timing: SettlementTiming = TIMING
) -> tuple[PaymentOrder, WorkflowHandle[PaymentWorkflow, PaymentView]]:
    order = PaymentOrder(
        provider="sandbox",
        order_id=f"o-{uuid.uuid4().hex[:10]}",
        amount=Decimal(amount),
        currency="CNY",
        subject="test",
        timing=timing,
    )
    handle = await client.start_workflow(
        PaymentWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    await handle.execute_update(PaymentWorkflow.checkout, order)
    await handle.signal(
        PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID, amount)
    )
    view = await handle.query(PaymentWorkflow.details)
    while view.status is not TransactionStatus.SUCCEEDED:
        await asyncio.sleep(0.05)
        view = await handle.query(PaymentWorkflow.details)
    return order, handle


async def test_partial_then_full_refund(
    client: Client,
    task_queue: str,
    settings: Settings,
    refunds: FakeRefundProvider,
    merchant: FakeMerchant,
) -> None:
    order, payment = await paid_payment(client, task_queue)
    accepted = await start_refund(
        client, settings, order_id=order.order_id, refund_id="r1-" + order.order_id, amount="3.00"
    )
    assert accepted.status is TransactionStatus.PENDING
    assert accepted.workflow_id == f"refund-r1-{order.order_id}"
    assert accepted.refundable_amount == Decimal("7.00")
    view = await payment.query(PaymentWorkflow.details)
    assert (view.refunding_amount, view.refundable_amount) == (Decimal("3.00"), Decimal("7.00"))

    refund = await settle_refund(client, order, "r1-" + order.order_id, "3.00")
    assert refund.status is TransactionStatus.SUCCEEDED
    assert refund.settled_by == "notification"
    view = await wait_for(payment, lambda v: v.status is TransactionStatus.PARTIALLY_REFUNDED)
    assert (view.refunded_amount, view.refunding_amount, view.refundable_amount) == (
        Decimal("3.00"),
        Decimal("0"),
        Decimal("7.00"),
    )

    await start_refund(
        client, settings, order_id=order.order_id, refund_id="r2-" + order.order_id, amount="7"
    )
    await settle_refund(client, order, "r2-" + order.order_id, "7.00")
    view = await wait_for(payment, lambda v: v.status is TransactionStatus.REFUNDED)
    assert view.refunded_amount == Decimal("10.00")
    assert view.refundable_amount == Decimal("0")
    assert [r.status for r in view.refunds] == [TransactionStatus.SUCCEEDED] * 2
    assert len(refunds.creates) == 2

    upserts = await status_upserts(payment)
    assert upserts[-3:] == ["SUCCEEDED", "PARTIALLY_REFUNDED", "REFUNDED"]
    assert await status_upserts(refund_handle(client, "r1-" + order.order_id)) == [
        "PENDING",
        "SUCCEEDED",
    ]
    refund_events = [e for e in merchant.received if e.type.startswith("refund.")]
    assert sorted(e.data.refund_id or "" for e in refund_events) == sorted(
        ["r1-" + order.order_id, "r2-" + order.order_id]
    )
    assert {e.id for e in refund_events} == {
        f"evt_refund-r1-{order.order_id}_succeeded",
        f"evt_refund-r2-{order.order_id}_succeeded",
    }
    assert all(e.data.order_id == order.order_id for e in refund_events)

    # A fully refunded payment takes no more refunds.
    with pytest.raises(RefundRefused, match="REFUNDED"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id="r3-" + order.order_id, amount="1"
        )


async def test_concurrent_refunds_exactly_the_ones_that_fit_go_through(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, payment = await paid_payment(client, task_queue)
    ids = [f"c{i}-{order.order_id}" for i in range(6)]
    results = await asyncio.gather(
        *(
            start_refund(client, settings, order_id=order.order_id, refund_id=r, amount="3.00")
            for r in ids
        ),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(accepted) == 3  # 3 x 3.00 fit in 10.00; a fourth would make 12.00
    assert all(isinstance(r, RefundRefused) and "exceeds" in str(r) for r in refused), refused
    assert len(refunds.creates) == 3
    assert sum(o.amount for o in refunds.creates) == Decimal("9.00")
    view = await payment.query(PaymentWorkflow.details)
    assert view.refunding_amount == Decimal("9.00")
    assert view.refundable_amount == Decimal("1.00")
    # The room left is still usable, exactly.
    await start_refund(
        client, settings, order_id=order.order_id, refund_id="last-" + order.order_id, amount="1"
    )
    with pytest.raises(RefundRefused, match=r"remains refundable.*0\.00 CNY"):
        await start_refund(
            client,
            settings,
            order_id=order.order_id,
            refund_id="x-" + order.order_id,
            amount="0.01",
        )


async def test_refund_id_is_the_idempotency_key(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, payment = await paid_payment(client, task_queue)
    refund_id = "same-" + order.order_id
    first, again = await asyncio.gather(
        start_refund(client, settings, order_id=order.order_id, refund_id=refund_id, amount="4"),
        start_refund(client, settings, order_id=order.order_id, refund_id=refund_id, amount="4"),
    )
    assert first.workflow_id == again.workflow_id
    assert len(refunds.creates) == 1
    with pytest.raises(RefundRefused, match="already exists for 4.00 CNY"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id=refund_id, amount="5.00"
        )
    await settle_refund(client, order, refund_id, "4.00")
    repeat = await start_refund(
        client, settings, order_id=order.order_id, refund_id=refund_id, amount="4.00"
    )
    assert repeat.status is TransactionStatus.SUCCEEDED
    assert repeat.refundable_amount == Decimal("6.00")
    assert len(refunds.creates) == 1
    view = await payment.query(PaymentWorkflow.details)
    assert len(view.refunds) == 1

    # Refund ids are unique across payments too.
    other, _ = await paid_payment(client, task_queue)
    with pytest.raises(RefundRefused, match="already used by another refund"):
        await start_refund(
            client, settings, order_id=other.order_id, refund_id=refund_id, amount="1.00"
        )
    other_view = await refund_view(client, refund_id)
    assert other_view.order_id == order.order_id
    assert (await wait_for(payment_handle(client, other), lambda v: True)).refunds == []


def payment_handle(client: Client, order: PaymentOrder) -> WorkflowHandle:
    return client.get_workflow_handle(order.workflow_id, result_type=PaymentView)


async def accepted_updates(handle: WorkflowHandle) -> int:
    count = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            count += 1
    return count


async def test_bad_refunds_change_nothing(
    client: Client,
    task_queue: str,
    settings: Settings,
    refunds: FakeRefundProvider,
    provider: FakeProvider,
) -> None:
    order, payment = await paid_payment(client, task_queue)
    before = await accepted_updates(payment)
    cases = [
        ("11.00", None, "exceeds what remains refundable"),
        ("10.001", None, "more decimal places than CNY allows"),
        ("0", None, "must be a positive number"),
        ("-1", None, "must be a positive number"),
        ("abc", None, "not a decimal number"),
        ("1.00", "USD", "differs from order"),
        ("1.00", "XXX", "unknown currency"),
    ]
    for amount, currency, message in cases:
        with pytest.raises((RefundRefused, ValueError), match=message):
            await start_refund(
                client,
                settings,
                order_id=order.order_id,
                refund_id="bad-" + uuid.uuid4().hex[:8],
                amount=amount,
                currency=currency,
            )
    with pytest.raises(ValueError, match="refund id"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id="no spaces", amount="1"
        )
    assert refunds.creates == []
    assert await accepted_updates(payment) == before  # rejected before history
    view = await payment.query(PaymentWorkflow.details)
    assert view.refunds == [] and view.refundable_amount == Decimal("10.00")

    # A payment that is not paid takes no refund.
    pending = PaymentOrder(
        provider="sandbox",
        order_id=f"p-{uuid.uuid4().hex[:8]}",
        amount=Decimal("10.00"),
        currency="CNY",
        timing=TIMING,
    )
    handle = await client.start_workflow(
        PaymentWorkflow.run, pending, id=pending.workflow_id, task_queue=task_queue
    )
    await handle.execute_update(PaymentWorkflow.checkout, pending)
    with pytest.raises(RefundRefused, match="is PENDING: only a paid payment"):
        await start_refund(
            client,
            settings,
            order_id=pending.order_id,
            refund_id="u-" + pending.order_id,
            amount="1",
        )
    await handle.signal(PaymentWorkflow.notify, notification(pending, ProviderPaymentState.FAILED))
    await wait_for(handle, lambda v: v.status is TransactionStatus.FAILED)
    with pytest.raises(RefundRefused, match="is FAILED: only a paid payment"):
        await start_refund(
            client,
            settings,
            order_id=pending.order_id,
            refund_id="f-" + pending.order_id,
            amount="1",
        )
    assert refunds.creates == []


async def test_failed_refund_gives_its_amount_back(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, payment = await paid_payment(client, task_queue)
    refunds.refuse = "TRADE_STATUS_ERROR"
    refused = await start_refund(
        client, settings, order_id=order.order_id, refund_id="no-" + order.order_id, amount="10"
    )
    assert refused.status is TransactionStatus.FAILED
    assert "TRADE_STATUS_ERROR" in (refused.fail_reason or "")
    assert refused.refundable_amount == Decimal("10.00")
    refunds.refuse = None

    await start_refund(
        client, settings, order_id=order.order_id, refund_id="a-" + order.order_id, amount="6"
    )
    # The provider accepted, then the refund failed: its 6.00 is refundable again.
    await settle_refund(
        client, order, "a-" + order.order_id, "6.00", state=ProviderRefundState.FAILED
    )
    view = await wait_for(payment, lambda v: v.refunding_amount == 0)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.refundable_amount == Decimal("10.00")
    assert [r.status for r in view.refunds] == [TransactionStatus.FAILED] * 2
    await start_refund(
        client, settings, order_id=order.order_id, refund_id="b-" + order.order_id, amount="10"
    )


async def test_refund_settled_by_status_query_when_the_notification_is_lost(
    client: Client,
    task_queue: str,
    settings: Settings,
    refunds: FakeRefundProvider,
) -> None:
    order, payment = await paid_payment(client, task_queue)
    await start_refund(
        client, settings, order_id=order.order_id, refund_id="q-" + order.order_id, amount="2.50"
    )
    refunds.finish("q-" + order.order_id)
    # No notification comes: the first status query (after about a minute) settles it.
    # (Time skips only while the test waits on a workflow it started: the payment, which
    # ends with its refund window, and only once its refunds have settled.)
    payment_view = await payment.result()
    assert payment_view.status is TransactionStatus.PARTIALLY_REFUNDED
    refund = await refund_handle(client, "q-" + order.order_id).result()
    assert refund.status is TransactionStatus.SUCCEEDED
    assert refund.settled_by == "status_query"
    assert refund.notifications_received == 0
    assert len(refunds.creates) == 1
    assert payment_view.refunded_amount == Decimal("2.50")


async def test_refund_request_is_retried_while_the_provider_is_down(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, payment = await paid_payment(client, task_queue)
    refunds.unreachable_creates = 2  # retried: the provider is idempotent by refund id
    accepted = await start_refund(
        client, settings, order_id=order.order_id, refund_id="d-" + order.order_id, amount="5"
    )
    assert accepted.status is TransactionStatus.PENDING
    assert refunds.attempts == 3
    assert len(refunds.creates) == 1
    refund = await settle_refund(client, order, "d-" + order.order_id, "5.00")
    assert refund.status is TransactionStatus.SUCCEEDED
    assert refund.refund_requests == 1


async def test_success_without_an_amount_is_confirmed_by_a_status_query(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    """Alipay's refund notices say the money went back, not how much: ask before settling."""
    order, payment = await paid_payment(client, task_queue)
    refund_id = "na-" + order.order_id
    await start_refund(client, settings, order_id=order.order_id, refund_id=refund_id, amount="3")
    refunds.finish(refund_id)
    refunds.refunded_amount[refund_id] = Decimal("3.00")
    refund = await settle_refund(client, order, refund_id, None)
    assert refund.status is TransactionStatus.SUCCEEDED
    assert refund.settled_by == "status_query"
    assert refund.notifications_received == 1 and refund.status_queries == 1
    assert refund.refunded_amount == Decimal("3.00")


async def test_refund_of_a_different_amount_goes_to_review_and_stays_held(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, payment = await paid_payment(client, task_queue)
    await start_refund(
        client, settings, order_id=order.order_id, refund_id="m-" + order.order_id, amount="4"
    )
    refund = await settle_refund(client, order, "m-" + order.order_id, "4.50")
    assert refund.status is TransactionStatus.NEEDS_REVIEW
    assert "refunded 4.50 CNY, refund is 4.00 CNY" in (refund.review_reason or "")
    view = await wait_for(payment, lambda v: v.refunds[0].status.is_terminal)
    assert view.status is TransactionStatus.SUCCEEDED
    assert (view.refunding_amount, view.refundable_amount) == (Decimal("4.00"), Decimal("6.00"))


async def test_payment_closes_for_refunds_when_its_window_ends(
    client: Client, task_queue: str, settings: Settings, refunds: FakeRefundProvider
) -> None:
    order, payment = await paid_payment(client, task_queue)
    await start_refund(
        client, settings, order_id=order.order_id, refund_id="w-" + order.order_id, amount="1"
    )
    await settle_refund(client, order, "w-" + order.order_id, "1.00")
    view = await payment.result()  # time skips to the end of the 30-day window
    assert view.status is TransactionStatus.PARTIALLY_REFUNDED
    assert view.refund_window_ends_at is not None
    assert view.settled_at is not None
    assert view.refund_window_ends_at - view.settled_at == TIMING.refund_window
    with pytest.raises(RefundRefused, match="no longer takes refunds"):
        await start_refund(
            client,
            settings,
            order_id=order.order_id,
            refund_id="late-" + order.order_id,
            amount="1",
        )
    assert len(refunds.creates) == 1

    # Histories with refunds replay deterministically.
    replayer = Replayer(
        workflows=[PaymentWorkflow, RefundWorkflow], data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(await payment.fetch_history())
    await replayer.replay_workflow(
        await refund_handle(client, "w-" + order.order_id).fetch_history()
    )


async def test_no_refund_window_ends_the_payment_at_settlement(
    client: Client, task_queue: str, settings: Settings
) -> None:
    order, payment = await paid_payment(
        client, task_queue, timing=TIMING.model_copy(update={"refund_window": timedelta(0)})
    )
    view = await payment.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.refund_window_ends_at is None
    with pytest.raises(RefundRefused, match="no longer takes refunds"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id="n-" + order.order_id, amount="1"
        )


async def test_another_providers_refund_notification_changes_nothing(
    client: Client, task_queue: str, settings: Settings
) -> None:
    """A FAILED signed by another provider (or about another refund number) neither fails
    the refund nor gives its amount back to the ledger, so no second refund fits in."""
    order, payment = await paid_payment(client, task_queue)
    refund_id = "a-" + order.order_id
    await start_refund(client, settings, order_id=order.order_id, refund_id=refund_id, amount="10")
    handle = refund_handle(client, refund_id)
    failed = refund_notification(order, refund_id, "10.00", state=ProviderRefundState.FAILED)
    for forged in (
        failed.reported_by("alipay"),
        failed.reported_by("sandbox").model_copy(update={"provider_refund_no": "R-other"}),
    ):
        await handle.signal(RefundWorkflow.notify, forged)
    view = await handle.query(RefundWorkflow.details)
    assert (view.status, view.refused_observations) == (TransactionStatus.PENDING, 2)
    assert view.notifications_received == 0
    ledger = await payment.query(PaymentWorkflow.details)
    assert (ledger.refunding_amount, ledger.refundable_amount) == (Decimal("10.00"), Decimal(0))
    with pytest.raises(RefundRefused, match="exceeds what remains refundable"):
        await start_refund(
            client, settings, order_id=order.order_id, refund_id="b-" + order.order_id, amount="10"
        )
    mine = refund_notification(order, refund_id, "10.00").reported_by("sandbox")
    await handle.signal(RefundWorkflow.notify, mine)
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED
    paid = await wait_for(payment, lambda v: v.status is TransactionStatus.REFUNDED)
    assert paid.refunded_amount == Decimal("10.00")
