"""Withdrawals end to end on the real dev server: the sandbox provider's transfer API, its
signed transfer notifications through the webhook service, and a worker, all over real HTTP.
The sandbox's ground truth (`GET /sandbox/transfers`) shows how often money actually left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.domain import SettlementTiming, TransactionStatus, WithdrawalView
from tests.support.stack import Stack, running_stack
from transactions import build_withdrawal, start_withdrawal

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 15
# The adapter gives up on an answer after this long; the sandbox's "timeout" fault holds its
# answer for much longer, after recording (and paying) the transfer.
PROVIDER_TIMEOUT = timedelta(seconds=1)

# Only the notification can settle these: the first status query is far away.
NOTIFICATION_ONLY = SettlementTiming(
    first_status_query_delay=timedelta(minutes=1),
    status_query_backoff_cap=timedelta(minutes=1),
)


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    task_queue = f"tq-wd-{uuid.uuid4().hex[:8]}"
    async with running_stack(
        dev_env.client,
        tmp_path_factory.mktemp("withdrawal"),
        task_queue,
        settings_overrides={"provider_timeout": PROVIDER_TIMEOUT},
        transfer_delay_seconds=0,
        transfer_timeout_seconds=30,
    ) as s:
        yield s


@pytest.fixture(scope="module")
async def sandbox(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as client:
        yield client


@pytest.fixture
def withdrawal_id() -> str:
    return f"wd-{uuid.uuid4().hex[:12]}"


async def withdraw(
    stack: Stack,
    withdrawal_id: str,
    payee_account: str = "payee@example.com",
    timing: SettlementTiming | None = NOTIFICATION_ONLY,
) -> WithdrawalView:
    """Start as `tempay withdraw` does, then wait for the workflow's result."""
    order = build_withdrawal(
        stack.settings,
        withdrawal_id=withdrawal_id,
        amount="25.00",
        currency="CNY",
        payee_account=payee_account,
        payee_name="Ann Payee",
        timing=timing,
    )
    submitted = await start_withdrawal(stack.client, stack.settings, order)
    assert submitted.workflow_id == f"withdrawal-{withdrawal_id}"
    handle = stack.client.get_workflow_handle(order.workflow_id, result_type=WithdrawalView)
    return await asyncio.wait_for(handle.result(), SETTLE_SECONDS)


async def ground_truth(sandbox: httpx.AsyncClient, withdrawal_id: str) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/transfers", params={"out_biz_no": withdrawal_id})
    assert response.status_code == 200, response.text
    [transfer] = response.json()
    return transfer  # type: ignore[no-any-return]


async def test_withdrawal_settles_by_the_signed_notification(
    stack: Stack, sandbox: httpx.AsyncClient, withdrawal_id: str
) -> None:
    view = await withdraw(stack, withdrawal_id)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert view.paid_amount is not None and str(view.paid_amount) == "25.00"
    truth = await ground_truth(sandbox, withdrawal_id)
    assert (truth["status"], truth["requests"], truth["paid_out"]) == ("TRANSFER_SUCCESS", 1, 1)
    attrs = (
        await stack.client.get_workflow_handle(f"withdrawal-{withdrawal_id}").describe()
    ).typed_search_attributes
    assert attrs.get(sa.TRANSACTION_KIND) == "withdrawal"
    assert attrs.get(sa.ORDER_ID) == withdrawal_id
    assert attrs.get(sa.PAYMENT_STATUS) == "SUCCEEDED"
    assert [e.type for e in stack.merchant.events_for(withdrawal_id)] == ["withdrawal.succeeded"]


async def test_transfer_answer_lost_pays_out_once(
    stack: Stack, sandbox: httpx.AsyncClient, withdrawal_id: str
) -> None:
    faults = await sandbox.put("/sandbox/faults", json={"transfer_timeout_rate": 1})
    assert faults.status_code == 200, faults.text
    try:
        view = await withdraw(stack, withdrawal_id)
    finally:
        await sandbox.put("/sandbox/faults", json={"transfer_timeout_rate": 0})
    assert view.status is TransactionStatus.SUCCEEDED
    assert (view.transfer_requests, view.outcome_checks) == (1, 1)
    truth = await ground_truth(sandbox, withdrawal_id)
    assert truth["paid_out"] == 1
    assert truth["requests"] == 1


async def test_invalid_payee_fails(
    stack: Stack, sandbox: httpx.AsyncClient, withdrawal_id: str
) -> None:
    view = await withdraw(stack, withdrawal_id, payee_account="invalid-nobody")
    assert view.status is TransactionStatus.FAILED
    assert view.review_reason is not None and "PAYEE_NOT_EXIST" in view.review_reason
    truth = await ground_truth(sandbox, withdrawal_id)
    assert (truth["status"], truth["paid_out"]) == ("TRANSFER_FAILED", 0)
    assert [e.type for e in stack.merchant.events_for(withdrawal_id)] == ["withdrawal.failed"]
