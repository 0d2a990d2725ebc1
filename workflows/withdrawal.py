"""WithdrawalWorkflow: one payout, from the provider transfer to exactly-once settlement.

Money must never leave twice. A transfer call is made once; when its outcome is unknown (the
request may have reached the provider, or the activity itself timed out), the workflow asks
the provider by withdrawal id and creates the transfer again only if the provider never got
it. Then it waits for the transfer notification, with status queries when it is late.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.payout import SettlesPayout
from workflows.states import PAYOUT
from workflows.status_query import ACTIVITY_TIMEOUT, status_query

with workflow.unsafe.imports_passed_through():
    from activities.transfers import NOT_SENT, TransferActivities
    from tempay import search_attributes as sa
    from tempay.domain import (
        WITHDRAWAL_REVISION,
        TransactionStatus,
        TransferObservation,
        WithdrawalOrder,
        WithdrawalSubmitted,
        WithdrawalView,
        format_amount,
    )
    from tempay.errors import REFUSED_BY_PROVIDER

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
    non_retryable_error_types=list(REFUSED_BY_PROVIDER),
)


def _error_type(exc: ActivityError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


@workflow.defn
class WithdrawalWorkflow(SettlesPayout[WithdrawalOrder, WithdrawalView, TransferObservation]):
    NOUN = "transfer"
    MOVED = "paid out"

    @workflow.init
    def __init__(self, order: WithdrawalOrder) -> None:
        self._submitted = False
        view = WithdrawalView(
            workflow_id=order.workflow_id,
            withdrawal_id=order.withdrawal_id,
            provider=order.provider,
            status=PAYOUT.initial,
            amount=order.amount,
            currency=order.currency,
            payee_account=order.payee_account,
            payee_name=order.payee_name,
        )
        self._start_settling(order, view, writes_book=order.revision >= WITHDRAWAL_REVISION)

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
        self._begin_book()
        if await self._submit():
            await self._await_outcome()
        await self._finish()
        return self._view

    async def _submit(self) -> bool:
        """Hand the transfer to the provider exactly once. False when the withdrawal ended."""
        resend_delay = RESEND_DELAY
        while True:
            self._view.transfer_requests += 1
            self._publish()
            try:
                observation: TransferObservation | None = await workflow.execute_activity_method(
                    TransferActivities.create_transfer,
                    self._order,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=CREATE_ONCE,
                    summary="create transfer at provider",
                )
            except ActivityError as exc:
                kind = _error_type(exc)
                if kind in REFUSED_BY_PROVIDER:
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
                    if any(self._untrusted(news) is None for news in self._inbox):
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
            observation = await workflow.execute_activity_method(
                TransferActivities.query_transfer,
                self._order,
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

    # ---- settlement ------------------------------------------------------------------

    @property
    def _id(self) -> str:
        return self._order.withdrawal_id

    def _id_of(self, observation: TransferObservation) -> str:
        return observation.withdrawal_id

    def _provider_no(self, observation: TransferObservation) -> str | None:
        return observation.provider_transfer_no

    @property
    def _known_provider_no(self) -> str | None:
        return self._view.provider_transfer_no

    def _learn_provider_no(self, provider_no: str) -> None:
        self._view.provider_transfer_no = provider_no

    def _record_moved(self, amount: Decimal | None, currency: str | None) -> None:
        self._view.paid_amount = amount
        self._view.paid_currency = currency

    def _query_provider(self) -> Awaitable[TransferObservation | None]:
        return status_query(
            TransferActivities.query_transfer,
            self._order,
            self._order.timing.status_query_task_queue,
        )

    def _failure(self, observation: TransferObservation) -> str:
        return observation.fail_reason or "transfer failed"

    @property
    def _what(self) -> str:
        return f"withdrawal {self._order.withdrawal_id}"

    def _headline(self) -> list[str]:
        v = self._view
        return [
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
        ]
