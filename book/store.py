"""The book: reads and writes of the system of record, over SQLite or PostgreSQL.

Every call is synchronous and short (one transaction); async callers run it in a thread
(`asyncio.to_thread`). Database failures surface as BookUnavailable with a message that
names the database without its password.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    SQLAlchemyError,
    StatementError,
)

from book.schema import journal, transactions
from tempay.domain import (
    IN_FLIGHT,
    BookEntry,
    PaymentView,
    RefundView,
    StatusChange,
    WithdrawalView,
    parse_kind,
    parse_status,
)
from tempay.errors import BookUnavailable, InvalidInput
from tempay.settings import Settings

T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (the CLI, /api) never block the worker's writes, nor it them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@dataclass(frozen=True)
class TransactionRecord:
    """A transaction as the book holds it."""

    workflow_id: str
    kind: str
    transaction_id: str
    order_id: str | None
    provider: str
    provider_ref: str | None
    status: str
    currency: str
    amount: Decimal
    settled_amount: Decimal | None
    refunded_amount: Decimal | None
    refunding_amount: Decimal | None
    settled_by: str | None
    settled_at: datetime | None
    review_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    view: dict[str, Any]


BOOK_LEAVES_OUT = {"payer_action"}


def _columns(entry: BookEntry) -> dict[str, Any]:
    view = entry.view
    row: dict[str, Any] = {
        "workflow_id": view.workflow_id,
        "kind": str(view.kind),
        "provider": view.provider,
        "status": str(view.status),
        "currency": view.currency,
        "amount": view.amount,
        "settled_by": view.settled_by,
        "settled_at": view.settled_at,
        "review_reason": (view.review_reason or None) and view.review_reason[:512],
        "created_at": entry.created_at,
        "updated_at": entry.at,
        "version": entry.version,
        # A payer action is a credential for one payer (a JSAPI signature, a Stripe
        # client_secret), useless once settled: the book never holds it.
        "view": view.model_dump(mode="json", exclude=BOOK_LEAVES_OUT),
        "refunded_amount": None,
        "refunding_amount": None,
    }
    if isinstance(view, PaymentView):
        row |= {
            "transaction_id": view.order_id,
            "order_id": view.order_id,
            "provider_ref": view.provider_trade_no,
            "settled_amount": view.paid_amount,
            "refunded_amount": view.refunded_amount,
            "refunding_amount": view.refunding_amount,
        }
    elif isinstance(view, RefundView):
        row |= {
            "transaction_id": view.refund_id,
            "order_id": view.order_id,
            "provider_ref": view.provider_refund_no,
            "settled_amount": view.refunded_amount,
        }
    elif isinstance(view, WithdrawalView):
        row |= {
            "transaction_id": view.withdrawal_id,
            "order_id": None,
            "provider_ref": view.provider_transfer_no,
            "settled_amount": view.paid_amount,
        }
    return row


def _journal_rows(workflow_id: str, changes: Sequence[StatusChange]) -> list[dict[str, Any]]:
    return [
        {
            "workflow_id": workflow_id,
            "seq": change.seq,
            "from_status": None if change.from_status is None else str(change.from_status),
            "to_status": str(change.to_status),
            "at": change.at,
            "by": change.by,
            "operator": change.operator,
            "reason": (change.reason or None) and change.reason[:512],
        }
        for change in changes
    ]


class Book:
    """The system of record. One per process; thread-safe (a connection pool)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Book:
        return cls(settings.book_url)

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise InvalidInput("TEMPAY_DATABASE_URL is not a database URL") from None
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidInput(
                f"TEMPAY_DATABASE_URL names {self.dialect!r}: the book runs on sqlite or postgresql"
            )
        options: dict[str, Any] = {}
        if self.dialect == "sqlite":
            # A few connections kept open per process (threads take turns; SQLite's own
            # locking orders the processes). Opening one per write cost the worker more
            # than the write itself (`tempay bench`: the PRAGMAs, the file, the WAL index).
            options = {
                "pool_size": 4,
                "max_overflow": 4,
                "pool_use_lifo": True,  # the connection used last: its page cache is warm
                "connect_args": {"timeout": 10, "check_same_thread": False},
            }
        else:
            # A database that accepts and never answers fails a connect in 10 s, not never.
            options = {
                "pool_pre_ping": True,
                "pool_size": 5,
                "max_overflow": 5,
                "connect_args": {"connect_timeout": 10},
            }
        try:
            self.engine: Engine = create_engine(parsed, **options)
        except (NoSuchModuleError, ImportError) as exc:
            raise InvalidInput(f"TEMPAY_DATABASE_URL: no driver for it ({exc})") from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # The two writes, built once: their parameters come at execution, so each compiles
        # once per process (building them per write cost more than the write).
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        new = insert(transactions)
        columns = [c.name for c in transactions.columns if c.name != "workflow_id"]
        self._upsert = new.on_conflict_do_update(
            index_elements=[transactions.c.workflow_id],
            set_={name: new.excluded[name] for name in columns},
            where=transactions.c.version < new.excluded.version,
        ).returning(transactions.c.version)  # a row back: it was written
        self._journal_insert = insert(journal).on_conflict_do_nothing(
            index_elements=["workflow_id", "seq"]
        )

    def insert(self, table: Table) -> Any:
        """An INSERT for this dialect, with its ON CONFLICT clauses (SQLite or PostgreSQL)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    @property
    def file(self) -> Path | None:
        """SQLite's database file (None on PostgreSQL or in memory)."""
        path = self.url.database if self.dialect == "sqlite" else None
        return Path(path) if path and path != ":memory:" else None

    def exists(self) -> bool:
        """False only for a SQLite file not yet created (`tempay db upgrade` creates it)."""
        return self.file is None or self.file.exists()

    @property
    def name(self) -> str:
        """The database, for messages: never its password."""
        return self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One `SELECT 1` (readiness): BookUnavailable when the database does not answer. A
        SQLite file that is gone is not recreated empty: that is unavailable too."""
        if not self.exists():
            raise BookUnavailable(f"the book ({self.name}) could not answer: its file is gone")

        def select_one() -> None:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

        self._run("answer", select_one)

    def _run(self, what: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except StatementError as exc:
            if not isinstance(exc, DBAPIError) and exc.orig is not None:
                raise exc.orig from None  # our bug (a float for money): not the database's
            raise self._unavailable(what, exc) from None
        except SQLAlchemyError as exc:
            raise self._unavailable(what, exc) from None

    def _unavailable(self, what: str, exc: Exception) -> BookUnavailable:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return BookUnavailable(
            f"the book ({self.name}) could not {what}: {detail[0] if detail else exc}"
        )

    # Writes.

    def record(self, entry: BookEntry) -> bool:
        """Write the transaction's row and journal; True when the row changed. Idempotent:
        a journal entry is written once per (workflow id, seq); the row only moves forward
        (a higher version), so a retried, replayed or out-of-order write changes nothing."""
        row = _columns(entry)
        entries = _journal_rows(entry.view.workflow_id, entry.changes)

        def write() -> bool:
            with self.engine.begin() as conn:
                changed = conn.execute(self._upsert, row).first() is not None
                if entries:
                    conn.execute(self._journal_insert, entries)
                return changed

        return self._run("record a transaction", write)

    # Reads.

    def get(self, workflow_id: str) -> TransactionRecord | None:
        def read() -> TransactionRecord | None:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(transactions).where(transactions.c.workflow_id == workflow_id)
                ).first()
            return None if found is None else TransactionRecord(**found._asdict())

        return self._run("read a transaction", read)

    def journal(self, workflow_id: str) -> list[StatusChange]:
        def read() -> list[StatusChange]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(journal)
                    .where(journal.c.workflow_id == workflow_id)
                    .order_by(journal.c.seq)
                ).all()
            return [
                StatusChange(
                    seq=r.seq,
                    from_status=r.from_status,
                    to_status=r.to_status,
                    at=r.at,
                    by=r.by,
                    operator=r.operator,
                    reason=r.reason,
                )
                for r in rows
            ]

        return self._run("read a journal", read)

    @staticmethod
    def _filters(
        status: str | None,
        kind: str | None,
        provider: str | None,
        settled_only: bool = False,
    ) -> list[Any]:
        clauses: list[Any] = []
        if settled_only:
            clauses.append(transactions.c.status.notin_(IN_FLIGHT))
        if status is not None:
            clauses.append(transactions.c.status == parse_status(status))
        if kind is not None:
            clauses.append(transactions.c.kind == parse_kind(kind))
        if provider is not None:
            clauses.append(transactions.c.provider == provider)
        return clauses

    def rows(
        self,
        status: str | None = None,
        kind: str | None = None,
        provider: str | None = None,
        limit: int | None = None,
        settled_only: bool = False,
    ) -> list[TransactionRecord]:
        """The newest first; `settled_only`: none still CREATED or PENDING (IN_FLIGHT)."""
        query = (
            select(transactions)
            .where(*self._filters(status, kind, provider, settled_only))
            .order_by(transactions.c.created_at.desc(), transactions.c.workflow_id)
            .limit(limit)
        )

        def read() -> list[TransactionRecord]:
            with self.engine.connect() as conn:
                return [TransactionRecord(**r._asdict()) for r in conn.execute(query)]

        return self._run("list transactions", read)

    def count(
        self, status: str | None = None, kind: str | None = None, provider: str | None = None
    ) -> dict[str, int]:
        """How many in each status: one grouped query."""
        query = (
            select(transactions.c.status, func.count())
            .where(*self._filters(status, kind, provider))
            .group_by(transactions.c.status)
        )

        def read() -> dict[str, int]:
            with self.engine.connect() as conn:
                return {s: n for s, n in conn.execute(query)}

        return self._run("count transactions", read)

    def export(
        self, start: datetime, end: datetime, *, batch: int = 1000
    ) -> Iterator[TransactionRecord]:
        """Transactions created in [start, end), oldest first, streamed in batches by keyset
        (no OFFSET, no cursor held between batches): memory stays flat however many."""
        after: tuple[datetime, str] | None = None
        while True:
            query = select(transactions).where(
                transactions.c.created_at >= start, transactions.c.created_at < end
            )
            if after is not None:
                query = query.where(
                    (transactions.c.created_at > after[0])
                    | (
                        (transactions.c.created_at == after[0])
                        & (transactions.c.workflow_id > after[1])
                    )
                )
            query = query.order_by(transactions.c.created_at, transactions.c.workflow_id).limit(
                batch
            )

            def read(q: Any = query) -> list[TransactionRecord]:
                with self.engine.connect() as conn:
                    return [TransactionRecord(**r._asdict()) for r in conn.execute(q)]

            page = self._run("export transactions", read)
            yield from page
            if len(page) < batch:
                return
            after = (page[-1].created_at, page[-1].workflow_id)
