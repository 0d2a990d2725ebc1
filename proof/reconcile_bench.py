"""`tempay bench --reconcile N`: reconciliation at scale (issue 21), checked.

A fresh SQLite book (in a temporary dir, migrated) is filled with N settled sandbox payments
of one Asia/Shanghai day (with their three journal entries each, inserted in batches as
proof/book_scale.py does); a statement of that day is written in the sandbox's real layout
(Alipay's zipped GBK trade bill, providers/bills.py) with N lines: the rows, but
PLANTED amounts changed, PLANTED rows left out (missing at the provider) and PLANTED lines
the book does not hold (missing in tempay).

Then the comparison runs as the `compare_statement` activity runs it, Temporal aside: the
zip read by the sandbox adapter's streaming parser (`stream_trade_bill`, both passes),
`Comparer.take` in batches of `book.reconciliation.BATCH` lines in a worker thread,
`unknown(line, None)` for each line the book lacks (no Temporal here: nothing is open),
`finish()`, and `save(...)`. Timed: that comparison (and separately the fill and the
statement's writing); measured: the process's peak RSS (ru_maxrss) and the peak RSS while
comparing (/proc/self/status sampled in a thread).

The answer is checked: the counts, each planted discrepancy by key and type, and what the
book kept. A wrong answer exits 1 with what differs.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from book import Book
from book import reconciliation as books
from book.migrate import upgrade
from book.schema import journal, transactions
from providers.bills import CHINA, BillEntry, day_bounds, stream_trade_bill, write_trade_bill
from providers.sandbox.settings import DEFAULT_ACCOUNT
from tempay.domain import payment_workflow_id
from tempay.errors import InvalidInput
from tempay.statements import (
    Comparison,
    DiscrepancyType,
    ReconciliationCounts,
    StatementLine,
    StatementLineKind,
    in_batches,
)

PROVIDER = "sandbox"
TIMEZONE = "Asia/Shanghai"  # the sandbox adapter's statement_timezone
DAY = date(2026, 12, 5)
PLANTED = 10  # of each kind of discrepancy
MIN_LINES = 100
FILL_BATCH = 5000
SEED = 21


def order_id(n: int) -> str:
    return f"RB{n:08d}"


def trade_no(n: int) -> str:
    """Alipay's 28 digits: the day, a fixed middle, a serial."""
    return f"{DAY:%Y%m%d}2200141234{n:010d}"


def amount(n: int) -> Decimal:
    """0.01 to 5,000.00 yuan, spread, two places."""
    return Decimal((n * 7919 + 4999) % 500_000 + 1).scaleb(-2)


@dataclass(frozen=True)
class Plan:
    """The book's N rows and what the statement does differently."""

    rows: int
    changed: frozenset[int]  # rows whose line carries another amount
    left_out: frozenset[int]  # rows without a line
    extra: int = PLANTED  # lines naming orders the book does not hold
    settled: list[datetime] = field(default_factory=list, repr=False)

    @classmethod
    def make(cls, rows: int) -> Plan:
        picked = random.Random(SEED).sample(range(rows), 2 * PLANTED)
        start, _ = day_bounds(DAY)
        # Settled through the day, in order, seconds apart: within the provider's day.
        settled = [start + timedelta(seconds=n * 86_399 // rows) for n in range(rows)]
        return cls(rows, frozenset(picked[:PLANTED]), frozenset(picked[PLANTED:]), PLANTED, settled)

    @property
    def lines(self) -> int:
        return self.rows - len(self.left_out) + self.extra

    def expected(self) -> ReconciliationCounts:
        return ReconciliationCounts(
            matched=self.rows - len(self.changed) - len(self.left_out),
            amount_mismatch=len(self.changed),
            missing_at_provider=len(self.left_out),
            missing_in_tempay=self.extra,
        )

    def expected_keys(self) -> dict[str, str]:
        """Each planted discrepancy's key and type."""
        keys = {f"payment:{order_id(n)}": DiscrepancyType.AMOUNT_MISMATCH for n in self.changed}
        keys |= {
            f"payment:{order_id(n)}": DiscrepancyType.MISSING_AT_PROVIDER for n in self.left_out
        }
        keys |= {
            f"payment:{extra_order_id(k)}": DiscrepancyType.MISSING_IN_TEMPAY
            for k in range(self.extra)
        }
        return {key: str(kind) for key, kind in keys.items()}


def extra_order_id(k: int) -> str:
    return f"RX{k:08d}"


# ---- the book -------------------------------------------------------------------------------


def fill(book: Book, plan: Plan) -> None:
    """N SUCCEEDED sandbox payments settled in DAY, each with its journal (CREATED, PENDING,
    SUCCEEDED), in batches of FILL_BATCH rows per transaction."""
    for first in range(0, plan.rows, FILL_BATCH):
        records: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for n in range(first, min(first + FILL_BATCH, plan.rows)):
            settled = plan.settled[n].astimezone(UTC)
            created = settled - timedelta(seconds=5 + n % 50)
            workflow_id = payment_workflow_id(order_id(n))
            paid = amount(n)
            records.append(
                {
                    "workflow_id": workflow_id,
                    "kind": "payment",
                    "transaction_id": order_id(n),
                    "order_id": order_id(n),
                    "provider": PROVIDER,
                    "provider_ref": trade_no(n),
                    "status": "SUCCEEDED",
                    "currency": "CNY",
                    "amount": paid,
                    "settled_amount": paid,
                    "refunded_amount": Decimal("0.00"),
                    "refunding_amount": Decimal("0.00"),
                    "settled_by": "notification",
                    "settled_at": settled,
                    "created_at": created,
                    "updated_at": settled,
                    "version": 2,
                    "view": {
                        "workflow_id": workflow_id,
                        "kind": "payment",
                        "order_id": order_id(n),
                        "provider": PROVIDER,
                        "status": "SUCCEEDED",
                        "amount": str(paid),
                        "currency": "CNY",
                        "provider_trade_no": trade_no(n),
                        "paid_amount": str(paid),
                        "settled_by": "notification",
                        "settled_at": settled.isoformat(),
                    },
                }
            )
            entries += [
                {
                    "workflow_id": workflow_id,
                    "seq": seq,
                    "from_status": before,
                    "to_status": after,
                    "at": at,
                    "by": by,
                }
                for seq, (before, after, at, by) in enumerate(
                    [
                        (None, "CREATED", created, "create"),
                        ("CREATED", "PENDING", created, "create"),
                        ("PENDING", "SUCCEEDED", settled, "notification"),
                    ],
                    start=1,
                )
            ]
        with book.engine.begin() as conn:
            conn.execute(insert(transactions), records)
            conn.execute(insert(journal), entries)


# ---- the statement --------------------------------------------------------------------------


def statement_entries(plan: Plan) -> Iterator[BillEntry]:
    """The day's lines in settlement order: the rows as the book has them (less those left
    out, some amounts changed), the extra lines spread among them."""
    every = max(plan.rows // (plan.extra + 1), 1)
    extra = 0
    for n in range(plan.rows):
        if n % every == every - 1 and extra < plan.extra:
            yield BillEntry(
                StatementLine(
                    kind=StatementLineKind.PAYMENT,
                    order_id=extra_order_id(extra),
                    provider_trade_no=f"{DAY:%Y%m%d}2200149999{extra:010d}",
                    amount=Decimal("88.00"),
                    currency="CNY",
                    at=plan.settled[n].astimezone(CHINA),
                ),
                subject="not in the book",
            )
            extra += 1
        if n in plan.left_out:
            continue
        paid = amount(n) + (Decimal("0.01") if n in plan.changed else 0)
        yield BillEntry(
            StatementLine(
                kind=StatementLineKind.PAYMENT,
                order_id=order_id(n),
                provider_trade_no=trade_no(n),
                amount=paid,
                currency="CNY",
                at=plan.settled[n].astimezone(CHINA),
            ),
            subject=f"order {n}",
            created_at=plan.settled[n] - timedelta(seconds=5 + n % 50),
        )
    assert extra == plan.extra, "the extra lines must all be placed"


# ---- the comparison, as compare_statement drives it ---------------------------------------


@dataclass
class Timings:
    take: float = 0.0
    finish: float = 0.0
    save: float = 0.0


async def compare(book: Book, bill: Path, timings: Timings) -> tuple[Comparison, books.Comparer]:
    comparer = books.Comparer(book, PROVIDER, DAY, TIMEZONE)
    lines = stream_trade_bill(
        bill, expected_account=DEFAULT_ACCOUNT, day=DAY, currencies_in_remarks=True
    )
    async for batch in in_batches(lines, books.BATCH):
        began = time.perf_counter()
        unknown = await asyncio.to_thread(comparer.take, batch)
        for line in unknown:
            comparer.unknown(line, None)  # Temporal holds nothing open here
        timings.take += time.perf_counter() - began
    began = time.perf_counter()
    comparison = await asyncio.to_thread(comparer.finish)
    timings.finish = time.perf_counter() - began
    began = time.perf_counter()
    await asyncio.to_thread(
        books.save, book, PROVIDER, DAY, comparison, comparer.found, datetime.now(UTC)
    )
    timings.save = time.perf_counter() - began
    return comparison, comparer


# ---- memory ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class RssSampler:
    """The highest VmRSS seen while running, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = rss_mb()
        self.peak = self.start or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_mb()
            if now is not None:
                self.peak = max(self.peak, now)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        now = rss_mb()
        if now is not None:
            self.peak = max(self.peak, now)


# ---- the check ------------------------------------------------------------------------------


def check(plan: Plan, comparison: Comparison, comparer: books.Comparer, book: Book) -> list[str]:
    """What differs from the plan (nothing: the answer is right)."""
    wrong = []
    expected = plan.expected()
    if comparison.counts != expected:
        wrong.append(f"counts {comparison.counts.model_dump()}, planted {expected.model_dump()}")
    if comparison.statement_lines != plan.lines:
        wrong.append(f"{comparison.statement_lines} statement lines read, {plan.lines} written")
    if comparison.to_query or comparison.to_review != 3 * PLANTED:
        wrong.append(
            f"{len(comparison.to_query)} to query and {comparison.to_review} to review, "
            f"planted 0 and {3 * PLANTED}"
        )
    found = {d.key: str(d.type) for d in comparer.found}
    if found != plan.expected_keys():
        missed = sorted(set(plan.expected_keys().items()) - set(found.items()))
        more = sorted(set(found.items()) - set(plan.expected_keys().items()))
        wrong.append(f"discrepancies not found: {missed[:5]}; found unplanted: {more[:5]}")
    kept = books.report(book, PROVIDER, DAY)
    if kept is None:
        wrong.append("the book kept no reconciliation for the day")
    else:
        stored = {d.key: str(d.type) for d in kept.discrepancies}
        if kept.counts != expected or stored != plan.expected_keys():
            wrong.append(
                f"the book kept counts {kept.counts.model_dump()} and "
                f"{len(stored)} discrepancies, planted {3 * PLANTED}"
            )
    return wrong


# ---- the run --------------------------------------------------------------------------------


def prepare(directory: str, plan: Plan) -> tuple[Book, Path]:
    """The migrated book, filled, and the statement's zip beside it; each step printed."""
    book = Book(f"sqlite:///{Path(directory, 'tempay.db').resolve()}")
    upgrade(book)
    print(
        f"tempay bench --reconcile {plan.rows}: provider {PROVIDER}, day {DAY} ({TIMEZONE}), "
        f"SQLite book in {directory}",
        flush=True,
    )
    began = time.perf_counter()
    fill(book, plan)
    print(
        f"book: {plan.rows} settled payments (+{3 * plan.rows} journal entries) filled in "
        f"{time.perf_counter() - began:.1f} s",
        flush=True,
    )
    bill = Path(directory, f"{DEFAULT_ACCOUNT}_{DAY:%Y%m%d}.csv.zip")
    began = time.perf_counter()
    write_trade_bill(bill, statement_entries(plan), account=DEFAULT_ACCOUNT, day=DAY)
    print(
        f"statement: {plan.lines} lines in the sandbox's layout (Alipay's trade bill, "
        f"{bill.stat().st_size / 1e6:.2f} MB zipped GBK CSV), written in "
        f"{time.perf_counter() - began:.1f} s; planted: {PLANTED} amounts changed, "
        f"{PLANTED} rows without a line, {PLANTED} lines the book lacks",
        flush=True,
    )
    return book, bill


async def run_reconcile_bench(rows: int) -> int:
    if rows < MIN_LINES:
        raise InvalidInput(f"--reconcile must be at least {MIN_LINES} (statement lines)")
    plan = Plan.make(rows)
    with tempfile.TemporaryDirectory(prefix="tempay-reconcile-bench-") as tmp:
        book, bill = await asyncio.to_thread(prepare, tmp, plan)
        try:
            timings = Timings()
            with RssSampler() as sampler:
                began = time.perf_counter()
                comparison, comparer = await compare(book, bill, timings)
                elapsed = time.perf_counter() - began
            counts = ", ".join(f"{k} {v}" for k, v in comparison.counts.model_dump().items())
            reading = elapsed - timings.take - timings.finish - timings.save
            print(
                f"comparison: {comparison.statement_lines} lines against {rows} rows in "
                f"{elapsed:.1f} s (reading the bill {reading:.1f} s, take + unknown "
                f"{timings.take:.1f} s, finish {timings.finish:.1f} s, save "
                f"{timings.save:.2f} s)\n"
                f"counts: {counts}; to review {comparison.to_review}, to query "
                f"{len(comparison.to_query)}",
                flush=True,
            )
            wrong = await asyncio.to_thread(check, plan, comparison, comparer, book)
        finally:
            book.close()
    start = "?" if sampler.start is None else f"{sampler.start:.0f}"
    print(
        f"peak RSS: {peak_rss_mb():.0f} MB (the process, ru_maxrss); while comparing "
        f"{start} -> {sampler.peak:.0f} MB (VmRSS sampled every {sampler.interval * 1000:.0f} ms)"
    )
    if wrong:
        for what in wrong:
            print(f"tempay bench --reconcile: wrong answer: {what}", file=sys.stderr)
        return 1
    print("check: every planted discrepancy found, nothing else; the book kept the same")
    return 0
