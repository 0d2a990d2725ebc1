"""The book: tempay's system of record, which outlives Temporal's retention.

One row per transaction (payment, recharge, refund, withdrawal) with its current or final
state, and an append-only journal of every status change. Workflows write it through an
activity, idempotently; `tempay status`, `list`, `export` and `/api` read it once a
workflow has closed. SQLite (WAL) at {data_dir}/tempay.db by default, PostgreSQL with
TEMPAY_DATABASE_URL; the schema is versioned by Alembic (`tempay db upgrade`).
"""

from book.store import Book as Book
from book.store import TransactionRecord as TransactionRecord
