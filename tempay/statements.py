"""A provider's statement for one day, as the core reads it: one `StatementLine` per trade
or refund the provider settled that day, whatever the provider's file looks like (Alipay's
zipped GBK trade bill, WeChat Pay's backtick-prefixed trade bill, Stripe's balance
transactions). Each provider's adapter maps its own layout to these lines (providers/);
reconciliation matches them against the book.

Lines are streamed: a statement is read as an async iterator, never held whole in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

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


# ---- reconciliation: the statement against the book (DESIGN.md "Reconciliation") -------


class DiscrepancyType(StrEnum):
    MISSING_IN_TEMPAY = "missing_in_tempay"  # the provider has it, the book does not
    MISSING_AT_PROVIDER = "missing_at_provider"  # the book settled it, the statement lacks it
    STATUS_MISMATCH = "status_mismatch"  # settled at the provider, not (yet) in the book
    AMOUNT_MISMATCH = "amount_mismatch"  # both have it, for different amounts


class DiscrepancyAction(StrEnum):
    # The transaction is still open: its workflow asks the provider, and settles (or not)
    # by the usual path. The statement alone never settles anything.
    STATUS_QUERY = "status_query"
    # Closed, or unknown to tempay: a person decides (a review item, a merchant event).
    REVIEW = "review"


class Side(BaseModel):
    """One side's view of a transaction in a discrepancy."""

    status: str | None = None  # tempay's status; the provider side says "settled"
    amount: Decimal | None = None
    currency: str | None = None
    provider_ref: str | None = None


class Discrepancy(BaseModel):
    key: str  # payment:{order id} or refund:{refund id} (or the provider's id)
    type: DiscrepancyType
    kind: StatementLineKind
    order_id: str | None
    refund_id: str | None = None
    workflow_id: str | None = None
    tempay: Side | None = None
    provider: Side | None = None
    action: DiscrepancyAction
    outcome: str | None = None  # what the status query answered
    announced: bool = False  # the merchant event `reconciliation.discrepancy` delivered


class ReconciliationCounts(BaseModel):
    matched: int = 0
    missing_in_tempay: int = 0
    missing_at_provider: int = 0
    status_mismatch: int = 0
    amount_mismatch: int = 0


class ReconciliationReport(BaseModel):
    """What `tempay reconcile` prints and `GET /api/reconciliations/{provider}/{date}`
    answers (DESIGN.md)."""

    provider: str
    date: date
    status: str  # compared (actions under way), completed
    statement_lines: int
    counts: ReconciliationCounts
    discrepancies: list[Discrepancy]
    started_at: datetime
    finished_at: datetime | None = None
    runs: int = 1


class ReconcileRequest(BaseModel):
    """A ReconciliationWorkflow's input: `day` None for a scheduled run, which takes the
    provider's yesterday (and any missed day before it)."""

    provider: str
    day: date | None = None


class Comparison(BaseModel):
    """The comparison activity's answer (the discrepancies themselves are in the book)."""

    statement_lines: int
    counts: ReconciliationCounts
    to_query: list[str]  # workflow ids of open transactions to ask the provider about
    to_review: int  # discrepancies a person must decide


def provider_day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The provider's day as UTC instants: [start, end)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


class DayRequest(BaseModel):
    """One provider-day, for the reconciliation activities."""

    provider: str
    day: date


class AskProvider(BaseModel):
    """A status query asked of an open transaction's workflow, on the statement's word."""

    provider: str
    day: date
    workflow_id: str


class DiscrepancyEventData(BaseModel):
    provider: str
    date: date
    discrepancy: Discrepancy


class DiscrepancyEvent(BaseModel):
    """The merchant event `reconciliation.discrepancy`: signed and delivered as every
    merchant event is (activities/merchant.py), once per discrepancy."""

    id: str
    type: str = "reconciliation.discrepancy"
    created_at: datetime
    data: DiscrepancyEventData


def discrepancy_event_id(provider: str, day: date, key: str) -> str:
    return f"evt_reconcile_{provider}_{day.isoformat()}_{key}"


async def in_batches(
    lines: AsyncIterator[StatementLine], size: int
) -> AsyncIterator[list[StatementLine]]:
    """A streamed statement in lists of `size` lines (the last one shorter)."""
    batch: list[StatementLine] = []
    async for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
