"""A payment's refund ledger: what went back, what is on its way back, and what may still be
refunded. Pure arithmetic over RefundEntry records, no Temporal: PaymentWorkflow keeps one,
tells it what it knows (what was paid, its status, the refund window, the time) and
publishes what it answers.

Refunds of one payment never exceed what was paid, however many arrive at once: a refund's
amount is held from the moment it is accepted while it is in flight or in review, counts as
refunded once it succeeds, and is given back if it fails.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tempay.domain import (
        RefundEntry,
        RefundRequest,
        TransactionStatus,
        format_amount,
        parse_amount,
    )
    from tempay.errors import InvalidInput

# Each refund adds about 23 history events to its payment (measured at revision 2: 27 for
# a paid payment, 73 with two refunds); 100 refunds keep a payment's history far below
# Temporal's limits (a provider's own cap is usually lower: Alipay allows 50 refunds).
MAX_REFUNDS = 100
# A payment takes refunds in these states.
REFUNDABLE = (TransactionStatus.SUCCEEDED, TransactionStatus.PARTIALLY_REFUNDED)
# A refund's amount stays held while it is in flight or in review.
HELD = (TransactionStatus.PENDING, TransactionStatus.NEEDS_REVIEW)


class RefundLedger:
    """A payment's refunds by id, in the order they were asked for."""

    def __init__(self, entries: list[RefundEntry]) -> None:
        self.entries = entries  # changed in place: it is the list the payment's view shows
        self._by_id = {entry.refund_id: entry for entry in entries}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, refund_id: str) -> RefundEntry | None:
        return self._by_id.get(refund_id)

    def add(self, entry: RefundEntry) -> None:
        self._by_id[entry.refund_id] = entry
        self.entries.append(entry)

    def remove(self, entry: RefundEntry) -> None:
        """A refund that never started: nothing of it is held."""
        del self._by_id[entry.refund_id]
        self.entries.remove(entry)

    def all_settled(self) -> bool:
        return all(e.status.is_terminal for e in self._by_id.values())

    def refunded(self) -> Decimal:
        return sum(
            (e.amount for e in self._by_id.values() if e.status is TransactionStatus.SUCCEEDED),
            Decimal(0),
        )

    def held(self) -> Decimal:
        return sum((e.amount for e in self._by_id.values() if e.status in HELD), Decimal(0))

    def refundable(self, paid: Decimal, status: TransactionStatus) -> Decimal:
        """What may still be refunded of `paid` by a payment in `status`."""
        if status not in REFUNDABLE and status is not TransactionStatus.REFUNDED:
            return Decimal(0)
        return paid - self.refunded() - self.held()

    def payment_status(self, paid: Decimal, status: TransactionStatus) -> TransactionStatus:
        """The status a payment in `status` has by its refunds: REFUNDED once every unit of
        `paid` went back, PARTIALLY_REFUNDED once some did."""
        refunded = self.refunded()
        if status is TransactionStatus.NEEDS_REVIEW:
            # Only the refund of what was paid (an operator's decision) ends a review here.
            return TransactionStatus.REFUNDED if refunded >= paid else status
        if status not in (*REFUNDABLE, TransactionStatus.REFUNDED):
            return status
        if refunded >= paid:
            return TransactionStatus.REFUNDED
        if refunded > 0:
            return TransactionStatus.PARTIALLY_REFUNDED
        return TransactionStatus.SUCCEEDED

    def problem(
        self,
        request: RefundRequest,
        *,
        order_id: str,
        status: TransactionStatus,
        paid: tuple[Decimal, str],
        window_ends: datetime | None,
        now: datetime,
    ) -> str | None:
        """Why `request` cannot be made now on order `order_id` (in `status`, which took
        `paid` and takes refunds until `window_ends`), or None. Never changes anything."""
        existing = self.get(request.refund_id)
        if existing is not None:
            if (existing.amount, existing.currency) != (request.amount, request.currency):
                return (
                    f"refund {existing.refund_id} already exists for "
                    f"{format_amount(existing.amount, existing.currency)} {existing.currency}: "
                    "a refund id always means the same refund"
                )
            return None  # the same refund again: answered with its current state
        if request.order_id != order_id:
            return f"refund is for order {request.order_id}, this is order {order_id}"
        if status not in REFUNDABLE:
            return (
                f"order {order_id} is {status}: only a paid payment "
                f"(SUCCEEDED or PARTIALLY_REFUNDED) can be refunded"
            )
        if window_ends is None or now >= window_ends:
            return f"order {order_id} no longer takes refunds: its refund window has ended"
        paid_amount, paid_currency = paid
        if request.currency != paid_currency:
            return f"refund currency {request.currency} differs from the payment's {paid_currency}"
        try:
            parse_amount(request.amount, paid_currency)
        except InvalidInput as exc:
            return f"refund {exc}"
        if len(self) >= MAX_REFUNDS:
            return f"order {order_id} already has {MAX_REFUNDS} refunds, the most it takes"
        refundable = self.refundable(paid_amount, status)
        if request.amount > refundable:
            c = paid_currency
            held = self.held()
            return (
                f"refund of {format_amount(request.amount, c)} {c} "
                f"exceeds what remains refundable on order {order_id}: "
                f"{format_amount(refundable, c)} {c}"
                + (f" ({format_amount(held, c)} in flight or in review)" if held else "")
            )
        return None
