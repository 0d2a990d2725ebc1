"""The fault harness's checker on fabricated ground truth: a consistent world passes, and each
kind of damage (a lost, wrongly settled or double-settled transaction, a missing or foreign
merchant event, money sent twice, a late settlement) is reported as a FAIL."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from proof.faults import (
    Intent,
    MerchantDelivery,
    Problem,
    expected_event_id,
    expected_payment_status,
    make_plan,
)
from tempay.domain import (
    MerchantEventProgress,
    TransactionStatus,
)
from tests.support.faults_world import LIMIT, START, World, consistent_world, event

S = TransactionStatus


def test_a_consistent_world_passes() -> None:
    world = consistent_world()
    verdict = world.verdict()
    assert verdict.passed, verdict.problems
    assert verdict.transactions == world.plan.size
    assert verdict.max_settle_seconds == pytest.approx(3.0)


def test_the_plan_covers_every_path() -> None:
    plan = make_plan(20, "t2")
    assert {p.intent for p in plan.payments} == set(Intent)
    assert plan.refunds and len(plan.withdrawals) == 2
    # One of the two withdrawals goes to a payee that does not exist: a FAILED transfer.
    assert [w.payee_account.startswith("invalid") for w in plan.withdrawals] == [False, True]


def paid_order(world: World) -> str:
    return next(p.order_id for p in world.plan.payments if p.intent is Intent.PAY and not p.refunds)


def test_a_missing_workflow_is_lost() -> None:
    world = consistent_world()
    world.observed.payments[paid_order(world)] = None
    verdict = world.verdict()
    assert not verdict.passed
    assert verdict.count(Problem.LOST) == 1


def test_a_payment_never_settled_is_lost() -> None:
    world = consistent_world()
    view = world.observed.payments[paid_order(world)]
    assert view is not None
    view.status = S.PENDING
    verdict = world.verdict()
    assert verdict.count(Problem.LOST) == 1 and not verdict.passed


def test_money_the_workflow_missed_is_a_wrong_state() -> None:
    """The provider was paid; the workflow says EXPIRED: the payer's money would be lost."""
    world = consistent_world()
    order_id = paid_order(world)
    view = world.observed.payments[order_id]
    assert view is not None
    view.status, view.paid_amount = S.EXPIRED, None
    view.merchant_events = [event(view)]
    world.deliveries = [
        MerchantDelivery(expected_event_id(view), view.workflow_id, True)
        if d.workflow_id == view.workflow_id
        else d
        for d in world.deliveries
    ]
    verdict = world.verdict()
    assert not verdict.passed
    assert verdict.count(Problem.WRONG) == 2  # the status, and the amount paid


def test_an_order_left_open_at_the_provider_is_lost() -> None:
    world = consistent_world()
    trade = world.truth.trades[
        next(p.order_id for p in world.plan.payments if p.intent is Intent.EXPIRE)
    ]
    assert trade is not None
    trade["status"] = "WAIT_BUYER_PAY"
    assert world.verdict().count(Problem.LOST) == 1


def test_a_double_settlement_is_reported() -> None:
    """Two settlements of one payment: two events in its history, two ids at the merchant."""
    world = consistent_world()
    order_id = paid_order(world)
    view = world.observed.payments[order_id]
    assert view is not None
    view.merchant_events.append(
        MerchantEventProgress(event_id=f"evt_{view.workflow_id}_failed", type="x")
    )
    world.deliveries.append(
        MerchantDelivery(f"evt_{view.workflow_id}_failed", view.workflow_id, True)
    )
    verdict = world.verdict()
    assert not verdict.passed
    assert verdict.count(Problem.DOUBLE) == 2
    assert verdict.count(Problem.EVENTS) == 1


def test_a_settlement_without_its_event_is_a_mismatch() -> None:
    world = consistent_world()
    wid = world.observed.payments[paid_order(world)].workflow_id  # type: ignore[union-attr]
    world.deliveries = [d for d in world.deliveries if d.workflow_id != wid]
    verdict = world.verdict()
    assert verdict.count(Problem.EVENTS) == 1 and not verdict.passed


def test_an_unverified_delivery_is_a_mismatch() -> None:
    world = consistent_world()
    world.deliveries.append(MerchantDelivery("evt_x", None, False, "bad signature"))
    assert world.verdict().count(Problem.EVENTS) == 1


def test_a_transfer_paid_out_twice_is_sent_twice() -> None:
    world = consistent_world()
    world.truth.transfers[0]["paid_out"] = 2
    world.truth.transfers[0]["requests"] = 2
    verdict = world.verdict(strict=False)
    assert not verdict.passed
    assert verdict.count(Problem.SENT_TWICE) == 1


def test_a_refund_requested_twice_fails_strict_and_is_noted_otherwise() -> None:
    world = consistent_world()
    world.truth.refunds[0]["requests"] = 2
    assert world.verdict(strict=True).count(Problem.SENT_TWICE) == 1
    lenient = world.verdict(strict=False)
    assert lenient.passed and any("2 requests" in n for n in lenient.notes)


def test_an_unasked_refund_at_the_provider_is_sent_twice() -> None:
    world = consistent_world()
    extra = copy.deepcopy(world.truth.refunds[0])
    extra["out_request_no"] = "someone-else"
    extra["refund_amount"] = "0.01"
    world.truth.refunds.append(extra)
    verdict = world.verdict()
    assert verdict.count(Problem.SENT_TWICE) >= 1 and not verdict.passed


def test_a_refund_the_workflow_got_wrong() -> None:
    world = consistent_world()
    world.truth.refunds[0]["status"] = "REFUND_FAILED"
    verdict = world.verdict()
    assert not verdict.passed
    assert verdict.count(Problem.WRONG) >= 1


def test_a_late_settlement_is_reported() -> None:
    world = consistent_world()
    view = world.observed.withdrawals[world.plan.withdrawals[0].withdrawal_id]
    assert view is not None
    view.settled_at = START + timedelta(seconds=LIMIT + 1)
    verdict = world.verdict()
    assert verdict.count(Problem.LATE) == 1 and not verdict.passed
    assert verdict.max_settle_seconds == pytest.approx(LIMIT + 1)


@pytest.mark.parametrize(
    ("trade", "refunded", "expected"),
    [
        (None, [], S.FAILED),
        ({"status": "WAIT_BUYER_PAY"}, [], None),
        ({"status": "TRADE_FAILED"}, [], S.FAILED),
        ({"status": "TRADE_CLOSED"}, [], S.EXPIRED),
        ({"status": "TRADE_SUCCESS", "paid_amount": "9.99"}, [], S.NEEDS_REVIEW),
        ({"status": "TRADE_SUCCESS", "closed_at": "2026-11-28T04:00:00Z"}, [], S.NEEDS_REVIEW),
        ({"status": "TRADE_SUCCESS"}, [], S.SUCCEEDED),
        ({"status": "TRADE_SUCCESS"}, ["4.00"], S.PARTIALLY_REFUNDED),
        ({"status": "TRADE_SUCCESS"}, ["4.00", "6.00"], S.REFUNDED),
    ],
)
def test_expected_payment_status(
    trade: dict[str, Any] | None, refunded: list[str], expected: S | None
) -> None:
    if trade is not None:
        trade = {
            "amount": "10.00",
            "currency": "CNY",
            "paid_amount": "10.00",
            "paid_currency": "CNY",
            "closed_at": None,
        } | trade
    refunds = [{"refund_amount": a, "status": "REFUND_SUCCESS"} for a in refunded]
    refunds.append({"refund_amount": "5.00", "status": "REFUND_FAILED"})  # gives nothing back
    assert expected_payment_status(trade, refunds) is expected
