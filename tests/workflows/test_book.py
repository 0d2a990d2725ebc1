"""The workflows' writes to the book (workflows/book.py), on the time-skipping server with
the book behind its real activity name: every status change journalled once, writes in
order and only forward, the settlement in the book before the merchant hears of it, a
database that is down delaying (never losing) both, and runs from before the book writing
from their next change on with their whole journal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tempay.domain import (
    PAYMENT_REVISION,
    MerchantDelivery,
    MerchantEvent,
    ProviderPaymentState,
    TransactionStatus,
)
from tests.support.payment_workflow import notification, order_at, payment_worker, replay, start
from tests.support.workflow_doubles import FakeBook, FakeMerchant, FakeProvider
from workflows.payment import PaymentWorkflow
from workflows.revisions import BOOK_REVISION, LOCAL_FIRST_REVISION

S = TransactionStatus


class Witness(FakeMerchant):
    """The merchant, noting what the book held when each event reached it."""

    def __init__(self, book: FakeBook, clock: Callable[[], Awaitable[datetime]]) -> None:
        super().__init__(clock=clock)
        self.book = book
        self.book_when_told: list[S | None] = []

    @activity.defn(name="notify_merchant")
    async def notify_merchant(self, event: MerchantEvent) -> MerchantDelivery:
        latest = self.book.latest(event.data.workflow_id)
        self.book_when_told.append(None if latest is None else latest.view.status)
        return await super().notify_merchant(event)


@pytest.fixture
def book() -> FakeBook:
    return FakeBook()


@pytest.fixture
def witness(time_env: WorkflowEnvironment, book: FakeBook) -> Witness:
    return Witness(book, time_env.get_current_time)


@pytest.fixture
async def client(
    time_env: WorkflowEnvironment, task_queue: str, book: FakeBook, witness: Witness
) -> AsyncIterator[Client]:
    async with payment_worker(time_env, task_queue, FakeProvider(), witness, book):
        yield time_env.client


def test_new_payments_write_the_book_from_their_start() -> None:
    assert PAYMENT_REVISION >= BOOK_REVISION


async def test_every_change_is_journalled_and_the_book_holds_it_before_the_merchant(
    client: Client, order_id: str, task_queue: str, book: FakeBook, witness: Witness
) -> None:
    order = order_at(order_id)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is S.SUCCEEDED
    assert witness.book_when_told == [S.SUCCEEDED]  # never before the book held it
    latest = book.latest(order.workflow_id)
    assert latest is not None and latest.view.status is S.SUCCEEDED
    assert [(c.seq, c.from_status, c.to_status, c.by) for c in latest.changes] == [
        (1, None, S.CREATED, "create"),
        (2, S.CREATED, S.PENDING, "create"),
        (3, S.PENDING, S.SUCCEEDED, "notification"),
    ]
    versions = [e.version for e in book.entries]
    assert versions == sorted(set(versions))  # in order, each once
    assert latest.created_at <= latest.at
    await replay(await handle.fetch_history())


async def test_a_payment_settled_at_once_is_one_write_with_its_whole_journal(
    client: Client, order_id: str, task_queue: str, book: FakeBook, witness: Witness
) -> None:
    order = order_at(order_id)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is S.SUCCEEDED
    # PENDING was held for the first status query; the settlement's one write carries it.
    assert [e.view.status for e in book.entries] == [S.SUCCEEDED]
    assert [c.to_status for c in book.entries[0].changes] == [S.CREATED, S.PENDING, S.SUCCEEDED]
    assert witness.book_when_told == [S.SUCCEEDED]
    await replay(await handle.fetch_history())


async def test_an_unsettled_payment_is_in_the_book_when_its_first_status_query_is_due(
    client: Client,
    order_id: str,
    task_queue: str,
    book: FakeBook,
    time_env: WorkflowEnvironment,
) -> None:
    order = order_at(order_id)
    handle = await start(client, order, task_queue)
    started = await time_env.get_current_time()
    delay = order.timing.first_status_query_delay.total_seconds()
    await time_env.sleep(delay / 2)
    assert book.entries == []  # held: a notification may settle it first
    await time_env.sleep(delay)
    await handle.describe()  # the workflow ran its task at the timer
    pending = book.latest(order.workflow_id)
    assert pending is not None and pending.view.status is S.PENDING
    [_, moved] = pending.changes  # as of the create, though written a minute later
    assert moved.to_status is S.PENDING and moved.at <= started + timedelta(seconds=5)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is S.SUCCEEDED
    assert [e.view.status for e in book.entries] == [S.PENDING, S.SUCCEEDED]
    await replay(await handle.fetch_history())


async def test_a_database_that_is_down_delays_the_merchant_and_loses_nothing(
    client: Client, order_id: str, task_queue: str, book: FakeBook, witness: Witness
) -> None:
    book.failures = 6  # the local attempts and the activity's first retries
    order = order_at(order_id)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    view = await handle.result()
    assert view.status is S.SUCCEEDED
    assert book.attempts > 6 and book.failures == 0
    assert witness.book_when_told == [S.SUCCEEDED]
    latest = book.latest(order.workflow_id)
    assert latest is not None and [c.to_status for c in latest.changes] == [
        S.CREATED,
        S.PENDING,
        S.SUCCEEDED,
    ]
    await replay(await handle.fetch_history())


@pytest.mark.parametrize("revision", [0, LOCAL_FIRST_REVISION])
async def test_a_run_from_before_the_book_writes_with_its_whole_journal(
    client: Client,
    order_id: str,
    task_queue: str,
    book: FakeBook,
    witness: Witness,
    revision: int,
) -> None:
    order = order_at(order_id, revision)
    handle = await start(client, order, task_queue)
    await handle.signal(PaymentWorkflow.notify, notification(order, ProviderPaymentState.PAID))
    assert (await handle.result()).status is S.SUCCEEDED
    latest = book.latest(order.workflow_id)
    assert latest is not None
    assert [c.to_status for c in latest.changes] == [S.CREATED, S.PENDING, S.SUCCEEDED]
    assert witness.book_when_told == [S.SUCCEEDED]
    await replay(await handle.fetch_history())
