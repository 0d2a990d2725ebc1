"""The settling core every transaction kind shares (payments, refunds, withdrawals): take
the provider's observations (notifications, status answers, a create's or a close's answer)
from one inbox, each through the trust boundary and then the kind's rules, so the
transaction settles exactly once; ask the provider while still listening; change the
status only as the state machine allows; tell the merchant; show the details in the UI.

Two functions decide everything: `_apply` refuses what the trust boundary
(workflows/trust.py) refuses and hands the rest to the kind's `_take`; `_set_status` asks
workflows/states.py before any status changes. What varies by kind is typed: the order,
view and observation types (the class's parameters) and the methods marked abstract below.
Refunds and withdrawals add their common rules in workflows/payout.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import ClassVar, Generic, TypeVar

from temporalio import workflow

from workflows.book import BookWriter, book_lines
from workflows.merchant import MerchantOutbox, merchant_lines
from workflows.metrics import count_settlement
from workflows.operator import operator_lines
from workflows.states import next_status
from workflows.status_query import NoAnswer, query_while_listening
from workflows.trust import refusal_lines, refuse, untrusted

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import (
        PaymentObservation,
        PaymentOrder,
        PaymentView,
        RefundObservation,
        RefundOrder,
        RefundView,
        TransactionStatus,
        TransferObservation,
        WithdrawalOrder,
        WithdrawalView,
    )

OrderT = TypeVar("OrderT", bound=PaymentOrder | RefundOrder | WithdrawalOrder)
ViewT = TypeVar("ViewT", bound=PaymentView | RefundView | WithdrawalView)
ObservationT = TypeVar(
    "ObservationT", bound=PaymentObservation | RefundObservation | TransferObservation
)


class SettlesByProvider(ABC, Generic[OrderT, ViewT, ObservationT]):
    """A workflow's `__init__` calls `_start_settling`; its `notify` signal appends to
    `_inbox`; its main flow drains the inbox (`_drain_inbox`) while it waits."""

    NOUN: ClassVar[str]  # "payment", "refund", "transfer": for messages

    _order: OrderT
    _view: ViewT
    _status: TransactionStatus
    _inbox: list[ObservationT]

    def _start_settling(
        self,
        order: OrderT,
        view: ViewT,
        *,
        local_first: bool = False,
        writes_book: bool = False,
        lean_book: bool = False,
    ) -> None:
        self._order = order
        self._view = view
        self._status = view.status
        self._inbox = []
        self._seen_notifications: set[str] = set()
        self._query_now = False  # ask the provider at once (an operator, or a confirmation)
        self._queries_answered = 0  # status queries finished, answered or not
        # The journal and the book's writes (workflows/book.py); `writes_book`: the run's
        # revision writes from its start; `lean_book`: its settlement write rides the
        # merchant delivery's local attempt (workflows/merchant.py).
        self._book = BookWriter(writes_book, workflow.info().start_time)
        self._merchant = MerchantOutbox(
            order.timing.merchant_retry_interval,
            self._publish,
            local_first=local_first,
            book=self._book,
            unique_ids=writes_book,
            book_rides=lean_book and local_first,
        )

    def _begin_book(self) -> None:
        """The journal's first entry, at the run's start; written at once unless the
        transaction is only CREATED (a payment is written once the provider has it)."""
        self._book.begin(self._view.status)
        if self._status is not TransactionStatus.CREATED:
            self._book.write(self._view)

    async def _book_written(self) -> None:
        """Wait until the book holds the last state: a run never ends before it does."""
        self._book.flush()
        if not self._book.done:
            await workflow.wait_condition(lambda: self._book.done)

    # ---- what each kind says ---------------------------------------------------------

    @abstractmethod
    def _provider_no(self, observation: ObservationT) -> str | None:
        """The provider's own id for the transaction that `observation` names, if any."""

    @property
    @abstractmethod
    def _known_provider_no(self) -> str | None:
        """The provider's own id for this transaction, once known."""

    @abstractmethod
    def _take(self, observation: ObservationT) -> None:
        """A trusted observation: drop it if it is a duplicate (`_duplicate`) or old news,
        else settle (`_settle`) as the kind's rules say."""

    @abstractmethod
    def _query_provider(self) -> Awaitable[ObservationT | None]:
        """The status query for this transaction (workflows/status_query.status_query);
        None: the provider has no record of it."""

    @abstractmethod
    def _headline(self) -> list[str]:
        """The first lines of the current details."""

    def _waiting_lines(self) -> list[str]:
        """Details shown before the settlement line."""
        return []

    def _closing_lines(self) -> list[str]:
        """Details shown last."""
        return []

    def _settling(self, status: TransactionStatus) -> None:
        """Called by `_settle` before the status changes."""

    def _settled(self) -> None:
        """Called by `_settle` after the status changed, before the merchant is told."""

    def _tells_merchant(self) -> bool:
        """Whether a settlement raises a merchant event."""
        return True

    # ---- observations ----------------------------------------------------------------

    def _apply(self, observation: ObservationT) -> None:
        """The only way an observation reaches the transaction: refused at the trust
        boundary, or taken by the kind's rules, which settle at most once."""
        problem = self._untrusted(observation)
        if problem is not None:
            refuse(self._view, self._view.kind, *problem, observation.source)
            self._publish()
            return
        self._take(observation)

    def _untrusted(self, observation: ObservationT) -> tuple[str, str] | None:
        return untrusted(
            self._order.provider,
            self._known_provider_no,
            observation.provider,
            self._provider_no(observation),
        )

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

    def _take_news(self) -> bool:
        """Apply what arrived; True when that settled the transaction."""
        self._drain_inbox()
        return self._terminal

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for observation in inbox:
            self._apply(observation)

    async def _status_query(self) -> None:
        """Ask the provider while still listening: a notification may settle first."""
        self._book.flush()  # a transaction still unsettled when queried is in the book
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

    # ---- status ----------------------------------------------------------------------

    def _settle(self, status: TransactionStatus, by: str, reason: str | None = None) -> None:
        """Settle (or decide a review): who and why, the status, the merchant event."""
        view = self._view
        view.settled_at = workflow.now()
        view.settled_by = by
        view.next_status_query_at = None  # settled: nothing more is asked
        if status is not TransactionStatus.SUCCEEDED:
            view.review_reason = reason
        self._settling(status)
        self._set_status(status, by, reason)
        self._settled()
        if self._tells_merchant():
            self._merchant.send(view)
        count_settlement(view.kind, status)

    def _set_status(
        self,
        status: TransactionStatus,
        by: str = "workflow",
        reason: str | None = None,
        hold_book: bool = False,
    ) -> None:
        """The one place the status changes: only as workflows/states.py allows; every
        change is journalled and written to the book (`by`: what changed it; `hold_book`:
        written later, workflows/book.py `write`)."""
        before = self._status
        self._status = next_status(self._view.kind, self._status, status)
        self._view.status = status
        workflow.upsert_search_attributes([sa.PAYMENT_STATUS.value_set(str(status))])
        operator = None
        if by == "operator" and self._view.operator_actions:
            action = self._view.operator_actions[-1]
            operator, reason = action.operator, reason or action.reason
        self._book.change(self._view, before, status, by, operator, reason, hold=hold_book)
        self._publish()

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
        lines.extend(self._waiting_lines())
        if v.settled_by and v.settled_at:
            lines.append(f"- settled by: {v.settled_by} at {v.settled_at:%Y-%m-%d %H:%M:%S} UTC")
        lines.extend(merchant_lines(v.merchant_events))
        lines.extend(book_lines(self._book))
        lines.extend(operator_lines(v.operator_actions))
        lines.extend(self._closing_lines())
        workflow.set_current_details("\n".join(lines))
