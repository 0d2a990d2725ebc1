"""The book's writes: a transaction's row and journal, as its workflow last saw them.

Idempotent by construction (book/store.py): a retry, a replay or a late attempt of an older
write changes nothing. While the database is down the activity fails and Temporal retries
it; the workflow waits, so nothing settles (or reaches the merchant) before the book
holds it, and nothing is written out of order.

`record_then_notify_merchant` is a settlement's first try at both in one local activity
(workflows/book.py explains why): the book, then the merchant. A book that does not take
the write is answered, not raised, so the workflow knows the merchant was not called.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity

from activities.merchant import MerchantActivities
from book import Book
from tempay.domain import BookedDelivery, BookedEvent, BookEntry

log = logging.getLogger("tempay.book")


class BookActivities:
    """Bound to the worker's book (one connection pool per worker), and to its merchant
    activities for the settlement's combined first attempt."""

    def __init__(self, book: Book, merchant: MerchantActivities | None = None) -> None:
        self._book = book
        self._merchant = merchant

    @activity.defn(name="record_transaction")
    async def record_transaction(self, entry: BookEntry) -> bool:
        """True when the row changed (False: the book already held this or a newer one)."""
        return await asyncio.to_thread(self._book.record, entry)

    @activity.defn(name="record_then_notify_merchant")
    async def record_then_notify_merchant(self, booked: BookedEvent) -> BookedDelivery:
        """The book write, then (only once the book holds it) the merchant delivery."""
        if self._merchant is None:
            raise RuntimeError("this worker's book activities have no merchant activities")
        try:
            await asyncio.to_thread(self._book.record, booked.entry)
        except Exception as exc:  # the workflow hands the write to record_transaction's retries
            log.warning(
                "book write %d of %s failed: %s",
                booked.entry.version,
                booked.entry.view.workflow_id,
                exc,
            )
            return BookedDelivery()
        return BookedDelivery(delivery=await self._merchant.notify_merchant(booked.event))
