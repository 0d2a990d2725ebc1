"""Listing and counting across the two stores (transactions/read.py): settled transactions
from the book, those in flight from Temporal, and each alone with a warning when the
other does not answer. Temporal here is a stand-in that answers or refuses as told; the
same reads on the real dev server are in tests/ops/test_list_count.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from book import Book
from book.migrate import upgrade
from tempay import search_attributes as sa
from tempay.domain import BookEntry, PaymentView, StatusChange, TransactionKind
from tempay.domain import TransactionStatus as S
from tempay.settings import Settings
from transactions import count_transactions, list_transactions

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class Execution:
    id: str
    start_time: datetime
    typed_search_attributes: Any


@dataclass
class StandIn:
    """Temporal's visibility: answers with `running` (order ids in PENDING), or refuses."""

    running: dict[str, datetime] = field(default_factory=dict)
    down: bool = False
    queries: list[str] = field(default_factory=list)

    def _check(self, query: str) -> None:
        self.queries.append(query)
        if self.down:
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        assert "ExecutionStatus = 'Running'" in query

    async def list_workflows(self, query: str, limit: int | None = None) -> AsyncIterator[Any]:
        self._check(query)
        for order_id, started in sorted(self.running.items(), key=lambda i: i[1], reverse=True):
            attrs = TypedSearchAttributes(
                [
                    SearchAttributePair(sa.ORDER_ID, order_id),
                    SearchAttributePair(sa.PAYMENT_STATUS, "PENDING"),
                    SearchAttributePair(sa.TRANSACTION_KIND, "payment"),
                    SearchAttributePair(sa.PROVIDER, "sandbox"),
                ]
            )
            yield Execution(f"payment-{order_id}", started, attrs)

    async def count_workflows(self, query: str) -> Any:
        self._check(query)
        count = len(self.running) if "'PENDING'" in query else 0

        @dataclass
        class Count:
            count: int

        return Count(count)


def record(book: Book, order_id: str, status: S, minutes: int) -> None:
    view = PaymentView(
        workflow_id=f"payment-{order_id}",
        order_id=order_id,
        kind=TransactionKind.PAYMENT,
        provider="sandbox",
        status=status,
        amount=Decimal("10.00"),
        currency="CNY",
    )
    created = T0 + timedelta(minutes=minutes)
    changes = [StatusChange(seq=1, to_status=status, at=created, by="create")]
    book.record(BookEntry(version=1, at=created, created_at=created, view=view, changes=changes))


@pytest.fixture
def book(tmp_path: Path) -> Book:
    book = Book.from_settings(Settings(data_dir=tmp_path))
    upgrade(book)
    record(book, "paid", S.SUCCEEDED, minutes=1)
    record(book, "old-pending", S.PENDING, minutes=2)  # in the book from its first query
    record(book, "declined", S.FAILED, minutes=4)
    return book


async def rows(temporal: StandIn, book: Book, warnings: list[str], **filters: Any) -> list[Any]:
    client: Client = temporal  # type: ignore[assignment]
    return [
        (r.order_id, r.status, r.source)
        async for r in list_transactions(client, **filters, book=book, warn=warnings.append)
    ]


async def test_settled_from_the_book_in_flight_from_temporal_newest_first(book: Book) -> None:
    # Temporal holds old-pending (still open) and a new one the book has not seen yet.
    temporal = StandIn(
        running={"old-pending": T0 + timedelta(minutes=2), "new": T0 + timedelta(minutes=3)}
    )
    warnings: list[str] = []
    assert await rows(temporal, book, warnings) == [
        ("declined", "FAILED", "book"),
        ("new", "PENDING", "temporal"),
        ("old-pending", "PENDING", "temporal"),  # once, from Temporal
        ("paid", "SUCCEEDED", "book"),
    ]
    assert await rows(temporal, book, warnings, limit=2) == [
        ("declined", "FAILED", "book"),
        ("new", "PENDING", "temporal"),
    ]
    assert [r[0] for r in await rows(temporal, book, warnings, status="pending")] == [
        "new",
        "old-pending",
    ]
    queries = len(temporal.queries)
    assert await rows(temporal, book, warnings, status="failed") == [("declined", "FAILED", "book")]
    assert len(temporal.queries) == queries  # a settled status asks Temporal nothing
    counts = await count_transactions(temporal, book=book, warn=warnings.append)  # type: ignore[arg-type]
    assert (counts.by_status["PENDING"], counts.by_status["SUCCEEDED"]) == (2, 1)
    assert counts.total == 4
    assert warnings == []


async def test_temporal_down_lists_in_flight_from_the_book_with_a_warning(book: Book) -> None:
    temporal = StandIn(running={"new": T0}, down=True)
    warnings: list[str] = []
    assert await rows(temporal, book, warnings) == [
        ("declined", "FAILED", "book"),
        ("old-pending", "PENDING", "book"),
        ("paid", "SUCCEEDED", "book"),
    ]
    counts = await count_transactions(temporal, book=book, warn=warnings.append)  # type: ignore[arg-type]
    assert (counts.by_status["PENDING"], counts.total) == (1, 3)
    assert len(warnings) == 2
    assert all("Temporal did not answer (connection refused)" in w for w in warnings)
    assert "from the book instead" in warnings[0]
