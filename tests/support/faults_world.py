"""A fabricated, consistent world for the fault harness's checkers (proof/faults.py and
proof/book_check.py): every planned transaction settled as the sandbox's ground truth says,
each with its merchant event. Tests damage a copy and expect the damage reported."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from proof.faults import (
    GroundTruth,
    Intent,
    MerchantDelivery,
    Observed,
    Plan,
    check,
    expected_event_id,
    make_plan,
)
from tempay.domain import (
    MerchantEventProgress,
    PaymentView,
    RefundView,
    TransactionKind,
    TransactionStatus,
    WithdrawalView,
)

START = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
SETTLED = START + timedelta(seconds=3)
LIMIT = 55.0
S = TransactionStatus


@dataclass
class World:
    plan: Plan
    observed: Observed
    truth: GroundTruth
    deliveries: list[MerchantDelivery]

    def verdict(self, strict: bool = True) -> Any:
        return check(self.plan, self.observed, self.truth, self.deliveries, LIMIT, strict)


def event(view: Any) -> MerchantEventProgress:
    return MerchantEventProgress(event_id=expected_event_id(view), type="x")


def consistent_world(payments: int = 20) -> World:
    plan = make_plan(payments, "t1")
    trades: dict[str, dict[str, Any] | None] = {}
    views: dict[str, PaymentView | None] = {}
    refund_truth: list[dict[str, Any]] = []
    refund_views: dict[str, RefundView | None] = {}
    for p in plan.payments:
        p.started_at = START
        paid = {Intent.PAY: "10.00", Intent.WRONG_AMOUNT: "9.99"}.get(p.intent)
        trade_status = {
            Intent.PAY: "TRADE_SUCCESS",
            Intent.WRONG_AMOUNT: "TRADE_SUCCESS",
            Intent.DECLINE: "TRADE_FAILED",
            Intent.EXPIRE: "TRADE_CLOSED",
        }[p.intent]
        trades[p.order_id] = {
            "out_trade_no": p.order_id,
            "status": trade_status,
            "amount": "10.00",
            "currency": "CNY",
            "paid_amount": paid,
            "paid_currency": "CNY" if paid else None,
            "closed_at": None,
        }
        refunded = sum((r.amount for r in p.refunds), Decimal(0))
        status = {
            Intent.PAY: S.SUCCEEDED,
            Intent.WRONG_AMOUNT: S.NEEDS_REVIEW,
            Intent.DECLINE: S.FAILED,
            Intent.EXPIRE: S.EXPIRED,
        }[p.intent]
        if refunded:
            status = S.REFUNDED if refunded == Decimal("10.00") else S.PARTIALLY_REFUNDED
        view = PaymentView(
            workflow_id=p.workflow_id,
            order_id=p.order_id,
            kind=TransactionKind.PAYMENT,
            provider="sandbox",
            status=status,
            amount=Decimal("10.00"),
            currency="CNY",
            paid_amount=Decimal(paid) if paid else None,
            settled_at=SETTLED,
            refunded_amount=refunded if refunded else None,
        )
        view.merchant_events.append(event(view))
        views[p.order_id] = view
        for r in p.refunds:
            r.started_at = START
            refund_truth.append(
                {
                    "out_trade_no": p.order_id,
                    "out_request_no": r.refund_id,
                    "refund_amount": str(r.amount),
                    "status": "REFUND_SUCCESS",
                    "requests": 1,
                }
            )
            rview = RefundView(
                workflow_id=f"refund-{r.refund_id}",
                refund_id=r.refund_id,
                order_id=p.order_id,
                provider="sandbox",
                status=S.SUCCEEDED,
                amount=r.amount,
                currency="CNY",
                settled_at=SETTLED,
            )
            rview.merchant_events.append(event(rview))
            refund_views[r.refund_id] = rview
    transfers: list[dict[str, Any]] = []
    withdrawals: dict[str, WithdrawalView | None] = {}
    for w in plan.withdrawals:
        w.started_at = START
        ok = not w.payee_account.startswith("invalid")
        transfers.append(
            {
                "out_biz_no": w.withdrawal_id,
                "amount": str(w.amount),
                "status": "TRANSFER_SUCCESS" if ok else "TRANSFER_FAILED",
                "requests": 1,
                "paid_out": 1 if ok else 0,
            }
        )
        wview = WithdrawalView(
            workflow_id=w.workflow_id,
            withdrawal_id=w.withdrawal_id,
            provider="sandbox",
            status=S.SUCCEEDED if ok else S.FAILED,
            amount=w.amount,
            currency="CNY",
            payee_account=w.payee_account,
            settled_at=SETTLED,
        )
        wview.merchant_events.append(event(wview))
        withdrawals[w.withdrawal_id] = wview
    observed = Observed(views, refund_views, withdrawals)
    deliveries = [
        MerchantDelivery(expected_event_id(v), v.workflow_id, True)
        for group in (views, refund_views, withdrawals)
        for v in group.values()
        if v is not None
    ]
    # At-least-once: a duplicate delivery of the same id is allowed.
    deliveries.append(deliveries[0])
    return World(plan, observed, GroundTruth(trades, refund_truth, transfers), deliveries)
