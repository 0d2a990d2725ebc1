"""The bare baselines the benchmarks compare against.

`BareSettlementWorkflow` with no input is `tempay bench --payments`'s baseline: the same
count of activities, updates and signals as a payment (create at the provider,
notification, merchant event), with empty bodies and no provider, webhook or signature.
Given `BareFeatures`, it also asks of Temporal what a payment asks beyond that (search
attributes, status updates, a status-query timer, payment-sized payloads) or does it the
way a payment does (its two activities as local activities), or writes the book as a
settled payment does (a payment-sized entry, recorded by the merchant-side activity before
its work, as `record_then_notify_merchant` does), one at a time or together:
`tempay bench --payments N --breakdown` measures what each costs or saves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import activity, workflow

from workflows.local_first import ONE_ATTEMPT

with workflow.unsafe.imports_passed_through():
    from book import Book
    from tempay import search_attributes as sa
    from tempay.domain import (
        BookEntry,
        PaymentView,
        StatusChange,
        TransactionKind,
        TransactionStatus,
    )

ACTIVITY_TIMEOUT = timedelta(seconds=30)


@dataclass(frozen=True)
class BareFeatures:
    """What a payment asks of Temporal beyond the baseline. search_attributes: the four
    custom ones, set by the starter as tempay's starters set a payment's;
    status_upserts: PaymentStatus set when the first activity is done and again when the
    signal comes, as a payment goes PENDING and then SUCCEEDED; status_timer: a timer
    started with the wait and cancelled by the signal (the status-query fallback);
    payload_bytes: every input, result, update and signal this many bytes, and each
    activity and timer with a summary; local_activities: both activities run as local
    activities, as a payment's provider create and first merchant delivery do
    (workflows/local_first.py); book_write: the second activity (the merchant-side one)
    first records a settled payment's book entry (`settled_entry`, built by the workflow
    as a payment's BookWriter builds its own) in the worker's book, as
    activities/book.py's `record_then_notify_merchant` does (`BareBookActivities`)."""

    search_attributes: bool = False
    status_upserts: bool = False
    status_timer: bool = False
    payload_bytes: int = 0
    local_activities: bool = False
    book_write: bool = False


@activity.defn(name="bare_activity")
async def bare_activity(body: str = "") -> str:
    return body


class BareBookActivities:
    """The baseline's book write, bound to the worker process's book (proof/worker.py opens
    it as `tempay worker` opens its own)."""

    def __init__(self, book: Book) -> None:
        self._book = book

    @activity.defn(name="bare_record_then_activity")
    async def record_then_activity(self, entry: BookEntry, body: str = "") -> str:
        """The book write exactly as activities/book.py makes it, then the bare activity."""
        await asyncio.to_thread(self._book.record, entry)
        return body


def settled_entry(workflow_id: str, created_at: datetime, now: datetime) -> BookEntry:
    """What a bench payment (sandbox, 10.00 CNY, settled by its notification, no refund
    window) writes to the book at settlement, field for field: its view as of the change
    (before the merchant event is raised) and its three-entry journal; version 2, the
    PENDING write held and carried by this one. The row is keyed by `workflow_id`."""
    trade_no = f"SBX{workflow_id.encode().hex()[-20:].upper():0>20}"
    created, pending = TransactionStatus.CREATED, TransactionStatus.PENDING
    status = TransactionStatus.SUCCEEDED
    view = PaymentView(
        workflow_id=workflow_id,
        order_id=workflow_id,
        kind=TransactionKind.PAYMENT,
        provider="sandbox",
        status=status,
        amount=Decimal("10.00"),
        currency="CNY",
        paid_amount=Decimal("10.00"),
        paid_currency="CNY",
        payment_url=f"http://127.0.0.1:41865/checkout/{trade_no}",
        provider_trade_no=trade_no,
        notifications_received=1,
        expires_at=created_at + timedelta(minutes=5),
        settled_at=now,
        settled_by="notification",
    )
    journal = [
        StatusChange(seq=1, to_status=created, at=created_at, by="create"),
        StatusChange(seq=2, from_status=created, to_status=pending, at=created_at, by="create"),
        StatusChange(seq=3, from_status=pending, to_status=status, at=now, by="notification"),
    ]
    return BookEntry(version=2, at=now, created_at=created_at, view=view, changes=journal)


@workflow.defn
class BareSettlementWorkflow:
    def __init__(self) -> None:
        self._started = False
        self._signalled = False

    @workflow.run
    async def run(self, features: BareFeatures | None = None) -> str:
        f = features or BareFeatures()
        body = "x" * f.payload_bytes
        await self._activity(f, body, "first activity")
        if f.status_upserts:
            workflow.upsert_search_attributes(
                [sa.PAYMENT_STATUS.value_set(str(TransactionStatus.PENDING))]
            )
        timer = None
        if f.status_timer:
            summary = "timer" if body else None
            timer = asyncio.ensure_future(workflow.sleep(timedelta(minutes=1), summary=summary))
        self._started = True
        await workflow.wait_condition(lambda: self._signalled)
        if timer is not None:
            timer.cancel()
        if f.status_upserts:
            workflow.upsert_search_attributes(
                [sa.PAYMENT_STATUS.value_set(str(TransactionStatus.SUCCEEDED))]
            )
        if f.book_write:
            await self._book_activity(f, body)
        else:
            await self._activity(f, body, "second activity")
        return body if body else "done"

    async def _book_activity(self, f: BareFeatures, body: str) -> None:
        """The second activity writing the book first, as a payment's settlement does."""
        info = workflow.info()
        entry = settled_entry(info.workflow_id, info.start_time, workflow.now())
        summary = "write the book, then second activity" if body else None
        if f.local_activities:
            await workflow.execute_local_activity_method(
                BareBookActivities.record_then_activity,
                args=[entry, body],
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ONE_ATTEMPT,
                summary=summary,
            )
        else:
            await workflow.execute_activity_method(
                BareBookActivities.record_then_activity,
                args=[entry, body],
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                summary=summary,
            )

    async def _activity(self, f: BareFeatures, body: str, summary: str) -> None:
        if f.local_activities:
            await workflow.execute_local_activity(
                bare_activity,
                body,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ONE_ATTEMPT,
                summary=summary if body else None,
            )
        elif body:
            await workflow.execute_activity(
                bare_activity, body, start_to_close_timeout=ACTIVITY_TIMEOUT, summary=summary
            )
        else:
            await workflow.execute_activity(bare_activity, start_to_close_timeout=ACTIVITY_TIMEOUT)

    @workflow.update
    async def checkout(self, body: str = "") -> str:
        await workflow.wait_condition(lambda: self._started)
        return body

    @workflow.signal
    def notify(self, body: str = "") -> None:
        self._signalled = True


@workflow.defn
class BareListenerWorkflow:
    """The webhook benchmark's baseline: a workflow taking many signals, each as small as a
    notification's observation, until told to stop."""

    def __init__(self) -> None:
        self._received = 0
        self._stop = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self._stop)
        return self._received

    @workflow.signal
    def notify(self, payload: dict[str, str]) -> None:
        self._received += 1

    @workflow.signal
    def stop(self) -> None:
        self._stop = True
