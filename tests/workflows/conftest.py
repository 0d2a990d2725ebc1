"""Fixtures of the refund and operator tests: a scripted provider (payments and refunds)
behind the real activity names, a merchant, and a time-skipping server of each test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tempay.settings import Settings
from tests.support.temporal import start_time_skipping
from tests.support.workflow_doubles import (
    FakeBook,
    FakeMerchant,
    FakeProvider,
    FakeRefundProvider,
)
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow


@pytest.fixture
def refunds() -> FakeRefundProvider:
    return FakeRefundProvider()


@pytest.fixture
def merchant() -> FakeMerchant:
    return FakeMerchant()


@pytest.fixture
def book() -> FakeBook:
    return FakeBook()


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
    book: FakeBook,
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
            *book.activities(merchant),
        ],
    ):
        yield refund_env.client


@pytest.fixture
def settings(task_queue: str) -> Settings:
    # The workflow tests' fake provider is named "sandbox": the default provider there.
    return Settings(task_queue=task_queue, sandbox=True)
