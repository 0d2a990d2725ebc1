"""WithdrawalWorkflow: one payout, from the provider transfer to exactly-once settlement.

Money must never leave twice. A transfer call is made once; when its outcome is unknown (the
request may have reached the provider, or the activity itself timed out), the workflow asks
the provider by withdrawal id and creates the transfer again only if the provider never got
it. Then it waits for the transfer notification, with status queries when it is late.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.merchant import MerchantOutbox, merchant_lines
from workflows.operator import await_decision, operator_lines, query_problem, record, review_problem
from workflows.status_query import ACTIVITY_TIMEOUT, NoAnswer, jittered, query_while_listening

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import (
        OperatorAction,
        ProviderTransferState,
        ReviewDecision,
        ReviewResolution,
        TransactionStatus,
        TransferObservation,
        WithdrawalOrder,
        WithdrawalSubmitted,
        WithdrawalView,
        format_amount,
    )

# One attempt only: every retry of a transfer is decided here, after asking the provider.
CREATE_ONCE = RetryPolicy(maximum_attempts=1)
# A create that never reached the provider is tried again after this, doubling to the cap.
RESEND_DELAY = timedelta(seconds=1)
RESEND_DELAY_CAP = timedelta(minutes=1)
# After an unknown outcome nothing can go on until the provider answers: ask until it does.
OUTCOME_QUERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=["ProviderRejected", "UnknownProvider"],
)

# create_transfer failures (ApplicationError types, see activities/transfers.py).
NOT_SENT = "ProviderUnreachable"
REFUSED = ("ProviderRejected", "UnknownProvider")


def _error_type(exc: ActivityError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


@workflow.defn
class WithdrawalWorkflow:
    @workflow.init
    def __init__(self, order: WithdrawalOrder) -> None:
        self._order = order
        self._status = TransactionStatus.PENDING
        self._submitted = False
        self._inbox: list[TransferObservation] = []
        self._seen_notifications: set[str] = set()
        self._query_now = False  # an operator asked for a status query now
        self._queries_answered = 0  # status queries finished (answered or not)
        self._view = WithdrawalView(
            workflow_id=order.workflow_id,
            withdrawal_id=order.withdrawal_id,
            provider=order.provider,
            status=self._status,
            amount=order.amount,
            currency=order.currency,
            payee_account=order.payee_account,
            payee_name=order.payee_name,
        )
        self._merchant = MerchantOutbox(order.timing.merchant_retry_interval, self._publish)

    # ---- interface -------------------------------------------------------------------

    @workflow.signal
    def notify(self, observation: TransferObservation) -> None:
        """A verified transfer notification, delivered by the webhook service."""
        self._inbox.append(observation)

    @workflow.update
    async def submitted(self, order: WithdrawalOrder) -> WithdrawalSubmitted:
        """Returns once the provider holds the transfer (or the withdrawal has ended)."""
        await workflow.wait_condition(lambda: self._submitted or self._terminal)
        return WithdrawalSubmitted(
            workflow_id=self._order.workflow_id,
            withdrawal_id=self._order.withdrawal_id,
            status=self._status,
            provider_transfer_no=self._view.provider_transfer_no,
            fail_reason=self._view.review_reason,
        )

    @submitted.validator
    def _same_terms(self, order: WithdrawalOrder) -> None:
        # The withdrawal id is the idempotency key: the same id must mean the same payout.
        mine, theirs = self._order, order
        terms = ("amount", "currency", "payee_account", "payee_name", "provider")
        if any(getattr(mine, term) != getattr(theirs, term) for term in terms):
            raise ValueError(
                f"withdrawal {mine.withdrawal_id} already exists with different terms: "
                f"{format_amount(mine.amount, mine.currency)} {mine.currency} "
                f"to {mine.payee_account} via {mine.provider}"
            )

    @workflow.query
    def details(self) -> WithdrawalView:
        return self._view

    # ---- operator actions (validated updates: a refused one leaves no trace) ----------

    @workflow.update
    async def force_status_query(self, action: OperatorAction) -> WithdrawalView:
        """Ask the provider now, instead of at the next scheduled query."""
        record(self._view, "status_query", action)
        done = self._queries_answered
        self._query_now = True
        self._publish()
        await workflow.wait_condition(lambda: self._queries_answered > done or self._terminal)
        return self._view

    @force_status_query.validator
    def _can_query(self, action: OperatorAction) -> None:
        query_problem(f"withdrawal {self._order.withdrawal_id}", self._status)

    @workflow.update
    async def resolve_review(self, resolution: ReviewResolution) -> WithdrawalView:
        """Decide a NEEDS_REVIEW withdrawal: accept what the provider reported, or fail it."""
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
        review_problem(f"withdrawal {self._order.withdrawal_id}", self._status, resolution)

    # ---- main flow -------------------------------------------------------------------

    @workflow.run
    async def run(self, order: WithdrawalOrder) -> WithdrawalView:
        workflow.upsert_search_attributes(
            [
                sa.ORDER_ID.value_set(order.withdrawal_id),
                sa.PROVIDER.value_set(order.provider),
                sa.TRANSACTION_KIND.value_set(str(self._view.kind)),
                sa.PAYMENT_STATUS.value_set(str(self._status)),
            ]
        )
        self._publish()
        if await self._submit():
            await self._await_outcome()
        await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        if self._status is TransactionStatus.NEEDS_REVIEW:
            await await_decision(lambda: self._status, order.timing.review_window)
            await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        return self._view

    async def _submit(self) -> bool:
        """Hand the transfer to the provider exactly once. False when the withdrawal ended."""
        resend_delay = RESEND_DELAY
        while True:
            self._view.transfer_requests += 1
            self._publish()
            try:
                observation: TransferObservation | None = await workflow.execute_activity(
                    "create_transfer",
                    self._order,
                    result_type=TransferObservation,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=CREATE_ONCE,
                    summary="create transfer at provider",
                )
            except ActivityError as exc:
                kind = _error_type(exc)
                if kind in REFUSED:
                    self._drain_inbox()
                    if not self._terminal:
                        self._settle(
                            TransactionStatus.FAILED, "create", f"provider refused: {exc.cause}"
                        )
                    return False
                if kind == NOT_SENT:
                    # Nothing reached the provider: creating again cannot pay twice.
                    workflow.logger.warning(
                        "transfer %s not sent (%s); again in %s",
                        self._order.withdrawal_id,
                        exc.cause,
                        resend_delay,
                    )
                    await workflow.sleep(resend_delay, summary="provider unreachable")
                    resend_delay = min(resend_delay * 2, RESEND_DELAY_CAP)
                    continue
                # The outcome is unknown (an answer lost, or the activity timed out): the
                # money may have left. Ask before anything else.
                observation = await self._check_outcome(exc)
                if self._terminal:
                    return False
                if observation is None:
                    if self._inbox:
                        break  # the provider notified us about it meanwhile
                    workflow.logger.warning(
                        "transfer %s never reached the provider; creating it again",
                        self._order.withdrawal_id,
                    )
                    continue
            break
        self._submitted = True
        self._view.submitted_at = workflow.now()
        if observation is not None:
            self._apply(observation)
        self._drain_inbox()
        self._publish()
        return not self._terminal

    async def _check_outcome(self, failure: ActivityError) -> TransferObservation | None:
        workflow.logger.warning(
            "transfer %s outcome unknown (%s); asking the provider",
            self._order.withdrawal_id,
            failure.cause or failure,
        )
        self._view.outcome_checks += 1
        self._publish()
        try:
            observation: TransferObservation | None = await workflow.execute_activity(
                "query_transfer",
                self._order,
                result_type=TransferObservation,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=OUTCOME_QUERY_RETRY,
                task_queue=self._order.timing.status_query_task_queue,
                summary="did the transfer reach the provider?",
            )
        except ActivityError as exc:
            self._drain_inbox()
            if not self._terminal:
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    "status_query",
                    f"transfer outcome unknown and the provider refused the query: {exc.cause}",
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
            observation: TransferObservation | None = await query_while_listening(
                "query_transfer",
                self._order,
                TransferObservation,
                lambda: bool(self._inbox),
                self._take_news,
                self._order.timing.status_query_task_queue,
            )
        except NoAnswer:
            self._queries_answered += 1
            workflow.logger.warning("status query for %s did not answer", self._order.withdrawal_id)
            return
        self._queries_answered += 1
        if observation is None:
            if not self._terminal:
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    "status_query",
                    "the provider has no record of a transfer it accepted",
                )
            return
        self._apply(observation)

    # ---- settlement ------------------------------------------------------------------

    def _take_news(self) -> bool:
        """Apply what arrived; True when that settled the transaction."""
        self._drain_inbox()
        return self._terminal

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for observation in inbox:
            self._apply(observation)

    def _apply(self, observation: TransferObservation) -> None:
        """The only place an observation changes the status: settles at most once."""
        if observation.notification_id is not None:
            if observation.notification_id in self._seen_notifications:
                self._view.duplicate_notifications += 1
                self._publish()
                return
            self._seen_notifications.add(observation.notification_id)
            self._view.notifications_received += 1
        if observation.withdrawal_id != self._order.withdrawal_id:
            workflow.logger.error(
                "observation for %s ignored by %s",
                observation.withdrawal_id,
                self._order.workflow_id,
            )
            return
        if self._view.provider_transfer_no is None and observation.provider_transfer_no:
            self._view.provider_transfer_no = observation.provider_transfer_no
        state = observation.state
        if self._terminal:
            if state is not ProviderTransferState.PENDING and not self._agrees(observation):
                workflow.logger.error(
                    "withdrawal %s is %s; the provider now reports %s (%s): nothing changes",
                    self._order.withdrawal_id,
                    self._status,
                    state,
                    observation.source,
                )
            self._publish()  # out of order or duplicate: nothing changes
            return
        source = observation.source
        if state is ProviderTransferState.SUCCEEDED:
            self._view.paid_amount = observation.amount
            self._view.paid_currency = observation.currency
            if (observation.amount, observation.currency) != (
                self._order.amount,
                self._order.currency,
            ):
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    source,
                    f"paid out {observation.amount} {observation.currency}, withdrawal is "
                    f"{format_amount(self._order.amount, self._order.currency)} "
                    f"{self._order.currency}",
                )
            else:
                self._settle(TransactionStatus.SUCCEEDED, source)
        elif state is ProviderTransferState.FAILED:
            self._settle(
                TransactionStatus.FAILED, source, observation.fail_reason or "transfer failed"
            )
        else:
            self._publish()

    def _agrees(self, observation: TransferObservation) -> bool:
        if observation.state is ProviderTransferState.SUCCEEDED:
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
            f"**withdrawal {v.withdrawal_id}**: {format_amount(v.amount, v.currency)} "
            f"{v.currency} to {v.payee_account} via {v.provider}",
            f"- status: **{v.status}**" + (f" ({v.review_reason})" if v.review_reason else ""),
            "- transfer: "
            + (
                f"submitted at {v.submitted_at:%Y-%m-%d %H:%M:%S} UTC"
                if v.submitted_at
                else "not yet submitted"
            )
            + (f" ({v.provider_transfer_no})" if v.provider_transfer_no else "")
            + f", {v.transfer_requests} request(s), {v.outcome_checks} outcome check(s)",
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
