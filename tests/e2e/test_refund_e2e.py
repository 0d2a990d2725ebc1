"""Refunds end to end on the real dev server: a paid sandbox payment, refunds requested as
`tempay refund` does (some at the same time), the sandbox's signed refund notifications
through the webhook, and the merchant's signed events, all over real HTTP. The sandbox's
ground truth (`GET /sandbox/refunds`) shows what was actually refunded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.domain import PaymentView, RefundView, SettlementTiming, TransactionStatus
from tempay.errors import RefundRefused
from tests.support.stack import Stack, running_stack, start_payment
from transactions import start_refund
from workflows.payment import PaymentWorkflow

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 20

# Only notifications settle these (the first status query is far away); the payment takes
# refunds for a while.
REFUNDABLE = SettlementTiming(
    first_status_query_delay=timedelta(minutes=1),
    status_query_backoff_cap=timedelta(minutes=1),
    expires_after=timedelta(minutes=5),
    late_payment_window=timedelta(seconds=1),
    refund_window=timedelta(minutes=10),
)


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    task_queue = f"tq-rf-{uuid.uuid4().hex[:8]}"
    async with running_stack(
        dev_env.client, tmp_path_factory.mktemp("refund"), task_queue, refund_delay_seconds=0.2
    ) as s:
        yield s


@pytest.fixture(scope="module")
async def sandbox(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as client:
        yield client


async def paid(
    stack: Stack, sandbox: httpx.AsyncClient, amount: str = "10.00"
) -> tuple[str, WorkflowHandle[PaymentWorkflow, PaymentView]]:
    order_id = f"rf-{uuid.uuid4().hex[:10]}"
    handle, _ = await start_payment(
        stack.client, stack.settings, order_id, amount=amount, timing=REFUNDABLE
    )
    response = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})
    assert response.status_code == 200, response.text
    await until(handle, lambda v: v.status is TransactionStatus.SUCCEEDED)
    return order_id, handle


async def until(handle: WorkflowHandle, check: Any) -> PaymentView:
    async with asyncio.timeout(SETTLE_SECONDS):
        while True:
            view = await handle.query(PaymentWorkflow.details)
            if check(view):
                return view
            await asyncio.sleep(0.1)


async def eventually(read: Any, expected: Any) -> None:
    async with asyncio.timeout(SETTLE_SECONDS):
        while True:
            if await read() == expected:
                return
            await asyncio.sleep(0.1)


async def refund_result(stack: Stack, refund_id: str) -> RefundView:
    handle = stack.client.get_workflow_handle(f"refund-{refund_id}", result_type=RefundView)
    return await asyncio.wait_for(handle.result(), SETTLE_SECONDS)


async def ground_truth(sandbox: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await sandbox.get("/sandbox/refunds", params={"out_trade_no": order_id})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_concurrent_refunds_never_exceed_the_payment(
    stack: Stack, sandbox: httpx.AsyncClient
) -> None:
    order_id, payment = await paid(stack, sandbox)
    refund_ids = [f"{order_id}-r{i}" for i in range(5)]
    results = await asyncio.gather(
        *(
            start_refund(
                stack.client, stack.settings, order_id=order_id, refund_id=r, amount="3.00"
            )
            for r in refund_ids
        ),
        return_exceptions=True,
    )
    accepted = [r.refund_id for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(accepted) == 3, results
    assert len(refused) == 2 and all(isinstance(r, RefundRefused) for r in refused), refused

    for refund_id in accepted:
        refund = await refund_result(stack, refund_id)
        assert refund.status is TransactionStatus.SUCCEEDED
        assert refund.settled_by == "notification"
        assert refund.refunded_amount == Decimal("3.00")
    view = await until(payment, lambda v: v.refunded_amount == Decimal("9.00"))
    assert view.status is TransactionStatus.PARTIALLY_REFUNDED
    assert view.refundable_amount == Decimal("1.00")

    # What the provider actually did: exactly the three, each requested once.
    truth = await ground_truth(sandbox, order_id)
    assert sorted(r["out_request_no"] for r in truth) == sorted(accepted)
    assert {(r["status"], r["refund_amount"], r["requests"]) for r in truth} == {
        ("REFUND_SUCCESS", "3.00", 1)
    }

    # The rest: the payment is REFUNDED, in Temporal's visibility too.
    last = await start_refund(
        stack.client, stack.settings, order_id=order_id, refund_id=f"{order_id}-last", amount="1"
    )
    assert last.refundable_amount == Decimal("0.00")
    await refund_result(stack, f"{order_id}-last")
    view = await until(payment, lambda v: v.status is TransactionStatus.REFUNDED)
    assert view.refunded_amount == Decimal("10.00")

    async def visible_status() -> str | None:
        return (await payment.describe()).typed_search_attributes.get(sa.PAYMENT_STATUS)

    await eventually(lambda: visible_status(), "REFUNDED")
    refund_attrs = (
        await stack.client.get_workflow_handle(f"refund-{order_id}-last").describe()
    ).typed_search_attributes
    assert refund_attrs.get(sa.TRANSACTION_KIND) == "refund"
    assert refund_attrs.get(sa.ORDER_ID) == order_id

    # The merchant heard about each refund once, signed (the receiver verifies signatures).
    async def event_count() -> int:
        return len(stack.merchant.events_for(order_id))

    await eventually(event_count, 5)
    events = stack.merchant.events_for(order_id)
    assert sorted(e.type for e in events) == ["payment.succeeded"] + ["refund.succeeded"] * 4
    assert sorted(e.data.refund_id for e in events if e.data.refund_id) == sorted(
        [*accepted, f"{order_id}-last"]
    )


async def test_refund_is_idempotent_and_bad_refunds_reach_no_provider(
    stack: Stack, sandbox: httpx.AsyncClient
) -> None:
    order_id, payment = await paid(stack, sandbox)
    refund_id = f"{order_id}-same"
    first = await start_refund(
        stack.client, stack.settings, order_id=order_id, refund_id=refund_id, amount="2.50"
    )
    again = await start_refund(
        stack.client, stack.settings, order_id=order_id, refund_id=refund_id, amount="2.50"
    )
    assert first.workflow_id == again.workflow_id == f"refund-{refund_id}"
    with pytest.raises(RefundRefused, match="already exists for 2.50 CNY"):
        await start_refund(
            stack.client, stack.settings, order_id=order_id, refund_id=refund_id, amount="3.00"
        )
    for amount, currency, message in [
        ("8.00", None, "exceeds what remains refundable"),
        ("1.00", "USD", "differs from order"),
    ]:
        with pytest.raises(RefundRefused, match=message):
            await start_refund(
                stack.client,
                stack.settings,
                order_id=order_id,
                refund_id=f"{order_id}-bad",
                amount=amount,
                currency=currency,
            )
    await refund_result(stack, refund_id)
    truth = await ground_truth(sandbox, order_id)
    assert [(r["out_request_no"], r["requests"]) for r in truth] == [(refund_id, 1)]


async def test_refused_refund_fails_and_gives_its_amount_back(
    stack: Stack, sandbox: httpx.AsyncClient
) -> None:
    """The provider refuses (here: the trade was partly refunded outside tempay, so less is
    refundable there than tempay's ledger says): FAILED with its reason, nothing held."""
    order_id, payment = await paid(stack, sandbox)
    outside = await sandbox.post(
        f"/payments/{order_id}/refunds",
        json={
            "out_request_no": f"{order_id}-outside",
            "refund_amount": "9.00",
            "currency": "CNY",
            "notify_url": stack.notify_url,
        },
    )
    assert outside.status_code == 200, outside.text
    refused = await start_refund(
        stack.client, stack.settings, order_id=order_id, refund_id=f"{order_id}-x", amount="5"
    )
    assert refused.status is TransactionStatus.FAILED
    assert "REFUND_AMOUNT_EXCEEDED" in (refused.fail_reason or "")
    assert refused.refundable_amount == Decimal("10.00")
    view = await until(payment, lambda v: v.refunds and v.refunds[0].status.is_terminal)
    assert view.status is TransactionStatus.SUCCEEDED
