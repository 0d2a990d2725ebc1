"""Reconciliation: a row per provider and day compared, each discrepancy found, and the
indexes it reads transactions by.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from book.schema import Money, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_transactions_provider_settled_at"),
        "transactions",
        ["provider", "settled_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_transactions_provider_provider_ref"),
        "transactions",
        ["provider", "provider_ref"],
        unique=False,
    )
    op.create_table(
        "reconciliations",
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("statement_lines", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "day", name=op.f("pk_reconciliations")),
    )
    op.create_table(
        "discrepancies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("type", sa.String(24), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("refund_id", sa.String(64), nullable=True),
        sa.Column("workflow_id", sa.String(80), nullable=True),
        sa.Column("tempay_status", sa.String(24), nullable=True),
        sa.Column("tempay_amount", Money(), nullable=True),
        sa.Column("provider_amount", Money(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("provider_ref", sa.String(128), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(160), nullable=True),
        sa.Column("found_at", UTCDateTime(), nullable=False),
        sa.Column("announced_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discrepancies")),
        sa.UniqueConstraint(
            "provider", "day", "key", name=op.f("uq_discrepancies_provider_day_key")
        ),
    )
    op.create_index(
        op.f("ix_discrepancies_type_action"), "discrepancies", ["type", "action"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_discrepancies_type_action"), table_name="discrepancies")
    op.drop_table("discrepancies")
    op.drop_table("reconciliations")
    op.drop_index(op.f("ix_transactions_provider_provider_ref"), table_name="transactions")
    op.drop_index(op.f("ix_transactions_provider_settled_at"), table_name="transactions")
