"""`tempay db upgrade`, `tempay db backfill` and `tempay export`: the book's commands."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO

from book import Book, TransactionRecord
from book.migrate import open_book, upgrade
from tempay import search_attributes as sa
from tempay.domain import BookEntry, PaymentView, RefundView, WithdrawalView
from tempay.errors import InvalidInput
from tempay.settings import Settings
from tempay.temporal import connect
from transactions.read import payment_view, refund_view, withdrawal_view

# What finance gets per transaction, in this order (the CSV header; each JSONL object's keys).
EXPORT_FIELDS = (
    "workflow_id",
    "kind",
    "transaction_id",
    "order_id",
    "provider",
    "provider_ref",
    "status",
    "currency",
    "amount",
    "settled_amount",
    "refunded_amount",
    "settled_by",
    "settled_at",
    "review_reason",
    "created_at",
    "updated_at",
)


async def cmd_db_upgrade(_: argparse.Namespace, settings: Settings) -> int:
    book = Book.from_settings(settings)
    try:
        before, after = await asyncio.to_thread(upgrade, book)
    finally:
        book.close()
    if before == after:
        print(f"the book ({book.name}) is at schema {after}: nothing to do")
    else:
        print(f"the book ({book.name}) upgraded from schema {before or 'none'} to {after}")
    return 0


def _parse_day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{flag} must be a date as YYYY-MM-DD, not {text!r}") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def export_lines(records: Iterator[TransactionRecord], fmt: str, out: TextIO) -> int:
    """Write `records` to `out` as CSV (a header, then a row each) or JSON lines; returns
    how many. Amounts are strings with the currency's digits as recorded, never floats."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_FIELDS)
        for record in records:
            writer.writerow([_cell(getattr(record, f)) for f in EXPORT_FIELDS])
            count += 1
    else:
        for record in records:
            line = {
                f: (None if (v := getattr(record, f)) is None else _cell(v)) for f in EXPORT_FIELDS
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    return count


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    start, end = _parse_day(args.start, "--from"), _parse_day(args.end, "--to")
    if end < start:
        raise InvalidInput("--to must not be before --from")
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    until = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    book = open_book(settings)
    try:
        count = await asyncio.to_thread(
            export_lines, book.export(begin, until), args.format, sys.stdout
        )
    finally:
        book.close()
    print(f"exported {count} transaction(s) created {start} to {end} (UTC)", file=sys.stderr)
    return 0


async def cmd_db_backfill(_: argparse.Namespace, settings: Settings) -> int:
    """Give every open transaction that has no row yet one, from its workflow's view. The
    workflow's own first write (version 1 and up) replaces it, with the whole journal."""
    book = open_book(settings)
    client = await connect(settings)
    written = found = 0
    try:
        query = f"ExecutionStatus = 'Running' AND {sa.TRANSACTION_KIND.name} IS NOT NULL"
        async for execution in client.list_workflows(query):
            found += 1
            if await asyncio.to_thread(book.get, execution.id) is not None:
                continue
            kind = execution.typed_search_attributes.get(sa.TRANSACTION_KIND)
            order_id = execution.typed_search_attributes.get(sa.ORDER_ID) or ""
            view: PaymentView | RefundView | WithdrawalView
            if kind == "refund":
                view = await refund_view(client, execution.id.removeprefix("refund-"))
            elif kind == "withdrawal":
                view = await withdrawal_view(client, order_id)
            else:
                view = await payment_view(client, order_id)
            entry = BookEntry(
                version=0, at=datetime.now(UTC), created_at=execution.start_time, view=view
            )
            if await asyncio.to_thread(book.record, entry):
                written += 1
    finally:
        book.close()
    print(f"{found} open transaction(s); {written} written to the book ({book.name})")
    return 0
