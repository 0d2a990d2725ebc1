"""PaymentWorkflow: one payment (or recharge), from provider create to exactly-once settlement."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.merchant import deliver_merchant_event
from workflows.status_query import ACTIVITY_TIMEOUT, NoAnswer, jittered, query_while_listening

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import (
        CheckoutInfo,
        CloseOutcome,
        CreatedPayment,
        MerchantDeliveryState,
        MerchantEvent,
        MerchantEventProgress,
        PaymentObservation,
        PaymentOrder,
        PaymentView,
        ProviderPaymentState,
        TransactionStatus,
        format_amount,
        merchant_event,
    )

CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["ProviderRejected", "UnknownProvider"],
)
CLOSE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["ProviderRejected", "UnknownProvider"],
)
# Workflows that settled before merchant events existed replay without them (and send
# none later); the ones that settle after the upgrade send them.
MERCHANT_EVENTS_PATCH = "merchant-events"

SETTLED = (TransactionStatus.SUCCEEDED, TransactionStatus.NEEDS_REVIEW)
CLOSED_UNPAID = (TransactionStatus.FAILED, TransactionStatus.EXPIRED)


@workflow.defn
class PaymentWorkflow:
    @workflow.init
    def __init__(self, order: PaymentOrder) -> None:
        self._order = order
        self._status = TransactionStatus.CREATED
        self._created: CreatedPayment | None = None
        self._inbox: list[PaymentObservation] = []
        self._seen_notifications: set[str] = set()
        self._closed_by_us = False
        self._deliveries: list[asyncio.Future[None]] = []
        self._view = PaymentView(
            workflow_id=order.workflow_id,
            order_id=order.order_id,
            kind=order.kind,
            provider=order.provider,
            status=self._status,
            amount=order.amount,
            currency=order.currency,
            account_id=order.account_id,
        )

    # ---- interface -------------------------------------------------------------------

    @workflow.signal
    def notify(self, observation: PaymentObservation) -> None:
        """A verified provider notification, delivered by the webhook service."""
        self._inbox.append(observation)

    @workflow.update
    async def checkout(self, order: PaymentOrder) -> CheckoutInfo:
        """Returns as soon as the payer has a payment_url (or the payment has ended)."""
        await workflow.wait_condition(lambda: self._created is not None or self._terminal)
        return CheckoutInfo(
            workflow_id=self._order.workflow_id,
            order_id=self._order.order_id,
            status=self._status,
            payment_url=self._view.payment_url,
            provider_trade_no=self._view.provider_trade_no,
        )

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

    @workflow.query
    def details(self) -> PaymentView:
        return self._view

    # ---- main flow -------------------------------------------------------------------

    @workflow.run
    async def run(self, order: PaymentOrder) -> PaymentView:
        timing = order.timing
        workflow.upsert_search_attributes(
            [
                sa.ORDER_ID.value_set(order.order_id),
                sa.PROVIDER.value_set(order.provider),
                sa.TRANSACTION_KIND.value_set(str(order.kind)),
                sa.PAYMENT_STATUS.value_set(str(self._status)),
            ]
        )
        deadline = workflow.now() + timing.expires_after
        self._view.expires_at = deadline
        self._publish()

        if await self._create_at_provider():
            await self._await_outcome(deadline)
        if self._status in CLOSED_UNPAID:
            await self._watch_for_late_money(timing.late_payment_window)
        await self._finish_merchant_deliveries()
        return self._view

    async def _create_at_provider(self) -> bool:
        try:
            created = await workflow.execute_activity(
                "create_payment",
                self._order,
                result_type=CreatedPayment,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=CREATE_RETRY,
                summary="create payment at provider",
            )
        except ActivityError as exc:
            self._drain_inbox()
            if not self._terminal:
                self._settle(TransactionStatus.FAILED, "create", f"provider refused: {exc.cause}")
            return False
        self._created = created
        self._view.payment_url = created.payment_url
        self._view.provider_trade_no = created.provider_trade_no
        if self._status is TransactionStatus.CREATED:
            self._set_status(TransactionStatus.PENDING)
        return True

    async def _await_outcome(self, deadline: datetime) -> None:
        timing = self._order.timing
        delay = timing.first_status_query_delay
        while True:
            self._drain_inbox()
            if self._terminal:
                return
            now = workflow.now()
            if now >= deadline:
                await self._expire()
                return
            wait = min(jittered(delay), deadline - now)
            self._view.next_status_query_at = now + wait
            self._publish()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox), timeout=wait, timeout_summary="next status query"
                )
                continue
            except TimeoutError:
                pass
            if workflow.now() < deadline:
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
                "query_payment",
                self._order,
                PaymentObservation,
                lambda: bool(self._inbox),
                self._take_news,
            )
        except NoAnswer:
            workflow.logger.warning("status query for %s did not answer", self._order.order_id)
            return
        self._apply(observation)

    async def _expire(self) -> None:
        """Close at the provider, then ask once more: money may land during the close."""
        try:
            outcome = await workflow.execute_activity(
                "close_payment",
                self._order,
                result_type=CloseOutcome,
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
        if self._closed_by_us:
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

    # ---- merchant events --------------------------------------------------------------

    def _raise_merchant_event(self) -> None:
        """Tell the merchant about the settlement just made, without waiting for them."""
        if not workflow.patched(MERCHANT_EVENTS_PATCH):
            return
        event = merchant_event(self._view, workflow.now())
        progress = MerchantEventProgress(event_id=event.id, type=event.type)
        self._view.merchant_events.append(progress)
        self._publish()
        self._deliveries.append(asyncio.ensure_future(self._deliver(event, progress)))

    async def _deliver(self, event: MerchantEvent, progress: MerchantEventProgress) -> None:
        await deliver_merchant_event(
            event, progress, self._order.timing.merchant_retry_interval, self._publish
        )

    async def _finish_merchant_deliveries(self) -> None:
        """The workflow ends once every event is delivered. Meanwhile notifications still
        count: money arriving while the merchant is unreachable is reviewed, not dropped."""
        while True:
            self._drain_inbox()
            if all(delivery.done() for delivery in self._deliveries):
                return
            await workflow.wait_condition(
                lambda: bool(self._inbox) or all(d.done() for d in self._deliveries)
            )

    # ---- settlement ------------------------------------------------------------------

    def _take_news(self) -> bool:
        """Apply what arrived; True when that settled the transaction."""
        self._drain_inbox()
        return self._terminal

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for observation in inbox:
            self._apply(observation)

    def _apply(self, observation: PaymentObservation) -> None:
        """The only place an observation changes the status: settles at most once."""
        if observation.notification_id is not None:
            if observation.notification_id in self._seen_notifications:
                self._view.duplicate_notifications += 1
                self._publish()
                return
            self._seen_notifications.add(observation.notification_id)
            self._view.notifications_received += 1
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
        elif state is ProviderPaymentState.CLOSED:
            self._settle(TransactionStatus.EXPIRED, source, "closed unpaid at the provider")
        else:
            self._publish()

    def _status_word(self) -> str:
        return "declined" if self._status is TransactionStatus.FAILED else "closed"

    def _settle(self, status: TransactionStatus, by: str, reason: str | None = None) -> None:
        self._view.settled_at = workflow.now()
        self._view.settled_by = by
        if status is TransactionStatus.NEEDS_REVIEW or status in CLOSED_UNPAID:
            self._view.review_reason = reason
        self._set_status(status)
        self._raise_merchant_event()

    def _set_status(self, status: TransactionStatus) -> None:
        self._status = status
        self._view.status = status
        workflow.upsert_search_attributes([sa.PAYMENT_STATUS.value_set(str(status))])
        self._publish()

    @property
    def _terminal(self) -> bool:
        return self._status.is_terminal

    def _publish(self) -> None:
        """Current details for the Temporal UI."""
        v = self._view
        lines = [
            f"**{v.kind} {v.order_id}**: {format_amount(v.amount, v.currency)} {v.currency} "
            f"via {v.provider}",
            f"- status: **{v.status}**" + (f" ({v.review_reason})" if v.review_reason else ""),
            f"- notifications received: {v.notifications_received}"
            f" (duplicates: {v.duplicate_notifications})",
            f"- status queries: {v.status_queries}"
            + (f", last at {v.last_status_query_at:%H:%M:%S}" if v.last_status_query_at else ""),
        ]
        if v.next_status_query_at and not self._terminal:
            lines.append(f"- next status query: {v.next_status_query_at:%Y-%m-%d %H:%M:%S} UTC")
        if v.expires_at and not self._terminal:
            lines.append(f"- expires: {v.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        if v.settled_by:
            lines.append(f"- settled by: {v.settled_by} at {v.settled_at:%Y-%m-%d %H:%M:%S} UTC")
        for event in v.merchant_events:
            line = f"- merchant event `{event.type}` ({event.event_id}): **{event.state}**"
            if event.state is MerchantDeliveryState.PENDING:
                line += ", retrying until the merchant answers 2xx"
            elif event.attempts:
                line += f" after {event.attempts} attempt" + ("s" if event.attempts > 1 else "")
            if event.error:
                line += f": {event.error}"
            lines.append(line)
        workflow.set_current_details("\n".join(lines))
