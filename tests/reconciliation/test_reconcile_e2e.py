"""Reconciliation end to end on the real dev server: the sandbox's statement for today
(Asia/Shanghai) against the book, with a discrepancy of every kind planted the way it
happens (a notification dropped and not yet queried, a trade made outside tempay, an amount
the statement changes, a trade the statement leaves out), then the same day again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from tempay.domain import TransactionStatus
from tempay.statements import DiscrepancyAction, DiscrepancyType, ReconciliationReport
from tests.support.stack import Stack, running_stack, start_payment
from transactions import payment_view
from transactions.reconcile import ReconciliationFailed, ensure_schedules, reconcile, report

pytestmark = pytest.mark.e2e
RUN = uuid.uuid4().hex[:6]
API_KEY = f"test-api-key-{uuid.uuid4().hex}"
PAID, DROPPED, OUTSIDE = f"rc-{RUN}-paid", f"rc-{RUN}-dropped", f"rc-{RUN}-outside"
CHANGED, LEFT_OUT = f"rc-{RUN}-changed", f"rc-{RUN}-left-out"
REFUND_OUTSIDE = f"rf-{RUN}-outside"


def today() -> date:
    return datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env.client,
        tmp_path_factory.mktemp("reconcile"),
        f"tq-rc-{RUN}",
        # No status query before the reconciliation: it is what finds the dropped one.
        settings_overrides={"first_status_query_delay": timedelta(hours=1), "api_key": API_KEY},
        statement_amount_delta_order=CHANGED,
        statement_drop_order=LEFT_OUT,
    ) as s:
        yield s


async def settled(stack: Stack, order_id: str, want: TransactionStatus) -> None:
    for _ in range(300):
        if (await payment_view(stack.client, order_id, stack.book)).status is want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{order_id} never reached {want}")


@pytest.fixture(scope="module")
async def first(stack: Stack) -> ReconciliationReport:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        for order_id in (PAID, DROPPED, CHANGED, LEFT_OUT):
            await start_payment(stack.client, stack.settings, order_id)
        for order_id in (PAID, CHANGED, LEFT_OUT):
            assert (await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})).is_success
        dropped = await sandbox.post(
            f"/sandbox/payments/{DROPPED}/pay", json={"notification": "drop"}
        )
        assert dropped.is_success
        # A trade only the provider knows: made at the sandbox directly, then paid.
        outside = await sandbox.post(
            "/payments",
            json={
                "out_trade_no": OUTSIDE,
                "amount": "7.00",
                "currency": "CNY",
                "notify_url": "http://127.0.0.1:9/nowhere",
            },
        )
        assert outside.is_success, outside.text
        assert (await sandbox.post(f"/sandbox/payments/{OUTSIDE}/pay", json={})).is_success
    for order_id in (PAID, CHANGED, LEFT_OUT):
        await settled(stack, order_id, TransactionStatus.SUCCEEDED)
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        # A refund only the provider has: asked of it directly, not through tempay.
        refund = await sandbox.post(
            f"/payments/{PAID}/refunds",
            json={
                "out_request_no": REFUND_OUTSIDE,
                "refund_amount": "2.00",
                "currency": "CNY",
                "notify_url": "http://127.0.0.1:9/nowhere",
            },
        )
        assert refund.is_success, refund.text
        for _ in range(300):
            found = await sandbox.get(f"/payments/{PAID}/refunds/{REFUND_OUTSIDE}")
            if found.is_success and "SUCCESS" in found.text:
                break
            await asyncio.sleep(0.1)
    assert (await payment_view(stack.client, DROPPED)).status is TransactionStatus.PENDING
    return await reconcile(stack.client, stack.settings, stack.book, "sandbox", today())


def by_order(found: ReconciliationReport) -> dict[str | None, tuple[str, str]]:
    return {
        d.order_id: (str(d.type), str(d.action))
        for d in found.discrepancies
        if d.kind == "payment" and d.order_id and d.order_id.startswith(f"rc-{RUN}")
    }


async def test_each_discrepancy_is_found_and_acted_on(
    stack: Stack, first: ReconciliationReport
) -> None:
    assert first.status == "completed"
    assert by_order(first) == {
        DROPPED: (DiscrepancyType.STATUS_MISMATCH, DiscrepancyAction.STATUS_QUERY),
        OUTSIDE: (DiscrepancyType.MISSING_IN_TEMPAY, DiscrepancyAction.REVIEW),
        CHANGED: (DiscrepancyType.AMOUNT_MISMATCH, DiscrepancyAction.REVIEW),
        LEFT_OUT: (DiscrepancyType.MISSING_AT_PROVIDER, DiscrepancyAction.REVIEW),
    }
    assert first.counts.matched >= 1  # PAID
    [refund] = [d for d in first.discrepancies if d.refund_id == REFUND_OUTSIDE]
    assert (refund.kind, refund.type, refund.order_id) == ("refund", "missing_in_tempay", PAID)
    assert refund.provider is not None and refund.provider.amount == Decimal("2.00")
    changed = next(d for d in first.discrepancies if d.order_id == CHANGED)
    assert changed.tempay is not None and changed.provider is not None
    assert changed.provider.amount is not None and changed.tempay.amount is not None
    assert changed.provider.amount - changed.tempay.amount == 1  # the planted delta, exact
    # The dropped one was asked about, and settled by the usual path (a status query).
    dropped = next(d for d in first.discrepancies if d.order_id == DROPPED)
    assert dropped.outcome == "status query asked: now SUCCEEDED"
    view = await payment_view(stack.client, DROPPED, stack.book)
    assert (view.status, view.settled_by) == (TransactionStatus.SUCCEEDED, "status_query")
    # Each review item reached the merchant once, signed.
    events = [
        d.body
        for d in stack.merchant.deliveries
        if d.body is not None and d.body["type"] == "reconciliation.discrepancy"
    ]
    about = sorted(e["data"]["discrepancy"]["key"] for e in events)
    assert about == sorted(
        [f"payment:{o}" for o in (OUTSIDE, CHANGED, LEFT_OUT)] + [f"refund:{REFUND_OUTSIDE}"]
    )
    assert all(d.announced for d in first.discrepancies if d.action == DiscrepancyAction.REVIEW)


async def test_the_same_day_again_changes_nothing_that_has_not_changed(
    stack: Stack, first: ReconciliationReport
) -> None:
    delivered = len(stack.merchant.deliveries)
    second = await reconcile(stack.client, stack.settings, stack.book, "sandbox", today())
    # The dropped payment is settled now: it matches, and its status query is no longer a
    # discrepancy; the review items stay, not announced again.
    assert by_order(second) == {k: v for k, v in by_order(first).items() if k != DROPPED}
    assert second.counts.matched == first.counts.matched + 1
    assert len(stack.merchant.deliveries) == delivered
    third = await reconcile(stack.client, stack.settings, stack.book, "sandbox", today())
    assert (third.counts, third.discrepancies) == (second.counts, second.discrepancies)
    assert third.runs == second.runs + 1
    assert await report(stack.book, "sandbox", today()) == third


async def test_a_provider_without_statements_fails_in_one_line_and_changes_nothing(
    stack: Stack,
) -> None:
    with pytest.raises(ReconciliationFailed, match="'alipay' is not enabled"):
        await reconcile(stack.client, stack.settings, stack.book, "alipay", today())
    with pytest.raises(LookupError, match="no reconciliation of alipay"):
        await report(stack.book, "alipay", today())


async def test_the_api_answers_the_report_from_the_book(
    stack: Stack, first: ReconciliationReport
) -> None:
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.webhook_url, headers=bearer, timeout=10) as api:
        answer = await api.get(f"/api/reconciliations/sandbox/{today()}")
        assert answer.status_code == 200, answer.text
        stored = await report(stack.book, "sandbox", today())
        assert ReconciliationReport.model_validate(answer.json()) == stored
        assert set(answer.json()["counts"]) == {
            "matched",
            "missing_in_tempay",
            "missing_at_provider",
            "status_mismatch",
            "amount_mismatch",
        }
        never = await api.get("/api/reconciliations/sandbox/2001-01-01")
        assert never.status_code == 404
        assert "no reconciliation of sandbox for 2001-01-01" in never.text
        assert (await api.get("/api/reconciliations/sandbox/yesterday")).status_code == 422
        assert (
            await api.get(
                "/api/reconciliations/sandbox/2026-12-01", headers={"Authorization": "Bearer wrong"}
            )
        ).status_code == 401


async def test_a_daily_schedule_per_provider_in_its_timezone(stack: Stack) -> None:
    settings = stack.settings.model_copy(update={"reconcile_at": "9:30"})
    provider = f"p{RUN}"
    created = await ensure_schedules(stack.client, settings, {provider: "Asia/Shanghai"})
    assert created == [f"reconcile-{provider}"]
    try:
        described = await stack.client.get_schedule_handle(created[0]).describe()
        spec = described.schedule.spec
        assert spec.time_zone_name == "Asia/Shanghai"
        [calendar] = spec.calendars
        assert ([r.start for r in calendar.hour], [r.start for r in calendar.minute]) == ([9], [30])
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "ReconciliationWorkflow"
        # Again: left as it is.
        assert await ensure_schedules(stack.client, settings, {provider: "Asia/Shanghai"}) == []
    finally:
        await stack.client.get_schedule_handle(created[0]).delete()


async def test_another_merchants_statement_fails_the_run_and_the_book_is_unchanged(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # The sandbox names an account this tempay does not expect: the statement is refused.
    async with running_stack(
        dev_env.client, tmp_path, f"tq-rc-acct-{RUN}", account="2088999999999999"
    ) as other:
        before = await asyncio.to_thread(other.book.count)
        with pytest.raises(ReconciliationFailed, match="2088999999999999"):
            await reconcile(other.client, other.settings, other.book, "sandbox", today())
        with pytest.raises(LookupError):
            await report(other.book, "sandbox", today())
        assert await asyncio.to_thread(other.book.count) == before
