"""Domain and wire types shared by workflows, activities, the webhook service and the CLI.

Money is Decimal with the currency's minor units; on the wire it is a string ("10.00").
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tempay.channels import (
    PayerAction,
    PayerDetails,
    QrCodeAction,
    RedirectAction,
    payment_url_of,
)
from tempay.errors import InvalidInput

# ISO 4217 minor units for the currencies tempay accepts.
MINOR_UNITS: dict[str, int] = {
    "AUD": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "IDR": 2,
    "INR": 2,
    "JPY": 0,
    "KRW": 0,
    "MOP": 2,
    "MYR": 2,
    "NZD": 2,
    "PHP": 2,
    "SGD": 2,
    "THB": 2,
    "TWD": 2,
    "USD": 2,
    "VND": 0,
}

# Matched whole (fullmatch): with `$`, "X\n" would pass as a second order id beside "X".
ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def parse_currency(code: str) -> str:
    currency = code.strip().upper()
    if currency not in MINOR_UNITS:
        raise InvalidInput(
            f"unknown currency {code!r}: use an ISO 4217 code such as CNY, USD, EUR or JPY"
        )
    return currency


def parse_amount(text: str | Decimal, currency: str) -> Decimal:
    """An exact, positive amount with at most the currency's minor units."""
    currency = parse_currency(currency)
    raw = str(text).strip()
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(f"amount {raw!r} is not a decimal number such as 10.00") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidInput(f"amount {raw!r} must be a positive number")
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MINOR_UNITS[currency]:
        raise InvalidInput(
            f"amount {raw!r} has more decimal places than {currency} allows "
            f"({MINOR_UNITS[currency]})"
        )
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS[currency]))


def format_amount(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(Decimal(1).scaleb(-MINOR_UNITS[currency])))


def canonical_amount(amount: Decimal, currency: str | None) -> Decimal:
    """`amount` in its currency's minor units ("1E1" CNY -> 10.00) when that is exact. An
    amount with more places than the currency has (a provider's error) keeps every digit,
    so that comparing it with the order still shows the difference."""
    places = MINOR_UNITS.get(currency or "")
    if places is None or not amount.is_finite():
        return amount
    try:
        exact = amount.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation:  # more digits than the context holds: nobody's real amount
        return amount
    return exact if exact == amount else amount


def parse_order_id(order_id: str) -> str:
    if not isinstance(order_id, str) or not ORDER_ID_PATTERN.fullmatch(order_id):
        raise InvalidInput(
            f"order id {order_id!r} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        )
    return order_id


class TransactionKind(StrEnum):
    PAYMENT = "payment"
    RECHARGE = "recharge"
    REFUND = "refund"
    WITHDRAWAL = "withdrawal"


class TransactionStatus(StrEnum):
    CREATED = "CREATED"
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"

    @property
    def is_terminal(self) -> bool:
        return self not in IN_FLIGHT


# Not yet settled. Listing and counting read these from Temporal's open workflows, the rest
# from the book (transactions/read.py): a payment's PENDING reaches the book only when its
# first status query is due, unless it settles first (workflows/book.py).
IN_FLIGHT = (TransactionStatus.CREATED, TransactionStatus.PENDING)


def _one_of(value: str, valid: list[str], what: str) -> str:
    for candidate in valid:
        if value.strip().lower() == candidate.lower():
            return candidate
    raise InvalidInput(f"unknown {what} {value!r}: one of {', '.join(valid)}")


def parse_status(text: str) -> str:
    """A status filter as typed (any case) -> the status; InvalidInput lists the valid ones."""
    return _one_of(text, list(TransactionStatus.__members__), "status")


def parse_kind(text: str) -> str:
    """A kind filter as typed (any case) -> the kind; InvalidInput lists the valid ones."""
    return _one_of(text, [str(k) for k in TransactionKind], "kind")


class ProviderPaymentState(StrEnum):
    """A provider's view of a payment, mapped once in each provider adapter."""

    PENDING = "PENDING"  # waiting for the payer
    PAID = "PAID"  # money received
    FAILED = "FAILED"  # payer declined or the payment failed
    CLOSED = "CLOSED"  # closed unpaid


def payment_workflow_id(order_id: str) -> str:
    return f"payment-{order_id}"


class MoneyTerms(BaseModel):
    """Validates the `amount` and `currency` fields of the model that inherits it: a known
    ISO 4217 code, and a positive amount with at most the currency's minor units."""

    @field_validator("currency", check_fields=False)
    @classmethod
    def _currency(cls, value: str) -> str:
        return parse_currency(value)

    def model_post_init(self, _context: object) -> None:
        parse_amount(getattr(self, "amount"), getattr(self, "currency"))  # noqa: B009


class OperatorAction(BaseModel):
    """Who asks for a manual action, and why: recorded in the workflow's history and view."""

    model_config = ConfigDict(frozen=True)

    operator: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)


class ReviewDecision(StrEnum):
    ACCEPT = "accept"  # the money stays: SUCCEEDED
    FAIL = "fail"  # nothing is kept: FAILED
    REFUND = "refund"  # payments only: everything the payer paid goes back, then REFUNDED


class ReviewResolution(OperatorAction):
    decision: ReviewDecision


class OperatorActionRecord(BaseModel):
    """A manual action as operators see it in `details` and the Temporal UI."""

    action: str  # "status_query", "cancel", "resolve:accept", ...
    operator: str
    reason: str
    at: datetime


class SettlementTiming(BaseModel):
    """When to ask the provider, and when to give up on the payer."""

    first_status_query_delay: timedelta = timedelta(seconds=60)
    status_query_backoff_cap: timedelta = timedelta(minutes=10)
    expires_after: timedelta = timedelta(minutes=30)
    late_payment_window: timedelta = timedelta(hours=24)
    # First retry of a merchant event delivery; doubles up to an hour (tests shorten it).
    merchant_retry_interval: timedelta = timedelta(seconds=5)
    # How long after it succeeded a payment still accepts refunds (its workflow stays open
    # that long, holding the refund ledger). Zero: the workflow ends at settlement.
    refund_window: timedelta = timedelta(days=365)
    # How long a refund or withdrawal in NEEDS_REVIEW stays open for an operator's decision
    # (`tempay resolve`). Zero: it ends at settlement.
    review_window: timedelta = timedelta(days=30)
    # The task queue status-query activities (query_payment/refund/transfer) run on, so the
    # rate the provider sees is capped there (TEMPAY_STATUS_QUERY_RATE_CAP). None: the
    # workflow's own task queue (inputs written before the field existed, unit tests).
    status_query_task_queue: str | None = None


# The PaymentWorkflow code revision new orders are started under (PaymentOrder.revision):
# 1: merchant events and a refund window with no patch markers;
# 2: one status-query timer per period, kept across wakeups that settle nothing;
# 3: one timer for the first status query, then one `poll_payment` activity whose retries
#    are the rest of the schedule (no workflow task, no history event per query);
# 4: the provider create and the first merchant delivery tried once as local activities
#    (no activity task, no second workflow task); a failed attempt goes to the activity.
# 5: every status change is written to the book (workflows/book.py) before the merchant
#    hears of it.
# 6: the book written the lean way: PENDING when the first status query is due (unless it
#    settles first), the settlement in the merchant delivery's local attempt.
PAYMENT_REVISION = 6
# Refunds and withdrawals: 0 before the book; 1: they write to the book from the start.
REFUND_REVISION = 1
WITHDRAWAL_REVISION = 1


class PaymentOrder(MoneyTerms):
    """The input of a payment (or recharge) workflow: the merchant's order."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    amount: Decimal
    currency: str
    kind: TransactionKind = TransactionKind.PAYMENT
    provider: str  # no default: outside `tempay dev` the caller always names one
    # The provider's payment product. build_order writes the provider's default when the
    # caller names none; None (orders built elsewhere): the adapter uses its default.
    channel: str | None = None
    subject: str = ""
    notify_url: str = ""
    return_url: str = ""
    account_id: str | None = None
    # What the channel needs of the payer (tempay/channels.py): personal data, never shown.
    payer: PayerDetails | None = Field(default=None, repr=False)
    timing: SettlementTiming = Field(default_factory=SettlementTiming)
    # The workflow code an order was started under (PAYMENT_REVISION for new orders): a
    # payment at revision 1 or later has merchant events and a refund window from its start,
    # so it needs no patch marker (each costs a history event and a search attribute update).
    # Orders that predate the field are 0 and go through workflow.patched as before. A
    # running workflow keeps the behaviour of its revision, so its history replays.
    revision: int = 0

    @field_validator("order_id")
    @classmethod
    def _order_id(cls, value: str) -> str:
        return parse_order_id(value)

    @property
    def workflow_id(self) -> str:
        return payment_workflow_id(self.order_id)


class CreatedPayment(BaseModel):
    """What the provider answered to 'create a payment': what the payer does next.

    Adapters set `payer_action`; `payment_url` follows from it (redirect and QR kinds). An
    answer recorded before payer actions existed has only `payment_url`: a redirect."""

    provider_trade_no: str
    payment_url: str | None = None
    payer_action: PayerAction | None = None

    @model_validator(mode="after")
    def _action(self) -> CreatedPayment:
        if self.payer_action is None and self.payment_url:
            # WeChat Pay Native answered a code_url (weixin://...): a QR code, not a page.
            if self.payment_url.startswith("weixin://"):
                self.payer_action = QrCodeAction(content=self.payment_url)
            else:
                self.payer_action = RedirectAction(url=self.payment_url)
        if self.payer_action is None:
            raise ValueError("a created payment needs a payer_action")
        self.payment_url = payment_url_of(self.payer_action)
        return self


class Observation(BaseModel):
    """What every observation (notification, status answer, create answer) carries.

    `provider` is who reported it: the webhook stamps the provider whose signature it
    verified, an activity the provider it asked. A transaction takes an observation only from
    its own provider (workflows/trust.py)."""

    provider: str | None = None
    amount: Decimal | None = None
    currency: str | None = None

    def reported_by(self, provider: str) -> Self:
        """This observation, named as `provider`'s: the one whose key verified it, or the
        one asked. Set by the core, never taken from what a provider's message says."""
        return self.model_copy(update={"provider": provider})

    @model_validator(mode="after")
    def _canonical_amount(self) -> Observation:
        # A provider's "1E1" reaches views and merchant events as "10.00", never "1E+1".
        if self.amount is not None:
            self.amount = canonical_amount(self.amount, self.currency)
        return self


class PaymentObservation(Observation):
    """One thing the provider told us about a payment: a notification or a status answer."""

    order_id: str
    provider: str
    state: ProviderPaymentState
    provider_trade_no: str | None = None
    occurred_at: datetime | None = None
    source: Literal["notification", "status_query", "close"] = "notification"
    notification_id: str | None = None


class PaymentPoll(BaseModel):
    """The input of `poll_payment`: ask the provider about `order` until it reports
    something other than PENDING. The activity's retries are the query schedule: the gap
    after its first attempt is twice `delay` (the wait before it), doubling up to `cap`,
    counted from `since` (when the workflow scheduled it); tempay/polling.py."""

    order: PaymentOrder
    since: datetime
    delay: timedelta
    cap: timedelta


class PolledPayment(BaseModel):
    """What ended a poll: the provider's answer, and how many attempts asked it."""

    observation: PaymentObservation
    attempts: int


class CloseOutcome(BaseModel):
    """The provider's answer to 'close this unpaid order'."""

    closed: bool
    # When the provider refused because the payer already paid, what it reported.
    observation: PaymentObservation | None = None


class CheckoutInfo(BaseModel):
    """What a starter gets back as soon as the provider has created the payment."""

    workflow_id: str
    order_id: str
    status: TransactionStatus
    # The redirect URL or the QR code's content (as `payer_action` has it); None otherwise.
    payment_url: str | None = None
    # What the payer does next, by kind (tempay/channels.py); None once the payment has ended
    # before the provider took it.
    payer_action: PayerAction | None = None
    provider_trade_no: str | None = None
    # Why the payment ended before the payer could pay (e.g. the provider refused the
    # order at create, or a payment in review): set only when `status` is final.
    reason: str | None = None

    @classmethod
    def of(cls, view: PaymentView) -> CheckoutInfo:
        return cls(
            workflow_id=view.workflow_id,
            order_id=view.order_id,
            status=view.status,
            payment_url=view.payment_url,
            payer_action=view.payer_action,
            provider_trade_no=view.provider_trade_no,
            reason=view.review_reason if view.status.is_terminal else None,
        )


class PaymentView(BaseModel):
    """The transaction as `tempay status` and the query handler show it."""

    workflow_id: str
    order_id: str
    kind: TransactionKind
    provider: str
    status: TransactionStatus
    amount: Decimal
    currency: str
    paid_amount: Decimal | None = None
    paid_currency: str | None = None
    payment_url: str | None = None
    # The checkout's payer action; a credential for this payer, so never in the book.
    payer_action: PayerAction | None = None
    provider_trade_no: str | None = None
    account_id: str | None = None
    notifications_received: int = 0
    duplicate_notifications: int = 0
    # Observations refused at the trust boundary (another provider's, or about another
    # provider-side id): they changed nothing. The last one's reason, for operators.
    refused_observations: int = 0
    last_refused: str | None = None
    status_queries: int = 0
    last_status_query_at: datetime | None = None
    next_status_query_at: datetime | None = None
    # Since when the `poll_payment` activity has been asking the provider on the schedule
    # (its attempts and next retry show in its pending-activity view); None when not polling.
    polling_since: datetime | None = None
    expires_at: datetime | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None
    review_reason: str | None = None
    # One entry per merchant event, in the order they were raised.
    merchant_events: list[MerchantEventProgress] = Field(default_factory=list)
    operator_actions: list[OperatorActionRecord] = Field(default_factory=list)
    # Refunds (of a succeeded payment): the ledger, and its totals in the payment's currency.
    refunds: list[RefundEntry] = Field(default_factory=list)
    refunded_amount: Decimal | None = None  # refunds that succeeded
    refunding_amount: Decimal | None = None  # in flight, or in review: not refundable
    refundable_amount: Decimal | None = None
    refund_window_ends_at: datetime | None = None
    # Who answered: Temporal (the workflow, open or still retained) or the book (after
    # Temporal's retention removed the closed workflow).
    source: Literal["temporal", "book"] = "temporal"


# Merchant notifications: what the merchant's application is told once a payment settles.


class MerchantDeliveryState(StrEnum):
    PENDING = "pending"  # being delivered (retried until the merchant answers 2xx)
    DELIVERED = "delivered"  # the merchant answered 2xx
    NOT_CONFIGURED = "not_configured"  # no TEMPAY_MERCHANT_WEBHOOK_URL: nothing was sent
    FAILED = "failed"  # retries ran out; the event was never acknowledged


class MerchantEventData(BaseModel):
    """The settled transaction. Amounts are Decimal here and strings ("10.00") on the wire."""

    order_id: str
    workflow_id: str
    kind: TransactionKind
    provider: str
    status: TransactionStatus
    amount: Decimal
    currency: str
    paid_amount: Decimal | None = None
    paid_currency: str | None = None
    provider_trade_no: str | None = None
    account_id: str | None = None
    refund_id: str | None = None  # refunds: order_id is the refunded payment's
    review_reason: str | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None


class MerchantEvent(BaseModel):
    """The body POSTed to the merchant's webhook; `id` is also the `webhook-id` header."""

    id: str
    type: str  # "{kind}.{status}", e.g. "payment.succeeded", "recharge.needs_review"
    created_at: datetime
    data: MerchantEventData


def merchant_event_id(workflow_id: str, status: TransactionStatus) -> str:
    """One id per settlement: a transaction reaches each terminal status at most once."""
    return f"evt_{workflow_id}_{status.value.lower()}"


def merchant_event_type(kind: TransactionKind, status: TransactionStatus) -> str:
    return f"{kind.value}.{status.value.lower()}"


def merchant_event(
    view: PaymentView | RefundView | WithdrawalView, created_at: datetime
) -> MerchantEvent:
    """The event for the view's current (terminal) status."""
    if isinstance(view, WithdrawalView):
        return _withdrawal_event(view, created_at)
    if isinstance(view, RefundView):
        return _refund_event(view, created_at)
    return MerchantEvent(
        id=merchant_event_id(view.workflow_id, view.status),
        type=merchant_event_type(view.kind, view.status),
        created_at=created_at,
        data=MerchantEventData(
            order_id=view.order_id,
            workflow_id=view.workflow_id,
            kind=view.kind,
            provider=view.provider,
            status=view.status,
            amount=Decimal(format_amount(view.amount, view.currency)),
            currency=view.currency,
            paid_amount=view.paid_amount,
            paid_currency=view.paid_currency,
            provider_trade_no=view.provider_trade_no,
            account_id=view.account_id,
            review_reason=view.review_reason,
            settled_at=view.settled_at,
            settled_by=view.settled_by,
        ),
    )


class MerchantDelivery(BaseModel):
    """The outcome of the `notify_merchant` activity (failures are raised, and retried)."""

    event_id: str
    state: Literal[MerchantDeliveryState.DELIVERED, MerchantDeliveryState.NOT_CONFIGURED]
    attempt: int = 1
    status_code: int | None = None


class MerchantEventProgress(BaseModel):
    """A merchant event's delivery, as operators see it in `details` and the Temporal UI."""

    event_id: str
    type: str
    state: MerchantDeliveryState = MerchantDeliveryState.PENDING
    attempts: int | None = None  # known once delivery ends
    finished_at: datetime | None = None
    error: str | None = None


class RefundEntry(BaseModel):
    """One refund in a payment's ledger. PENDING and NEEDS_REVIEW amounts are held: they are
    not refundable again until the refund fails (or a person resolves the review)."""

    refund_id: str
    amount: Decimal
    currency: str
    status: TransactionStatus = TransactionStatus.PENDING
    submitted: bool = False  # the provider has answered the refund request
    requested_at: datetime | None = None
    settled_at: datetime | None = None
    reason: str = ""  # the merchant's reason for the refund
    fail_reason: str | None = None  # why FAILED or NEEDS_REVIEW


# Refunds and withdrawals: what the core asks a provider to do, and what it learns back.


class ProviderRefundState(StrEnum):
    """A provider's view of a refund, mapped once in each provider adapter."""

    PENDING = "PENDING"  # accepted, still processing
    SUCCEEDED = "SUCCEEDED"  # the money went back to the payer
    FAILED = "FAILED"  # the refund failed: its amount is refundable again


class ProviderTransferState(StrEnum):
    """A provider's view of a transfer (a withdrawal's payout), mapped once in each adapter."""

    PENDING = "PENDING"  # accepted, still processing
    SUCCEEDED = "SUCCEEDED"  # the money reached the payee
    FAILED = "FAILED"  # no money left, e.g. the payee account does not exist


class RefundRequest(MoneyTerms):
    """A refund of (part of) a paid payment. `refund_id` is the idempotency key at the
    provider: asking again with the same id and terms returns the same refund."""

    model_config = ConfigDict(frozen=True)

    order_id: str  # the paid payment's
    refund_id: str
    amount: Decimal
    currency: str
    reason: str = ""
    notify_url: str = ""

    @field_validator("order_id", "refund_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return parse_order_id(value)


class RefundObservation(Observation):
    """One thing the provider told us about a refund: its answer, a notification or a query.
    (`provider` is None only in histories recorded before observations named it.)"""

    refund_id: str
    order_id: str
    state: ProviderRefundState
    provider_refund_no: str | None = None
    occurred_at: datetime | None = None
    source: Literal["create", "notification", "status_query"] = "notification"
    notification_id: str | None = None


def refund_workflow_id(refund_id: str) -> str:
    return f"refund-{refund_id}"


class RefundOrder(MoneyTerms):
    """The input of a refund workflow, started by the refunded payment's workflow once it has
    reserved the amount. `refund_id` is the idempotency key, here and at the provider."""

    model_config = ConfigDict(frozen=True)

    refund_id: str
    order_id: str  # the refunded payment's
    amount: Decimal
    currency: str
    provider: str
    payment_workflow_id: str
    reason: str = ""
    notify_url: str = ""
    timing: SettlementTiming = Field(default_factory=SettlementTiming)
    revision: int = 0  # REFUND_REVISION for refunds started by today's payments

    @field_validator("order_id", "refund_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return parse_order_id(value)

    @property
    def workflow_id(self) -> str:
        return refund_workflow_id(self.refund_id)

    def refund_request(self) -> RefundRequest:
        return RefundRequest(
            order_id=self.order_id,
            refund_id=self.refund_id,
            amount=self.amount,
            currency=self.currency,
            reason=self.reason,
            notify_url=self.notify_url,
        )


class RefundProgress(BaseModel):
    """A refund workflow tells its payment how the refund goes: once the provider has the
    request (`submitted`), and once it settles."""

    refund_id: str
    status: TransactionStatus
    submitted: bool = True
    fail_reason: str | None = None
    settled_at: datetime | None = None


class RefundAccepted(BaseModel):
    """What `tempay refund` gets back once the provider has the refund (or it has ended)."""

    workflow_id: str
    refund_id: str
    order_id: str
    status: TransactionStatus
    amount: Decimal
    currency: str
    fail_reason: str | None = None
    payment_status: TransactionStatus
    refundable_amount: Decimal


class RefundView(BaseModel):
    """The refund as `tempay status --refund` and the query handler show it."""

    workflow_id: str
    refund_id: str
    order_id: str
    kind: TransactionKind = TransactionKind.REFUND
    provider: str
    status: TransactionStatus
    amount: Decimal
    currency: str
    reason: str = ""
    refunded_amount: Decimal | None = None
    refunded_currency: str | None = None
    provider_refund_no: str | None = None
    submitted_at: datetime | None = None
    refund_requests: int = 0
    notifications_received: int = 0
    duplicate_notifications: int = 0
    # Observations refused at the trust boundary (another provider's, or about another
    # provider-side id): they changed nothing. The last one's reason, for operators.
    refused_observations: int = 0
    last_refused: str | None = None
    status_queries: int = 0
    last_status_query_at: datetime | None = None
    next_status_query_at: datetime | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None
    review_reason: str | None = None  # why FAILED or NEEDS_REVIEW
    merchant_events: list[MerchantEventProgress] = Field(default_factory=list)
    operator_actions: list[OperatorActionRecord] = Field(default_factory=list)
    # Who answered: Temporal (the workflow, open or still retained) or the book (after
    # Temporal's retention removed the closed workflow).
    source: Literal["temporal", "book"] = "temporal"


def _refund_event(view: RefundView, created_at: datetime) -> MerchantEvent:
    return MerchantEvent(
        id=merchant_event_id(view.workflow_id, view.status),
        type=merchant_event_type(view.kind, view.status),
        created_at=created_at,
        data=MerchantEventData(
            order_id=view.order_id,
            refund_id=view.refund_id,
            workflow_id=view.workflow_id,
            kind=view.kind,
            provider=view.provider,
            status=view.status,
            amount=Decimal(format_amount(view.amount, view.currency)),
            currency=view.currency,
            paid_amount=view.refunded_amount,
            paid_currency=view.refunded_currency,
            provider_trade_no=view.provider_refund_no,
            review_reason=view.review_reason,
            settled_at=view.settled_at,
            settled_by=view.settled_by,
        ),
    )


class TransferRequest(MoneyTerms):
    """A payout to the payee for a withdrawal. `withdrawal_id` is the idempotency key at the
    provider: a repeated request never pays twice."""

    model_config = ConfigDict(frozen=True)

    withdrawal_id: str
    amount: Decimal
    currency: str
    payee_account: str = Field(min_length=1)
    payee_name: str = ""
    notify_url: str = ""

    @field_validator("withdrawal_id")
    @classmethod
    def _withdrawal_id(cls, value: str) -> str:
        return parse_order_id(value)


class TransferObservation(Observation):
    """One thing the provider told us about a transfer: its answer, a notification or a query.
    (`provider` is None only in histories recorded before observations named it.)"""

    withdrawal_id: str
    state: ProviderTransferState
    provider_transfer_no: str | None = None
    fail_reason: str | None = None
    occurred_at: datetime | None = None
    source: Literal["create", "notification", "status_query"] = "notification"
    notification_id: str | None = None


# Withdrawals: a payout from the merchant's balance to a payee, made by a provider transfer.


def withdrawal_workflow_id(withdrawal_id: str) -> str:
    return f"withdrawal-{withdrawal_id}"


class WithdrawalOrder(MoneyTerms):
    """The input of a withdrawal workflow. `withdrawal_id` is the idempotency key, here and
    at the provider (its out_biz_no): the same id never pays out twice."""

    model_config = ConfigDict(frozen=True)

    withdrawal_id: str
    amount: Decimal
    currency: str
    payee_account: str = Field(min_length=1, max_length=128)
    payee_name: str = Field(default="", max_length=128)
    provider: str
    notify_url: str = ""
    timing: SettlementTiming = Field(default_factory=SettlementTiming)
    revision: int = 0  # WITHDRAWAL_REVISION from today's starters

    @field_validator("withdrawal_id")
    @classmethod
    def _withdrawal_id(cls, value: str) -> str:
        return parse_order_id(value)

    @property
    def workflow_id(self) -> str:
        return withdrawal_workflow_id(self.withdrawal_id)

    def transfer_request(self) -> TransferRequest:
        return TransferRequest(
            withdrawal_id=self.withdrawal_id,
            amount=self.amount,
            currency=self.currency,
            payee_account=self.payee_account,
            payee_name=self.payee_name,
            notify_url=self.notify_url,
        )


class WithdrawalSubmitted(BaseModel):
    """What a starter gets back once the transfer is submitted (or the withdrawal ended)."""

    workflow_id: str
    withdrawal_id: str
    status: TransactionStatus
    provider_transfer_no: str | None = None
    fail_reason: str | None = None


class WithdrawalView(BaseModel):
    """The withdrawal as `tempay status --withdrawal` and the query handler show it."""

    workflow_id: str
    withdrawal_id: str
    kind: TransactionKind = TransactionKind.WITHDRAWAL
    provider: str
    status: TransactionStatus
    amount: Decimal
    currency: str
    payee_account: str
    payee_name: str = ""
    paid_amount: Decimal | None = None
    paid_currency: str | None = None
    provider_transfer_no: str | None = None
    submitted_at: datetime | None = None
    # create calls made; more than one only when the provider never got the earlier ones
    transfer_requests: int = 0
    outcome_checks: int = 0  # queries made because a create call's outcome was unknown
    notifications_received: int = 0
    duplicate_notifications: int = 0
    # Observations refused at the trust boundary (another provider's, or about another
    # provider-side id): they changed nothing. The last one's reason, for operators.
    refused_observations: int = 0
    last_refused: str | None = None
    status_queries: int = 0
    last_status_query_at: datetime | None = None
    next_status_query_at: datetime | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None
    review_reason: str | None = None  # why FAILED or NEEDS_REVIEW
    merchant_events: list[MerchantEventProgress] = Field(default_factory=list)
    operator_actions: list[OperatorActionRecord] = Field(default_factory=list)
    # Who answered: Temporal (the workflow, open or still retained) or the book (after
    # Temporal's retention removed the closed workflow).
    source: Literal["temporal", "book"] = "temporal"


def _withdrawal_event(view: WithdrawalView, created_at: datetime) -> MerchantEvent:
    return MerchantEvent(
        id=merchant_event_id(view.workflow_id, view.status),
        type=merchant_event_type(view.kind, view.status),
        created_at=created_at,
        data=MerchantEventData(
            order_id=view.withdrawal_id,
            workflow_id=view.workflow_id,
            kind=view.kind,
            provider=view.provider,
            status=view.status,
            amount=Decimal(format_amount(view.amount, view.currency)),
            currency=view.currency,
            paid_amount=view.paid_amount,
            paid_currency=view.paid_currency,
            provider_trade_no=view.provider_transfer_no,
            review_reason=view.review_reason,
            settled_at=view.settled_at,
            settled_by=view.settled_by,
        ),
    )


PaymentView.model_rebuild()


# The book: what a workflow writes to the system of record (book/) when its status changes.


class StatusChange(BaseModel):
    """One entry of a transaction's journal: from, to, when, and by what."""

    seq: int = Field(ge=1)  # 1, 2, ... within the transaction; the journal's idempotency key
    from_status: TransactionStatus | None = None  # None for the first entry
    to_status: TransactionStatus
    at: datetime
    # create, notification, status_query, close, expiry, refund, operator
    by: str
    operator: str | None = None
    reason: str | None = None


class BookEntry(BaseModel):
    """A transaction as of its `version`-th book write, with the journal entries so far.

    Writing one is idempotent: entries are keyed by (workflow id, seq) and the row is
    replaced only by a higher version, so a retried, replayed or late write changes nothing."""

    # The workflow's count of its book writes (1, 2, ...); 0 for `tempay db backfill`'s row,
    # which the workflow's first own write replaces.
    version: int = Field(ge=0)
    at: datetime  # when the workflow wrote it (workflow time)
    created_at: datetime  # when the transaction began
    view: PaymentView | RefundView | WithdrawalView
    changes: list[StatusChange] = Field(default_factory=list)  # the whole journal so far


class BookedEvent(BaseModel):
    """A settlement's book write and its merchant event, taken by one activity: the book
    first, then the merchant (activities/book.py `record_then_notify_merchant`)."""

    entry: BookEntry
    event: MerchantEvent


class BookedDelivery(BaseModel):
    """What `record_then_notify_merchant` did: `delivery` None when the book did not take
    the write (the merchant was not called); a failed delivery is raised, as by
    `notify_merchant`, after the book took the write."""

    delivery: MerchantDelivery | None = None
