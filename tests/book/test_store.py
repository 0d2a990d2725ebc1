"""The book on SQLite and on a real PostgreSQL: its schema comes from the migrations, writes
are idempotent and only move forward, money stays exact, and reads filter, count and
stream as the CLI and /api need."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from book import Book
from book.migrate import current, head, require_current, upgrade
from book.schema import journal, metadata, transactions
from tempay.domain import (
    BookEntry,
    PaymentView,
    RefundView,
    StatusChange,
    TransactionKind,
    TransactionStatus,
    WithdrawalView,
)
from tempay.errors import BookOutdated, BookUnavailable, InvalidInput
from tempay.settings import Settings
from tests.support.postgres import Cluster

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
S = TransactionStatus


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Book]:
    url = None
    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"book_{uuid.uuid4().hex[:12]}")
    book = Book.from_settings(Settings(data_dir=tmp_path, database_url=url))
    yield book
    book.close()


@pytest.fixture
def book(empty_book: Book) -> Book:
    upgrade(empty_book)
    return empty_book


def payment(order_id: str = "A1", status: S = S.PENDING, **fields: object) -> PaymentView:
    return PaymentView(
        workflow_id=f"payment-{order_id}",
        order_id=order_id,
        kind=TransactionKind.PAYMENT,
        provider="sandbox",
        status=status,
        amount=Decimal("10.00"),
        currency="CNY",
        **fields,  # type: ignore[arg-type]
    )


def journal_of(*statuses: S, by: str = "notification") -> list[StatusChange]:
    changes, previous = [], None
    for seq, status in enumerate(statuses, start=1):
        changes.append(
            StatusChange(
                seq=seq,
                from_status=previous,
                to_status=status,
                at=T0 + timedelta(seconds=seq),
                by="create" if seq <= 2 else by,
            )
        )
        previous = status
    return changes


def entry(view: PaymentView | RefundView | WithdrawalView, version: int, *statuses: S) -> BookEntry:
    return BookEntry(
        version=version,
        at=T0 + timedelta(seconds=version),
        created_at=T0,
        view=view,
        changes=journal_of(*statuses),
    )


def test_the_migrations_build_exactly_the_schema_the_code_uses(book: Book) -> None:
    with book.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
    assert current(book) == head()


def test_no_schema_newer_or_older_is_refused_in_one_line(empty_book: Book) -> None:
    with pytest.raises(BookOutdated, match=r"has no schema yet: run `tempay db upgrade`$"):
        require_current(empty_book)
    assert upgrade(empty_book) == (None, head())
    require_current(empty_book)
    assert upgrade(empty_book) == (head(), head())  # again: nothing to do
    with empty_book.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(BookOutdated, match="newer than this tempay knows"):
        require_current(empty_book)


def test_a_write_is_idempotent_and_never_goes_back(book: Book) -> None:
    pending = entry(payment(), 1, S.CREATED, S.PENDING)
    paid_view = payment(status=S.SUCCEEDED, paid_amount=Decimal("10.00"), settled_by="notification")
    paid = entry(paid_view, 2, S.CREATED, S.PENDING, S.SUCCEEDED)
    assert book.record(pending)
    assert not book.record(pending)  # retried activity
    assert book.record(paid)
    assert not book.record(paid)  # replayed
    assert not book.record(pending)  # a late retry of the older write
    record = book.get("payment-A1")
    assert record is not None
    assert (record.status, record.version, record.settled_amount) == (
        "SUCCEEDED",
        2,
        Decimal("10.00"),
    )
    assert record.view["status"] == "SUCCEEDED" and record.settled_by == "notification"
    assert [(c.seq, c.from_status, c.to_status, c.by) for c in book.journal("payment-A1")] == [
        (1, None, S.CREATED, "create"),
        (2, S.CREATED, S.PENDING, "create"),
        (3, S.PENDING, S.SUCCEEDED, "notification"),
    ]
    with book.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(journal)).scalar_one() == 3
        assert conn.execute(select(func.count()).select_from(transactions)).scalar_one() == 1


def test_racing_writers_leave_the_newest_version(book: Book) -> None:
    views = [payment(status=s) for s in (S.PENDING, S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED)]
    entries = [entry(v, n, S.CREATED) for n, v in enumerate(views, start=1)]
    threads = [threading.Thread(target=book.record, args=(e,)) for e in reversed(entries * 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = book.get("payment-A1")
    assert record is not None and (record.version, record.status) == (4, "REFUNDED")


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("12345678901234.56", "CNY"), ("0.01", "USD"), ("100", "JPY"), ("9999999999999999.99", "EUR")],
)
def test_money_is_exact(book: Book, amount: str, currency: str) -> None:
    view = payment().model_copy(update={"amount": Decimal(amount), "currency": currency})
    book.record(entry(view, 1, S.CREATED))
    record = book.get("payment-A1")
    assert record is not None
    assert record.amount == Decimal(amount)
    assert str(record.amount.normalize()) == str(Decimal(amount).normalize())


def test_every_kind_has_its_ids_and_amounts(book: Book) -> None:
    refund = RefundView(
        workflow_id="refund-R1",
        refund_id="R1",
        order_id="A1",
        provider="sandbox",
        status=S.SUCCEEDED,
        amount=Decimal("4.00"),
        currency="CNY",
        refunded_amount=Decimal("4.00"),
        provider_refund_no="SBR1",
    )
    withdrawal = WithdrawalView(
        workflow_id="withdrawal-W1",
        withdrawal_id="W1",
        provider="sandbox",
        status=S.PENDING,
        amount=Decimal("7.50"),
        currency="CNY",
        payee_account="acct-1",
        provider_transfer_no="SBT1",
    )
    partially = payment(
        status=S.PARTIALLY_REFUNDED,
        provider_trade_no="SB1",
        paid_amount=Decimal("10.00"),
        refunded_amount=Decimal("4.00"),
        refunding_amount=Decimal("0"),
    )
    for view in (partially, refund, withdrawal):
        book.record(entry(view, 1, S.PENDING))
    rows = {r.workflow_id: r for r in book.rows()}
    assert (rows["payment-A1"].provider_ref, rows["payment-A1"].refunded_amount) == (
        "SB1",
        Decimal("4.00"),
    )
    assert (rows["refund-R1"].transaction_id, rows["refund-R1"].order_id) == ("R1", "A1")
    assert rows["refund-R1"].settled_amount == Decimal("4.00")
    assert (rows["withdrawal-W1"].kind, rows["withdrawal-W1"].provider_ref) == (
        "withdrawal",
        "SBT1",
    )
    assert rows["withdrawal-W1"].order_id is None


def test_list_and_count_filter_and_group(book: Book) -> None:
    for n, status in enumerate([S.SUCCEEDED, S.SUCCEEDED, S.FAILED, S.EXPIRED, S.NEEDS_REVIEW]):
        book.record(entry(payment(f"A{n}", status), 1, status))
    assert book.count() == {"SUCCEEDED": 2, "FAILED": 1, "EXPIRED": 1, "NEEDS_REVIEW": 1}
    assert book.count(status="succeeded") == {"SUCCEEDED": 2}
    assert book.count(kind="refund") == {}
    assert {r.transaction_id for r in book.rows(status="Failed")} == {"A2"}
    assert len(book.rows(limit=3)) == 3
    with pytest.raises(InvalidInput, match="unknown status 'PAID'"):
        book.rows(status="PAID")
    with pytest.raises(InvalidInput, match="unknown kind 'transfer'"):
        book.count(kind="transfer")


def test_export_streams_a_half_open_range_in_order(book: Book) -> None:
    for n in range(25):
        view = payment(f"E{n:02d}")
        book.record(
            BookEntry(
                version=1,
                at=T0,
                created_at=T0 + timedelta(hours=n // 5),  # five at each hour: ties broken by id
                view=view,
                changes=journal_of(S.CREATED),
            )
        )
    exported = list(book.export(T0 + timedelta(hours=1), T0 + timedelta(hours=4), batch=4))
    assert [r.transaction_id for r in exported] == [f"E{n:02d}" for n in range(5, 20)]


def test_an_unreachable_database_is_one_clear_error_without_its_password(tmp_path: Path) -> None:
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        url = f"postgresql://tempay:s3cret@127.0.0.1:{port}/tempay"
        book = Book.from_settings(Settings(data_dir=tmp_path, database_url=url))
        with pytest.raises(BookUnavailable) as caught:
            book.get("payment-A1")
    assert "could not read a transaction" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_a_bad_url_or_database_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a database URL"):
        Book("::nonsense::")
    with pytest.raises(InvalidInput, match="runs on sqlite or postgresql"):
        Book("mysql://u@127.0.0.1/x")


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_float_never_reaches_the_book(book: Book) -> None:
    view = payment()
    row = entry(view, 1, S.CREATED)
    object.__setattr__(row.view, "amount", 10.0)
    with pytest.raises(TypeError, match="money must be a Decimal"):
        book.record(row)
