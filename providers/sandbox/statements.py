"""The sandbox's daily statement: every trade paid and every refund that succeeded on one
Asia/Shanghai day, in Alipay's trade bill layout (providers/bills.py), served zipped at
`GET /statements/{YYYY-MM-DD}`.

Its faults plant one discrepancy each for reconciliation to find: a paid trade left out, a
trade's amount changed, a paid trade the sandbox never had (settings.Faults.statement_*).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from hashlib import sha256

from providers.bills import BillEntry, day_bounds, write_trade_bill
from providers.sandbox.notifier import utc_iso
from providers.sandbox.settings import Faults
from providers.sandbox.store import Refund, SandboxStore, Trade
from tempay.statements import StatementLine, StatementLineKind

# The amount of the trade that only the statement has (Faults.statement_extra_trade).
EXTRA_TRADE_AMOUNT = Decimal("1.00")


def _at(stamp: str) -> datetime:
    # The store's times are utc_iso ("...Z"); fromisoformat reads the Z from Python 3.11 on.
    return datetime.fromisoformat(stamp).astimezone(UTC)


def trade_entry(trade: Trade, account: str) -> BillEntry:
    assert trade.paid_at is not None and trade.paid_amount is not None
    # What the payer paid, which may differ from what the order asked (a scripted payment).
    line = StatementLine(
        kind=StatementLineKind.PAYMENT,
        order_id=trade.out_trade_no,
        provider_trade_no=trade.trade_no,
        amount=Decimal(trade.paid_amount),
        currency=trade.paid_currency or trade.currency,
        at=_at(trade.paid_at),
        merchant=account,
    )
    return BillEntry(line, subject=trade.subject, created_at=_at(trade.created_at))


def refund_entry(refund: Refund, account: str) -> BillEntry:
    assert refund.finished_at is not None
    line = StatementLine(
        kind=StatementLineKind.REFUND,
        order_id=refund.out_trade_no,
        provider_trade_no=refund.trade_no,
        refund_id=refund.out_request_no,
        amount=Decimal(refund.amount),
        currency=refund.currency,
        at=_at(refund.finished_at),
        merchant=account,
    )
    return BillEntry(line, created_at=_at(refund.created_at))


def statement_entries(
    store: SandboxStore, faults: Faults, account: str, day: date
) -> Iterator[BillEntry]:
    """The day's rows, payments then refunds, each in the order it happened, with the
    statement faults applied."""
    start, end = (utc_iso(moment) for moment in day_bounds(day))
    for trade in store.paid_between(start, end):
        if trade.out_trade_no == faults.statement_drop_order:
            continue
        entry = trade_entry(trade, account)
        if trade.out_trade_no == faults.statement_amount_delta_order:
            changed = entry.line.amount + faults.statement_amount_delta
            entry = BillEntry(
                entry.line.model_copy(update={"amount": changed}),
                entry.subject,
                entry.created_at,
            )
        yield entry
    if faults.statement_extra_trade:
        yield extra_trade_entry(faults.statement_extra_trade, account, day)
    for refund in store.refunded_between(start, end):
        yield refund_entry(refund, account)


def extra_trade_entry(out_trade_no: str, account: str, day: date) -> BillEntry:
    """A paid trade at noon that the sandbox never had."""
    noon = day_bounds(day)[0] + timedelta(hours=12)
    line = StatementLine(
        kind=StatementLineKind.PAYMENT,
        order_id=out_trade_no,
        # Stable for the same day and number, as a real trade's would be.
        provider_trade_no="SBX" + sha256(f"{day}/{out_trade_no}".encode()).hexdigest()[:20].upper(),
        amount=EXTRA_TRADE_AMOUNT,
        currency="CNY",
        at=noon,
        merchant=account,
    )
    return BillEntry(line, subject="planted by statement_extra_trade")


def statement_zip(store: SandboxStore, faults: Faults, account: str, day: date) -> bytes:
    """The day's statement as Alipay's zipped trade bill."""
    buffer = io.BytesIO()
    entries = statement_entries(store, faults, account, day)
    write_trade_bill(buffer, entries, account=account, day=day)
    return buffer.getvalue()
