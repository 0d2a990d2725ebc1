"""The book: one row per transaction, and the journal of its status changes.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from book.schema import Money, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transactions",
        sa.Column("workflow_id", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("provider_ref", sa.String(128), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("settled_amount", Money(), nullable=True),
        sa.Column("refunded_amount", Money(), nullable=True),
        sa.Column("refunding_amount", Money(), nullable=True),
        sa.Column("settled_by", sa.String(32), nullable=True),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.Column("review_reason", sa.String(512), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("view", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", name="pk_transactions"),
    )
    op.create_index("ix_transactions_status_created_at", "transactions", ["status", "created_at"])
    op.create_index("ix_transactions_kind_status", "transactions", ["kind", "status"])
    op.create_index(
        "ix_transactions_provider_created_at", "transactions", ["provider", "created_at"]
    )
    op.create_index("ix_transactions_created_at", "transactions", ["created_at"])
    op.create_index("ix_transactions_order_id", "transactions", ["order_id"])
    op.create_table(
        "journal",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workflow_id", sa.String(80), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(24), nullable=True),
        sa.Column("to_status", sa.String(24), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("by", sa.String(32), nullable=False),
        sa.Column("operator", sa.String(128), nullable=True),
        sa.Column("reason", sa.String(512), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["transactions.workflow_id"],
            name="fk_journal_workflow_id_transactions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_journal"),
        sa.UniqueConstraint("workflow_id", "seq", name="uq_journal_workflow_id_seq"),
    )


def downgrade() -> None:
    op.drop_table("journal")
    op.drop_index("ix_transactions_order_id", table_name="transactions")
    op.drop_index("ix_transactions_created_at", table_name="transactions")
    op.drop_index("ix_transactions_provider_created_at", table_name="transactions")
    op.drop_index("ix_transactions_kind_status", table_name="transactions")
    op.drop_index("ix_transactions_status_created_at", table_name="transactions")
    op.drop_table("transactions")
