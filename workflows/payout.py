"""What refunds and withdrawals share once the provider holds them, on the settling core
(workflows/settling.py): wait for the notification, with status queries on a backing-off,
jittered schedule when it is late; take SUCCEEDED (as ordered, or for review) or FAILED
once; deliver the merchant events; let operators force a query or decide a review.

A kind's `__init__` calls `_start_settling`; it defines the typed `notify` signal and
`details` query, and the methods marked abstract here and in the core.
"""

from __future__ import annotations

from abc import abstractmethod
from decimal import Decimal
from typing import ClassVar, TypeVar

from pydantic import BaseModel
from temporalio import workflow

from workflows.operator import await_decision, query_problem, record, review_problem
from workflows.settling import SettlesByProvider
from workflows.status_query import jittered

with workflow.unsafe.imports_passed_through():
    from tempay.domain import (
        OperatorAction,
        RefundObservation,
        RefundOrder,
        RefundView,
        ReviewDecision,
        ReviewResolution,
        TransactionStatus,
        TransferObservation,
        WithdrawalOrder,
        WithdrawalView,
        format_amount,
    )

PayoutOrderT = TypeVar("PayoutOrderT", bound=RefundOrder | WithdrawalOrder)
PayoutViewT = TypeVar("PayoutViewT", bound=RefundView | WithdrawalView)
PayoutObservationT = TypeVar("PayoutObservationT", bound=RefundObservation | TransferObservation)


class SettlesPayout(SettlesByProvider[PayoutOrderT, PayoutViewT, PayoutObservationT]):
    MOVED: ClassVar[str]  # "refunded", "paid out": for messages

    # ---- what each kind says ---------------------------------------------------------

    @property
    @abstractmethod
    def _id(self) -> str:
        """This refund's or withdrawal's id."""

    @abstractmethod
    def _id_of(self, observation: PayoutObservationT) -> str:
        """The refund or withdrawal id `observation` is about."""

    @property
    @abstractmethod
    def _what(self) -> str:
        """E.g. "refund RF1", for messages."""

    @abstractmethod
    def _learn_provider_no(self, provider_no: str) -> None:
        """Keep the provider's own id for this transaction, first seen now."""

    @abstractmethod
    def _record_moved(self, amount: Decimal | None, currency: str | None) -> None:
        """Keep the amount the provider reports moved."""

    def _failure(self, observation: PayoutObservationT) -> str:
        """Why the provider says it failed."""
        return f"the provider reports the {self.NOUN} failed"

    def _unconfirmed(self, observation: PayoutObservationT) -> bool:
        """True when a success must be confirmed before it counts (and that is arranged)."""
        return False

    async def _decided(self) -> None:
        """Called when an operator's decision ended a review."""

    # ---- operator actions (validated updates: a refused one leaves no trace) ----------

    @workflow.update
    async def force_status_query(self, action: OperatorAction) -> BaseModel:
        """Ask the provider now, instead of at the next scheduled query."""
        record(self._view, "status_query", action)
        done = self._queries_answered
        self._query_now = True
        self._publish()
        await workflow.wait_condition(lambda: self._queries_answered > done or self._terminal)
        return self._view

    @force_status_query.validator
    def _can_query(self, action: OperatorAction) -> None:
        query_problem(self._what, self._status)

    @workflow.update
    async def resolve_review(self, resolution: ReviewResolution) -> BaseModel:
        """Decide a NEEDS_REVIEW transaction: accept what the provider reported, or fail it."""
        record(self._view, f"resolve:{resolution.decision}", resolution)
        if resolution.decision is ReviewDecision.ACCEPT:
            self._settle(TransactionStatus.SUCCEEDED, "operator")
        else:
            self._settle(
                TransactionStatus.FAILED,
                "operator",
                f"failed by {resolution.operator}: {resolution.reason}",
            )
        return self._view

    @resolve_review.validator
    def _can_resolve(self, resolution: ReviewResolution) -> None:
        review_problem(self._what, self._status, resolution)

    # ---- settling --------------------------------------------------------------------

    async def _await_outcome(self) -> None:
        timing = self._order.timing
        delay = timing.first_status_query_delay
        while True:
            self._drain_inbox()
            if self._terminal:
                return
            if self._query_now:
                self._query_now = False
                await self._status_query()
                continue
            wait = jittered(delay)
            self._view.next_status_query_at = workflow.now() + wait
            self._publish()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._query_now,
                    timeout=wait,
                    timeout_summary="next status query",
                )
                continue
            except TimeoutError:
                pass
            await self._status_query()
            delay = min(delay * 2, timing.status_query_backoff_cap)

    def _take(self, observation: PayoutObservationT) -> None:
        if self._duplicate(observation.notification_id):
            return
        if self._id_of(observation) != self._id:
            workflow.logger.error(
                "observation for %s %s ignored by %s",
                self.NOUN,
                self._id_of(observation),
                self._order.workflow_id,
            )
            return
        provider_no = self._provider_no(observation)
        if self._known_provider_no is None and provider_no:
            self._learn_provider_no(provider_no)
        state, source = str(observation.state), observation.source
        if self._terminal:
            if state != "PENDING" and not self._agrees(state):
                workflow.logger.error(
                    "%s is %s; the provider now reports %s (%s): nothing changes",
                    self._what,
                    self._status,
                    state,
                    source,
                )
            self._publish()  # out of order or duplicate: nothing changes
            return
        if state == "SUCCEEDED" and not self._unconfirmed(observation):
            amount, currency = observation.amount, observation.currency
            self._record_moved(amount, currency)
            order = self._order
            if (amount, currency) != (order.amount, order.currency):
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    source,
                    f"{self.MOVED} {amount} {currency}, {self.NOUN} is "
                    f"{format_amount(order.amount, order.currency)} {order.currency}",
                )
            else:
                self._settle(TransactionStatus.SUCCEEDED, source)
        elif state == "FAILED":
            self._settle(TransactionStatus.FAILED, source, self._failure(observation))
        else:
            self._publish()

    def _agrees(self, state: str) -> bool:
        if state == "SUCCEEDED":
            return self._status in (TransactionStatus.SUCCEEDED, TransactionStatus.NEEDS_REVIEW)
        return self._status is TransactionStatus.FAILED

    async def _finish(self) -> None:
        """Deliver the merchant events; in NEEDS_REVIEW, wait for an operator's decision."""
        await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        if self._status is TransactionStatus.NEEDS_REVIEW:
            await await_decision(lambda: self._status, self._order.timing.review_window)
            if self._status is not TransactionStatus.NEEDS_REVIEW:
                await self._decided()
                await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        await self._book_written()
