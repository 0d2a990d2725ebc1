"""The book's tables, in SQLAlchemy Core: one row per transaction, and an append-only journal
of every status change. The migrations in book/migrations create exactly these (a test
compares them); this module is what the code reads and writes through.

Money is exact in both databases: NUMERIC on PostgreSQL, the canonical decimal string on
SQLite (which has no decimal type and would round through a float). Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.types import DateTime, TypeDecorator, TypeEngine

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class Money(TypeDecorator[Decimal]):
    """A Decimal stored exactly: NUMERIC(38, 8) on PostgreSQL, its string on SQLite."""

    impl = String(48)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(38, 8, asdecimal=True))
        return dialect.type_descriptor(String(48))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the book stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


transactions = Table(
    "transactions",
    metadata,
    # payment-{order_id}, refund-{refund_id}, withdrawal-{withdrawal_id}: Temporal's id.
    Column("workflow_id", String(80), primary_key=True),
    Column("kind", String(16), nullable=False),  # payment, recharge, refund, withdrawal
    # The merchant's id for it: order id, refund id or withdrawal id (the idempotency key).
    Column("transaction_id", String(64), nullable=False),
    Column("order_id", String(64)),  # a payment's own, a refund's payment's; None otherwise
    Column("provider", String(64), nullable=False),
    Column("provider_ref", String(128)),  # trade, refund or transfer number at the provider
    Column("status", String(24), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", Money, nullable=False),  # requested
    Column("settled_amount", Money),  # paid, refunded or transferred, as the provider said
    Column("refunded_amount", Money),  # payments: refunds that succeeded
    Column("refunding_amount", Money),  # payments: refunds in flight or in review
    Column("settled_by", String(32)),
    Column("settled_at", UTCDateTime),
    Column("review_reason", String(512)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The workflow's count of book writes: a retried or late write never replaces a newer one.
    Column("version", Integer, nullable=False),
    # The transaction as `tempay status` shows it, as of the last write.
    Column("view", JSON, nullable=False),
    Index(None, "status", "created_at"),
    Index(None, "kind", "status"),
    Index(None, "provider", "created_at"),
    Index(None, "created_at"),
    Index(None, "order_id"),
    # Reconciliation (migration 0002): what a provider settled in a day, and a statement
    # line that names only the provider's own number.
    Index(None, "provider", "settled_at"),
    Index(None, "provider", "provider_ref"),
)

journal = Table(
    "journal",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("workflow_id", String(80), ForeignKey("transactions.workflow_id"), nullable=False),
    Column("seq", Integer, nullable=False),  # 1, 2, ... within the transaction
    Column("from_status", String(24)),  # None for the first entry
    Column("to_status", String(24), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    # What changed it: create, notification, status_query, close, expiry, refund, operator.
    Column("by", String(32), nullable=False),
    Column("operator", String(128)),
    Column("reason", String(512)),
    UniqueConstraint("workflow_id", "seq"),
)

# Reconciliation (book/reconciliation.py): one row per provider and day compared, and each
# discrepancy found, kept for good. A run again for the same day upserts both.
reconciliations = Table(
    "reconciliations",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, the provider's own day
    Column("status", String(16), nullable=False),  # compared, completed
    Column("statement_lines", Integer, nullable=False),
    Column("counts", JSON, nullable=False),  # by type: matched, missing_in_tempay, ...
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("runs", Integer, nullable=False),  # how many times the day was compared
)

discrepancies = Table(
    "discrepancies",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    # What it is about, unique within the day: payment:{order id}, refund:{refund id}, or
    # the provider's own id for a line that names no merchant id.
    Column("key", String(160), nullable=False),
    # missing_in_tempay, missing_at_provider, status_mismatch, amount_mismatch
    Column("type", String(24), nullable=False),
    Column("kind", String(16), nullable=False),  # payment or refund
    Column("order_id", String(64)),
    Column("refund_id", String(64)),
    Column("workflow_id", String(80)),  # tempay's transaction, when it has one
    Column("tempay_status", String(24)),
    Column("tempay_amount", Money),
    Column("provider_amount", Money),
    Column("currency", String(3)),
    Column("provider_ref", String(128)),
    # status_query (asked the provider: an open transaction settles by the usual path) or
    # review (a person decides); `outcome`: what the status query answered.
    Column("action", String(16), nullable=False),
    Column("outcome", String(160)),
    Column("found_at", UTCDateTime, nullable=False),
    Column("announced_at", UTCDateTime),  # the merchant event's delivery
    UniqueConstraint("provider", "day", "key"),
    Index(None, "type", "action"),
)
