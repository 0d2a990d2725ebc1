"""PaymentWorkflow's old revisions: the code only payments started under older code take,
kept so that their histories replay, and each gate that chooses it. docs/versioning.md lists
every gate and patch, what it guards, and when it becomes `deprecate_patch` and then goes.

How a payment knows its code: `PaymentOrder.revision`, which the starter sets to
PAYMENT_REVISION (tempay/domain.py) and which never changes for that run; orders from
before the field are revision 0. Revision 0 asks workflow.patched for the two changes made
before revisions existed (a marker in history); revision 1 and later have both from the
start, with no marker. Later changes are revisions only: no marker, a gate on the number.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from datetime import datetime

from temporalio import workflow

from workflows.settling import SettlesByProvider
from workflows.status_query import jittered

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import (
        PAYMENT_REVISION,
        OperatorAction,
        PaymentObservation,
        PaymentOrder,
        PaymentView,
    )

# Patches (revision 0 only; revision 1 and later have both without a marker).
# Workflows that settled before merchant events existed replay without them (and send
# none later); the ones that settle after the upgrade send them.
MERCHANT_EVENTS_PATCH = "merchant-events"
# Workflows that completed at settlement before refunds existed replay without the refund
# window; the ones that settle after the upgrade stay open for refunds.
REFUNDS_PATCH = "refund-window"

# Revisions (PaymentOrder.revision), each the first at which a change holds.
# 1: the two patches above without markers.
PATCHES_BUILT_IN_REVISION = 1
# 2: waits with a steady timer (one per status-query period).
STEADY_TIMER_REVISION = 2
# 3: hands the status queries after the first to one `poll_payment` activity, whose
# server-side retries keep the schedule (tempay/polling.py). The current wait loop.
POLLING_REVISION = 3
# 4: tries the provider create and the first merchant delivery once as local activities, in
# the workflow task that needs them (workflows/local_first.py).
LOCAL_FIRST_REVISION = 4


def refuse_unknown_revision(order: PaymentOrder) -> None:
    """An order started by newer code than this worker's (starters upgraded first, or a
    rollback) fails the workflow task, not the payment, so a worker that knows the revision
    takes it up; running it as an older revision would not replay."""
    if order.revision > PAYMENT_REVISION:
        raise RuntimeError(
            f"order {order.order_id} is at revision {order.revision}; this worker runs "
            f"PaymentWorkflow up to revision {PAYMENT_REVISION}: upgrade the worker"
        )


# 5: every status change written to the book from the start (workflows/book.py).
BOOK_REVISION = 5


# 6: a payment's PENDING is written when its first status query is due, unless it settles
# first; the settlement's write rides the merchant delivery's local attempt (one local
# activity for both: workflows/merchant.py). Listing and counting read in-flight
# transactions from Temporal (transactions/read.py).
LEAN_BOOK_REVISION = 6


def lean_book(order: PaymentOrder) -> bool:
    """Whether the run writes the book the lean way (LEAN_BOOK_REVISION)."""
    return order.revision >= LEAN_BOOK_REVISION


def writes_book(order: PaymentOrder) -> bool:
    """Whether the run writes its status changes to the book from its start (older runs
    write from their next change after the upgrade: workflows/book.py)."""
    return order.revision >= BOOK_REVISION


def local_first(order: PaymentOrder) -> bool:
    """Whether the provider create and the first merchant delivery are tried locally first
    (and the run waits for its update handlers before it ends)."""
    return order.revision >= LOCAL_FIRST_REVISION


class PaymentRevisions(SettlesByProvider[PaymentOrder, PaymentView, PaymentObservation]):
    """PaymentWorkflow's base: each patch asked in one place, and the wait loops of the
    revisions before POLLING_REVISION."""

    _cancel: OperatorAction | None  # an operator's cancel, taken up by the wait loop

    @abstractmethod
    async def _expire(self, cancelled_by: OperatorAction | None = None) -> None:
        """Close at the provider (PaymentWorkflow)."""

    def _since_revision(self, revision: int, patch: str) -> bool:
        """Whether this run has `patch`'s behaviour: an order started at `revision` or later
        has it from its start (no marker); an older one asks workflow.patched, as before."""
        return self._order.revision >= revision or workflow.patched(patch)

    def _tells_merchant(self) -> bool:
        """Whether a settlement raises a merchant event (asked at each settlement)."""
        return self._since_revision(PATCHES_BUILT_IN_REVISION, MERCHANT_EVENTS_PATCH)

    def _has_refund_window(self) -> bool:
        """Whether the run stays open for its refund window (asked once it opened)."""
        return self._since_revision(PATCHES_BUILT_IN_REVISION, REFUNDS_PATCH)

    def _search_attributes_at_start(self) -> None:
        """tempay's starters set the search attributes at the start (since 3f2c8d0); a run
        started without them (earlier, or by hand) sets them now."""
        if workflow.info().typed_search_attributes.get(sa.ORDER_ID) is None:
            order = self._order
            workflow.upsert_search_attributes(
                [
                    sa.ORDER_ID.value_set(order.order_id),
                    sa.PROVIDER.value_set(order.provider),
                    sa.TRANSACTION_KIND.value_set(str(order.kind)),
                    sa.PAYMENT_STATUS.value_set(str(self._status)),
                ]
            )

    async def _await_outcome_before_polling(self, deadline: datetime) -> None:
        """The wait for news of the orders before POLLING_REVISION: each status query a
        workflow timer and an activity of its own."""
        if self._order.revision >= STEADY_TIMER_REVISION:
            await self._await_outcome_steady_timer(deadline)
        else:
            await self._await_outcome_timeout_per_wait(deadline)

    async def _await_outcome_timeout_per_wait(self, deadline: datetime) -> None:
        """Revisions 0 and 1: a wait with a timeout, so any news that settles nothing
        cancels the timer and starts another."""
        timing = self._order.timing
        delay = timing.first_status_query_delay
        while True:
            self._drain_inbox()
            if self._terminal:
                return
            now = workflow.now()
            if now >= deadline:
                await self._expire()
                return
            if self._cancel is not None:
                await self._expire(cancelled_by=self._cancel)
                return
            if self._query_now:
                self._query_now = False
                await self._status_query()
                continue
            wait = min(jittered(delay), deadline - now)
            self._view.next_status_query_at = now + wait
            self._publish()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._query_now or self._cancel is not None,
                    timeout=wait,
                    timeout_summary="next status query",
                )
                continue
            except TimeoutError:
                pass
            if workflow.now() < deadline:
                await self._status_query()
                delay = min(delay * 2, timing.status_query_backoff_cap)

    async def _await_outcome_steady_timer(self, deadline: datetime) -> None:
        """Revision 2: wait for news until the next status query is due, then ask; until
        settled, expired or cancelled. One timer per query period: news that settles nothing
        (a duplicate, a "still waiting") wakes the workflow but leaves the timer running,
        where a wait with a timeout would cancel it and start another each time."""
        timing = self._order.timing
        delay = timing.first_status_query_delay
        timer: asyncio.Future[None] | None = None

        def stop_timer() -> None:
            nonlocal timer
            if timer is not None and not timer.done():
                timer.cancel()
            timer = None

        def woken() -> bool:
            due = timer is not None and timer.done()
            return bool(self._inbox) or self._query_now or self._cancel is not None or due

        while True:
            self._drain_inbox()
            if self._terminal:
                stop_timer()
                return
            now = workflow.now()
            if now >= deadline:
                stop_timer()
                await self._expire()
                return
            if self._cancel is not None:
                stop_timer()
                await self._expire(cancelled_by=self._cancel)
                return
            if self._query_now:
                self._query_now = False
                stop_timer()  # asked now: the next one is a full period from now
                await self._status_query()
                continue
            if timer is None:
                wait = min(jittered(delay), deadline - now)
                self._view.next_status_query_at = now + wait
                timer = asyncio.ensure_future(workflow.sleep(wait, summary="next status query"))
            self._publish()
            await workflow.wait_condition(woken)
            if not timer.done():
                continue
            timer = None
            if workflow.now() < deadline:
                await self._status_query()
                delay = min(delay * 2, timing.status_query_backoff_cap)
