"""A provider's statement for one day against the book, and what reconciliation keeps.

`Comparer` takes the statement's lines in batches (each batch: a query on an index for
the book rows it names, one per way of naming them), then `finish` finds what the book
settled that day and the statement lacks. It holds only the keys it has seen and the
discrepancies, so a 100,000-line statement runs in bounded memory. What it finds goes into
the book in one transaction (`save`): the reconciliation's row and its discrepancies,
upserted by (provider, day, key), so comparing the same day again changes nothing that has
not changed.

Matching: a payment line by the merchant's order id (or, for a line without one, by the
provider's trade number), a refund line by the refund id; amounts as Decimal, in the
line's currency. The types and actions are in tempay/statements.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select, update

from book.schema import discrepancies, reconciliations, transactions
from book.store import Book
from tempay.domain import IN_FLIGHT, TransactionKind, TransactionStatus, refund_workflow_id
from tempay.statements import (
    Comparison,
    Discrepancy,
    DiscrepancyAction,
    DiscrepancyType,
    ReconciliationCounts,
    ReconciliationReport,
    Side,
    StatementLine,
    StatementLineKind,
    provider_day_bounds,
)

PAYMENT_KINDS = (str(TransactionKind.PAYMENT), str(TransactionKind.RECHARGE))
# The statuses in which a payment's money is with the merchant (refunds follow later).
PAID = (
    str(TransactionStatus.SUCCEEDED),
    str(TransactionStatus.PARTIALLY_REFUNDED),
    str(TransactionStatus.REFUNDED),
)
OPEN = tuple(str(s) for s in IN_FLIGHT)
BATCH = 1000  # statement lines per book query


@dataclass(frozen=True)
class _Row:
    workflow_id: str
    key: str
    order_id: str | None
    refund_id: str | None
    status: str
    amount: Decimal
    settled_amount: Decimal | None
    currency: str
    provider_ref: str | None


def _key(kind: StatementLineKind, merchant_id: str | None, provider_id: str | None) -> str:
    if merchant_id:
        return f"{kind}:{merchant_id}"
    return f"{kind}:provider:{provider_id or '?'}"


@dataclass
class Comparer:
    """One provider-day's comparison. `open_in_temporal`: for a line the book does not
    know, whether Temporal holds the transaction open (a payment's PENDING reaches the book
    only at its first status query: workflows/book.py); set by the caller."""

    book: Book
    provider: str
    day: date
    timezone: str
    counts: ReconciliationCounts = field(default_factory=ReconciliationCounts)
    found: list[Discrepancy] = field(default_factory=list)
    lines: int = 0
    _seen: set[str] = field(default_factory=set)

    def take(self, batch: Sequence[StatementLine]) -> list[StatementLine]:
        """Compare a batch; the lines the book does not know at all, for the caller to look
        up in Temporal and hand to `unknown`."""
        self.lines += len(batch)
        rows = self._rows_for(batch)
        unknown = []
        for line in batch:
            key = self._line_key(line)
            if key in self._seen:
                continue  # a line repeated in the statement counts once
            self._seen.add(key)
            row = rows.get(key) or rows.get(_key(line.kind, None, line.provider_trade_no))
            if row is None:
                unknown.append(line)
                continue
            self._compare(line, row)
        return unknown

    def unknown(self, line: StatementLine, open_workflow_id: str | None) -> None:
        """A line the book does not hold: in flight in Temporal (ask the provider), or
        unknown to tempay."""
        if open_workflow_id is not None:
            self._add(
                line,
                DiscrepancyType.STATUS_MISMATCH,
                DiscrepancyAction.STATUS_QUERY,
                workflow_id=open_workflow_id,
                tempay=Side(status="PENDING"),
            )
            return
        self._add(line, DiscrepancyType.MISSING_IN_TEMPAY, DiscrepancyAction.REVIEW)

    def finish(self) -> Comparison:
        """What the book settled in the provider's day and the statement lacks."""
        start, end = provider_day_bounds(self.day, self.timezone)
        for row in self._settled_unseen(start, end):
            kind = StatementLineKind.REFUND if row.refund_id else StatementLineKind.PAYMENT
            self.found.append(
                Discrepancy(
                    key=row.key,
                    type=DiscrepancyType.MISSING_AT_PROVIDER,
                    kind=kind,
                    order_id=row.order_id,
                    refund_id=row.refund_id,
                    workflow_id=row.workflow_id,
                    tempay=_side(row),
                    action=DiscrepancyAction.REVIEW,
                )
            )
            self.counts.missing_at_provider += 1
        return Comparison(
            statement_lines=self.lines,
            counts=self.counts,
            to_query=[
                d.workflow_id
                for d in self.found
                if d.action is DiscrepancyAction.STATUS_QUERY and d.workflow_id
            ],
            to_review=sum(1 for d in self.found if d.action is DiscrepancyAction.REVIEW),
        )

    # ---- matching --------------------------------------------------------------------

    def _line_key(self, line: StatementLine) -> str:
        if line.kind is StatementLineKind.REFUND:
            return _key(line.kind, line.refund_id, line.provider_refund_no)
        return _key(line.kind, line.order_id, line.provider_trade_no)

    def _compare(self, line: StatementLine, row: _Row) -> None:
        paid = SUCCEEDED_FOR[line.kind]
        if row.status not in paid:
            if row.status in OPEN:
                self._add(
                    line, DiscrepancyType.STATUS_MISMATCH, DiscrepancyAction.STATUS_QUERY, row
                )
            else:
                self._add(line, DiscrepancyType.STATUS_MISMATCH, DiscrepancyAction.REVIEW, row)
            return
        recorded = row.settled_amount if row.settled_amount is not None else row.amount
        if recorded != line.amount or row.currency != line.currency:
            self._add(line, DiscrepancyType.AMOUNT_MISMATCH, DiscrepancyAction.REVIEW, row)
            return
        self.counts.matched += 1

    def _add(
        self,
        line: StatementLine,
        kind: DiscrepancyType,
        action: DiscrepancyAction,
        row: _Row | None = None,
        workflow_id: str | None = None,
        tempay: Side | None = None,
    ) -> None:
        self.found.append(
            Discrepancy(
                key=row.key if row is not None else self._line_key(line),
                type=kind,
                kind=line.kind,
                order_id=line.order_id or (row.order_id if row else None),
                refund_id=line.refund_id,
                workflow_id=row.workflow_id if row is not None else workflow_id,
                tempay=_side(row) if row is not None else tempay,
                provider=Side(
                    status="settled",
                    amount=line.amount,
                    currency=line.currency,
                    provider_ref=line.provider_refund_no
                    if line.kind is StatementLineKind.REFUND
                    else line.provider_trade_no,
                ),
                action=action,
            )
        )
        setattr(self.counts, kind.value, getattr(self.counts, kind.value) + 1)

    # ---- the book's side ---------------------------------------------------------------

    def _rows_for(self, batch: Sequence[StatementLine]) -> dict[str, _Row]:
        order_ids = {
            x.order_id for x in batch if x.kind is StatementLineKind.PAYMENT and x.order_id
        }
        trade_nos = {
            x.provider_trade_no
            for x in batch
            if x.kind is StatementLineKind.PAYMENT and not x.order_id and x.provider_trade_no
        }
        refund_ids = {
            x.refund_id for x in batch if x.kind is StatementLineKind.REFUND and x.refund_id
        }
        t = transactions.c
        columns = (*_ROW_COLUMNS, t.provider)
        # Each way of naming a row is a query of its own on an index, and the match is
        # checked here (`wanted`). One query with an OR, or a filter on transaction_id (not
        # indexed), has SQLite walk the provider's (or the kind's) index instead: every row
        # the provider ever had, for each batch, slower as the book grows.
        queries = []
        if order_ids:
            # A payment's (and a recharge's) transaction_id is its order_id (book/store.py).
            queries.append(select(*columns).where(t.order_id.in_(order_ids)))
        if refund_ids:
            # A refund's workflow id, the primary key, is refund-{refund id}.
            ids = [refund_workflow_id(x) for x in refund_ids]
            queries.append(select(*columns).where(t.workflow_id.in_(ids)))
        if trade_nos:
            # provider_ref has no index: this one reads the provider's rows.
            queries.append(
                select(*columns).where(
                    t.provider == self.provider,
                    t.kind.in_(PAYMENT_KINDS),
                    t.provider_ref.in_(trade_nos),
                )
            )
        if not queries:
            return {}

        def wanted(r: Any) -> bool:
            if r.provider != self.provider:
                return False
            if r.kind in PAYMENT_KINDS:
                return r.transaction_id in order_ids or r.provider_ref in trade_nos
            return r.kind == str(TransactionKind.REFUND) and r.transaction_id in refund_ids

        def read() -> dict[str, _Row]:
            found: dict[str, _Row] = {}
            with self.book.engine.connect() as conn:
                for query in queries:
                    for r in conn.execute(query):
                        if not wanted(r):
                            continue
                        row = _row(r)
                        found[row.key] = row
                        if row.refund_id is None and row.provider_ref:
                            found.setdefault(
                                _key(StatementLineKind.PAYMENT, None, row.provider_ref), row
                            )
            return found

        return self.book._run("read transactions to reconcile", read)

    def _settled_unseen(self, start: datetime, end: datetime) -> list[_Row]:
        """What the book settled in [start, end) that no statement line named."""
        t = transactions.c
        query = (
            select(*_ROW_COLUMNS)
            .where(
                t.provider == self.provider,
                t.settled_at >= start,
                t.settled_at < end,
                or_(
                    and_(t.kind.in_(PAYMENT_KINDS), t.status.in_(PAID)),
                    and_(
                        t.kind == str(TransactionKind.REFUND),
                        t.status == str(TransactionStatus.SUCCEEDED),
                    ),
                ),
            )
            .execution_options(yield_per=BATCH)
        )

        def read() -> list[_Row]:
            with self.book.engine.connect() as conn:
                return [row for r in conn.execute(query) if (row := _row(r)).key not in self._seen]

        return self.book._run("read settled transactions", read)


SUCCEEDED_FOR = {
    StatementLineKind.PAYMENT: PAID,
    StatementLineKind.REFUND: (str(TransactionStatus.SUCCEEDED),),
}

_ROW_COLUMNS = (
    transactions.c.workflow_id,
    transactions.c.kind,
    transactions.c.transaction_id,
    transactions.c.order_id,
    transactions.c.status,
    transactions.c.amount,
    transactions.c.settled_amount,
    transactions.c.currency,
    transactions.c.provider_ref,
)


def _row(r: Any) -> _Row:
    refund = r.kind == str(TransactionKind.REFUND)
    return _Row(
        workflow_id=r.workflow_id,
        key=_key(
            StatementLineKind.REFUND if refund else StatementLineKind.PAYMENT,
            r.transaction_id,
            r.provider_ref,
        ),
        order_id=r.order_id,
        refund_id=r.transaction_id if refund else None,
        status=r.status,
        amount=r.amount,
        settled_amount=r.settled_amount,
        currency=r.currency,
        provider_ref=r.provider_ref,
    )


def _side(row: _Row) -> Side:
    amount = row.settled_amount if row.settled_amount is not None else row.amount
    return Side(
        status=row.status, amount=amount, currency=row.currency, provider_ref=row.provider_ref
    )


# ---- what reconciliation keeps -------------------------------------------------------------


def save(
    book: Book,
    provider: str,
    day: date,
    comparison: Comparison,
    found: Iterable[Discrepancy],
    now: datetime,
) -> None:
    """The comparison and its discrepancies, in one transaction. A discrepancy already
    recorded for the day keeps when it was found and whether it was announced."""
    insert = book.insert(discrepancies)
    rows = [_discrepancy_row(provider, day, d, now) for d in found]
    kept = ("found_at", "announced_at", "outcome", "id", "provider", "day", "key")
    upsert_d = insert.on_conflict_do_update(
        index_elements=["provider", "day", "key"],
        set_={c.name: insert.excluded[c.name] for c in discrepancies.columns if c.name not in kept},
    )
    new = book.insert(reconciliations)
    upsert_r = new.on_conflict_do_update(
        index_elements=["provider", "day"],
        set_={
            "status": "compared",
            "statement_lines": new.excluded.statement_lines,
            "counts": new.excluded.counts,
            "started_at": new.excluded.started_at,
            "finished_at": None,
            "runs": reconciliations.c.runs + 1,
        },
    )
    keys = [r["key"] for r in rows]

    def write() -> None:
        with book.engine.begin() as conn:
            conn.execute(
                upsert_r,
                {
                    "provider": provider,
                    "day": day.isoformat(),
                    "status": "compared",
                    "statement_lines": comparison.statement_lines,
                    "counts": comparison.counts.model_dump(),
                    "started_at": now,
                    "finished_at": None,
                    "runs": 1,
                },
            )
            # A status query an earlier run asked that has since settled the transaction
            # (this run did not find it again): repaired by the usual path, gone. Review
            # items stay until a person decides.
            stale = discrepancies.delete().where(
                discrepancies.c.provider == provider,
                discrepancies.c.day == day.isoformat(),
                discrepancies.c.action == str(DiscrepancyAction.STATUS_QUERY),
            )
            if keys:
                stale = stale.where(discrepancies.c.key.notin_(keys))
            conn.execute(stale)
            for start in range(0, len(rows), BATCH):
                conn.execute(upsert_d, rows[start : start + BATCH])

    book._run("save a reconciliation", write)


def _discrepancy_row(provider: str, day: date, d: Discrepancy, now: datetime) -> dict[str, Any]:
    tempay, theirs = d.tempay or Side(), d.provider or Side()
    return {
        "provider": provider,
        "day": day.isoformat(),
        "key": d.key[:160],
        "type": str(d.type),
        "kind": str(d.kind),
        "order_id": d.order_id,
        "refund_id": d.refund_id,
        "workflow_id": d.workflow_id,
        "tempay_status": tempay.status,
        "tempay_amount": tempay.amount,
        "provider_amount": theirs.amount,
        "currency": theirs.currency or tempay.currency,
        "provider_ref": theirs.provider_ref or tempay.provider_ref,
        "action": str(d.action),
        "outcome": None,
        "found_at": now,
        "announced_at": None,
    }


def _execute(book: Book, what: str, statement: Any) -> None:
    """One statement in a transaction of its own."""

    def write() -> None:
        with book.engine.begin() as conn:
            conn.execute(statement)

    book._run(what, write)


def set_outcome(book: Book, provider: str, day: date, workflow_id: str, outcome: str) -> None:
    """What the status query for an open transaction answered."""
    query = (
        update(discrepancies)
        .where(
            discrepancies.c.provider == provider,
            discrepancies.c.day == day.isoformat(),
            discrepancies.c.workflow_id == workflow_id,
        )
        .values(outcome=outcome[:160])
    )
    _execute(book, "record a status query's outcome", query)


def unannounced(book: Book, provider: str, day: date) -> list[Discrepancy]:
    """Review items whose merchant event is not yet delivered."""
    query = (
        select(discrepancies)
        .where(
            discrepancies.c.provider == provider,
            discrepancies.c.day == day.isoformat(),
            discrepancies.c.action == str(DiscrepancyAction.REVIEW),
            discrepancies.c.announced_at.is_(None),
        )
        .order_by(discrepancies.c.id)
    )

    def read() -> list[Discrepancy]:
        with book.engine.connect() as conn:
            return [_discrepancy(r) for r in conn.execute(query)]

    return book._run("read discrepancies", read)


def mark_announced(book: Book, provider: str, day: date, key: str, at: datetime) -> None:
    query = (
        update(discrepancies)
        .where(
            discrepancies.c.provider == provider,
            discrepancies.c.day == day.isoformat(),
            discrepancies.c.key == key,
        )
        .values(announced_at=at)
    )
    _execute(book, "mark a discrepancy announced", query)


def finish(book: Book, provider: str, day: date, at: datetime) -> None:
    query = (
        update(reconciliations)
        .where(reconciliations.c.provider == provider, reconciliations.c.day == day.isoformat())
        .values(status="completed", finished_at=at)
    )
    _execute(book, "finish a reconciliation", query)


def report(book: Book, provider: str, day: date) -> ReconciliationReport | None:
    """The day's report as the book holds it; None when the day was never compared."""
    head = select(reconciliations).where(
        reconciliations.c.provider == provider, reconciliations.c.day == day.isoformat()
    )
    items = (
        select(discrepancies)
        .where(discrepancies.c.provider == provider, discrepancies.c.day == day.isoformat())
        .order_by(discrepancies.c.id)
    )

    def read() -> ReconciliationReport | None:
        with book.engine.connect() as conn:
            row = conn.execute(head).first()
            if row is None:
                return None
            return ReconciliationReport(
                provider=provider,
                date=day,
                status=row.status,
                statement_lines=row.statement_lines,
                counts=ReconciliationCounts.model_validate(row.counts),
                discrepancies=[_discrepancy(r) for r in conn.execute(items)],
                started_at=row.started_at,
                finished_at=row.finished_at,
                runs=row.runs,
            )

    return book._run("read a reconciliation", read)


def completed_days(book: Book, provider: str, since: date) -> set[date]:
    query = select(reconciliations.c.day).where(
        reconciliations.c.provider == provider,
        reconciliations.c.day >= since.isoformat(),
        reconciliations.c.status == "completed",
    )

    def read() -> set[date]:
        with book.engine.connect() as conn:
            return {date.fromisoformat(r.day) for r in conn.execute(query)}

    return book._run("read reconciled days", read)


def _discrepancy(r: Any) -> Discrepancy:
    tempay = None
    if r.workflow_id is not None and r.type != str(DiscrepancyType.MISSING_IN_TEMPAY):
        tempay = Side(
            status=r.tempay_status,
            amount=r.tempay_amount,
            currency=r.currency,
            provider_ref=r.provider_ref
            if r.type == str(DiscrepancyType.MISSING_AT_PROVIDER)
            else None,
        )
    provider = None
    if r.type != str(DiscrepancyType.MISSING_AT_PROVIDER):
        provider = Side(
            status="settled",
            amount=r.provider_amount,
            currency=r.currency,
            provider_ref=r.provider_ref,
        )
    return Discrepancy(
        key=r.key,
        type=DiscrepancyType(r.type),
        kind=StatementLineKind(r.kind),
        order_id=r.order_id,
        refund_id=r.refund_id,
        workflow_id=r.workflow_id,
        tempay=tempay,
        provider=provider,
        action=DiscrepancyAction(r.action),
        outcome=r.outcome,
        announced=r.announced_at is not None,
    )
