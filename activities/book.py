"""The book's one write: a transaction's row and journal, as its workflow last saw them.

Idempotent by construction (book/store.py): a retry, a replay or a late attempt of an older
write changes nothing. While the database is down the activity fails and Temporal retries
it; the workflow waits, so nothing settles (or reaches the merchant) before the book
holds it, and nothing is written out of order.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from book import Book
from tempay.domain import BookEntry


class BookActivities:
    """Bound to the worker's book (one connection pool per worker)."""

    def __init__(self, book: Book) -> None:
        self._book = book

    @activity.defn(name="record_transaction")
    async def record_transaction(self, entry: BookEntry) -> bool:
        """True when the row changed (False: the book already held this or a newer one)."""
        return await asyncio.to_thread(self._book.record, entry)
