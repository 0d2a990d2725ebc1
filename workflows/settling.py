"""What refunds and withdrawals share once the provider holds them: settle exactly once, by
the provider's notification or, when it is late, by status queries on a backing-off,
jittered schedule; tell the merchant; let operators force a query or decide a review.

A subclass sets `_order` (with `timing` and `workflow_id`), `_view`, `_status`, calls
`_start_settling()` in its init, defines the typed `notify` signal and `details` query, and
implements `_apply`, `_what` and `_headline`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, ClassVar

from pydantic import BaseModel
from temporalio import workflow

from workflows.merchant import MerchantOutbox, merchant_lines
from workflows.metrics import count_settlement
from workflows.operator import (
    await_decision,
    operator_lines,
    query_problem,
    record,
    review_problem,
)
from workflows.states import next_status
from workflows.status_query import NoAnswer, jittered, query_while_listening
from workflows.trust import refusal_lines, refuse, untrusted

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import (
        OperatorAction,
        ReviewDecision,
        ReviewResolution,
        TransactionStatus,
        format_amount,
    )


class SettlesByProvider:
    NOUN: ClassVar[str]  # "refund", "transfer"
    ID_FIELD: ClassVar[str]  # the observation's (and order's) id field: "refund_id", ...
    PROVIDER_NO_FIELD: ClassVar[str]  # the provider's own number, in observation and view
    MOVED_FIELDS: ClassVar[tuple[str, str]]  # the view's fields for the amount that moved
    MOVED: ClassVar[str]  # "refunded", "paid out"

    _order: Any
    _view: Any
    _status: TransactionStatus

    def _start_settling(self) -> None:
        self._inbox: list[Any] = []
        self._seen_notifications: set[str] = set()
        self._query_now = False  # ask the provider at once (an operator, or a confirmation)
        self._queries_answered = 0  # status queries finished, answered or not
        self._merchant = MerchantOutbox(self._order.timing.merchant_retry_interval, self._publish)

    # ---- to implement ----------------------------------------------------------------

    @property
    def _what(self) -> str:
        """E.g. "refund RF1", for messages."""
        raise NotImplementedError

    def _headline(self) -> list[str]:
        """The first lines of the current details."""
        raise NotImplementedError

    def _query_provider(self) -> Awaitable[Any]:
        """The status query (workflows/status_query.status_query) for this transaction."""
        raise NotImplementedError

    def _failure(self, observation: Any) -> str:
        """Why the provider says it failed."""
        return f"the provider reports the {self.NOUN} failed"

    def _unconfirmed(self, observation: Any) -> bool:
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
        return self._view  # type: ignore[no-any-return]

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
        return self._view  # type: ignore[no-any-return]

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

    async def _status_query(self) -> None:
        """Ask the provider while still listening: a notification may settle first."""
        self._view.next_status_query_at = None
        self._view.status_queries += 1
        self._view.last_status_query_at = workflow.now()
        self._publish()
        try:
            observation = await query_while_listening(
                self._query_provider(), lambda: bool(self._inbox), self._take_news
            )
        except NoAnswer:
            workflow.logger.warning("status query for %s did not answer", self._order.workflow_id)
            return
        finally:
            self._queries_answered += 1
        if observation is None:
            if not self._terminal:
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    "status_query",
                    f"the provider has no record of a {self.NOUN} it accepted",
                )
            return
        self._apply(observation)

    def _untrusted(self, observation: Any) -> tuple[str, str] | None:
        return untrusted(
            self._order.provider,
            getattr(self._view, self.PROVIDER_NO_FIELD),
            observation.provider,
            getattr(observation, self.PROVIDER_NO_FIELD),
        )

    def _apply(self, observation: Any) -> None:
        """The only place an observation changes the status: settles at most once."""
        problem = self._untrusted(observation)
        if problem is not None:
            refuse(self._view, self._view.kind, *problem, observation.source)
            self._publish()
            return
        if self._duplicate(observation.notification_id):
            return
        if getattr(observation, self.ID_FIELD) != getattr(self._order, self.ID_FIELD):
            workflow.logger.error(
                "observation for %s %s ignored by %s",
                self.NOUN,
                getattr(observation, self.ID_FIELD),
                self._order.workflow_id,
            )
            return
        provider_no = getattr(observation, self.PROVIDER_NO_FIELD)
        if getattr(self._view, self.PROVIDER_NO_FIELD) is None and provider_no:
            setattr(self._view, self.PROVIDER_NO_FIELD, provider_no)
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
            setattr(self._view, self.MOVED_FIELDS[0], amount)
            setattr(self._view, self.MOVED_FIELDS[1], currency)
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

    def _take_news(self) -> bool:
        """Apply what arrived; True when that settled the transaction."""
        self._drain_inbox()
        return self._terminal

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for observation in inbox:
            self._apply(observation)

    def _duplicate(self, notification_id: str | None) -> bool:
        """Counts the notification; True (and changes nothing) when it was seen before."""
        if notification_id is None:
            return False
        if notification_id in self._seen_notifications:
            self._view.duplicate_notifications += 1
            self._publish()
            return True
        self._seen_notifications.add(notification_id)
        self._view.notifications_received += 1
        return False

    def _settle(self, status: TransactionStatus, by: str, reason: str | None = None) -> None:
        self._view.settled_at = workflow.now()
        self._view.settled_by = by
        self._view.next_status_query_at = None
        if status is not TransactionStatus.SUCCEEDED:
            self._view.review_reason = reason
        # The one place the status changes: only as workflows/states.py allows.
        self._status = next_status(self._view.kind, self._status, status)
        self._view.status = status
        workflow.upsert_search_attributes([sa.PAYMENT_STATUS.value_set(str(status))])
        self._publish()
        self._merchant.send(self._view)
        count_settlement(self._view.kind, status)

    async def _finish(self) -> None:
        """Deliver the merchant events; in NEEDS_REVIEW, wait for an operator's decision."""
        await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        if self._status is TransactionStatus.NEEDS_REVIEW:
            await await_decision(lambda: self._status, self._order.timing.review_window)
            if self._status is not TransactionStatus.NEEDS_REVIEW:
                await self._decided()
                await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)

    @property
    def _terminal(self) -> bool:
        return self._status.is_terminal

    def _publish(self) -> None:
        """Current details for the Temporal UI."""
        v = self._view
        lines = [
            *self._headline(),
            f"- notifications received: {v.notifications_received}"
            f" (duplicates: {v.duplicate_notifications})",
            *refusal_lines(v),
            f"- status queries: {v.status_queries}"
            + (f", last at {v.last_status_query_at:%H:%M:%S}" if v.last_status_query_at else ""),
        ]
        if v.next_status_query_at and not self._terminal:
            lines.append(f"- next status query: {v.next_status_query_at:%Y-%m-%d %H:%M:%S} UTC")
        if v.settled_by and v.settled_at:
            lines.append(f"- settled by: {v.settled_by} at {v.settled_at:%Y-%m-%d %H:%M:%S} UTC")
        lines.extend(merchant_lines(v.merchant_events))
        lines.extend(operator_lines(v.operator_actions))
        workflow.set_current_details("\n".join(lines))
