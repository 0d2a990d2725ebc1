"""RefundWorkflow: one refund of a paid payment, from the provider request to settlement.

It is started by the payment's workflow (a child, `refund-{refund_id}`) only after the payment
reserved the amount in its refund ledger, so refunds of one payment never exceed what was
paid, however many arrive at once. The refund tells its payment how it goes (submitted,
then settled); a FAILED refund gives its amount back to the payment's refundable balance.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.merchant import MerchantOutbox, merchant_lines
from workflows.operator import await_decision, operator_lines, query_problem, record, review_problem
from workflows.status_query import ACTIVITY_TIMEOUT, NoAnswer, jittered, query_while_listening

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import (
        OperatorAction,
        ProviderRefundState,
        RefundObservation,
        RefundOrder,
        RefundProgress,
        RefundView,
        ReviewDecision,
        ReviewResolution,
        TransactionStatus,
        format_amount,
    )

# The provider is idempotent by refund id: a call whose answer was lost is simply repeated.
CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=["ProviderRejected", "UnknownProvider"],
)
# How long to keep asking before deciding from a status query what happened.
CREATE_DEADLINE = timedelta(hours=1)
OUTCOME_QUERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=["ProviderRejected", "UnknownProvider"],
)
REFUSED = ("ProviderRejected", "UnknownProvider")


def _error_type(exc: ActivityError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


@workflow.defn
class RefundWorkflow:
    @workflow.init
    def __init__(self, order: RefundOrder) -> None:
        self._order = order
        self._status = TransactionStatus.PENDING
        self._inbox: list[RefundObservation] = []
        self._seen_notifications: set[str] = set()
        self._query_now = False  # an operator asked for a status query now
        self._queries_answered = 0  # status queries finished (answered or not)
        # A success reported without its amount (Alipay's refund notices carry none) is
        # confirmed by a status query, which does.
        self._confirm = False
        self._view = RefundView(
            workflow_id=order.workflow_id,
            refund_id=order.refund_id,
            order_id=order.order_id,
            provider=order.provider,
            status=self._status,
            amount=order.amount,
            currency=order.currency,
            reason=order.reason,
        )
        self._merchant = MerchantOutbox(order.timing.merchant_retry_interval, self._publish)

    # ---- interface -------------------------------------------------------------------

    @workflow.signal
    def notify(self, observation: RefundObservation) -> None:
        """A verified refund notification, delivered by the webhook service."""
        self._inbox.append(observation)

    @workflow.query
    def details(self) -> RefundView:
        return self._view

    # ---- operator actions (validated updates: a refused one leaves no trace) ----------

    @workflow.update
    async def force_status_query(self, action: OperatorAction) -> RefundView:
        """Ask the provider now, instead of at the next scheduled query."""
        record(self._view, "status_query", action)
        done = self._queries_answered
        self._query_now = True
        self._publish()
        await workflow.wait_condition(lambda: self._queries_answered > done or self._terminal)
        return self._view

    @force_status_query.validator
    def _can_query(self, action: OperatorAction) -> None:
        query_problem(f"refund {self._order.refund_id}", self._status)

    @workflow.update
    async def resolve_review(self, resolution: ReviewResolution) -> RefundView:
        """Decide a NEEDS_REVIEW refund: accept what the provider reported, or fail it."""
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
        review_problem(f"refund {self._order.refund_id}", self._status, resolution)

    # ---- main flow -------------------------------------------------------------------

    @workflow.run
    async def run(self, order: RefundOrder) -> RefundView:
        workflow.upsert_search_attributes(
            [
                # The refunded payment's order id: one search finds a payment and its refunds.
                sa.ORDER_ID.value_set(order.order_id),
                sa.PROVIDER.value_set(order.provider),
                sa.TRANSACTION_KIND.value_set(str(self._view.kind)),
                sa.PAYMENT_STATUS.value_set(str(self._status)),
            ]
        )
        self._publish()
        if await self._submit():
            await self._tell_payment(submitted=True)
            await self._await_outcome()
        await self._tell_payment(submitted=self._view.submitted_at is not None)
        await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        if self._status is TransactionStatus.NEEDS_REVIEW:
            await await_decision(lambda: self._status, order.timing.review_window)
            if self._status is not TransactionStatus.NEEDS_REVIEW:
                await self._tell_payment(submitted=self._view.submitted_at is not None)
                await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        return self._view

    async def _submit(self) -> bool:
        """Ask the provider for the refund. False when that already ended the refund."""
        self._view.refund_requests += 1
        self._publish()
        try:
            observation = await workflow.execute_activity(
                "create_refund",
                self._order,
                result_type=RefundObservation,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                schedule_to_close_timeout=CREATE_DEADLINE,
                retry_policy=CREATE_RETRY,
                summary="create refund at provider",
            )
        except ActivityError as exc:
            self._drain_inbox()
            if self._terminal:
                return False
            if _error_type(exc) in REFUSED:
                self._settle(TransactionStatus.FAILED, "create", f"provider refused: {exc.cause}")
                return False
            # Never answered within the deadline: the provider alone knows whether it got it.
            found = await self._ask_provider()
            if self._terminal:
                return False
            if found is None:
                self._settle(
                    TransactionStatus.FAILED,
                    "status_query",
                    f"the provider never took the refund ({exc.cause}); nothing was refunded",
                )
                return False
            observation = found
        self._view.submitted_at = workflow.now()
        self._apply(observation)
        self._drain_inbox()
        return not self._terminal

    async def _ask_provider(self) -> RefundObservation | None:
        try:
            observation: RefundObservation | None = await workflow.execute_activity(
                "query_refund",
                self._order,
                result_type=RefundObservation,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=OUTCOME_QUERY_RETRY,
                task_queue=self._order.timing.status_query_task_queue,
                summary="did the refund reach the provider?",
            )
        except ActivityError as exc:
            self._drain_inbox()
            if not self._terminal:
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    "status_query",
                    f"refund outcome unknown and the provider refused the query: {exc.cause}",
                )
            return None
        return observation

    async def _await_outcome(self) -> None:
        timing = self._order.timing
        delay = timing.first_status_query_delay
        while True:
            self._drain_inbox()
            if self._terminal:
                return
            if self._confirm:
                self._confirm = False
                await self._status_query(confirming=True)
                continue
            if self._query_now:
                self._query_now = False
                await self._status_query()
                continue
            wait = jittered(delay)
            self._view.next_status_query_at = workflow.now() + wait
            self._publish()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._confirm or self._query_now,
                    timeout=wait,
                    timeout_summary="next status query",
                )
                continue
            except TimeoutError:
                pass
            await self._status_query()
            delay = min(delay * 2, timing.status_query_backoff_cap)

    async def _status_query(self, confirming: bool = False) -> None:
        """Ask the provider while still listening: a notification may settle first."""
        self._view.next_status_query_at = None
        self._view.status_queries += 1
        self._view.last_status_query_at = workflow.now()
        self._publish()
        try:
            observation: RefundObservation | None = await query_while_listening(
                "query_refund",
                self._order,
                RefundObservation,
                lambda: bool(self._inbox),
                self._take_news,
                self._order.timing.status_query_task_queue,
            )
        except NoAnswer:
            self._queries_answered += 1
            workflow.logger.warning("status query for %s did not answer", self._order.workflow_id)
            self._confirm = self._confirm or (confirming and not self._terminal)
            if self._confirm:
                await workflow.sleep(timedelta(seconds=10), summary="confirm refund again")
            return
        self._queries_answered += 1
        if observation is None:
            if not self._terminal:
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    "status_query",
                    "the provider has no record of a refund it accepted",
                )
            return
        self._apply(observation)

    async def _tell_payment(self, submitted: bool) -> None:
        """Signal the refunded payment's workflow (it holds the refund ledger)."""
        progress = RefundProgress(
            refund_id=self._order.refund_id,
            status=self._status,
            submitted=submitted,
            fail_reason=self._view.review_reason,
            settled_at=self._view.settled_at,
        )
        payment = workflow.get_external_workflow_handle(self._order.payment_workflow_id)
        try:
            await payment.signal("refund_progress", progress)
        except FailureError as exc:
            # The payment's workflow is gone (terminated by hand): its ledger is out of date.
            workflow.logger.error(
                "could not tell %s that refund %s is %s: %s",
                self._order.payment_workflow_id,
                self._order.refund_id,
                self._status,
                exc,
            )

    # ---- settlement ------------------------------------------------------------------

    def _take_news(self) -> bool:
        """Apply what arrived; True when that settled the refund."""
        self._drain_inbox()
        return self._terminal

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for observation in inbox:
            self._apply(observation)

    def _apply(self, observation: RefundObservation) -> None:
        """The only place an observation changes the status: settles at most once."""
        if observation.notification_id is not None:
            if observation.notification_id in self._seen_notifications:
                self._view.duplicate_notifications += 1
                self._publish()
                return
            self._seen_notifications.add(observation.notification_id)
            self._view.notifications_received += 1
        if observation.refund_id != self._order.refund_id:
            workflow.logger.error(
                "observation for refund %s ignored by %s",
                observation.refund_id,
                self._order.workflow_id,
            )
            return
        if self._view.provider_refund_no is None and observation.provider_refund_no:
            self._view.provider_refund_no = observation.provider_refund_no
        state = observation.state
        if self._terminal:
            if state is not ProviderRefundState.PENDING and not self._agrees(observation):
                workflow.logger.error(
                    "refund %s is %s; the provider now reports %s (%s): nothing changes",
                    self._order.refund_id,
                    self._status,
                    state,
                    observation.source,
                )
            self._publish()
            return
        source = observation.source
        if state is ProviderRefundState.SUCCEEDED and observation.amount is None:
            if source == "status_query":
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    source,
                    "the provider reports the refund succeeded but not its amount",
                )
            else:
                self._confirm = True  # how much went back is asked, not assumed
                self._publish()
            return
        if state is ProviderRefundState.SUCCEEDED:
            self._view.refunded_amount = observation.amount
            self._view.refunded_currency = observation.currency
            if (observation.amount, observation.currency) != (
                self._order.amount,
                self._order.currency,
            ):
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    source,
                    f"refunded {observation.amount} {observation.currency}, refund is "
                    f"{format_amount(self._order.amount, self._order.currency)} "
                    f"{self._order.currency}",
                )
            else:
                self._settle(TransactionStatus.SUCCEEDED, source)
        elif state is ProviderRefundState.FAILED:
            self._settle(TransactionStatus.FAILED, source, "the provider reports the refund failed")
        else:
            self._publish()

    def _agrees(self, observation: RefundObservation) -> bool:
        if observation.state is ProviderRefundState.SUCCEEDED:
            return self._status in (TransactionStatus.SUCCEEDED, TransactionStatus.NEEDS_REVIEW)
        return self._status is TransactionStatus.FAILED

    def _settle(self, status: TransactionStatus, by: str, reason: str | None = None) -> None:
        self._view.settled_at = workflow.now()
        self._view.settled_by = by
        self._view.next_status_query_at = None
        if status is not TransactionStatus.SUCCEEDED:
            self._view.review_reason = reason
        self._status = status
        self._view.status = status
        workflow.upsert_search_attributes([sa.PAYMENT_STATUS.value_set(str(status))])
        self._publish()
        self._merchant.send(self._view)

    @property
    def _terminal(self) -> bool:
        return self._status.is_terminal

    def _publish(self) -> None:
        """Current details for the Temporal UI."""
        v = self._view
        lines = [
            f"**refund {v.refund_id}** of order {v.order_id}: "
            f"{format_amount(v.amount, v.currency)} {v.currency} via {v.provider}",
            f"- status: **{v.status}**" + (f" ({v.review_reason})" if v.review_reason else ""),
            "- refund: "
            + (
                f"submitted at {v.submitted_at:%Y-%m-%d %H:%M:%S} UTC"
                if v.submitted_at
                else "not yet submitted"
            )
            + (f" ({v.provider_refund_no})" if v.provider_refund_no else "")
            + f", {v.refund_requests} request(s)",
            f"- notifications received: {v.notifications_received}"
            f" (duplicates: {v.duplicate_notifications})",
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
