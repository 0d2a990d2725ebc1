"""Test doubles for the workflow tests, behind the real activity names so a `Worker` runs
them in place of the activities: a provider's side of payments and of refunds, scripted per
test, and the merchant's webhook endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from tempay.domain import (
    BookedDelivery,
    BookedEvent,
    BookEntry,
    CloseOutcome,
    CreatedPayment,
    MerchantDelivery,
    MerchantDeliveryState,
    MerchantEvent,
    PaymentObservation,
    PaymentOrder,
    PaymentPoll,
    PolledPayment,
    ProviderPaymentState,
    ProviderRefundState,
    RefundObservation,
    RefundOrder,
)
from tempay.polling import poll_payment_attempt


@dataclass
class FakeProvider:
    """A provider's side of one payment, scripted per test."""

    state: ProviderPaymentState = ProviderPaymentState.PENDING
    paid_amount: Decimal | None = None
    paid_currency: str | None = None
    query_failures: int = 0
    close_pays_first: bool = False  # the payer pays while our close is in flight
    create_gate: asyncio.Event | None = None
    query_gate: asyncio.Event | None = None
    query_times: list[datetime] = field(default_factory=list)
    closes: int = 0
    refuse_create: str | None = None  # the provider refuses the order with this message
    create_failures: int = 0  # the next creates fail as if the provider were down
    creates: int = 0  # create calls, including failed ones
    trade_no_at_create: bool = True  # False: like Alipay's and WeChat Pay's redirect creates

    def observation(self, order: PaymentOrder, source: str) -> PaymentObservation:
        paid = self.state is ProviderPaymentState.PAID
        return PaymentObservation(
            order_id=order.order_id,
            provider=order.provider,
            state=self.state,
            provider_trade_no="T-" + order.order_id,
            amount=self.paid_amount if paid else None,
            currency=self.paid_currency if paid else None,
            source=source,  # type: ignore[arg-type]
        )

    def pay(self, amount: str = "10.00", currency: str = "CNY") -> None:
        self.state = ProviderPaymentState.PAID
        self.paid_amount, self.paid_currency = Decimal(amount), currency

    @activity.defn(name="create_payment")
    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        self.creates += 1
        if self.create_gate is not None:
            await self.create_gate.wait()
        if self.create_failures > 0:
            self.create_failures -= 1
            raise RuntimeError("provider create: HTTP 503")
        if self.refuse_create is not None:
            raise ApplicationError(self.refuse_create, type="ProviderRejected", non_retryable=True)
        return CreatedPayment(
            provider_trade_no="T-" + order.order_id if self.trade_no_at_create else "",
            payment_url=f"http://provider.test/checkout/T-{order.order_id}",
        )

    @activity.defn(name="query_payment")
    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        self.query_times.append(activity.info().started_time)
        if self.query_gate is not None:
            await self.query_gate.wait()
        if self.query_failures > 0:
            self.query_failures -= 1
            raise RuntimeError("provider status API: HTTP 503")
        return self.observation(order, "status_query")

    @activity.defn(name="poll_payment")
    async def poll_payment(self, poll: PaymentPoll) -> PolledPayment:
        return await poll_payment_attempt(self.query_payment, poll)

    @activity.defn(name="close_payment")
    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        self.closes += 1
        if self.close_pays_first:
            self.pay()
        if self.state is ProviderPaymentState.PAID:
            return CloseOutcome(closed=False, observation=self.observation(order, "close"))
        if self.state is ProviderPaymentState.PENDING:
            self.state = ProviderPaymentState.CLOSED
        return CloseOutcome(closed=True, observation=self.observation(order, "close"))


@dataclass
class FakeMerchant:
    """The merchant's webhook endpoint, behind the real activity name."""

    refuse_until: datetime | None = None  # answers HTTP 500 to attempts before this time
    configured: bool = True
    attempts: list[tuple[str, datetime]] = field(default_factory=list)  # (event id, when)
    received: list[MerchantEvent] = field(default_factory=list)
    # The test server's clock. A local activity's started_time is the worker's wall clock,
    # which the time-skipping server does not move.
    clock: Callable[[], Awaitable[datetime]] | None = None

    @activity.defn(name="notify_merchant")
    async def notify_merchant(self, event: MerchantEvent) -> MerchantDelivery:
        info = activity.info()
        now = await self.clock() if self.clock is not None else info.started_time
        self.attempts.append((event.id, now))
        if not self.configured:
            return MerchantDelivery(
                event_id=event.id, state=MerchantDeliveryState.NOT_CONFIGURED, attempt=info.attempt
            )
        if self.refuse_until is not None and now < self.refuse_until:
            raise RuntimeError("merchant webhook answered HTTP 500")
        self.received.append(event)
        return MerchantDelivery(
            event_id=event.id,
            state=MerchantDeliveryState.DELIVERED,
            attempt=info.attempt,
            status_code=204,
        )


@dataclass
class FakeRefundProvider:
    """A provider's refunds, scripted per test. `creates` records every create call."""

    creates: list[RefundOrder] = field(default_factory=list)
    states: dict[str, ProviderRefundState] = field(default_factory=dict)
    refunded_amount: dict[str, Decimal] = field(default_factory=dict)
    refuse: str | None = None  # the next creates are refused with this code
    unreachable_creates: int = 0  # the next creates fail as if the provider were down
    attempts: int = 0  # create calls, including failed ones

    def observation(self, order: RefundOrder, source: str) -> RefundObservation:
        state = self.states[order.refund_id]
        return RefundObservation(
            refund_id=order.refund_id,
            order_id=order.order_id,
            state=state,
            amount=self.refunded_amount.get(order.refund_id, order.amount),
            currency=order.currency,
            provider_refund_no="R-" + order.refund_id,
            source=source,  # type: ignore[arg-type]
        )

    @activity.defn(name="create_refund")
    async def create_refund(self, order: RefundOrder) -> RefundObservation:
        self.attempts += 1
        if self.unreachable_creates > 0:
            self.unreachable_creates -= 1
            raise RuntimeError("provider unreachable")
        if self.refuse is not None:
            raise ApplicationError(
                f"provider refused refund: {self.refuse}",
                type="ProviderRejected",
                non_retryable=True,
            )
        if order.refund_id not in self.states:  # idempotent by refund id, as providers are
            self.creates.append(order)
            self.states[order.refund_id] = ProviderRefundState.PENDING
        return self.observation(order, "create")

    @activity.defn(name="query_refund")
    async def query_refund(self, order: RefundOrder) -> RefundObservation | None:
        if order.refund_id not in self.states:
            return None
        return self.observation(order, "status_query")

    def finish(self, refund_id: str, state: ProviderRefundState = ProviderRefundState.SUCCEEDED):
        self.states[refund_id] = state


@dataclass
class FakeBook:
    """The book behind the real activity name: keeps every write, in arrival order, and can
    fail the next writes as a database that is down would."""

    entries: list[BookEntry] = field(default_factory=list)
    failures: int = 0  # the next writes fail (the workflow retries them)
    attempts: int = 0
    # Called after the write by record_then_notify_merchant, as the worker's book is.
    merchant: FakeMerchant | None = None

    @activity.defn(name="record_transaction")
    async def record_transaction(self, entry: BookEntry) -> bool:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise ApplicationError("the book's database is down")
        self.entries.append(entry)
        return True

    @activity.defn(name="record_then_notify_merchant")
    async def record_then_notify_merchant(self, booked: BookedEvent) -> BookedDelivery:
        assert self.merchant is not None, "FakeBook.merchant: the worker's merchant fake"
        try:
            await self.record_transaction(booked.entry)
        except ApplicationError:
            return BookedDelivery()
        return BookedDelivery(delivery=await self.merchant.notify_merchant(booked.event))

    def activities(self, merchant: FakeMerchant) -> list[Callable[..., Any]]:
        """Both of the book's activities, the combined one delivering through `merchant`."""
        self.merchant = merchant
        return [self.record_transaction, self.record_then_notify_merchant]

    def latest(self, workflow_id: str) -> BookEntry | None:
        mine = [e for e in self.entries if e.view.workflow_id == workflow_id]
        return max(mine, key=lambda e: e.version) if mine else None
