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
from concurrent.futures import ThreadPoolExecutor

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
        # One thread writes, so one connection does (the pool hands back the last one):
        # its page cache stays warm. Writers take turns at SQLite's lock anyway; with a
        # connection per thread each write first reloaded what the others had changed,
        # which cost the worker several times the write itself (`tempay bench`).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="book-writer")

    async def _record(self, entry: BookEntry) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._book.record, entry)

    @activity.defn(name="record_transaction")
    async def record_transaction(self, entry: BookEntry) -> bool:
        """True when the row changed (False: the book already held this or a newer one)."""
        return await self._record(entry)

    @activity.defn(name="record_then_notify_merchant")
    async def record_then_notify_merchant(self, booked: BookedEvent) -> BookedDelivery:
        """The book write, then (only once the book holds it) the merchant delivery."""
        if self._merchant is None:
            raise RuntimeError("this worker's book activities have no merchant activities")
        try:
            await self._record(booked.entry)
        except Exception as exc:  # the workflow hands the write to record_transaction's retries
            log.warning(
                "book write %d of %s failed: %s",
                booked.entry.version,
                booked.entry.view.workflow_id,
                exc,
            )
            return BookedDelivery()
        return BookedDelivery(delivery=await self._merchant.notify_merchant(booked.event))
