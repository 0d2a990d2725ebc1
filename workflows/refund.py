"""RefundWorkflow: one refund of a paid payment, from the provider request to settlement.

It is started by the payment's workflow (a child, `refund-{refund_id}`) only after the payment
reserved the amount in its refund ledger, so refunds of one payment never exceed what was
paid, however many arrive at once. The refund tells its payment how it goes (submitted,
then settled); a FAILED refund gives its amount back to the payment's refundable balance.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.payout import SettlesPayout
from workflows.states import PAYOUT
from workflows.status_query import ACTIVITY_TIMEOUT, status_query

with workflow.unsafe.imports_passed_through():
    from activities.refunds import RefundActivities
    from tempay import search_attributes as sa
    from tempay.domain import (
        REFUND_REVISION,
        RefundObservation,
        RefundOrder,
        RefundProgress,
        RefundView,
        TransactionStatus,
        format_amount,
    )
    from tempay.errors import REFUSED_BY_PROVIDER

# The provider is idempotent by refund id: a call whose answer was lost is simply repeated.
CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=list(REFUSED_BY_PROVIDER),
)
# How long to keep asking before deciding from a status query what happened.
CREATE_DEADLINE = timedelta(hours=1)
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
class RefundWorkflow(SettlesPayout[RefundOrder, RefundView, RefundObservation]):
    NOUN = "refund"
    MOVED = "refunded"

    @workflow.init
    def __init__(self, order: RefundOrder) -> None:
        view = RefundView(
            workflow_id=order.workflow_id,
            refund_id=order.refund_id,
            order_id=order.order_id,
            provider=order.provider,
            status=PAYOUT.initial,
            amount=order.amount,
            currency=order.currency,
            reason=order.reason,
        )
        self._start_settling(order, view, writes_book=order.revision >= REFUND_REVISION)

    # ---- interface -------------------------------------------------------------------

    @workflow.signal
    def notify(self, observation: RefundObservation) -> None:
        """A verified refund notification, delivered by the webhook service."""
        self._inbox.append(observation)

    @workflow.query
    def details(self) -> RefundView:
        return self._view

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
        self._begin_book()
        if await self._submit():
            await self._tell_payment(submitted=True)
            await self._await_outcome()
        await self._tell_payment(submitted=self._view.submitted_at is not None)
        await self._finish()
        return self._view

    async def _decided(self) -> None:
        await self._tell_payment(submitted=self._view.submitted_at is not None)

    async def _submit(self) -> bool:
        """Ask the provider for the refund. False when that already ended the refund."""
        self._view.refund_requests += 1
        self._publish()
        try:
            observation = await workflow.execute_activity_method(
                RefundActivities.create_refund,
                self._order,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                schedule_to_close_timeout=CREATE_DEADLINE,
                retry_policy=CREATE_RETRY,
                summary="create refund at provider",
            )
        except ActivityError as exc:
            self._drain_inbox()
            if self._terminal:
                return False
            if _error_type(exc) in REFUSED_BY_PROVIDER:
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
            observation = await workflow.execute_activity_method(
                RefundActivities.query_refund,
                self._order,
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

    @property
    def _id(self) -> str:
        return self._order.refund_id

    def _id_of(self, observation: RefundObservation) -> str:
        return observation.refund_id

    def _provider_no(self, observation: RefundObservation) -> str | None:
        return observation.provider_refund_no

    @property
    def _known_provider_no(self) -> str | None:
        return self._view.provider_refund_no

    def _learn_provider_no(self, provider_no: str) -> None:
        self._view.provider_refund_no = provider_no

    def _record_moved(self, amount: Decimal | None, currency: str | None) -> None:
        self._view.refunded_amount = amount
        self._view.refunded_currency = currency

    def _query_provider(self) -> Awaitable[RefundObservation | None]:
        return status_query(
            RefundActivities.query_refund, self._order, self._order.timing.status_query_task_queue
        )

    def _unconfirmed(self, observation: RefundObservation) -> bool:
        """A success without its amount (Alipay's refund notices) is confirmed by a status
        query, which says how much; if even that does not, a person decides."""
        if observation.amount is not None:
            return False
        if observation.source == "status_query":
            self._settle(
                TransactionStatus.NEEDS_REVIEW,
                "status_query",
                "the provider reports the refund succeeded but not its amount",
            )
        else:
            self._query_now = True  # how much went back is asked, not assumed
            self._publish()
        return True

    @property
    def _what(self) -> str:
        return f"refund {self._order.refund_id}"

    def _headline(self) -> list[str]:
        v = self._view
        return [
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
        ]
