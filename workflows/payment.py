"""PaymentWorkflow: one payment (or recharge), from provider create to exactly-once settlement.

The path: create at the provider (`_create_at_provider`), wait for its news, a notification
or status queries (`_await_outcome`), close it unpaid at expiry (`_expire`), and take each
observation once (`_take`); then stay open for late money, refunds and operators' actions.
Settling itself (the inbox, the trust check, status changes, the UI details) is the core all
transactions share (workflows/settling.py); code only older runs take, and the gates that
choose it, are in workflows/revisions.py (docs/versioning.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

from workflows.local_first import try_locally
from workflows.operator import record
from workflows.refund import RefundWorkflow
from workflows.refund_ledger import REFUNDABLE as REFUNDABLE  # transactions/start.py uses it
from workflows.refund_ledger import RefundLedger
from workflows.revisions import (
    POLLING_REVISION,
    PaymentRevisions,
    lean_book,
    local_first,
    refuse_unknown_revision,
    writes_book,
)
from workflows.states import PAYMENT
from workflows.status_query import ACTIVITY_TIMEOUT, jittered, status_query

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from tempay.domain import (
        REFUND_REVISION,
        CheckoutInfo,
        CloseOutcome,
        CreatedPayment,
        OperatorAction,
        PaymentObservation,
        PaymentOrder,
        PaymentPoll,
        PaymentView,
        PolledPayment,
        ProviderPaymentState,
        RefundAccepted,
        RefundEntry,
        RefundOrder,
        RefundProgress,
        RefundRequest,
        ReviewDecision,
        ReviewResolution,
        TransactionStatus,
        format_amount,
        refund_workflow_id,
    )
    from tempay.errors import (
        PROVIDER_REJECTED,
        REFUND_REFUSED,
        REFUSED_BY_PROVIDER,
        UNKNOWN_PROVIDER,
    )

CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=list(REFUSED_BY_PROVIDER),
)
CLOSE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=list(REFUSED_BY_PROVIDER),
)
# The poll runs until the provider reports news or the order expires; its own retries
# (ApplicationError.next_retry_delay) set every gap, this policy only bounds them.
POLL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,
    non_retryable_error_types=[UNKNOWN_PROVIDER, PROVIDER_REJECTED],
)

SETTLED = (
    TransactionStatus.SUCCEEDED,
    TransactionStatus.NEEDS_REVIEW,
    TransactionStatus.PARTIALLY_REFUNDED,
    TransactionStatus.REFUNDED,
)
CLOSED_UNPAID = (TransactionStatus.FAILED, TransactionStatus.EXPIRED)


@workflow.defn
class PaymentWorkflow(PaymentRevisions):
    NOUN = "payment"

    @workflow.init
    def __init__(self, order: PaymentOrder) -> None:
        self._created: CreatedPayment | None = None
        self._closed_by_us = False
        self._cancel: OperatorAction | None = None  # an operator's cancel, taken up by the loop
        # A review resolved by refunding what the payer paid: REFUNDED once it succeeds.
        self._review_refund: str | None = None
        view = PaymentView(
            workflow_id=order.workflow_id,
            order_id=order.order_id,
            kind=order.kind,
            provider=order.provider,
            status=PAYMENT.initial,
            amount=order.amount,
            currency=order.currency,
            account_id=order.account_id,
        )
        self._refunds = RefundLedger(view.refunds)
        self._start_settling(
            order,
            view,
            local_first=local_first(order),
            writes_book=writes_book(order),
            lean_book=lean_book(order),
        )

    # ---- interface -------------------------------------------------------------------

    @workflow.signal
    def notify(self, observation: PaymentObservation) -> None:
        """A verified provider notification, delivered by the webhook service."""
        self._inbox.append(observation)

    @workflow.update
    async def checkout(self, order: PaymentOrder) -> CheckoutInfo:
        """Returns as soon as the payer has a payer_action (or the payment has ended)."""
        await workflow.wait_condition(lambda: self._created is not None or self._terminal)
        return CheckoutInfo.of(self._view)

    @checkout.validator
    def _same_terms(self, order: PaymentOrder) -> None:
        # The order id is the idempotency key: the same id must mean the same order.
        mine, theirs = self._order, order
        terms = ("amount", "currency", "kind", "provider", "account_id")
        if any(getattr(mine, term) != getattr(theirs, term) for term in terms):
            account = f" for account {mine.account_id}" if mine.account_id else ""
            raise ValueError(
                f"order {mine.order_id} already exists with different terms: "
                f"{mine.kind} of {format_amount(mine.amount, mine.currency)} {mine.currency}"
                f"{account} via {mine.provider}"
            )
        # The channel, when both name one (orders from before Stripe had channels name
        # none), and the payer a JSAPI prepay was made for (a payer's IP may change).
        if None not in (mine.channel, theirs.channel) and mine.channel != theirs.channel:
            raise ValueError(f"order {mine.order_id} already exists for channel {mine.channel}")
        if (mine.payer and mine.payer.openid) != (theirs.payer and theirs.payer.openid):
            raise ValueError(f"order {mine.order_id} already exists for another payer")

    @workflow.query
    def details(self) -> PaymentView:
        return self._view

    @workflow.update
    async def refund(self, request: RefundRequest) -> RefundAccepted:
        """Reserve the amount, start the refund's workflow (`refund-{refund_id}`), and return
        once the provider has the refund (or it has ended). The same refund id again returns
        the same refund."""
        entry = self._refunds.get(request.refund_id)
        if entry is None:
            # Checked again: refunds accepted since validation may have used up the room.
            problem = self._refund_problem(request)
            if problem is not None:
                raise ApplicationError(problem, type=REFUND_REFUSED, non_retryable=True)
            entry = RefundEntry(
                refund_id=request.refund_id,
                amount=request.amount,
                currency=request.currency,
                requested_at=workflow.now(),
                reason=request.reason,
            )
            self._refunds.add(entry)
            self._refund_totals()
            try:
                await self._start_refund(request)
            except WorkflowAlreadyStartedError:
                # Never started: nothing is held. A concurrent request with this id wakes up.
                entry.status = TransactionStatus.FAILED
                self._refunds.remove(entry)
                self._refund_totals()
        await workflow.wait_condition(lambda: entry.submitted or entry.status.is_terminal)
        if self._refunds.get(entry.refund_id) is None:
            raise ApplicationError(
                f"refund id {entry.refund_id} is already used by another refund "
                f"({refund_workflow_id(entry.refund_id)}): refund ids are unique",
                type=REFUND_REFUSED,
                non_retryable=True,
            )
        return RefundAccepted(
            workflow_id=refund_workflow_id(entry.refund_id),
            refund_id=entry.refund_id,
            order_id=self._order.order_id,
            status=entry.status,
            amount=entry.amount,
            currency=entry.currency,
            fail_reason=entry.fail_reason,
            payment_status=self._status,
            refundable_amount=self._refunds.refundable(self._refund_base()[0], self._status),
        )

    @refund.validator
    def _valid_refund(self, request: RefundRequest) -> None:
        # Rejected here, a refund leaves no trace in history and nothing reaches a provider.
        problem = self._refund_problem(request)
        if problem is not None:
            raise ValueError(problem)

    # ---- operator actions (validated updates: a refused one leaves no trace) ----------

    @workflow.update
    async def force_status_query(self, action: OperatorAction) -> PaymentView:
        """Ask the provider now, instead of at the next scheduled query."""
        record(self._view, "status_query", action)
        done = self._queries_answered
        self._query_now = True
        self._publish()
        await workflow.wait_condition(lambda: self._queries_answered > done or self._terminal)
        return self._view

    @force_status_query.validator
    def _can_query(self, action: OperatorAction) -> None:
        if self._terminal or self._cancel is not None:
            raise ValueError(
                f"order {self._order.order_id} is {self._status}"
                + (" and being cancelled" if self._cancel and not self._terminal else "")
                + ": status queries are for a payment still waiting for its payer"
            )

    @workflow.update
    async def cancel(self, action: OperatorAction) -> PaymentView:
        """Close the unpaid payment at the provider. If the payer paid meanwhile, the payment
        SUCCEEDS (the provider's answer decides, never the request)."""
        record(self._view, "cancel", action)
        self._cancel = action
        self._publish()
        await workflow.wait_condition(lambda: self._terminal)
        return self._view

    @cancel.validator
    def _can_cancel(self, action: OperatorAction) -> None:
        if self._terminal:
            raise ValueError(
                f"order {self._order.order_id} is {self._status}: only an unpaid payment "
                "(CREATED or PENDING) can be cancelled"
            )
        if self._cancel is not None:
            raise ValueError(
                f"order {self._order.order_id} is already being cancelled by "
                f"{self._cancel.operator}"
            )

    @workflow.update
    async def resolve_review(self, resolution: ReviewResolution) -> PaymentView:
        """Decide a NEEDS_REVIEW payment: accept the money, fail it, or refund what was paid."""
        record(self._view, f"resolve:{resolution.decision}", resolution)
        why = f"{resolution.decision} by {resolution.operator}: {resolution.reason}"
        if resolution.decision is ReviewDecision.ACCEPT:
            self._settle(TransactionStatus.SUCCEEDED, "operator")
        elif resolution.decision is ReviewDecision.FAIL:
            self._settle(TransactionStatus.FAILED, "operator", why)
        else:
            await self._refund_what_was_paid(resolution, why)
        return self._view

    @resolve_review.validator
    def _can_resolve(self, resolution: ReviewResolution) -> None:
        order_id = self._order.order_id
        if self._status is not TransactionStatus.NEEDS_REVIEW:
            raise ValueError(
                f"order {order_id} is {self._status}: only a NEEDS_REVIEW payment can be resolved"
            )
        if self._review_refund is not None:
            raise ValueError(
                f"order {order_id}: the refund of what was paid ({self._review_refund}) is "
                "already under way"
            )
        if resolution.decision is ReviewDecision.REFUND and self._view.paid_amount is None:
            raise ValueError(f"order {order_id}: nothing was paid to refund; accept or fail it")
        ends = self._view.refund_window_ends_at
        if resolution.decision is ReviewDecision.REFUND and (
            ends is None or workflow.now() >= ends
        ):
            raise ValueError(f"order {order_id}: its refund window has ended")

    async def _refund_what_was_paid(self, resolution: ReviewResolution, why: str) -> None:
        amount, currency = self._refund_base()
        refund_id = f"rv-{workflow.uuid4().hex[:24]}"
        entry = RefundEntry(
            refund_id=refund_id,
            amount=amount,
            currency=currency,
            requested_at=workflow.now(),
            reason=why,
        )
        self._review_refund = refund_id
        self._refunds.add(entry)
        self._refund_totals()
        await self._start_refund(
            RefundRequest(
                order_id=self._order.order_id,
                refund_id=refund_id,
                amount=amount,
                currency=currency,
                reason=resolution.reason,
            )
        )
        await workflow.wait_condition(lambda: entry.submitted or entry.status.is_terminal)
        if entry.status is not TransactionStatus.SUCCEEDED and entry.status.is_terminal:
            self._review_refund = None  # it failed: the review stays open for another decision

    @workflow.signal
    def refund_progress(self, progress: RefundProgress) -> None:
        """A refund's workflow reports: submitted to the provider, then settled."""
        entry = self._refunds.get(progress.refund_id)
        if entry is None:
            workflow.logger.error(
                "%s: progress of unknown refund %s ignored", self._order.workflow_id, progress
            )
            return
        if entry.status.is_terminal and entry.status is not TransactionStatus.NEEDS_REVIEW:
            return  # settled once; a repeated or late report changes nothing
        # (A refund in review moves on only by an operator's decision in its workflow.)
        entry.submitted = entry.submitted or progress.submitted
        if progress.status.is_terminal:
            entry.status = progress.status
            entry.settled_at = progress.settled_at
            entry.fail_reason = progress.fail_reason
        if entry.refund_id == self._review_refund and entry.status is TransactionStatus.FAILED:
            # The refund of what was paid failed after the provider took it: the review stays
            # open for another decision (a failure before that is handled where it starts).
            self._review_refund = None
        self._refund_totals()

    # ---- main flow -------------------------------------------------------------------

    @workflow.run
    async def run(self, order: PaymentOrder) -> PaymentView:
        refuse_unknown_revision(order)
        timing = order.timing
        self._search_attributes_at_start()
        deadline = workflow.now() + timing.expires_after
        self._view.expires_at = deadline
        self._publish()
        self._begin_book()

        if await self._create_at_provider():
            await self._await_outcome(deadline)
        if self._status in CLOSED_UNPAID:
            await self._watch_for_late_money(timing.late_payment_window)
        await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        if self._refund_window_opened and self._has_refund_window():
            await self._hold_open()
        if local_first(order):
            # With the provider and the merchant called locally, a payment the provider
            # refuses can end in the workflow task that receives a checkout: answer it first.
            await workflow.wait_condition(workflow.all_handlers_finished)
        if writes_book(order):
            # What the refund window's end (or an operator's FAIL) raised is delivered before
            # the run ends; older runs ended without it.
            await self._merchant.finish(lambda: bool(self._inbox), self._drain_inbox)
        await self._book_written()
        return self._view

    async def _create_at_provider(self) -> bool:
        try:
            created = await self._create()
        except ActivityError as exc:
            self._drain_inbox()
            if not self._terminal:
                self._settle(TransactionStatus.FAILED, "create", f"provider refused: {exc.cause}")
            return False
        self._created = created
        self._view.payment_url = created.payment_url
        self._view.payer_action = created.payer_action
        # Alipay and WeChat Pay name their trade only in its first notification or answer.
        self._view.provider_trade_no = created.provider_trade_no or self._view.provider_trade_no
        if self._status is TransactionStatus.CREATED:
            self._set_status(TransactionStatus.PENDING, "create", hold_book=lean_book(self._order))
        return True

    async def _create(self) -> CreatedPayment:
        """The provider's create; at LOCAL_FIRST_REVISION, tried once locally first (the
        payer waits for its answer: the activity takes over at once, with no pause)."""
        if local_first(self._order):
            created = await try_locally(
                PaymentActivities.create_payment,
                self._order,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                summary="create payment at provider",
                non_retryable_error_types=CREATE_RETRY.non_retryable_error_types,
            )
            if created is not None:
                return created
        return await workflow.execute_activity_method(
            PaymentActivities.create_payment,
            self._order,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=CREATE_RETRY,
            summary="create payment at provider",
        )

    async def _await_outcome(self, deadline: datetime) -> None:
        """Wait for news; when the first status query is due, start one `poll_payment`
        activity that asks the provider on the schedule until it reports news or the order
        expires (the activity's schedule-to-close). Until then the workflow sleeps: its
        status queries are the activity's retries, kept by the server, which cost this
        workflow no task and its history no event. A notification, a cancel or a forced
        query stops the poll. Orders before POLLING_REVISION wait as they did
        (workflows/revisions.py)."""
        if self._order.revision < POLLING_REVISION:
            await self._await_outcome_before_polling(deadline)
            return
        timing = self._order.timing
        delay = timing.first_status_query_delay
        timer: asyncio.Future[None] | None = None
        poll: asyncio.Future[PolledPayment] | None = None

        def stop() -> None:
            nonlocal timer, poll
            for pending in (timer, poll):
                if pending is not None and not pending.done():
                    pending.cancel()
            timer = poll = None
            self._view.polling_since = None

        def woken() -> bool:
            due = any(p is not None and p.done() for p in (timer, poll))
            return bool(self._inbox) or self._query_now or self._cancel is not None or due

        while True:
            self._drain_inbox()
            if self._terminal:
                stop()
                return
            now = workflow.now()
            if now >= deadline:
                stop()
                await self._expire()
                return
            if self._cancel is not None:
                stop()
                await self._expire(cancelled_by=self._cancel)
                return
            if self._query_now:
                self._query_now = False
                stop()  # asked now: the next one is a full period from now
                await self._status_query()
                continue
            if poll is not None and poll.done():
                finished, poll = poll, None
                self._view.polling_since = None
                delay = timing.status_query_backoff_cap  # it polled for a while: wait long
                try:
                    polled = finished.result()
                except ActivityError as exc:  # expiry reached, or a non-retryable error
                    workflow.logger.info("poll of %s ended: %s", self._order.order_id, exc.cause)
                    continue
                self._view.status_queries += polled.attempts - 1  # the first was counted
                self._apply(polled.observation)
                continue
            if timer is not None and timer.done():
                timer = None
                if now < deadline:
                    poll = self._start_poll(delay, deadline)
            if timer is None and poll is None:
                wait = min(jittered(delay), deadline - now)
                self._view.next_status_query_at = now + wait
                timer = asyncio.ensure_future(workflow.sleep(wait, summary="next status query"))
            self._publish()
            await workflow.wait_condition(woken)

    def _start_poll(self, delay: timedelta, deadline: datetime) -> asyncio.Future[PolledPayment]:
        self._book.flush()  # still unsettled when the first status query is due: in the book
        now = workflow.now()
        self._view.next_status_query_at = None
        self._view.status_queries += 1
        self._view.last_status_query_at = now
        self._view.polling_since = now
        timing = self._order.timing
        return asyncio.ensure_future(
            workflow.execute_activity_method(
                PaymentActivities.poll_payment,
                PaymentPoll(
                    order=self._order, since=now, delay=delay, cap=timing.status_query_backoff_cap
                ),
                task_queue=timing.status_query_task_queue,
                schedule_to_close_timeout=deadline - now,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=POLL_RETRY,
                summary="status queries until the provider reports news",
            )
        )

    async def _expire(self, cancelled_by: OperatorAction | None = None) -> None:
        """Close at the provider, then ask once more: money may land during the close."""
        try:
            outcome = await workflow.execute_activity_method(
                PaymentActivities.close_payment,
                self._order,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=CLOSE_RETRY,
                summary="close unpaid order at provider",
            )
        except ActivityError as exc:
            workflow.logger.error("close of %s refused: %s", self._order.order_id, exc.cause)
            outcome = CloseOutcome(closed=False)
        if outcome.closed:
            self._closed_by_us = True
        self._drain_inbox()
        if outcome.observation is not None:
            self._apply(outcome.observation)
        if self._terminal:
            return
        await self._status_query()
        if self._terminal:
            return
        if self._closed_by_us and cancelled_by is not None:
            self._settle(
                TransactionStatus.EXPIRED,
                "operator",
                f"cancelled by {cancelled_by.operator}: {cancelled_by.reason}",
            )
        elif self._closed_by_us:
            self._settle(TransactionStatus.EXPIRED, "close", "closed unpaid at expiry")
        else:
            # The provider neither closed the order nor reported it paid: a person decides.
            self._settle(
                TransactionStatus.NEEDS_REVIEW, "close", "order could not be closed at expiry"
            )

    async def _watch_for_late_money(self, window: timedelta) -> None:
        """After a close or decline, money can still arrive; it must be reviewed, not lost."""
        end = workflow.now() + window
        self._view.next_status_query_at = None
        self._publish()
        while self._status in CLOSED_UNPAID and workflow.now() < end:
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox),
                    timeout=end - workflow.now(),
                    timeout_summary="late payment window",
                )
            except TimeoutError:
                return
            self._drain_inbox()

    # ---- refunds ---------------------------------------------------------------------

    @property
    def _refund_window_opened(self) -> bool:
        return self._view.refund_window_ends_at is not None

    def _refund_problem(self, request: RefundRequest) -> str | None:
        """Why this refund cannot be made now, or None. Never changes anything."""
        return self._refunds.problem(
            request,
            order_id=self._order.order_id,
            status=self._status,
            paid=self._refund_base(),
            window_ends=self._view.refund_window_ends_at,
            now=workflow.now(),
        )

    def _refund_base(self) -> tuple[Decimal, str]:
        """What can be refunded in all: what the payer paid (the order's amount, unless an
        operator accepted a different one)."""
        if self._view.paid_amount is not None and self._view.paid_currency is not None:
            return self._view.paid_amount, self._view.paid_currency
        return self._order.amount, self._order.currency

    def _refund_totals(self) -> None:
        """Ledger totals, and the payment's status: REFUNDED once every unit went back."""
        paid, ledger = self._refund_base()[0], self._refunds
        self._view.refunded_amount = ledger.refunded()
        self._view.refunding_amount = ledger.held()
        self._view.refundable_amount = ledger.refundable(paid, self._status)
        status = ledger.payment_status(paid, self._status)
        if status is not self._status:
            self._set_status(status, "refund")
        else:
            self._book.write(self._view)  # the totals moved: the book takes them
            self._publish()

    async def _start_refund(self, request: RefundRequest) -> None:
        order = self._order
        refund = RefundOrder(
            refund_id=request.refund_id,
            order_id=order.order_id,
            amount=request.amount,
            currency=request.currency,
            provider=order.provider,
            payment_workflow_id=order.workflow_id,
            reason=request.reason,
            notify_url=request.notify_url or order.notify_url,
            timing=order.timing,
            revision=REFUND_REVISION if writes_book(order) else 0,
        )
        await workflow.start_child_workflow(
            RefundWorkflow.run,
            refund,
            id=refund.workflow_id,
            # A refund settles even if this workflow is ended by hand meanwhile.
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=(
                f"refund {refund.refund_id} of order {order.order_id}: "
                f"{format_amount(refund.amount, refund.currency)} {refund.currency} "
                f"via {order.provider}"
            ),
        )

    async def _hold_open(self) -> None:
        """Stay open for refunds (and, in NEEDS_REVIEW, for an operator's decision) until the
        refund window ends and no refund is in flight."""
        ends = self._view.refund_window_ends_at
        assert ends is not None
        while workflow.now() < ends and self._status is not TransactionStatus.FAILED:
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._status is TransactionStatus.FAILED,
                    timeout=ends - workflow.now(),
                    timeout_summary="refund window",
                )
            except TimeoutError:
                break
            self._drain_inbox()
        await workflow.wait_condition(
            lambda: self._refunds.all_settled() and workflow.all_handlers_finished()
        )
        self._drain_inbox()

    # ---- settlement ------------------------------------------------------------------

    def _provider_no(self, observation: PaymentObservation) -> str | None:
        return observation.provider_trade_no

    @property
    def _known_provider_no(self) -> str | None:
        return self._view.provider_trade_no

    def _query_provider(self) -> Awaitable[PaymentObservation]:
        return status_query(
            PaymentActivities.query_payment,
            self._order,
            self._order.timing.status_query_task_queue,
        )

    def _take(self, observation: PaymentObservation) -> None:
        if observation.provider_trade_no and not self._view.provider_trade_no:
            self._view.provider_trade_no = observation.provider_trade_no  # known from now on
        if self._duplicate(observation.notification_id):
            return
        source = observation.source
        state = observation.state
        if self._status in SETTLED:
            self._publish()
            return
        if state is ProviderPaymentState.PAID:
            self._view.paid_amount = observation.amount
            self._view.paid_currency = observation.currency
            if self._status in CLOSED_UNPAID or self._closed_by_us:
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    source,
                    f"money arrived after the order was {self._status_word()}",
                )
            elif (observation.amount, observation.currency) != (
                self._order.amount,
                self._order.currency,
            ):
                self._settle(
                    TransactionStatus.NEEDS_REVIEW,
                    source,
                    f"paid {observation.amount} {observation.currency}, order is "
                    f"{format_amount(self._order.amount, self._order.currency)} "
                    f"{self._order.currency}",
                )
            else:
                self._settle(TransactionStatus.SUCCEEDED, source)
        elif self._terminal:
            self._publish()  # out of order or duplicate: nothing changes
        elif state is ProviderPaymentState.FAILED:
            self._settle(TransactionStatus.FAILED, source, "payer declined or payment failed")
        elif state is ProviderPaymentState.CLOSED and self._cancel is not None:
            by = self._cancel
            self._settle(
                TransactionStatus.EXPIRED, "operator", f"cancelled by {by.operator}: {by.reason}"
            )
        elif state is ProviderPaymentState.CLOSED:
            self._settle(TransactionStatus.EXPIRED, source, "closed unpaid at the provider")
        else:
            self._publish()

    def _status_word(self) -> str:
        return "declined" if self._status is TransactionStatus.FAILED else "closed"

    def _settling(self, status: TransactionStatus) -> None:
        self._view.polling_since = None
        # A payer action is a credential for paying this order: once settled it pays nothing
        # and is shown no more (the view only: nothing in the history changes).
        self._view.payer_action = None
        window = self._order.timing.refund_window
        opens = status in (TransactionStatus.SUCCEEDED, TransactionStatus.NEEDS_REVIEW)
        if opens and window > timedelta(0) and self._view.refund_window_ends_at is None:
            # Refunds (and, in review, an operator's decision) are taken this long.
            self._view.refund_window_ends_at = workflow.now() + window

    def _settled(self) -> None:
        if self._refund_window_opened:
            self._refund_totals()

    # ---- details ---------------------------------------------------------------------

    def _headline(self) -> list[str]:
        v = self._view
        return [
            f"**{v.kind} {v.order_id}**: {format_amount(v.amount, v.currency)} {v.currency} "
            f"via {v.provider}",
            f"- status: **{v.status}**" + (f" ({v.review_reason})" if v.review_reason else ""),
        ]

    def _waiting_lines(self) -> list[str]:
        v, lines = self._view, []
        if v.polling_since and not self._terminal:
            lines.append(
                f"- status queries since {v.polling_since:%Y-%m-%d %H:%M:%S} UTC: the "
                "`poll_payment` activity's attempts (count and next one under Pending Activities)"
            )
        if v.expires_at and not self._terminal:
            lines.append(f"- expires: {v.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        return lines

    def _closing_lines(self) -> list[str]:
        v = self._view
        if v.refund_window_ends_at is None:
            return []
        currency = v.currency
        lines = [
            f"- refunds: {len(v.refunds)}, refunded "
            f"{format_amount(v.refunded_amount or Decimal(0), currency)}, in flight or "
            f"review {format_amount(v.refunding_amount or Decimal(0), currency)}, "
            f"refundable {format_amount(v.refundable_amount or Decimal(0), currency)} "
            f"{currency} until {v.refund_window_ends_at:%Y-%m-%d %H:%M} UTC"
        ]
        for e in v.refunds:
            lines.append(
                f"  - refund {e.refund_id}: {format_amount(e.amount, e.currency)} "
                f"**{e.status}**" + (f" ({e.fail_reason})" if e.fail_reason else "")
            )
        return lines
