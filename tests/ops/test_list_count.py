"""`list_transactions` and `count_transactions` on the real dev server (SQLite visibility),
and the validation of their filters, which go into a visibility query."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

import transactions
from tempay.domain import TransactionKind, TransactionStatus
from tempay.errors import InvalidInput
from tests.support.stack import running_stack, start_payment
from transactions import (
    TransactionCounts,
    build_order,
    count_transactions,
    list_transactions,
    transactions_query,
)

pytestmark = pytest.mark.e2e
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], want: T, seconds: float = 15) -> T:
    """Poll `check` until it answers `want` (visibility trails the workflows); its last
    answer otherwise, for the assertion to show."""
    answer = await check()
    try:
        async with asyncio.timeout(seconds):
            while answer != want:
                await asyncio.sleep(0.1)
                answer = await check()
    except TimeoutError:
        pass
    return answer


# Validation: nothing a user types reaches the query unchecked


def test_unknown_status_and_kind_name_the_valid_values() -> None:
    with pytest.raises(InvalidInput) as status:
        transactions_query(status="PAID")
    assert str(status.value) == (
        "unknown status 'PAID': one of CREATED, PENDING, SUCCEEDED, FAILED, EXPIRED, "
        "NEEDS_REVIEW, PARTIALLY_REFUNDED, REFUNDED"
    )
    with pytest.raises(InvalidInput) as kind:
        transactions_query(kind="topup")
    assert str(kind.value) == "unknown kind 'topup': one of payment, recharge, refund, withdrawal"


@pytest.mark.parametrize(
    "provider",
    [
        "sandbox' OR TransactionKind IS NOT NULL OR Provider = 'x",
        'sandbox" OR 1=1',
        "sandbox ORDER BY StartTime",
        "sandbox\\",
        "",
        "-sandbox",
        "a" * 65,
        "sandbox\n",
    ],
)
def test_a_provider_that_could_change_the_query_is_refused(provider: str) -> None:
    with pytest.raises(InvalidInput, match="provider .* must be 1-64 characters"):
        transactions_query(provider=provider)


def test_the_query_holds_exactly_the_filters() -> None:
    assert transactions_query() == "TransactionKind IS NOT NULL"
    assert transactions_query(status="pending", kind="Recharge", provider="we_chat-pay.v3") == (
        "TransactionKind IS NOT NULL AND PaymentStatus = 'PENDING' AND "
        "TransactionKind = 'recharge' AND Provider = 'we_chat-pay.v3'"
    )


async def test_bad_filters_are_refused_before_any_query(
    own_dev_env: WorkflowEnvironment,
) -> None:
    with pytest.raises(InvalidInput, match="unknown kind"):
        await count_transactions(own_dev_env.client, kind="nope")
    with pytest.raises(InvalidInput, match="unknown status"):
        async for _ in list_transactions(own_dev_env.client, status="nope"):
            pass


# On the dev server


@pytest.mark.parametrize("from_book", [False, True], ids=["temporal", "book"])
async def test_list_and_count_by_status_kind_and_provider(
    own_dev_env: WorkflowEnvironment, tmp_path: Path, from_book: bool
) -> None:
    """Without a book, all from Temporal; with it, settled transactions from the book and
    those in flight from Temporal's open workflows, the same answers either way."""
    client = own_dev_env.client
    run = uuid.uuid4().hex[:6]
    paid, declined, pending = f"L-{run}-paid", f"L-{run}-declined", f"L-{run}-pending"
    topup = f"L-{run}-topup"
    async with running_stack(client, tmp_path, f"tq-list-{run}") as stack:
        handles = {}
        for order_id in (paid, declined, pending):
            handles[order_id], _ = await start_payment(client, stack.settings, order_id)
        recharge = build_order(
            stack.settings,
            order_id=topup,
            amount="50.00",
            currency="CNY",
            kind=TransactionKind.RECHARGE,
            account_id="acct-1",
        )
        await transactions.start_payment(client, stack.settings, recharge)
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
            assert (await sandbox.post(f"/sandbox/payments/{paid}/pay", json={})).is_success
            assert (await sandbox.post(f"/sandbox/payments/{declined}/decline")).is_success
        assert (await handles[paid].result()).status is TransactionStatus.SUCCEEDED
        assert (await handles[declined].result()).status is TransactionStatus.FAILED

        book = stack.book if from_book else None

        async def rows(**filters: Any) -> set[tuple[str, str, str, str, str]]:
            return {
                (r.order_id, r.status, r.kind, r.provider, r.workflow_id)
                async for r in list_transactions(client, **filters, book=book)
            }

        async def count(**filters: Any) -> TransactionCounts:
            return await count_transactions(client, **filters, book=book)

        everything = {
            (paid, "SUCCEEDED", "payment", "sandbox", f"payment-{paid}"),
            (declined, "FAILED", "payment", "sandbox", f"payment-{declined}"),
            (pending, "PENDING", "payment", "sandbox", f"payment-{pending}"),
            (topup, "PENDING", "recharge", "sandbox", f"payment-{topup}"),
        }
        assert await eventually(rows, everything) == everything
        assert await rows(status="pending") == {r for r in everything if r[0] in (pending, topup)}
        assert await rows(kind="recharge") == {r for r in everything if r[0] == topup}
        assert await rows(kind="payment", status="PENDING") == {
            r for r in everything if r[0] == pending
        }
        assert await rows(provider="sandbox") == everything
        assert await rows(provider="alipay") == set()
        assert await rows(kind="refund") == set()
        limited = [r async for r in list_transactions(client, limit=2, book=book)]
        assert len(limited) == 2
        # Newest first, wherever each row comes from: the recharge started last.
        assert limited[0].order_id == topup
        if from_book:
            sources = {r.order_id: r.source async for r in list_transactions(client, book=book)}
            assert {sources[o] for o in (pending, topup)} == {"temporal"}
            assert {sources[o] for o in (paid, declined)} == {"book"}

        zero = dict.fromkeys(TransactionStatus.__members__, 0)
        want = TransactionCounts(
            by_status={**zero, "PENDING": 2, "SUCCEEDED": 1, "FAILED": 1}, total=4
        )
        assert await eventually(count, want) == want
        assert await count(kind="payment") == TransactionCounts(
            by_status={**zero, "PENDING": 1, "SUCCEEDED": 1, "FAILED": 1}, total=3
        )
        assert await count(status="pending", kind="recharge") == (
            TransactionCounts(by_status={"PENDING": 1}, total=1)
        )
        assert await count(provider="alipay") == TransactionCounts(by_status=zero, total=0)
