"""Fixtures of the refund and operator tests: a scripted provider (payments and refunds)
behind the real activity names, a merchant, and a time-skipping server of each test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tempay.domain import ProviderRefundState, RefundObservation, RefundOrder
from tempay.settings import Settings
from tests.conftest import start_time_skipping
from tests.workflows.test_payment import FakeMerchant, FakeProvider
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow


@dataclass
class FakeRefundProvider:
    """A provider's refunds, scripted per test. `creates` records every create call."""

    creates: list[RefundOrder] = field(default_factory=list)
    states: dict[str, ProviderRefundState] = field(default_factory=dict)
    refunded_amount: dict[str, Decimal] = field(default_factory=dict)
    refuse: str | None = None  # the next creates are refused with this code
    unreachable_creates: int = 0  # the next creates fail as if the provider were down
    attempts: int = 0  # create calls, including failed ones

    def observation(self, order: RefundOrder, source: str) -> RefundObservation:
        state = self.states[order.refund_id]
        return RefundObservation(
            refund_id=order.refund_id,
            order_id=order.order_id,
            state=state,
            amount=self.refunded_amount.get(order.refund_id, order.amount),
            currency=order.currency,
            provider_refund_no="R-" + order.refund_id,
            source=source,  # type: ignore[arg-type]
        )

    @activity.defn(name="create_refund")
    async def create_refund(self, order: RefundOrder) -> RefundObservation:
        self.attempts += 1
        if self.unreachable_creates > 0:
            self.unreachable_creates -= 1
            raise RuntimeError("provider unreachable")
        if self.refuse is not None:
            raise ApplicationError(
                f"provider refused refund: {self.refuse}",
                type="ProviderRejected",
                non_retryable=True,
            )
        if order.refund_id not in self.states:  # idempotent by refund id, as providers are
            self.creates.append(order)
            self.states[order.refund_id] = ProviderRefundState.PENDING
        return self.observation(order, "create")

    @activity.defn(name="query_refund")
    async def query_refund(self, order: RefundOrder) -> RefundObservation | None:
        if order.refund_id not in self.states:
            return None
        return self.observation(order, "status_query")

    def finish(self, refund_id: str, state: ProviderRefundState = ProviderRefundState.SUCCEEDED):
        self.states[refund_id] = state


@pytest.fixture
def refunds() -> FakeRefundProvider:
    return FakeRefundProvider()


@pytest.fixture
def merchant() -> FakeMerchant:
    return FakeMerchant()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
async def refund_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of each test's own. The test server stops skipping time for
    good once it has answered an update with a failure (a refused refund), so a shared one
    would hang every later test that waits for a timer."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture
async def client(
    refund_env: WorkflowEnvironment,
    task_queue: str,
    provider: FakeProvider,
    refunds: FakeRefundProvider,
    merchant: FakeMerchant,
) -> AsyncIterator[Client]:
    async with Worker(
        refund_env.client,
        task_queue=task_queue,
        workflows=[PaymentWorkflow, RefundWorkflow],
        activities=[
            provider.create_payment,
            provider.query_payment,
            provider.poll_payment,
            provider.close_payment,
            refunds.create_refund,
            refunds.query_refund,
            merchant.notify_merchant,
        ],
    ):
        yield refund_env.client


@pytest.fixture
def settings(task_queue: str) -> Settings:
    # The workflow tests' fake provider is named "sandbox": the default provider there.
    return Settings(task_queue=task_queue, sandbox=True)
