"""The book end to end on the real dev server, on SQLite and on PostgreSQL (the `stack`
fixture's two params): every status change reaches it before the merchant hears; then, with
the closed workflows deleted as Temporal's retention deletes them, status, /api, list and
count answer from the book, and paying or withdrawing again with a known id returns the
recorded transaction without a workflow or a provider call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from tempay.domain import PaymentView, TransactionStatus, WithdrawalOrder, WithdrawalView
from tempay.errors import OrderConflict, TransactionNotFound
from tests.support.postgres import Cluster
from tests.support.stack import Stack, running_stack
from transactions import (
    build_order,
    build_withdrawal,
    count_transactions,
    list_transactions,
    payment_view,
    start_payment,
    start_withdrawal,
    withdrawal_view,
)
from transactions.start import in_temporal

SETTLE_SECONDS = 30
API_KEY = f"test-api-key-{uuid.uuid4().hex}"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def stack(
    request: pytest.FixtureRequest,
    dev_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """The stack with its book on SQLite ({data_dir}/tempay.db) or on a database of its own
    on a real PostgreSQL (skipped, with the reason, where PostgreSQL is not installed): every
    test here runs on both."""
    overrides: dict[str, object] = {"api_key": API_KEY}
    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        overrides["database_url"] = cluster.create_database(f"book_e2e_{uuid.uuid4().hex[:12]}")
    async with running_stack(
        dev_env.client,
        tmp_path_factory.mktemp("book"),
        f"tq-book-{uuid.uuid4().hex[:8]}",
        settings_overrides=overrides,
        transfer_delay_seconds=0,
    ) as s:
        assert s.book.dialect == request.param  # the worker writes, and /api reads, this one
        yield s


async def forget(client: Client, workflow_id: str) -> None:
    """What retention does to a closed workflow: Temporal no longer has it."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        )
    )
    for _ in range(300):  # the server deletes in the background
        if not await in_temporal(client, workflow_id):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} is still in Temporal")


def withdrawal_order(stack: Stack, withdrawal_id: str) -> WithdrawalOrder:
    return build_withdrawal(
        stack.settings,
        withdrawal_id=withdrawal_id,
        amount="25.00",
        currency="CNY",
        payee_account="payee@example.com",
    )


async def settled_withdrawal(stack: Stack, withdrawal_id: str) -> WithdrawalView:
    order = withdrawal_order(stack, withdrawal_id)
    await start_withdrawal(stack.client, stack.settings, order, stack.book)
    handle = stack.client.get_workflow_handle(order.workflow_id, result_type=WithdrawalView)
    return await asyncio.wait_for(handle.result(), SETTLE_SECONDS)


@dataclass(frozen=True)
class Forgotten:
    declined: PaymentView
    control: PaymentView
    withdrawal: WithdrawalView


@pytest.fixture(scope="module")
async def forgotten(stack: Stack) -> Forgotten:
    """Closed transactions that Temporal no longer holds (deleted together: the server
    deletes in the background, which takes a while)."""
    declined, control, withdrawal = await asyncio.gather(
        declined_payment(stack, f"bk-{uuid.uuid4().hex[:10]}"),
        declined_payment(stack, f"bk-{uuid.uuid4().hex[:10]}"),
        settled_withdrawal(stack, f"wd-{uuid.uuid4().hex[:10]}"),
    )
    await asyncio.gather(
        *(forget(stack.client, v.workflow_id) for v in (declined, control, withdrawal))
    )
    return Forgotten(declined, control, withdrawal)


async def declined_payment(stack: Stack, order_id: str) -> PaymentView:
    order = build_order(stack.settings, order_id=order_id, amount="12.30", currency="CNY")
    await start_payment(stack.client, stack.settings, order, stack.book)
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        assert (await sandbox.post(f"/sandbox/payments/{order_id}/decline")).is_success
    handle = stack.client.get_workflow_handle(order.workflow_id, result_type=PaymentView)
    return await asyncio.wait_for(handle.result(), SETTLE_SECONDS)


async def test_every_status_change_is_journalled_in_the_book(
    stack: Stack,
) -> None:
    order_id = f"bk-{uuid.uuid4().hex[:10]}"
    order = build_order(stack.settings, order_id=order_id, amount="10.00", currency="CNY")
    await start_payment(stack.client, stack.settings, order, stack.book)
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        assert (await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})).is_success
    handle = stack.client.get_workflow_handle(order.workflow_id, result_type=PaymentView)
    view = await asyncio.wait_for(handle.result(), SETTLE_SECONDS)
    assert view.status is TransactionStatus.SUCCEEDED
    record = stack.book.get(order.workflow_id)
    assert record is not None
    assert (record.status, record.amount, record.settled_amount) == (
        "SUCCEEDED",
        view.amount,
        view.paid_amount,
    )
    assert record.provider_ref == view.provider_trade_no and record.settled_by == "notification"
    journal = [(c.from_status, c.to_status, c.by) for c in stack.book.journal(order.workflow_id)]
    assert journal == [
        (None, TransactionStatus.CREATED, "create"),
        (TransactionStatus.CREATED, TransactionStatus.PENDING, "create"),
        (TransactionStatus.PENDING, TransactionStatus.SUCCEEDED, "notification"),
    ]
    assert [e.type for e in stack.merchant.events_for(order_id)] == ["payment.succeeded"]


async def test_after_retention_the_book_answers_and_ids_stay_taken(
    stack: Stack, forgotten: Forgotten
) -> None:
    declined = forgotten.declined
    order_id = declined.order_id
    assert declined.status is TransactionStatus.FAILED

    # status and /api: from the book, and saying so
    view = await payment_view(stack.client, order_id, stack.book)
    assert (view.status, view.source, view.amount) == (
        TransactionStatus.FAILED,
        "book",
        declined.amount,
    )
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.webhook_url, headers=bearer, timeout=10) as api:
        answer = await api.get(f"/api/payments/{order_id}")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["source"]) == ("FAILED", "book")
    # list and count: the book's
    rows = [r async for r in list_transactions(stack.client, status="FAILED", book=stack.book)]
    assert order_id in {r.order_id for r in rows}
    counts = await count_transactions(stack.client, book=stack.book)
    assert counts.by_status["FAILED"] >= 1 and counts.total == sum(counts.by_status.values())

    # pay again, same terms: the recorded answer; no workflow starts, so no provider call
    again = build_order(stack.settings, order_id=order_id, amount="12.30", currency="CNY")
    checkout = await start_payment(stack.client, stack.settings, again, stack.book)
    assert (checkout.status, checkout.workflow_id) == (
        TransactionStatus.FAILED,
        declined.workflow_id,
    )
    assert not await in_temporal(stack.client, declined.workflow_id)
    other = build_order(stack.settings, order_id=order_id, amount="99.00", currency="CNY")
    with pytest.raises(OrderConflict, match="already exists with different terms"):
        await start_payment(stack.client, stack.settings, other, stack.book)
    assert not await in_temporal(stack.client, declined.workflow_id)


async def test_a_withdrawal_after_retention_never_pays_out_twice(
    stack: Stack, forgotten: Forgotten
) -> None:
    settled = forgotten.withdrawal
    assert settled.status is TransactionStatus.SUCCEEDED
    withdrawal_id = settled.withdrawal_id
    order = withdrawal_order(stack, withdrawal_id)
    again = await start_withdrawal(stack.client, stack.settings, order, stack.book)
    assert (again.status, again.provider_transfer_no) == (
        TransactionStatus.SUCCEEDED,
        settled.provider_transfer_no,
    )
    assert not await in_temporal(stack.client, order.workflow_id)
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        response = await sandbox.get("/sandbox/transfers", params={"out_biz_no": withdrawal_id})
    [transfer] = response.json()
    assert (transfer["requests"], transfer["paid_out"]) == (1, 1)  # one request, ever
    recorded = await withdrawal_view(stack.client, withdrawal_id, stack.book)
    assert (recorded.source, recorded.status) == ("book", TransactionStatus.SUCCEEDED)
    journal = stack.book.journal(order.workflow_id)
    assert [c.to_status for c in journal] == [
        TransactionStatus.PENDING,
        TransactionStatus.SUCCEEDED,
    ]


async def test_without_the_book_a_forgotten_transaction_is_not_found(
    stack: Stack, forgotten: Forgotten
) -> None:
    """The control: the same read with no book is what tempay did before it."""
    declined = forgotten.control
    with pytest.raises(TransactionNotFound, match="no transaction for order"):
        await payment_view(stack.client, declined.order_id)
    with pytest.raises(RPCError) as caught:
        await stack.client.get_workflow_handle(declined.workflow_id).describe()
    assert caught.value.status is RPCStatusCode.NOT_FOUND
