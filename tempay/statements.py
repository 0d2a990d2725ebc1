"""A provider's statement for one day, as the core reads it: one `StatementLine` per trade
or refund the provider settled that day, whatever the provider's file looks like (Alipay's
zipped GBK trade bill, WeChat Pay's backtick-prefixed trade bill, Stripe's balance
transactions). Each provider's adapter maps its own layout to these lines (providers/);
reconciliation matches them against the book.

Lines are streamed: a statement is read as an async iterator, never held whole in memory.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class StatementLineKind(StrEnum):
    PAYMENT = "payment"  # a trade the payer paid
    REFUND = "refund"  # money given back on a trade


class StatementLine(BaseModel):
    """One settled trade or refund in a provider's statement."""

    model_config = ConfigDict(frozen=True)

    kind: StatementLineKind
    # The merchant's order number (Alipay out_trade_no, WeChat out_trade_no, Stripe
    # client_reference_id / metadata order_id); None when the provider's line has none.
    order_id: str | None
    provider_trade_no: str | None  # the provider's own id for the trade
    # Refund lines: the merchant's refund number and the provider's own refund id.
    refund_id: str | None = None
    provider_refund_no: str | None = None
    # Positive: the amount paid (payments) or given back (refunds), in `currency`.
    amount: Decimal
    currency: str
    at: datetime  # when the provider settled it, timezone-aware
    # The merchant (Alipay seller / app id, WeChat mchid, Stripe account) the line belongs
    # to, when the statement says; a statement for another merchant is refused.
    merchant: str | None = None


class StatementDay(BaseModel):
    """Which statement: a provider's own day (Asia/Shanghai for the sandbox, Alipay and
    WeChat Pay; UTC for Stripe)."""

    provider: str
    day: date
