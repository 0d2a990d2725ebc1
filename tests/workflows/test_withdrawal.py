"""WithdrawalWorkflow on the time-skipping test server: a fake provider behind the real
activity names. Above all: money never leaves twice, whatever happens to a transfer call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tempay import search_attributes as sa
from tempay.domain import (
    ProviderTransferState,
    SettlementTiming,
    TransactionStatus,
    TransferObservation,
    WithdrawalOrder,
    WithdrawalView,
)
from tests.support.payment_workflow import status_upserts
from tests.support.workflow_doubles import FakeBook, FakeMerchant
from workflows.withdrawal import WithdrawalWorkflow

TIMING = SettlementTiming(
    first_status_query_delay=timedelta(seconds=60),
    status_query_backoff_cap=timedelta(minutes=10),
)


@dataclass
class FakeTransferProvider:
    """A provider's side of one transfer, scripted per test. `calls` records every call in
    order ("create" / "query"); `held` is whether the provider holds the transfer."""

    held: bool = False
    state: ProviderTransferState = ProviderTransferState.PENDING
    paid_amount: str = "25.00"
    paid_currency: str = "CNY"
    fail_reason: str | None = None
    # Scripted faults of the next create calls, in order:
    # "lost_answer": recorded, then the answer is lost (outcome unknown);
    # "lost_request": outcome unknown, but the request never arrived;
    # "unreachable": the connection was never made; "refused": a business refusal.
    create_faults: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    creates_received: int = 0  # creates that reached the provider
    query_gate: asyncio.Event | None = None  # held: status queries wait for it

    def observation(self, order: WithdrawalOrder, source: str) -> TransferObservation:
        done = self.state is ProviderTransferState.SUCCEEDED
        return TransferObservation(
            withdrawal_id=order.withdrawal_id,
            state=self.state,
            amount=Decimal(self.paid_amount) if done else order.amount,
            currency=self.paid_currency if done else order.currency,
            provider_transfer_no="SBT-" + order.withdrawal_id,
            fail_reason=self.fail_reason,
            source=source,  # type: ignore[arg-type]
        )

    @activity.defn(name="create_transfer")
    async def create_transfer(self, order: WithdrawalOrder) -> TransferObservation:
        self.calls.append("create")
        fault = self.create_faults.pop(0) if self.create_faults else None
        if fault == "unreachable":
            raise ApplicationError("connection refused", type="ProviderUnreachable")
        if fault == "lost_request":
            raise ApplicationError("no answer", type="TransferOutcomeUnknown", non_retryable=True)
        if fault == "refused":
            raise ApplicationError(
                "sandbox refused transfer: PAYEE_NOT_EXIST",
                type="ProviderRejected",
                non_retryable=True,
            )
        self.creates_received += 1
        self.held = True
        if fault == "lost_answer":
            raise ApplicationError(
                "read timeout", type="TransferOutcomeUnknown", non_retryable=True
            )
        return self.observation(order, "create")

    @activity.defn(name="query_transfer")
    async def query_transfer(self, order: WithdrawalOrder) -> TransferObservation | None:
        self.calls.append("query")
        if self.query_gate is not None:
            await self.query_gate.wait()
        if not self.held:
            return None
        return self.observation(order, "status_query")

    def finish(self, state: ProviderTransferState, fail_reason: str | None = None) -> None:
        self.state = state
        self.fail_reason = fail_reason


@pytest.fixture
def provider() -> FakeTransferProvider:
    return FakeTransferProvider()


@pytest.fixture
def merchant() -> FakeMerchant:
    return FakeMerchant()


@pytest.fixture
async def client(
    time_env: WorkflowEnvironment,
    task_queue: str,
    provider: FakeTransferProvider,
    merchant: FakeMerchant,
) -> AsyncIterator[Client]:
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[WithdrawalWorkflow],
        activities=[
            provider.create_transfer,
            provider.query_transfer,
            merchant.notify_merchant,
            FakeBook().record_transaction,
        ],
    ):
        yield time_env.client


@pytest.fixture
def order() -> WithdrawalOrder:
    return WithdrawalOrder(
        provider="sandbox",
        withdrawal_id=f"wd-{uuid.uuid4().hex[:10]}",
        amount=Decimal("25.00"),
        currency="CNY",
        payee_account="payee@example.com",
        payee_name="Ann Payee",
        timing=TIMING,
    )


def notification(
    order: WithdrawalOrder,
    state: ProviderTransferState = ProviderTransferState.SUCCEEDED,
    amount: str = "25.00",
    currency: str = "CNY",
    notification_id: str | None = None,
) -> TransferObservation:
    return TransferObservation(
        withdrawal_id=order.withdrawal_id,
        state=state,
        amount=Decimal(amount),
        currency=currency,
        provider_transfer_no="SBT-" + order.withdrawal_id,
        fail_reason="PAYEE_NOT_EXIST" if state is ProviderTransferState.FAILED else None,
        source="notification",
        notification_id=notification_id or uuid.uuid4().hex,
    )


async def start(
    client: Client, order: WithdrawalOrder, task_queue: str
) -> WorkflowHandle[WithdrawalWorkflow, WithdrawalView]:
    handle = await client.start_workflow(
        WithdrawalWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    submitted = await handle.execute_update(WithdrawalWorkflow.submitted, order)
    assert submitted.workflow_id == f"withdrawal-{order.withdrawal_id}"
    return handle


async def test_succeeded_by_notification(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    handle = await start(client, order, task_queue)
    assert (await handle.query(WithdrawalWorkflow.details)).status is TransactionStatus.PENDING
    await handle.signal(WithdrawalWorkflow.notify, notification(order))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert view.paid_amount == Decimal("25.00")
    assert view.provider_transfer_no == "SBT-" + order.withdrawal_id
    assert provider.calls == ["create"]
    assert await status_upserts(handle) == ["PENDING", "SUCCEEDED"]
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(sa.PAYMENT_STATUS) == "SUCCEEDED"
    assert attrs.get(sa.ORDER_ID) == order.withdrawal_id
    assert attrs.get(sa.PROVIDER) == "sandbox"
    assert attrs.get(sa.TRANSACTION_KIND) == "withdrawal"


async def test_lost_notification_settles_by_status_query(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    handle = await start(client, order, task_queue)
    provider.finish(ProviderTransferState.SUCCEEDED)
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "status_query"
    assert view.status_queries == 1
    assert provider.calls == ["create", "query"]


async def test_invalid_payee_fails_with_the_reason(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(
        WithdrawalWorkflow.notify, notification(order, ProviderTransferState.FAILED)
    )
    view = await handle.result()
    assert view.status is TransactionStatus.FAILED
    assert view.review_reason == "PAYEE_NOT_EXIST"


async def test_refused_transfer_fails_with_the_reason(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    provider.create_faults = ["refused"]
    handle = await client.start_workflow(
        WithdrawalWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    submitted = await handle.execute_update(WithdrawalWorkflow.submitted, order)
    assert submitted.status is TransactionStatus.FAILED
    assert submitted.fail_reason is not None and "PAYEE_NOT_EXIST" in submitted.fail_reason
    view = await handle.result()
    assert view.status is TransactionStatus.FAILED
    assert provider.calls == ["create"]


async def test_answer_lost_after_the_provider_paid_is_not_sent_again(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    provider.create_faults = ["lost_answer"]
    provider.finish(ProviderTransferState.SUCCEEDED)
    handle = await start(client, order, task_queue)
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert provider.creates_received == 1
    assert provider.calls[:2] == ["create", "query"]
    assert provider.calls.count("create") == 1
    assert (view.transfer_requests, view.outcome_checks) == (1, 1)


async def test_request_that_never_arrived_is_created_again_once(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    provider.create_faults = ["lost_request"]
    handle = await start(client, order, task_queue)
    await handle.signal(WithdrawalWorkflow.notify, notification(order))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert provider.calls == ["create", "query", "create"]
    assert provider.creates_received == 1
    assert (view.transfer_requests, view.outcome_checks) == (2, 1)


async def test_unreachable_provider_is_tried_again_without_a_query(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    provider.create_faults = ["unreachable", "unreachable"]
    handle = await start(client, order, task_queue)
    await handle.signal(WithdrawalWorkflow.notify, notification(order))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED
    assert provider.calls == ["create", "create", "create"]
    assert provider.creates_received == 1


@pytest.mark.parametrize(("amount", "currency"), [("24.99", "CNY"), ("25.00", "USD")])
async def test_amount_or_currency_mismatch_needs_review(
    client: Client, order: WithdrawalOrder, task_queue: str, amount: str, currency: str
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(
        WithdrawalWorkflow.notify, notification(order, amount=amount, currency=currency)
    )
    view = await handle.result()
    assert view.status is TransactionStatus.NEEDS_REVIEW
    assert view.review_reason is not None and "paid out" in view.review_reason


async def test_duplicate_and_out_of_order_notifications_change_nothing(
    client: Client, order: WithdrawalOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    handle = await start(client, order, task_queue)
    done = notification(order, notification_id="n-1")
    await handle.signal(WithdrawalWorkflow.notify, done)
    await handle.signal(WithdrawalWorkflow.notify, done)
    await handle.signal(
        WithdrawalWorkflow.notify, notification(order, ProviderTransferState.PENDING)
    )
    await handle.signal(
        WithdrawalWorkflow.notify, notification(order, ProviderTransferState.FAILED)
    )
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert (view.notifications_received, view.duplicate_notifications) == (3, 1)
    assert await status_upserts(handle) == ["PENDING", "SUCCEEDED"]
    assert [e.type for e in merchant.received] == ["withdrawal.succeeded"]


async def test_merchant_event_withdrawal_succeeded_delivered_once(
    client: Client, order: WithdrawalOrder, task_queue: str, merchant: FakeMerchant
) -> None:
    handle = await start(client, order, task_queue)
    await handle.signal(WithdrawalWorkflow.notify, notification(order))
    view = await handle.result()
    assert len(merchant.received) == 1
    event = merchant.received[0]
    assert event.type == "withdrawal.succeeded"
    assert event.id == f"evt_withdrawal-{order.withdrawal_id}_succeeded"
    assert event.data.order_id == order.withdrawal_id
    assert event.data.kind == "withdrawal"
    assert event.data.amount == Decimal("25.00")
    assert [(e.type, e.state) for e in view.merchant_events] == [
        ("withdrawal.succeeded", "delivered")
    ]


async def test_same_withdrawal_id_with_other_terms_is_refused(
    client: Client, order: WithdrawalOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    again = await handle.execute_update(WithdrawalWorkflow.submitted, order)
    assert again.status is TransactionStatus.PENDING
    for change in (
        {"amount": Decimal("26.00")},
        {"currency": "USD"},
        {"payee_account": "someone-else@example.com"},
    ):
        other = order.model_copy(update=change)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(WithdrawalWorkflow.submitted, other)
        assert "already exists with different terms" in str(refused.value.cause)
    await handle.signal(WithdrawalWorkflow.notify, notification(order))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED


async def test_another_providers_transfer_notification_changes_nothing(
    client: Client, order: WithdrawalOrder, task_queue: str
) -> None:
    handle = await start(client, order, task_queue)
    failed = notification(order, ProviderTransferState.FAILED)
    await handle.signal(WithdrawalWorkflow.notify, failed.reported_by("stripe"))
    await handle.signal(
        WithdrawalWorkflow.notify,
        failed.reported_by("sandbox").model_copy(update={"provider_transfer_no": "SBT-other"}),
    )
    view = await handle.query(WithdrawalWorkflow.details)
    assert (view.status, view.refused_observations) == (TransactionStatus.PENDING, 2)
    assert view.last_refused is not None and "SBT-other" in view.last_refused
    await handle.signal(WithdrawalWorkflow.notify, notification(order).reported_by("sandbox"))
    assert (await handle.result()).status is TransactionStatus.SUCCEEDED


async def calls_reach(provider: FakeTransferProvider, calls: list[str]) -> None:
    for _ in range(500):
        if provider.calls == calls:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"calls {provider.calls}, expected {calls}")


async def test_a_foreign_notification_does_not_stand_for_the_providers_answer(
    client: Client, order: WithdrawalOrder, task_queue: str, provider: FakeTransferProvider
) -> None:
    """After an unknown outcome the provider says it never got the transfer; a notification
    from another provider that arrived meanwhile is no sign that it did: created again."""
    provider.create_faults = ["lost_request"]
    provider.query_gate = asyncio.Event()
    handle = await client.start_workflow(
        WithdrawalWorkflow.run, order, id=order.workflow_id, task_queue=task_queue
    )
    await calls_reach(provider, ["create", "query"])
    await handle.signal(WithdrawalWorkflow.notify, notification(order).reported_by("stripe"))
    provider.query_gate.set()
    await calls_reach(provider, ["create", "query", "create"])
    await handle.signal(WithdrawalWorkflow.notify, notification(order).reported_by("sandbox"))
    view = await handle.result()
    assert view.status is TransactionStatus.SUCCEEDED
    assert (view.refused_observations, provider.creates_received) == (1, 1)
