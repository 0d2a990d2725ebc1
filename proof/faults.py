"""`tempay faults`: scripted fault scenarios on a private embedded stack, each checked against
the sandbox provider's ground truth.

Every scenario starts its own `tempay dev` stack (temporary data dir, free ports), a merchant
receiver in this process (verifies every Standard Webhooks signature, records every delivery),
and runs a mix of payments (paid, declined, left to expire, paid the wrong amount), refunds of
some paid ones and withdrawals, with short settlement timings. A fault is injected while they
are in flight:

- kill-worker: SIGKILL the worker several times, restarting it each time;
- kill-webhook: SIGKILL the webhook while the sandbox delivers notifications; the sandbox
  retries unacknowledged ones on its (scaled) schedule;
- restart-temporal: stop the Temporal dev server (SIGTERM, then SIGKILL) with payments
  pending and start it again on the same SQLite file;
- provider-faults: the sandbox drops 30% and duplicates 30% of notifications, reorders them,
  and fails 20% of status queries.

Then it waits for everything to settle and checks (`check`) each transaction's final state
against what the sandbox says happened, that no refund or transfer moved money twice, that
the merchant got exactly one event id per settlement, and that all settled within the
schedule. The checker is plain functions over plain data, so it is tested on fabricated
ground truth too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import signal
import socket
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError

from book import Book
from book.migrate import open_book
from commands.dev import Stack, private_settings, private_stack
from proof.book_check import BookExpectation, asked_versions, check_book
from tempay.domain import (
    PaymentView,
    RefundView,
    SettlementTiming,
    TransactionKind,
    TransactionStatus,
    WithdrawalView,
    merchant_event_id,
    payment_workflow_id,
    refund_workflow_id,
    withdrawal_workflow_id,
)
from tempay.errors import (
    InvalidInput,
    OrderConflict,
    RefundRefused,
    TemporalUnavailable,
    TransactionNotFound,
    WebhookVerificationError,
)
from tempay.merchant_webhooks import generate_secret, verify
from tempay.settings import Settings
from tempay.temporal import connect
from transactions import (
    build_order,
    build_withdrawal,
    payment_view,
    refund_view,
    start_payment,
    start_refund,
    start_withdrawal,
    withdrawal_view,
)
from workflows.status_query import ACTIVITY_TIMEOUT

T = TypeVar("T")

# Short timings: status queries from 2 s, at most 5 s apart; unpaid orders close at 20 s.
FAULT_TIMING = SettlementTiming(
    first_status_query_delay=timedelta(seconds=2),
    status_query_backoff_cap=timedelta(seconds=5),
    expires_after=timedelta(seconds=20),
    late_payment_window=timedelta(seconds=60),
    merchant_retry_interval=timedelta(seconds=1),
    refund_window=timedelta(minutes=15),
    review_window=timedelta(minutes=15),
)
# The sandbox's notification retry schedule (4m, 10m, 10m, 1h, ...) times this: 1.2 s, 3 s, ...
SANDBOX_TIME_SCALE = "0.005"
# How long the sandbox takes to finish a refund or transfer (its default).
SANDBOX_PROCESSING_SECONDS = 2.0
PAYMENT_AMOUNT = Decimal("10.00")
WRONG_AMOUNT = Decimal("9.99")
WITHDRAWAL_AMOUNT = Decimal("25.00")
CURRENCY = "CNY"

PAID_STATUSES = (
    TransactionStatus.SUCCEEDED,
    TransactionStatus.PARTIALLY_REFUNDED,
    TransactionStatus.REFUNDED,
)


def schedule_limit(timing: SettlementTiming, outage_seconds: float) -> float:
    """The latest a transaction may settle, in seconds after it was started: its expiry, one
    more status-query gap, one provider call lost with a killed worker (an activity attempt is
    retried only after its start-to-close timeout), and the time the scenario held a process
    down."""
    return (
        timing.expires_after.total_seconds()
        + timing.status_query_backoff_cap.total_seconds()
        + ACTIVITY_TIMEOUT.total_seconds()
        + outage_seconds
    )


# ---- the plan ----------------------------------------------------------------------------


class Intent(StrEnum):
    PAY = "pay"
    DECLINE = "decline"
    EXPIRE = "expire"  # the payer never pays: the order closes at expiry
    WRONG_AMOUNT = "wrong_amount"  # the payer pays 9.99 for a 10.00 order


@dataclass
class PlannedRefund:
    refund_id: str
    order_id: str
    amount: Decimal
    started_at: datetime | None = None
    refused: str | None = None  # why the engine refused it (nothing reached the provider)


@dataclass
class PlannedPayment:
    order_id: str
    intent: Intent
    refunds: list[PlannedRefund] = field(default_factory=list)
    started_at: datetime | None = None
    payer_answer: int | None = None  # the sandbox's HTTP answer to the scripted pay/decline

    @property
    def workflow_id(self) -> str:
        return payment_workflow_id(self.order_id)


@dataclass
class PlannedWithdrawal:
    withdrawal_id: str
    amount: Decimal
    payee_account: str
    started_at: datetime | None = None

    @property
    def workflow_id(self) -> str:
        return withdrawal_workflow_id(self.withdrawal_id)


@dataclass
class Plan:
    payments: list[PlannedPayment]
    withdrawals: list[PlannedWithdrawal]

    @property
    def refunds(self) -> list[PlannedRefund]:
        return [r for p in self.payments for r in p.refunds]

    @property
    def size(self) -> int:
        return len(self.payments) + len(self.withdrawals) + len(self.refunds)


def make_plan(payments: int, run_id: str) -> Plan:
    """60% paid, 10% declined, 10% left to expire, 10% paid the wrong amount, 10% paid and
    refunded (in full, in part, or in two parts); one withdrawal per 20 payments (at least
    two), every fourth to a payee that does not exist."""
    if payments < 1:
        raise InvalidInput("--payments must be at least 1")
    plan = Plan([], [])
    refunded = 0
    for i in range(payments):
        slot = i % 10
        intent = {6: Intent.DECLINE, 7: Intent.EXPIRE, 8: Intent.WRONG_AMOUNT}.get(slot, Intent.PAY)
        payment = PlannedPayment(f"flt-{run_id}-{i}", intent)
        # Slot 9, and the first paid payment of a tiny run, get refunds.
        if slot == 9 or (payments < 10 and i == 0):
            parts = [PAYMENT_AMOUNT], [Decimal("4.00")], [Decimal("4.00"), Decimal("6.00")]
            for n, amount in enumerate(parts[refunded % 3]):
                payment.refunds.append(
                    PlannedRefund(f"flt-{run_id}-{i}-r{n}", payment.order_id, amount)
                )
            refunded += 1
        plan.payments.append(payment)
    for j in range(max(2, payments // 20)):
        payee = f"invalid-{j}@example.com" if j % 4 == 1 else f"payee-{j}@example.com"
        plan.withdrawals.append(PlannedWithdrawal(f"flt-{run_id}-w{j}", WITHDRAWAL_AMOUNT, payee))
    return plan


# ---- the merchant's application ------------------------------------------------------------


@dataclass(frozen=True)
class MerchantDelivery:
    """One POST the merchant received (duplicates included: delivery is at-least-once)."""

    event_id: str
    workflow_id: str | None
    verified: bool
    error: str | None = None


@dataclass
class MerchantReceiver:
    secret: str = field(default_factory=generate_secret)
    deliveries: list[MerchantDelivery] = field(default_factory=list)

    PATH = "/tempay/events"

    async def receive(self, request: Request) -> Response:
        raw = await request.body()
        event_id = request.headers.get("webhook-id", "")
        try:
            verify(self.secret, request.headers, raw)
        except WebhookVerificationError as exc:
            self.deliveries.append(MerchantDelivery(event_id, None, False, str(exc)))
            return Response(str(exc), status_code=401)
        body = json.loads(raw)
        self.deliveries.append(MerchantDelivery(event_id, body["data"]["workflow_id"], True))
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route(self.PATH, self.receive, methods=["POST"])])


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C stays with the harness, which stops the stack in order


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = _QuietServer(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("merchant receiver exited during startup")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


# ---- the checker: plain functions over plain data -------------------------------------------


class Problem(StrEnum):
    LOST = "lost"  # missing, never settled, or left open at the provider
    WRONG = "wrong state"  # settled, but not as the provider says it happened
    DOUBLE = "double-settled"  # more than one settlement (or money moved twice per the events)
    EVENTS = "event-id mismatch"  # merchant events: missing, unverified or not the settlement's
    SENT_TWICE = "sent twice"  # a refund or transfer requested or paid out more than once
    LATE = "late"  # settled after the schedule allows
    BOOK = "book"  # the book disagrees with the workflow or the provider, or a journal is broken


@dataclass
class GroundTruth:
    """What the sandbox says happened: its JSON answers, as they come."""

    trades: dict[str, dict[str, Any] | None]  # out_trade_no -> GET /payments/{no} (None: 404)
    refunds: list[dict[str, Any]]  # GET /sandbox/refunds
    transfers: list[dict[str, Any]]  # GET /sandbox/transfers


@dataclass
class Observed:
    """What tempay says: each workflow's view (None: no such workflow)."""

    payments: dict[str, PaymentView | None]  # by order id
    refunds: dict[str, RefundView | None]  # by refund id
    withdrawals: dict[str, WithdrawalView | None]  # by withdrawal id


@dataclass
class Verdict:
    transactions: int
    problems: dict[Problem, list[str]]
    max_settle_seconds: float
    limit_seconds: float
    notes: list[str] = field(default_factory=list)
    slowest: str = ""  # the transaction that took longest to settle

    def count(self, problem: Problem) -> int:
        return len(self.problems.get(problem, []))

    @property
    def passed(self) -> bool:
        return not any(self.problems.values())


def refunded_by_provider(refunds: list[dict[str, Any]]) -> Decimal:
    """The sum of a trade's refunds that succeeded at the provider."""
    return sum(
        (Decimal(r["refund_amount"]) for r in refunds if r["status"] == "REFUND_SUCCESS"),
        Decimal(0),
    )


def expected_payment_status(
    trade: dict[str, Any] | None, refunds: list[dict[str, Any]]
) -> TransactionStatus | None:
    """The status a payment must end in, given the provider's trade and its refunds; None when
    the provider still waits for the payer (the workflow should have closed it)."""
    if trade is None:
        return TransactionStatus.FAILED  # never created at the provider
    status = trade["status"]
    if status == "WAIT_BUYER_PAY":
        return None
    if status == "TRADE_FAILED":
        return TransactionStatus.FAILED
    if status == "TRADE_CLOSED":
        return TransactionStatus.EXPIRED
    if status != "TRADE_SUCCESS":
        raise ValueError(f"unknown trade status {status!r}")
    exact = (Decimal(trade["paid_amount"]), trade["paid_currency"]) == (
        Decimal(trade["amount"]),
        trade["currency"],
    )
    if not exact or trade.get("closed_at"):
        return TransactionStatus.NEEDS_REVIEW
    refunded = refunded_by_provider(refunds)
    if refunded == 0:
        return TransactionStatus.SUCCEEDED
    if refunded < Decimal(trade["paid_amount"]):
        return TransactionStatus.PARTIALLY_REFUNDED
    return TransactionStatus.REFUNDED


def expected_event_id(view: PaymentView | RefundView | WithdrawalView) -> str:
    """The one merchant event a settled transaction sends: a payment's is its settlement's
    (later refunds change its status, not its settlement)."""
    status = view.status
    if isinstance(view, PaymentView) and status in PAID_STATUSES:
        status = TransactionStatus.SUCCEEDED
    return merchant_event_id(view.workflow_id, status)


REFUND_STATUS = {
    "REFUND_SUCCESS": TransactionStatus.SUCCEEDED,
    "REFUND_FAILED": TransactionStatus.FAILED,
}
TRANSFER_STATUS = {
    "TRANSFER_SUCCESS": TransactionStatus.SUCCEEDED,
    "TRANSFER_FAILED": TransactionStatus.FAILED,
}


def _settle_seconds(view: Any, started_at: datetime | None) -> float | None:
    if view is None or view.settled_at is None or started_at is None:
        return None
    return (view.settled_at - started_at).total_seconds()


def check(
    plan: Plan,
    observed: Observed,
    truth: GroundTruth,
    deliveries: list[MerchantDelivery],
    limit_seconds: float,
    strict_requests: bool = True,
    book: Book | None = None,
    asked: Mapping[str, int] | None = None,
) -> Verdict:
    """Every planned transaction against the provider's ground truth and the merchant's
    deliveries. `strict_requests`: a refund or transfer id the provider received more than once
    is a problem (else a note: after a killed worker or server, re-sending the same id is the
    designed recovery, and the provider's own count shows no money moved twice). With `book`,
    also every transaction's row and journal there (proof/book_check.py), `asked` giving the
    newest write each workflow asked for (by workflow id)."""
    problems: dict[Problem, list[str]] = defaultdict(list)
    notes: list[str] = []
    settle_times: list[tuple[float, str]] = []

    received: dict[str, set[str]] = defaultdict(set)
    for delivery in deliveries:
        if not delivery.verified:
            problems[Problem.EVENTS].append(
                f"delivery {delivery.event_id!r} did not verify: {delivery.error}"
            )
        elif delivery.workflow_id is not None:
            received[delivery.workflow_id].add(delivery.event_id)

    refunds_by_trade: dict[str, list[dict[str, Any]]] = defaultdict(list)
    refunds_by_id: dict[str, dict[str, Any]] = {}
    for refund in truth.refunds:
        refunds_by_trade[refund["out_trade_no"]].append(refund)
        refunds_by_id[refund["out_request_no"]] = refund
    transfers_by_id = {t["out_biz_no"]: t for t in truth.transfers}

    def settled(
        name: str,
        view: PaymentView | RefundView | WithdrawalView | None,
        started_at: datetime | None,
        events: int,
    ) -> bool:
        """The checks every transaction shares; False when it never settled."""
        if view is None:
            problems[Problem.LOST].append(f"{name}: no workflow")
            return False
        if not view.status.is_terminal:
            problems[Problem.LOST].append(f"{name}: still {view.status}")
            return False
        if events > 1:
            problems[Problem.DOUBLE].append(f"{name}: {events} settlements in its history")
        ids = received.get(view.workflow_id, set())
        expected = expected_event_id(view)
        if len(ids) > 1:
            problems[Problem.DOUBLE].append(f"{name}: merchant got {sorted(ids)}")
        if ids != {expected}:
            problems[Problem.EVENTS].append(
                f"{name}: merchant got {sorted(ids) or 'nothing'}, expected {expected}"
            )
        seconds = _settle_seconds(view, started_at)
        if seconds is not None:
            queries = getattr(view, "status_queries", 0)
            settle_times.append(
                (seconds, f"{name} ({view.status} by {view.settled_by}, {queries} status queries)")
            )
            if seconds > limit_seconds:
                problems[Problem.LATE].append(
                    f"{name}: settled {seconds:.1f} s after start (limit {limit_seconds:.0f} s)"
                )
        return True

    for payment in plan.payments:
        name = f"payment {payment.order_id}"
        if payment.payer_answer not in (None, 200):
            notes.append(
                f"{name}: the sandbox answered the payer's {payment.intent} with HTTP "
                f"{payment.payer_answer} (the ground truth decides what it must settle as)"
            )
        view = observed.payments.get(payment.order_id)
        events = len(view.merchant_events) if view is not None else 0
        if not settled(name, view, payment.started_at, events):
            continue
        assert view is not None
        trade = truth.trades.get(payment.order_id)
        refunds = refunds_by_trade.get(payment.order_id, [])
        expected = expected_payment_status(trade, refunds)
        if expected is None:
            problems[Problem.LOST].append(
                f"{name}: {view.status}, but the provider still waits for the payer"
            )
            continue
        if view.status is not expected:
            problems[Problem.WRONG].append(
                f"{name}: {view.status}, the provider says {expected} "
                f"(trade {trade['status'] if trade else 'missing'})"
            )
        if trade is not None and trade["status"] == "TRADE_SUCCESS":
            paid = Decimal(trade["paid_amount"])
            if view.paid_amount != paid:
                problems[Problem.WRONG].append(
                    f"{name}: records {view.paid_amount} paid, the provider {paid}"
                )
            refunded = refunded_by_provider(refunds)
            if refunded > paid:
                problems[Problem.SENT_TWICE].append(
                    f"{name}: the provider refunded {refunded} of {paid} paid"
                )
            if refunded and (view.refunded_amount or Decimal(0)) != refunded:
                problems[Problem.WRONG].append(
                    f"{name}: ledger says {view.refunded_amount} refunded, the provider {refunded}"
                )
        planned_ids = {r.refund_id for r in payment.refunds}
        for refund in refunds:
            if refund["out_request_no"] not in planned_ids:
                problems[Problem.SENT_TWICE].append(
                    f"{name}: the provider holds refund {refund['out_request_no']} "
                    "that was never asked for"
                )

    for planned in plan.refunds:
        name = f"refund {planned.refund_id}"
        refund_truth = refunds_by_id.get(planned.refund_id)
        if planned.refused is not None:
            notes.append(f"{name} not made: {planned.refused}")
            if refund_truth is not None:
                problems[Problem.WRONG].append(
                    f"{name}: refused ({planned.refused}), yet the provider holds it"
                )
            continue
        rview = observed.refunds.get(planned.refund_id)
        events = len(rview.merchant_events) if rview is not None else 0
        if not settled(name, rview, planned.started_at, events):
            continue
        assert rview is not None
        if refund_truth is None:
            if rview.status is not TransactionStatus.FAILED:
                problems[Problem.WRONG].append(
                    f"{name}: {rview.status}, but the provider never got it"
                )
            continue
        requests = int(refund_truth["requests"])
        if requests > 1:
            message = f"{name}: the provider got {requests} requests for it"
            if strict_requests:
                problems[Problem.SENT_TWICE].append(message)
            else:
                notes.append(message + " (same id, refunded once)")
        if Decimal(refund_truth["refund_amount"]) != planned.amount:
            problems[Problem.WRONG].append(
                f"{name}: the provider refunds {refund_truth['refund_amount']}, "
                f"asked {planned.amount}"
            )
        expected_refund = REFUND_STATUS.get(refund_truth["status"])
        if expected_refund is None:
            problems[Problem.LOST].append(
                f"{name}: {rview.status}, but the provider is still {refund_truth['status']}"
            )
        elif rview.status is not expected_refund:
            problems[Problem.WRONG].append(
                f"{name}: {rview.status}, the provider says {refund_truth['status']}"
            )

    for withdrawal in plan.withdrawals:
        name = f"withdrawal {withdrawal.withdrawal_id}"
        wview = observed.withdrawals.get(withdrawal.withdrawal_id)
        events = len(wview.merchant_events) if wview is not None else 0
        transfer = transfers_by_id.get(withdrawal.withdrawal_id)
        if transfer is not None and int(transfer["paid_out"]) > 1:
            problems[Problem.SENT_TWICE].append(f"{name}: money left {transfer['paid_out']} times")
        if not settled(name, wview, withdrawal.started_at, events):
            continue
        assert wview is not None
        if transfer is None:
            if wview.status is not TransactionStatus.FAILED:
                problems[Problem.WRONG].append(
                    f"{name}: {wview.status}, but the provider never got the transfer"
                )
            continue
        requests = int(transfer["requests"])
        if requests > 1:
            message = f"{name}: the provider got {requests} transfer requests"
            if strict_requests:
                problems[Problem.SENT_TWICE].append(message)
            else:
                notes.append(message + f" (same id, paid out {transfer['paid_out']} time)")
        if Decimal(transfer["amount"]) != withdrawal.amount:
            problems[Problem.WRONG].append(
                f"{name}: the provider pays {transfer['amount']}, asked {withdrawal.amount}"
            )
        expected_transfer = TRANSFER_STATUS.get(transfer["status"])
        if expected_transfer is None:
            problems[Problem.LOST].append(
                f"{name}: {wview.status}, but the provider is still {transfer['status']}"
            )
        elif wview.status is not expected_transfer:
            problems[Problem.WRONG].append(
                f"{name}: {wview.status}, the provider says {transfer['status']}"
            )

    if book is not None:
        in_book, known = book_expectations(plan, observed, truth, asked or {})
        found = check_book(book, in_book, known)
        if found.problems:
            problems[Problem.BOOK].extend(found.problems)
        versions = sum(1 for e in in_book if e.asked_version is not None)
        notes.append(
            f"book: {len(in_book)} transactions checked, row and journal; {versions} of them "
            "against the newest write their workflow asked for"
        )
        if found.differences:
            notes.append(
                f"book: {len(found.differences)} settlements as a workflow task lost to the "
                "fault wrote them (its re-run's write, same version, changed nothing): "
                + "; ".join(d.replace(": book: ", ": ", 1) for d in found.differences[:3])
                + (" ..." if len(found.differences) > 3 else "")
            )

    verified = [d for d in deliveries if d.verified]
    distinct = len({d.event_id for d in verified})
    notes.append(
        f"merchant: {len(verified)} deliveries of {distinct} event ids "
        f"({len(verified) - distinct} duplicate deliveries, at-least-once)"
    )
    return Verdict(
        transactions=plan.size - sum(1 for r in plan.refunds if r.refused is not None),
        problems=dict(problems),
        max_settle_seconds=max(settle_times, default=(0.0, ""))[0],
        slowest=max(settle_times, default=(0.0, ""))[1],
        limit_seconds=limit_seconds,
        notes=notes,
    )


def book_expectations(
    plan: Plan, observed: Observed, truth: GroundTruth, asked: Mapping[str, int]
) -> tuple[list[BookExpectation], set[str]]:
    """What the book must hold for each transaction the scenario made: the workflow's final
    status, the status, money and provider id the provider's ground truth gives, and the
    newest write the workflow asked for (`asked`, by workflow id). Also the workflow ids of
    refunds the engine refused: none was made, so they need no row (nor may they be reported
    as strangers if they have one)."""
    expected: list[BookExpectation] = []
    refunds_by_trade: dict[str, list[dict[str, Any]]] = defaultdict(list)
    refunds_by_id: dict[str, dict[str, Any]] = {}
    for refund in truth.refunds:
        refunds_by_trade[refund["out_trade_no"]].append(refund)
        refunds_by_id[refund["out_request_no"]] = refund
    transfers_by_id = {t["out_biz_no"]: t for t in truth.transfers}

    def settled(view: PaymentView | RefundView | WithdrawalView | None) -> dict[str, Any]:
        if view is None:
            return {"status": None}
        return {"status": view.status, "settled_at": view.settled_at, "settled_by": view.settled_by}

    for payment in plan.payments:
        trade = truth.trades.get(payment.order_id)
        refunds = refunds_by_trade.get(payment.order_id, [])
        paid = trade is not None and trade["status"] == "TRADE_SUCCESS"
        expected.append(
            BookExpectation(
                name=f"payment {payment.order_id}",
                workflow_id=payment.workflow_id,
                kind=TransactionKind.PAYMENT,
                truth_status=expected_payment_status(trade, refunds),
                amount=PAYMENT_AMOUNT,
                currency=CURRENCY,
                settled_amount=Decimal(trade["paid_amount"]) if paid and trade else None,
                refunded_amount=refunded_by_provider(refunds),
                provider_ref=trade.get("trade_no") if trade else None,
                asked_version=asked.get(payment.workflow_id),
                **settled(observed.payments.get(payment.order_id)),
            )
        )
    known: set[str] = set()
    for planned in plan.refunds:
        workflow_id = refund_workflow_id(planned.refund_id)
        if planned.refused is not None:
            known.add(workflow_id)
            continue
        refund_truth = refunds_by_id.get(planned.refund_id)
        if refund_truth is None:
            truth_status: TransactionStatus | None = TransactionStatus.FAILED
        else:
            truth_status = REFUND_STATUS.get(refund_truth["status"])
        moved = refund_truth is not None and refund_truth["status"] == "REFUND_SUCCESS"
        expected.append(
            BookExpectation(
                name=f"refund {planned.refund_id}",
                workflow_id=workflow_id,
                kind=TransactionKind.REFUND,
                truth_status=truth_status,
                amount=planned.amount,
                currency=CURRENCY,
                settled_amount=(
                    Decimal(refund_truth["refund_amount"]) if moved and refund_truth else None
                ),
                provider_ref=refund_truth.get("refund_no") if refund_truth else None,
                asked_version=asked.get(workflow_id),
                **settled(observed.refunds.get(planned.refund_id)),
            )
        )
    for withdrawal in plan.withdrawals:
        transfer = transfers_by_id.get(withdrawal.withdrawal_id)
        if transfer is None:
            truth_status = TransactionStatus.FAILED
        else:
            truth_status = TRANSFER_STATUS.get(transfer["status"])
        moved = transfer is not None and transfer["status"] == "TRANSFER_SUCCESS"
        expected.append(
            BookExpectation(
                name=f"withdrawal {withdrawal.withdrawal_id}",
                workflow_id=withdrawal.workflow_id,
                kind=TransactionKind.WITHDRAWAL,
                truth_status=truth_status,
                amount=withdrawal.amount,
                currency=CURRENCY,
                settled_amount=Decimal(transfer["amount"]) if moved and transfer else None,
                provider_ref=transfer.get("transfer_no") if transfer else None,
                asked_version=asked.get(withdrawal.workflow_id),
                **settled(observed.withdrawals.get(withdrawal.withdrawal_id)),
            )
        )
    return expected, known


# ---- driving a scenario ------------------------------------------------------------------


def now_utc() -> datetime:
    return datetime.now(UTC)


@functools.cache
def harness_runtime() -> Runtime:
    """The runtime of the harness's own Temporal clients. They retry through the outages the
    harness causes, and the SDK core would log every retry as a WARN (291 lines in one
    restart-temporal run); the harness counts its retries itself ("harness calls retried
    through outages"), so only the core's errors are shown."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


class HarnessError(RuntimeError):
    pass


# Errors that are answers, not outages: retrying cannot change them.
FINAL_ERRORS = (InvalidInput, OrderConflict, RefundRefused, TransactionNotFound)


class Run:
    """One scenario's transactions on one stack, and the progress faults are timed by."""

    def __init__(
        self, stack: Stack, client: Client, http: httpx.AsyncClient, plan: Plan, deadline: float
    ) -> None:
        self.stack, self.client, self.http, self.plan = stack, client, http, plan
        self.settings = stack.settings
        self.deadline = deadline
        self.retries = 0
        self.faults: list[str] = []
        self.outage_seconds = 0.0
        self.unexpected_exits: list[str] = []
        self._down: dict[str, float] = {}  # children the scenario is holding down: since when
        self._killing: asyncio.Future[None] | None = None  # the latest outage's kill
        self._done: dict[str, int] = defaultdict(int)
        self._totals = {
            "load": len(plan.payments) + len(plan.withdrawals),
            "refunds": len(plan.refunds),
        }
        self._progress = asyncio.Event()

    # progress

    def advance(self, phase: str) -> None:
        self._done[phase] += 1
        self._progress.set()

    async def at(self, phase: str, fraction: float) -> bool:
        """Wait until `fraction` of the phase is done; False if the phase is empty."""
        total = self._totals[phase]
        if total == 0:
            return False
        while self._done[phase] < max(1, int(total * fraction)):
            self._progress.clear()
            await self._progress.wait()
        return True

    # calls that survive outages: the same idempotency key again, until the deadline

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await call()
            except FINAL_ERRORS:
                raise
            except Exception:
                if time.monotonic() > self.deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(0.5)

    # the transactions

    async def payment(self, planned: PlannedPayment) -> None:
        order = build_order(
            self.settings,
            order_id=planned.order_id,
            amount=PAYMENT_AMOUNT,
            currency=CURRENCY,
            subject=f"tempay faults: {planned.intent}",
            timing=FAULT_TIMING,
        )
        planned.started_at = now_utc()
        await self.retrying(lambda: start_payment(self.client, self.settings, order))
        self.advance("load")
        path = f"/sandbox/payments/{planned.order_id}"
        match planned.intent:
            case Intent.PAY:
                planned.payer_answer = await self._sandbox_post(f"{path}/pay", {})
            case Intent.WRONG_AMOUNT:
                planned.payer_answer = await self._sandbox_post(
                    f"{path}/pay", {"amount": str(WRONG_AMOUNT)}
                )
            case Intent.DECLINE:
                planned.payer_answer = await self._sandbox_post(f"{path}/decline", {})
            case Intent.EXPIRE:
                pass

    async def _sandbox_post(self, path: str, body: dict[str, str]) -> int:
        async def post() -> int:
            return (await self.http.post(path, json=body)).status_code

        return await self.retrying(post)

    async def withdrawal(self, planned: PlannedWithdrawal) -> None:
        order = build_withdrawal(
            self.settings,
            withdrawal_id=planned.withdrawal_id,
            amount=planned.amount,
            currency=CURRENCY,
            payee_account=planned.payee_account,
            timing=FAULT_TIMING,
        )
        planned.started_at = now_utc()
        await self.retrying(lambda: start_withdrawal(self.client, self.settings, order))
        self.advance("load")

    async def refunds_of(self, planned: PlannedPayment) -> None:
        """Once the payment succeeded, its refunds, one after the other."""
        view = await self.wait_for_settlement(planned.order_id)
        for refund in planned.refunds:
            if view is None or view.status not in PAID_STATUSES:
                refund.refused = f"payment is {view.status if view else 'unknown'}: not refunded"
                self.advance("refunds")
                continue
            refund.started_at = now_utc()
            try:
                await self.retrying(
                    lambda r=refund: start_refund(  # type: ignore[misc]
                        self.client,
                        self.settings,
                        order_id=r.order_id,
                        refund_id=r.refund_id,
                        amount=r.amount,
                        reason="tempay faults",
                    )
                )
            except RefundRefused as exc:
                refund.refused = str(exc)
            self.advance("refunds")

    async def wait_for_settlement(self, order_id: str) -> PaymentView | None:
        while time.monotonic() < self.deadline:
            with contextlib.suppress(Exception):
                view = await payment_view(self.client, order_id)
                if view.status.is_terminal:
                    return view
            await asyncio.sleep(0.5)
        return None

    async def load(self, concurrency: int, rng: random.Random) -> None:
        work: list[Callable[[], Awaitable[None]]] = [
            functools.partial(self.payment, p) for p in self.plan.payments
        ]
        work += [functools.partial(self.withdrawal, w) for w in self.plan.withdrawals]
        rng.shuffle(work)
        queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)

        async def lane() -> None:
            while not queue.empty():
                await queue.get_nowait()()

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        refunded = [p for p in self.plan.payments if p.refunds]
        limit = asyncio.Semaphore(concurrency)

        async def refunds(p: PlannedPayment) -> None:
            async with limit:
                await self.refunds_of(p)

        await asyncio.gather(*(refunds(p) for p in refunded))

    # faults

    async def outage(self, name: str, down_seconds: float, sig: int = signal.SIGKILL) -> None:
        """Stop one child with `sig`, keep it down, start it again and wait until it works."""
        started = time.monotonic()
        pid = self.stack.child(name).process.pid  # type: ignore[union-attr]
        self._down[name] = started
        # Shielded: a kill under way when the injector is cancelled completes (see `restore`).
        self._killing = asyncio.ensure_future(asyncio.to_thread(self.stack.kill_child, name, sig))
        await asyncio.shield(self._killing)
        self.faults.append(f"{signal.Signals(sig).name} {name} (pid {pid})")
        await asyncio.sleep(down_seconds)
        self.stack.start_child(name)
        del self._down[name]
        await self.wait_child_ready(name)
        self.outage_seconds += time.monotonic() - started

    async def restore(self) -> None:
        """Start again what an outage still holds down: the load can finish while the
        injector, then cancelled, is keeping a child down (the worker, with a few refunds), and
        without it nothing would settle."""
        if self._killing is not None:
            await self._killing
        for name, started in list(self._down.items()):
            del self._down[name]
            if self.stack.child(name).exited() is None:
                continue  # cancelled before its kill: it never went down
            self.stack.start_child(name)
            await self.wait_child_ready(name)
            self.outage_seconds += time.monotonic() - started

    async def wait_child_ready(self, name: str, within: float = 60.0) -> None:
        give_up = time.monotonic() + within
        checks: dict[str, Callable[[], Awaitable[bool]]] = {
            "temporal": self._temporal_ready,
            "webhook": lambda: self.stack._http_ready(f"{self.settings.webhook_url}/healthz"),
            "sandbox": lambda: self.stack._http_ready(f"{self.stack.sandbox_url}/healthz"),
            "worker": self._new_worker_polling,
        }
        while not await checks[name]():
            if time.monotonic() > give_up:
                raise HarnessError(f"{name} did not come back within {within:.0f} s")
            await asyncio.sleep(0.2)

    async def _temporal_ready(self) -> bool:
        try:
            await connect(self.settings, harness_runtime())
        except TemporalUnavailable:
            return False
        return True

    async def _new_worker_polling(self) -> bool:
        """The restarted worker (not the dead one, which the server remembers for a while)."""
        pid = self.stack.child("worker").process.pid  # type: ignore[union-attr]
        try:
            response = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.settings.temporal_namespace,
                    task_queue=TaskQueue(name=self.settings.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
        except Exception:
            return False
        return any(p.identity.startswith(f"{pid}@") for p in response.pollers)

    def look_after_children(self) -> None:
        """A child that died on its own is a finding: note it, and start it again."""
        for child in self.stack.children:
            code = child.exited()
            if code is not None and child.name not in self._down:
                self.unexpected_exits.append(f"{child.name} exited on its own with code {code}")
                self.stack.start_child(child.name)


# ---- scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    inject: Callable[[Run], Awaitable[None]]
    sandbox_env: dict[str, str] = field(default_factory=dict)
    # Re-sent refund/transfer ids are problems here (no fault gives a reason to re-send).
    strict_requests: bool = False


async def kill_worker(run: Run) -> None:
    rng = random.Random(7)
    for fraction in (0.2, 0.45, 0.7):
        await run.at("load", fraction)
        await run.outage("worker", rng.uniform(0.5, 2.0))
    if await run.at("refunds", 0.3):
        await run.outage("worker", rng.uniform(0.5, 2.0))


async def kill_webhook(run: Run) -> None:
    for fraction in (0.3, 0.7):
        await run.at("load", fraction)
        await run.outage("webhook", 3.0)
    if await run.at("refunds", 0.5):
        # Refunds finish at the sandbox after 2 s: their notifications meet the dead webhook.
        await asyncio.sleep(SANDBOX_PROCESSING_SECONDS)
        await run.outage("webhook", 3.0)


TEMPORAL_DOWN_SECONDS = 8.0


async def restart_temporal(run: Run) -> None:
    await run.at("load", 0.4)
    # Down longer than the webhook waits on a signal (TEMPAY_SIGNAL_TIMEOUT, 5 s): notifications
    # arriving meanwhile are answered 503 and the sandbox sends them again later.
    await run.outage("temporal", TEMPORAL_DOWN_SECONDS, signal.SIGTERM)
    await run.at("load", 0.8)
    await run.outage("temporal", TEMPORAL_DOWN_SECONDS, signal.SIGKILL)
    if await run.at("refunds", 0.5):
        await run.outage("temporal", TEMPORAL_DOWN_SECONDS, signal.SIGKILL)


async def provider_faults(run: Run) -> None:
    run.faults.append("sandbox: drop 0.3, duplicate 0.3, reorder 3 s, status fail 0.2")


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "kill-worker",
            "SIGKILL the worker 4 times mid-flight (3 during payments, 1 during refunds)",
            kill_worker,
        ),
        Scenario(
            "kill-webhook",
            "SIGKILL the webhook 3 times while the sandbox delivers notifications",
            kill_webhook,
            strict_requests=True,
        ),
        Scenario(
            "restart-temporal",
            "stop Temporal for 8 s (SIGTERM, then SIGKILL twice) with payments pending; "
            "restart it on the same SQLite file",
            restart_temporal,
        ),
        Scenario(
            "provider-faults",
            "the sandbox drops 30%, duplicates 30% and reorders notifications; 20% of status "
            "queries fail",
            provider_faults,
            sandbox_env={
                "TEMPAY_SANDBOX_DROP_RATE": "0.3",
                "TEMPAY_SANDBOX_DUPLICATE_RATE": "0.3",
                "TEMPAY_SANDBOX_REORDER_WINDOW": "3",
                "TEMPAY_SANDBOX_STATUS_FAIL_RATE": "0.2",
            },
            strict_requests=True,
        ),
    )
}


@dataclass
class ScenarioResult:
    scenario: str
    verdict: Verdict
    faults: str
    seconds: float


def fault_settings(data_dir: Path, merchant_url: str, secret: str) -> Settings:
    return private_settings(
        data_dir, merchant_webhook_url=merchant_url, merchant_webhook_secret=SecretStr(secret)
    )


async def _all_views(client: Client, plan: Plan) -> Observed:
    async def one(get: Callable[[], Awaitable[T]]) -> T | None:
        for _ in range(20):
            try:
                return await get()
            except TransactionNotFound:
                return None
            except Exception:
                await asyncio.sleep(0.5)
        return None

    limit = asyncio.Semaphore(16)

    async def bounded(get: Callable[[], Awaitable[T]]) -> T | None:
        async with limit:
            return await one(get)

    payments = await asyncio.gather(
        *(bounded(functools.partial(payment_view, client, p.order_id)) for p in plan.payments)
    )
    refunds = await asyncio.gather(
        *(bounded(functools.partial(refund_view, client, r.refund_id)) for r in plan.refunds)
    )
    withdrawals = await asyncio.gather(
        *(
            bounded(functools.partial(withdrawal_view, client, w.withdrawal_id))
            for w in plan.withdrawals
        )
    )
    return Observed(
        payments={p.order_id: v for p, v in zip(plan.payments, payments, strict=True)},
        refunds={r.refund_id: v for r, v in zip(plan.refunds, refunds, strict=True)},
        withdrawals={
            w.withdrawal_id: v for w, v in zip(plan.withdrawals, withdrawals, strict=True)
        },
    )


async def _sandbox_get(http: httpx.AsyncClient, path: str) -> Any:
    """GET from the sandbox; its status API may be told to fail, so ask again."""
    for _ in range(50):
        response = await http.get(path)
        if response.status_code == 404:
            return None
        if response.status_code == 200:
            return response.json()
        await asyncio.sleep(0.1)
    raise HarnessError(f"sandbox kept answering {response.status_code} to GET {path}")


async def ground_truth(http: httpx.AsyncClient, plan: Plan) -> GroundTruth:
    limit = asyncio.Semaphore(16)

    async def trade(order_id: str) -> Any:
        async with limit:
            return await _sandbox_get(http, f"/payments/{order_id}")

    trades = await asyncio.gather(*(trade(p.order_id) for p in plan.payments))
    return GroundTruth(
        trades={p.order_id: t for p, t in zip(plan.payments, trades, strict=True)},
        refunds=await _sandbox_get(http, "/sandbox/refunds") or [],
        transfers=await _sandbox_get(http, "/sandbox/transfers") or [],
    )


async def _pending(client: Client) -> int:
    query = (
        "TransactionKind IS NOT NULL AND (PaymentStatus = 'CREATED' OR PaymentStatus = 'PENDING')"
    )
    count = 0
    async for _ in client.list_workflows(query):
        count += 1
    return count


async def notification_stats(http: httpx.AsyncClient, plan: Plan) -> dict[str, int]:
    """Deliveries dropped, duplicated and retried, by the sandbox's own record."""
    limit = asyncio.Semaphore(16)

    async def of(query: str) -> list[dict[str, Any]]:
        async with limit:
            return await _sandbox_get(http, f"/sandbox/notifications?{query}") or []

    queries = [f"out_trade_no={p.order_id}" for p in plan.payments]
    queries += [f"out_request_no={r.refund_id}" for r in plan.refunds if r.refused is None]
    queries += [f"out_biz_no={w.withdrawal_id}" for w in plan.withdrawals]
    stats = {"deliveries": 0, "dropped": 0, "duplicated": 0, "retried": 0}
    for deliveries in await asyncio.gather(*(of(q) for q in queries)):
        ids = [d["notify_id"] for d in deliveries]
        stats["deliveries"] += len(deliveries)
        stats["dropped"] += sum(1 for d in deliveries if d["dropped"])
        stats["duplicated"] += len(ids) - len(set(ids))
        stats["retried"] += sum(1 for d in deliveries if d["attempts"] > 1)
    return stats


STATUS_503 = re.compile(r'"GET /(payments|transfers)/\S+ HTTP/1\.1" 503')


def _quiet_lost_start_errors(loop: asyncio.AbstractEventLoop) -> None:
    """An update-with-start that fails while Temporal is down also leaves its start
    operation's future holding the same error; the harness retries the call, so asyncio's
    'Future exception was never retrieved' report about it is noise."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unretrieved = context.get("message", "").startswith("Future exception was never")
        if unretrieved and isinstance(context.get("exception"), RPCError):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def run_scenario(
    scenario: Scenario, payments: int, concurrency: int = 20, quiet: bool = False
) -> ScenarioResult:
    def say(message: str) -> None:
        if not quiet:
            print(f"[{scenario.name}] {message}", flush=True)

    began = time.monotonic()
    _quiet_lost_start_errors(asyncio.get_running_loop())
    run_id = uuid.uuid4().hex[:6]
    plan = make_plan(payments, run_id)
    receiver = MerchantReceiver()
    with tempfile.TemporaryDirectory(prefix=f"tempay-faults-{scenario.name}-") as tmp:
        async with serving(receiver.app()) as merchant_base:
            settings = fault_settings(Path(tmp), merchant_base + receiver.PATH, receiver.secret)
            env = {
                "TEMPAY_SANDBOX_TIME_SCALE": SANDBOX_TIME_SCALE,
                "TEMPAY_MERCHANT_WEBHOOK_URL": merchant_base + receiver.PATH,
                "TEMPAY_MERCHANT_WEBHOOK_SECRET": receiver.secret,
                # The free port private_settings chose (the stack's env leaves it out, so the
                # worker would take the default 9464, and fail beside any other worker).
                "TEMPAY_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
                **scenario.sandbox_env,
            }
            stack = private_stack(settings, sandbox_env=env, with_ui=False)
            try:
                stack.start()
                await stack.wait_ready()
                say(f"stack up in {tmp}; {plan.size} transactions; fault: {scenario.what}")
                client = await connect(settings, harness_runtime())
                book = open_book(settings)  # the stack's: `tempay dev` created it
                try:
                    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=30) as http:
                        verdict, faults = await _drive(
                            scenario, stack, client, http, book, plan, receiver, concurrency, say
                        )
                finally:
                    book.close()
            finally:
                await asyncio.to_thread(stack.stop)
    return ScenarioResult(scenario.name, verdict, faults, time.monotonic() - began)


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _drive(
    scenario: Scenario,
    stack: Stack,
    client: Client,
    http: httpx.AsyncClient,
    book: Book,
    plan: Plan,
    receiver: MerchantReceiver,
    concurrency: int,
    say: Callable[[str], None],
) -> tuple[Verdict, str]:
    # Generous: the run fails on the schedule check long before this.
    run = Run(stack, client, http, plan, deadline=time.monotonic() + 600)
    injector: asyncio.Task[None] = asyncio.create_task(_awaited(scenario.inject(run)))
    loading = asyncio.create_task(run.load(concurrency, random.Random(1)))
    while not loading.done():
        await asyncio.wait({loading}, timeout=1.0)
        if not injector.done():
            run.look_after_children()
    loading.result()
    if not injector.done():
        injector.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await injector
    await run.restore()
    say(f"load done: {len(run.faults)} faults injected, {run.retries} calls retried")

    limit = schedule_limit(FAULT_TIMING, run.outage_seconds)
    planned: list[PlannedPayment | PlannedWithdrawal | PlannedRefund] = [
        *plan.payments,
        *plan.withdrawals,
        *plan.refunds,
    ]
    last_start = max(
        (t.started_at for t in planned if t.started_at),
        default=now_utc(),
    )
    settle_by = last_start + timedelta(seconds=limit + 15)
    verdict: Verdict | None = None
    while True:
        run.look_after_children()
        pending = await run.retrying(lambda: _pending(client))
        past = now_utc() > settle_by
        if pending == 0 or past:
            observed = await _all_views(client, plan)
            truth = await ground_truth(http, plan)
            asked, unreplayed = await asked_versions(client, _made(plan))
            verdict = await asyncio.to_thread(
                check,
                plan,
                observed,
                truth,
                list(receiver.deliveries),
                limit,
                scenario.strict_requests,
                book,
                asked,
            )
            if unreplayed:
                verdict.problems.setdefault(Problem.BOOK, []).extend(unreplayed)
            if verdict.passed or past:
                break
        say(f"waiting: {pending} transactions pending")
        await asyncio.sleep(2.0)
    for exit_note in run.unexpected_exits:
        verdict.problems.setdefault(Problem.LOST, []).append(exit_note)
    stats = await notification_stats(http, plan)
    faults = ", ".join(_summarise(run.faults)) or "none"
    if scenario.name == "provider-faults":
        log = (stack.logs / "sandbox.log").read_text(errors="replace")
        faults = (
            f"{stats['dropped']} dropped, {stats['duplicated']} duplicated notifications; "
            f"{len(STATUS_503.findall(log))} status queries failed"
        )
    else:
        faults += f"; {stats['retried']} notifications retried"
    if run.retries:
        verdict.notes.append(f"harness calls retried through outages: {run.retries}")
    return verdict, faults


def _made(plan: Plan) -> list[str]:
    """The workflow ids of every transaction the scenario made (not the refunds refused)."""
    return [
        *(p.workflow_id for p in plan.payments),
        *(refund_workflow_id(r.refund_id) for r in plan.refunds if r.refused is None),
        *(w.workflow_id for w in plan.withdrawals),
    ]


def _summarise(faults: list[str]) -> list[str]:
    counts: dict[str, int] = defaultdict(int)
    for fault in faults:
        counts[fault.split(" (")[0]] += 1
    return [f"{n}x {what}" for what, n in counts.items()]


# ---- the command -------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "transactions",
    "faults injected",
    "lost",
    "wrong",
    "double-settled",
    "event-id mismatches",
    "sent twice",
    "book",
    "max settle s (limit)",
    "result",
)


def table(results: list[ScenarioResult]) -> str:
    rows = [COLUMNS]
    for r in results:
        v = r.verdict
        rows.append(
            (
                r.scenario,
                str(v.transactions),
                r.faults,
                str(v.count(Problem.LOST)),
                str(v.count(Problem.WRONG)),
                str(v.count(Problem.DOUBLE)),
                str(v.count(Problem.EVENTS)),
                str(v.count(Problem.SENT_TWICE)),
                str(v.count(Problem.BOOK)),
                f"{v.max_settle_seconds:.1f} ({v.limit_seconds:.0f})"
                + (f", {v.count(Problem.LATE)} late" if v.count(Problem.LATE) else ""),
                "PASS" if v.passed else "FAIL",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def details(result: ScenarioResult, limit: int = 10) -> list[str]:
    lines = []
    for problem, items in result.verdict.problems.items():
        for item in items[:limit]:
            lines.append(f"  {result.scenario}: {problem}: {item}")
        if len(items) > limit:
            lines.append(f"  {result.scenario}: {problem}: ... {len(items) - limit} more")
    if result.verdict.slowest:
        lines.append(
            f"  {result.scenario}: slowest: {result.verdict.slowest}, "
            f"{result.verdict.max_settle_seconds:.1f} s"
        )
    for note in result.verdict.notes:
        lines.append(f"  {result.scenario}: note: {note}")
    return lines


async def run_faults(payments: int, scenario: str = "all", concurrency: int = 20) -> int:
    if scenario != "all" and scenario not in SCENARIOS:
        raise InvalidInput(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}, all")
    if payments < 1 or concurrency < 1:
        raise InvalidInput("--payments and --concurrency must be at least 1")
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    results = []
    for name in names:
        result = await run_scenario(SCENARIOS[name], payments, concurrency)
        print(
            f"[{name}] {'PASS' if result.verdict.passed else 'FAIL'} in {result.seconds:.0f} s",
            flush=True,
        )
        results.append(result)
    print("\n" + table(results), flush=True)
    for result in results:
        for line in details(result):
            print(line, flush=True)
    return 0 if all(r.verdict.passed for r in results) else 1
