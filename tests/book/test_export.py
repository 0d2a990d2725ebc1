"""`tempay export`'s writer over a real book: CSV and JSON lines, exact amounts as strings,
a half-open day range, and a bounded memory however many rows (keyset batches)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from book import Book
from book.migrate import upgrade
from commands.db import EXPORT_FIELDS, export_lines
from tempay.domain import BookEntry, PaymentView, TransactionKind, TransactionStatus
from tempay.settings import Settings

DAY = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def book(tmp_path: Path) -> Book:
    book = Book.from_settings(Settings(data_dir=tmp_path))
    upgrade(book)
    for n, (amount, currency) in enumerate(
        [("10.00", "CNY"), ("1234567.89", "USD"), ("500", "JPY")]
    ):
        view = PaymentView(
            workflow_id=f"payment-X{n}",
            order_id=f"X{n}",
            kind=TransactionKind.PAYMENT,
            provider="sandbox",
            status=TransactionStatus.SUCCEEDED,
            amount=Decimal(amount),
            currency=currency,
            paid_amount=Decimal(amount),
            review_reason='a, "quoted"\nline' if n == 0 else None,
        )
        created = DAY + timedelta(hours=23 * n)  # day 1 00:00, day 1 23:00, day 2 22:00
        book.record(BookEntry(version=1, at=created, created_at=created, view=view))
    return book


def test_csv_has_a_header_and_exact_amounts(book: Book) -> None:
    out = io.StringIO()
    count = export_lines(book.export(DAY, DAY + timedelta(days=1)), "csv", out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert count == 2 and rows[0] == list(EXPORT_FIELDS)
    first = dict(zip(EXPORT_FIELDS, rows[1], strict=True))
    second = dict(zip(EXPORT_FIELDS, rows[2], strict=True))
    assert (first["transaction_id"], first["amount"], first["currency"]) == ("X0", "10.00", "CNY")
    assert first["review_reason"] == 'a, "quoted"\nline'  # quoted, not split
    assert (second["amount"], second["settled_amount"]) == ("1234567.89", "1234567.89")
    assert second["settled_at"] == "" and second["created_at"] == "2026-12-01T23:00:00+00:00"


def test_jsonl_is_one_object_per_line_with_strings_for_money(book: Book) -> None:
    out = io.StringIO()
    assert export_lines(book.export(DAY, DAY + timedelta(days=2)), "jsonl", out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["transaction_id"] for line in lines] == ["X0", "X1", "X2"]
    assert lines[2]["amount"] == "500" and lines[2]["currency"] == "JPY"
    assert lines[1]["refunded_amount"] is None and list(lines[0]) == list(EXPORT_FIELDS)
