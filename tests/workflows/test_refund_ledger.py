"""A payment's refund ledger (workflows/refund_ledger.py): plain tests, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tempay.domain import RefundEntry, RefundRequest, TransactionStatus
from workflows.refund_ledger import MAX_REFUNDS, RefundLedger

S = TransactionStatus
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
PAID = (Decimal("100.00"), "CNY")
ORDER = "ord-1"


def entry(refund_id: str, amount: str, status: S = S.PENDING) -> RefundEntry:
    return RefundEntry(refund_id=refund_id, amount=Decimal(amount), currency="CNY", status=status)


def request(
    refund_id: str, amount: str, currency: str = "CNY", order_id: str = ORDER
) -> RefundRequest:
    return RefundRequest(
        order_id=order_id, refund_id=refund_id, amount=Decimal(amount), currency=currency
    )


def problem(
    ledger: RefundLedger,
    req: RefundRequest,
    status: S = S.SUCCEEDED,
    window_ends: datetime | None = NOW + timedelta(days=1),
) -> str | None:
    return ledger.problem(
        req, order_id=ORDER, status=status, paid=PAID, window_ends=window_ends, now=NOW
    )


def ledger_of(*entries: RefundEntry) -> RefundLedger:
    ledger = RefundLedger([])
    for e in entries:
        ledger.add(e)
    return ledger


def test_an_empty_ledger_leaves_everything_refundable() -> None:
    ledger = RefundLedger([])
    assert (ledger.refunded(), ledger.held()) == (Decimal(0), Decimal(0))
    assert ledger.refundable(PAID[0], S.SUCCEEDED) == Decimal("100.00")
    assert ledger.payment_status(PAID[0], S.SUCCEEDED) is S.SUCCEEDED
    assert ledger.all_settled() and len(ledger) == 0


def test_pending_and_in_review_are_held_succeeded_is_refunded_failed_comes_back() -> None:
    ledger = ledger_of(
        entry("r1", "10.00", S.PENDING),
        entry("r2", "20.00", S.NEEDS_REVIEW),
        entry("r3", "30.00", S.SUCCEEDED),
        entry("r4", "40.00", S.FAILED),
    )
    assert ledger.held() == Decimal("30.00")
    assert ledger.refunded() == Decimal("30.00")
    assert ledger.refundable(PAID[0], S.PARTIALLY_REFUNDED) == Decimal("40.00")
    assert not ledger.all_settled()


def test_the_ledger_changes_the_list_it_was_given_in_place() -> None:
    shown: list[RefundEntry] = []
    ledger = RefundLedger(shown)
    first, second = entry("r1", "1.00"), entry("r2", "2.00")
    ledger.add(first)
    ledger.add(second)
    assert shown == [first, second] and ledger.get("r2") is second
    ledger.remove(first)
    assert shown == [second] and ledger.get("r1") is None and len(ledger) == 1


def test_a_ledger_over_existing_entries_finds_them() -> None:
    ledger = RefundLedger([entry("r1", "5.00", S.SUCCEEDED)])
    assert ledger.get("r1") is not None and ledger.refunded() == Decimal("5.00")


@pytest.mark.parametrize("status", [S.CREATED, S.PENDING, S.FAILED, S.EXPIRED, S.NEEDS_REVIEW])
def test_nothing_is_refundable_before_the_payment_succeeded(status: S) -> None:
    assert ledger_of().refundable(PAID[0], status) == Decimal(0)


def test_a_refunded_payment_has_nothing_left() -> None:
    ledger = ledger_of(entry("r1", "100.00", S.SUCCEEDED))
    assert ledger.refundable(PAID[0], S.REFUNDED) == Decimal(0)


@pytest.mark.parametrize(
    ("entries", "status", "becomes"),
    [
        ([], S.SUCCEEDED, S.SUCCEEDED),
        ([entry("r1", "10.00", S.PENDING)], S.SUCCEEDED, S.SUCCEEDED),
        ([entry("r1", "10.00", S.SUCCEEDED)], S.SUCCEEDED, S.PARTIALLY_REFUNDED),
        ([entry("r1", "100.00", S.SUCCEEDED)], S.SUCCEEDED, S.REFUNDED),
        (
            [entry("r1", "60.00", S.SUCCEEDED), entry("r2", "40.00", S.SUCCEEDED)],
            S.PARTIALLY_REFUNDED,
            S.REFUNDED,
        ),
        ([entry("r1", "100.00", S.SUCCEEDED)], S.REFUNDED, S.REFUNDED),
        # Only the refund of what was paid (an operator's decision) ends a review.
        ([entry("r1", "100.00", S.PENDING)], S.NEEDS_REVIEW, S.NEEDS_REVIEW),
        ([entry("r1", "100.00", S.SUCCEEDED)], S.NEEDS_REVIEW, S.REFUNDED),
        # Not paid, or not any more: refunds do not move it.
        ([], S.PENDING, S.PENDING),
        ([entry("r1", "100.00", S.SUCCEEDED)], S.FAILED, S.FAILED),
        ([entry("r1", "100.00", S.SUCCEEDED)], S.EXPIRED, S.EXPIRED),
    ],
)
def test_the_payment_status_follows_what_went_back(
    entries: list[RefundEntry], status: S, becomes: S
) -> None:
    assert ledger_of(*entries).payment_status(PAID[0], status) is becomes


def test_a_refund_within_what_remains_is_taken() -> None:
    ledger = ledger_of(entry("r1", "60.00", S.SUCCEEDED))
    assert problem(ledger, request("r2", "40.00"), S.PARTIALLY_REFUNDED) is None


def test_the_same_refund_again_is_answered_and_different_terms_are_refused() -> None:
    ledger = ledger_of(entry("r1", "10.00"))
    # Checked before anything else: the refund exists, whatever the payment's state.
    assert problem(ledger, request("r1", "10.00"), S.REFUNDED, window_ends=None) is None
    assert problem(ledger, request("r1", "11.00")) == (
        "refund r1 already exists for 10.00 CNY: a refund id always means the same refund"
    )


@pytest.mark.parametrize(
    ("req", "status", "window_ends", "says"),
    [
        (request("r9", "1.00", order_id="ord-2"), S.SUCCEEDED, None, "refund is for order ord-2"),
        (request("r9", "1.00"), S.PENDING, None, "order ord-1 is PENDING: only a paid payment"),
        (request("r9", "1.00"), S.REFUNDED, None, "order ord-1 is REFUNDED: only a paid"),
        (request("r9", "1.00"), S.SUCCEEDED, None, "its refund window has ended"),
        (request("r9", "1.00"), S.SUCCEEDED, NOW, "its refund window has ended"),
        (
            request("r9", "1.00", currency="USD"),
            S.SUCCEEDED,
            NOW + timedelta(seconds=1),
            "refund currency USD differs from the payment's CNY",
        ),
    ],
)
def test_refusals_say_why(
    req: RefundRequest, status: S, window_ends: datetime | None, says: str
) -> None:
    assert says in (problem(RefundLedger([]), req, status, window_ends) or "")


def test_no_more_than_max_refunds() -> None:
    ledger = ledger_of(*(entry(f"r{i}", "0.01", S.FAILED) for i in range(MAX_REFUNDS)))
    assert problem(ledger, request("one-more", "0.01")) == (
        f"order ord-1 already has {MAX_REFUNDS} refunds, the most it takes"
    )


def test_refunds_never_exceed_what_was_paid_and_say_what_is_held() -> None:
    ledger = ledger_of(entry("r1", "50.00", S.SUCCEEDED), entry("r2", "30.00", S.PENDING))
    assert problem(ledger, request("r3", "20.00"), S.PARTIALLY_REFUNDED) is None
    assert problem(ledger, request("r3", "20.01"), S.PARTIALLY_REFUNDED) == (
        "refund of 20.01 CNY exceeds what remains refundable on order ord-1: 20.00 CNY "
        "(30.00 in flight or in review)"
    )
    ledger = ledger_of(entry("r1", "90.00", S.SUCCEEDED))
    assert problem(ledger, request("r3", "10.01"), S.PARTIALLY_REFUNDED) == (
        "refund of 10.01 CNY exceeds what remains refundable on order ord-1: 10.00 CNY"
    )
