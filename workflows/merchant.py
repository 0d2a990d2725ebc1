"""Delivering a merchant event from a workflow: shared by every transaction kind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.book import ATTEMPT_TIMEOUT as BOOK_ATTEMPT_TIMEOUT
from workflows.book import BookWriter
from workflows.local_first import try_locally

with workflow.unsafe.imports_passed_through():
    from activities.book import BookActivities
    from activities.merchant import MerchantActivities
    from tempay.domain import (
        BookedEvent,
        BookEntry,
        MerchantDelivery,
        MerchantDeliveryState,
        MerchantEvent,
        MerchantEventProgress,
        PaymentView,
        RefundView,
        WithdrawalView,
        merchant_event,
    )
    from tempay.merchant_webhooks import redact_urls

ATTEMPT_TIMEOUT = timedelta(seconds=30)
# Retried until the merchant answers 2xx: the first retry after the order's
# timing.merchant_retry_interval (5 s by default), doubling to an hour, for 3 days.
MERCHANT_MAX_RETRY_INTERVAL = timedelta(hours=1)
MERCHANT_DELIVERY_TIMEOUT = timedelta(days=3)


def merchant_retry(initial: timedelta) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=2.0,
        maximum_interval=max(initial, MERCHANT_MAX_RETRY_INTERVAL),
        maximum_attempts=0,  # unlimited: MERCHANT_DELIVERY_TIMEOUT bounds it
    )


async def deliver_merchant_event(
    event: MerchantEvent,
    progress: MerchantEventProgress,
    retry_interval: timedelta,
    publish: Callable[[], None],
    local_first: bool = False,
    carried: tuple[BookWriter, BookEntry] | None = None,
) -> None:
    """Run the notify_merchant activity and record its outcome in `progress`. With
    `local_first`, the first attempt is a local activity (workflows/local_first.py) and the
    activity takes over only if it fails, one retry interval later, on the same schedule.
    With `carried`, that first attempt also writes the book first (see `_deliver`)."""
    try:
        delivery = await _deliver(event, retry_interval, local_first, carried)
    except ActivityError as exc:
        progress.state = MerchantDeliveryState.FAILED
        # The activity redacts the merchant URL; an error recorded before it did still has it.
        progress.error = redact_urls(str(exc.cause or exc))
        workflow.logger.error("merchant event %s never acknowledged: %s", event.id, progress.error)
    else:
        progress.state = delivery.state
        progress.attempts = delivery.attempt
    progress.finished_at = workflow.now()
    publish()


async def _deliver(
    event: MerchantEvent,
    retry_interval: timedelta,
    local_first: bool,
    carried: tuple[BookWriter, BookEntry] | None = None,
) -> MerchantDelivery:
    began = workflow.now()
    attempts_before = 0
    initial = retry_interval
    local_attempt = local_first
    if carried is not None:
        # The settlement's book write and its first delivery attempt in one local activity:
        # the book, then the merchant (one local activity instead of two on the happy path).
        book, entry = carried
        booked = await try_locally(
            BookActivities.record_then_notify_merchant,
            BookedEvent(entry=entry, event=event),
            start_to_close_timeout=BOOK_ATTEMPT_TIMEOUT + ATTEMPT_TIMEOUT,
            summary="write the book, then notify merchant",
        )
        if booked is not None and booked.delivery is not None:
            book.carried(entry)
            return booked.delivery
        # The book did not take it (the merchant was not called), or the attempt failed
        # (the merchant may have been): the book's writer takes the write with its retries,
        # and the merchant waits for it.
        book.release(entry)
        await book.written_up_to(entry.version)
        if booked is None:  # counted as the delivery's first attempt, as below
            await workflow.sleep(retry_interval, summary="retry merchant delivery")
            attempts_before, initial, local_attempt = 1, retry_interval * 2, False
    if local_attempt:
        delivered = await try_locally(
            MerchantActivities.notify_merchant,
            event,
            start_to_close_timeout=ATTEMPT_TIMEOUT,
            summary="notify merchant",
        )
        if delivered is not None:
            return delivered
        # The schedule a delivery has from its first attempt: the retry interval, then
        # twice that, and so on (the activity's attempt 1 is the delivery's attempt 2).
        await workflow.sleep(retry_interval, summary="retry merchant delivery")
        attempts_before, initial = 1, retry_interval * 2
    delivery = await workflow.execute_activity_method(
        MerchantActivities.notify_merchant,
        event,
        start_to_close_timeout=ATTEMPT_TIMEOUT,
        # What is left of the delivery's three days, and never less than one attempt.
        schedule_to_close_timeout=max(
            MERCHANT_DELIVERY_TIMEOUT - (workflow.now() - began), ATTEMPT_TIMEOUT
        ),
        retry_policy=merchant_retry(initial),
        summary="notify merchant",
    )
    delivery.attempt += attempts_before
    return delivery


async def _after_book(book: BookWriter, version: int, delivery: Awaitable[None]) -> None:
    await book.written_up_to(version)
    await delivery


class MerchantOutbox:
    """A transaction's merchant events: each is delivered in the background while the
    workflow goes on; the workflow ends only once every one is delivered (or given up)."""

    def __init__(
        self,
        retry_interval: timedelta,
        publish: Callable[[], None],
        local_first: bool = False,
        book: BookWriter | None = None,
        unique_ids: bool = False,
        book_rides: bool = False,
    ) -> None:
        self._book = book  # an event waits until the book holds its settlement
        # The book's pending write rides the event's local attempt (`_deliver`).
        self._book_rides = book_rides
        # A status reached a second time (FAILED, then late money in review, then FAILED by
        # an operator) gets an id of its own (`..._failed_2`): a receiver that drops
        # repeated ids must not drop it. Runs from before (book revisions) keep one id.
        self._unique_ids = unique_ids
        self._retry_interval = retry_interval
        self._publish = publish
        self._local_first = local_first
        self._deliveries: list[asyncio.Future[None]] = []

    def send(self, view: PaymentView | RefundView | WithdrawalView) -> None:
        """Tell the merchant about the settlement just made, without waiting for them."""
        event = merchant_event(view, workflow.now())
        if self._unique_ids:
            seen = sum(
                1
                for p in view.merchant_events
                if p.event_id == event.id or p.event_id.startswith(f"{event.id}_")
            )
            if seen:
                event = event.model_copy(update={"id": f"{event.id}_{seen + 1}"})
        progress = MerchantEventProgress(event_id=event.id, type=event.type)
        view.merchant_events.append(progress)
        self._publish()
        book = self._book
        entry = book.carry() if book is not None and self._book_rides else None
        delivery = deliver_merchant_event(
            event,
            progress,
            self._retry_interval,
            self._publish,
            self._local_first,
            carried=(book, entry) if book is not None and entry is not None else None,
        )
        if book is not None and entry is None and not book.is_written(book.version):
            delivery = _after_book(book, book.version, delivery)
        self._deliveries.append(asyncio.ensure_future(delivery))

    @property
    def delivered(self) -> bool:
        return all(delivery.done() for delivery in self._deliveries)

    async def finish(self, has_news: Callable[[], bool], take_news: Callable[[], object]) -> None:
        """Wait until every event is delivered. Meanwhile news (notifications) still count:
        money arriving while the merchant is unreachable is handled, not dropped."""
        while True:
            take_news()
            if self.delivered:
                return
            await workflow.wait_condition(lambda: has_news() or self.delivered)


def merchant_lines(events: list[MerchantEventProgress]) -> list[str]:
    """Merchant delivery progress, as lines of a workflow's current details."""
    lines = []
    for event in events:
        line = f"- merchant event `{event.type}` ({event.event_id}): **{event.state}**"
        if event.state is MerchantDeliveryState.PENDING:
            line += ", retrying until the merchant answers 2xx"
        elif event.attempts:
            line += f" after {event.attempts} attempt" + ("s" if event.attempts > 1 else "")
        if event.error:
            line += f": {event.error}"
        lines.append(line)
    return lines
