"""tempay's adapter for Stripe: Checkout Sessions and PaymentIntents, Refunds and signed
webhook events.

Over Stripe's REST API with httpx: form-encoded bodies, `Authorization: Bearer sk_...`, a
pinned `Stripe-Version`, and an `Idempotency-Key` on every POST.

Two channels (CHANNELS). `stripe_checkout` (the default, and what an order without a channel
gets) is a Checkout Session, Stripe's hosted page: the payer is redirected to its `url`.
`stripe_payment_intent` is a bare PaymentIntent: the merchant's own page confirms it with
Stripe.js, so the answer is its `client_secret` (a ClientSecretAction), which is the payer's
credential for this one payment and is never logged or put in an error.

Finding an order's Checkout Session or PaymentIntent. The core hands query_payment and
close_payment only the order, and Stripe cannot look a session up by client_reference_id or
metadata: the sessions list filters by payment_intent, customer, status and creation time
only, and the Search API covers PaymentIntents but not sessions. A PaymentIntent does not
help either: Checkout creates it only when the payer submits the form, so an untouched
session has none, and search results lag up to a minute, too late for the close-then-query
at expiry. Storing order -> session locally would tie the worker and the webhook to one disk.

So the object is found again with the request that created it. Stripe keeps an
Idempotency-Key's response for at least 24 hours, and a POST repeating a stored key with
the same parameters answers the stored response (the same object) and creates nothing.
The create parameters are therefore a pure function of the order (`_session_params`,
`_intent_params`), and `tempay-create-{order_id}` is both the idempotency key of create and
the order's index at Stripe. It is the same key for both channels: Stripe refuses a key
reused on another endpoint (idempotency_error), so one order id can never have both a
session and a PaymentIntent. This is also why the session carries no `expires_at`: a
"now + N" in the body would differ on every retry, and Stripe answers a changed body with an
idempotency_error. Stripe's own expiry (24 hours; a PaymentIntent has none) is the backstop;
tempay ends the payment itself at the order's expiry (`close_payment`: the session is
expired, the PaymentIntent canceled), which must therefore come well inside the key's 24
hours: create_payment refuses orders that expire later than MAX_ORDER_LIFETIME.

A PaymentIntent tempay creates carries `metadata[tempay_channel]`. Checkout's own
PaymentIntents do not, and their payment_intent.* events are not read as a payment's news
(the session's events are): see `parse_any_notification`.

Refunds know only the order id, not the order's terms, so they find the payment through the
Search API (`metadata['order_id']`, set on every PaymentIntent tempay makes or has Checkout
make). By the time anybody refunds, the payment is long searchable.

The daily statement (`statement`) lists the day's paid Checkout Sessions, paid tempay
PaymentIntents and refunds; statement.py says why those lists and how they map.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from providers.base import Acknowledgement, ProviderObservation
from providers.http import HTTPAdapter
from providers.stripe.amounts import from_minor_units, to_minor_units
from providers.stripe.settings import StripeSettings
from providers.stripe.signature import SIGNATURE_HEADER, verify
from providers.stripe.statement import (
    PAGE_SIZE,
    SESSION_LIFETIME,
    day_bounds,
    intent_line,
    refund_line,
    session_line,
)
from tempay.channels import ClientSecretAction, RedirectAction
from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundObservation,
    RefundRequest,
)
from tempay.errors import (
    MalformedNotification,
    NotificationError,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRefused,
    ProviderRejected,
    SignatureError,
    StatementError,
    UnverifiedNotification,
)
from tempay.statements import StatementLine

# Query parameters as httpx takes them, repeated keys (expand[]) allowed.
QueryParams = list[tuple[str, str | int | float | bool | None]]

# The payment products (the spec's channels, providers/stripe/__init__.py).
CHECKOUT = "stripe_checkout"  # a Checkout Session: Stripe's hosted page
PAYMENT_INTENT = "stripe_payment_intent"  # a PaymentIntent the merchant's page confirms
CHANNELS = (CHECKOUT, PAYMENT_INTENT)
DEFAULT_CHANNEL = CHECKOUT
# Set on every PaymentIntent tempay creates (to its channel); Checkout's have none.
CHANNEL_METADATA = "tempay_channel"
# Stripe's object ids as they may appear in a request path.
OBJECT_ID = re.compile(r"[A-Za-z0-9_]{1,255}")

# The API version whose shapes this adapter reads (sent on every call).
STRIPE_VERSION = "2024-06-20"
# Orders must be closed (the session expired by tempay) while the create key still finds it.
MAX_ORDER_LIFETIME = timedelta(hours=20)


# ---- status mapping: the one place Stripe's states become the core's ----------------------

REFUND_STATUS_MAP: dict[str, ProviderRefundState] = {
    "pending": ProviderRefundState.PENDING,
    "requires_action": ProviderRefundState.PENDING,
    "succeeded": ProviderRefundState.SUCCEEDED,
    "failed": ProviderRefundState.FAILED,
    "canceled": ProviderRefundState.FAILED,
}

# PaymentIntent states after a payment attempt failed: the money did not move.
INTENT_FAILED = ("requires_payment_method", "canceled")

# A PaymentIntent tempay created (channel stripe_payment_intent), by its own status. Nothing
# here is FAILED: a failed attempt hands the PaymentIntent back for another (Stripe: "returns
# to requires_payment_method"), and FAILED is terminal in tempay, so money from the payer's
# second card would arrive as late money (NEEDS_REVIEW). A PaymentIntent ends paid
# (succeeded) or canceled, which tempay does at the order's expiry (close_payment).
INTENT_STATUS_MAP: dict[str, ProviderPaymentState] = {
    # Waiting for a payment method: none given yet, or the last attempt failed or was declined.
    "requires_payment_method": ProviderPaymentState.PENDING,
    "requires_confirmation": ProviderPaymentState.PENDING,
    # 3-D Secure or a redirect the payer has not finished.
    "requires_action": ProviderPaymentState.PENDING,
    # A delayed method (a bank debit) settling: it may still succeed or fail (and retry).
    "processing": ProviderPaymentState.PENDING,
    # Authorised, not captured: tempay never asks for manual capture, and an uncaptured
    # authorisation is not money received (a cancel releases it).
    "requires_capture": ProviderPaymentState.PENDING,
    "succeeded": ProviderPaymentState.PAID,
    # Canceled (by tempay at expiry, or in the Dashboard): it can never be paid.
    "canceled": ProviderPaymentState.CLOSED,
}

# Events about a Checkout Session. None: the session itself says (completed is PAID when
# payment_status is paid, PENDING while a delayed method such as a bank debit settles).
SESSION_EVENTS: dict[str, ProviderPaymentState | None] = {
    "checkout.session.completed": None,
    "checkout.session.async_payment_succeeded": ProviderPaymentState.PAID,
    "checkout.session.async_payment_failed": ProviderPaymentState.FAILED,
    "checkout.session.expired": ProviderPaymentState.CLOSED,
}
# Events about a PaymentIntent. For tempay's own (stripe_payment_intent) the PaymentIntent's
# status says what it is (INTENT_STATUS_MAP), whatever the event's name: a stale snapshot
# delivered late is then only what it was, and payment_failed is PENDING news.
# A PaymentIntent Checkout made is the session's business: the session's events settle it
# (and name the session, the order's provider trade number), so its payment_intent.* events
# are ignored, except payment_failed, which stays what it always was: PENDING news (a
# declined card inside an open Checkout Session is not the payment's end either).
INTENT_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.canceled",
)
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")


def session_state(
    status: Any, payment_status: Any, intent_status: Any = None
) -> ProviderPaymentState:
    """A Checkout Session (with its PaymentIntent's status when known) as the core sees it."""
    if status == "complete" and payment_status == "paid":
        return ProviderPaymentState.PAID
    if status == "complete":
        # Completed but unpaid: a delayed method is settling, or it failed (the intent then
        # waits for a new payment method, which a completed session never collects).
        if intent_status in INTENT_FAILED:
            return ProviderPaymentState.FAILED
        return ProviderPaymentState.PENDING
    if status == "expired":
        return ProviderPaymentState.CLOSED
    if status == "open":
        # Even after a declined card: the payer may still pay (see INTENT_EVENTS).
        return ProviderPaymentState.PENDING
    raise MalformedNotification(f"unknown Checkout Session status {status!r}")


def intent_state(status: Any) -> ProviderPaymentState:
    """A tempay PaymentIntent's status as the core sees it (INTENT_STATUS_MAP)."""
    try:
        return INTENT_STATUS_MAP[status]
    except (KeyError, TypeError):
        raise MalformedNotification(f"unknown PaymentIntent status {status!r}") from None


def refund_state(status: Any) -> ProviderRefundState:
    try:
        return REFUND_STATUS_MAP[status]
    except (KeyError, TypeError):
        raise MalformedNotification(f"unknown Stripe refund status {status!r}") from None


def _when(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _id(obj: Mapping[str, Any]) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise ProviderError(f"stripe answered a {obj.get('object', 'object')} without an id")
    return value


class IgnoredEvent(NotificationError):
    """A verified event tempay does not act on (another event type, or an object that is not
    tempay's). Answered 2xx, since Stripe retries anything else for three days and then
    disables the endpoint; see `StripeAdapter.refusal`."""

    http_status = 200


def _path_id(obj: Mapping[str, Any]) -> str:
    """An object's id, to put in a request path: only the characters Stripe's ids have."""
    value = _id(obj)
    if not OBJECT_ID.fullmatch(value):
        raise ProviderError(f"stripe answered a {obj.get('object', 'object')} with a malformed id")
    return value


def _read(
    observe: Callable[[Mapping[str, Any], str], PaymentObservation],
    answer: Mapping[str, Any],
    source: str,
    what: str,
) -> PaymentObservation:
    """A Checkout Session or PaymentIntent answer as an observation; an answer that cannot
    be read is a ProviderError (retried), never a guess."""
    try:
        return observe(answer, source)
    except NotificationError as exc:
        raise ProviderError(f"stripe {what} answer unreadable: {exc}") from None


def _close_outcome(observation: PaymentObservation) -> CloseOutcome:
    """Closed only when Stripe says it can no longer be paid; otherwise what it is now."""
    return CloseOutcome(
        closed=observation.state is ProviderPaymentState.CLOSED, observation=observation
    )


def channel_of(order: PaymentOrder) -> str:
    """The order's channel. Before Stripe had channels it ignored an order's `channel`, so an
    order still open from then may name anything (another provider's `alipay_wap`): every
    such order is a Checkout Session, and only `stripe_payment_intent` names the other path.
    New orders name one of CHANNELS (build_order refuses the rest before anything starts)."""
    return PAYMENT_INTENT if order.channel == PAYMENT_INTENT else DEFAULT_CHANNEL


def is_tempay_intent(intent: Mapping[str, Any]) -> bool:
    """Whether tempay created this PaymentIntent itself (not Checkout, not anybody else)."""
    metadata = intent.get("metadata")
    return isinstance(metadata, Mapping) and metadata.get(CHANNEL_METADATA) == PAYMENT_INTENT


def _order_id_of(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    order_id = metadata.get("order_id") if isinstance(metadata, Mapping) else None
    order_id = order_id or obj.get("client_reference_id")
    return str(order_id) if order_id else None


class StripeAdapter(HTTPAdapter):
    name = "stripe"

    def __init__(
        self,
        api_key: SecretStr | str,
        webhook_secrets: Sequence[SecretStr | str],
        api_base: str = "https://api.stripe.com",
        timeout: float = 10.0,
        tolerance: timedelta = timedelta(minutes=5),
        return_url: str | None = None,
    ) -> None:
        super().__init__(base_url=api_base.rstrip("/"), timeout=timeout)
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self._secrets = [s if isinstance(s, SecretStr) else SecretStr(s) for s in webhook_secrets]
        self._api_base = api_base.rstrip("/")
        self._tolerance = tolerance
        self._return_url = return_url

    @classmethod
    def from_settings(
        cls, settings: StripeSettings, tolerance: timedelta = timedelta(minutes=5)
    ) -> StripeAdapter:
        if settings.api_key is None:
            raise ValueError("TEMPAY_STRIPE_API_KEY is not set")
        return cls(
            settings.api_key,
            settings.webhook_secrets(),
            api_base=settings.api_base,
            timeout=settings.timeout.total_seconds(),
            tolerance=tolerance,
            return_url=settings.return_url,
        )

    def __repr__(self) -> str:
        return f"StripeAdapter(api_base={self._api_base!r})"

    # ---- HTTP -----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        data: Mapping[str, str] | None = None,
        params: list[tuple[str, str | int | float | bool | None]] | None = None,
        idempotency_key: str | None = None,
        moves_money: bool = False,
    ) -> dict[str, Any]:
        """One call; Stripe's answer as a dict, or the error the core understands.

        For a call that moves money, an answer lost after the request may have left is
        ProviderOutcomeUnknown; for the others it is a plain, retryable ProviderError."""
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Stripe-Version": STRIPE_VERSION,
        }
        if method == "POST":
            assert idempotency_key, "every POST to Stripe carries an Idempotency-Key"
            headers["Idempotency-Key"] = idempotency_key
        what = f"stripe {method} {path}"
        response = await self.http.request(
            method,
            path,
            what,
            moves_money=moves_money,
            data=data,
            params=params,
            headers=headers,
        )
        if response.status_code >= 400:
            raise self._error(what, response)
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"{what}: answer is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderError(f"{what}: answer is not a JSON object")
        return body

    @staticmethod
    def _error(what: str, response: httpx.Response) -> ProviderError:
        """Stripe's `{"error": {"type", "code", "message", ...}}` as the core's errors."""
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        error = error if isinstance(error, dict) else {}
        kind, code = error.get("type"), error.get("code")
        message = f"{what}: HTTP {response.status_code} {kind or ''} {code or ''}".rstrip()
        if error.get("message"):
            message += f": {error['message']}"
        status = response.status_code
        if status in (401, 403):
            # A key problem is the operator's to fix; refusing would fail payments for it.
            return ProviderError(f"{message} (check TEMPAY_STRIPE_API_KEY)")
        if status == 429 or (status == 409 and kind != "idempotency_error"):
            # Rate limited, or the same Idempotency-Key is still in flight: try again later.
            return ProviderError(message)
        if isinstance(code, str) and code:
            details = {
                k: error[k] for k in ("type", "param", "decline_code", "doc_url") if k in error
            }
            return ProviderRefused(message, code, details)
        return ProviderRejected(message)

    # ---- payments -------------------------------------------------------------------------

    @staticmethod
    def _create_key(order_id: str) -> str:
        return f"tempay-create-{order_id}"

    def _session_params(self, order: PaymentOrder) -> dict[str, str]:
        """The create request: a pure function of the order (see the module docstring)."""
        return_url = order.return_url or self._return_url
        if not return_url:
            raise ProviderRejected(
                f"order {order.order_id} has no return_url and TEMPAY_STRIPE_RETURN_URL is "
                "unset: Stripe Checkout needs a page to send the payer back to"
            )
        return {
            "mode": "payment",
            "client_reference_id": order.order_id,
            "success_url": return_url,
            "cancel_url": return_url,
            "line_items[0][quantity]": "1",
            "line_items[0][price_data][currency]": order.currency.lower(),
            "line_items[0][price_data][unit_amount]": str(
                to_minor_units(order.amount, order.currency)
            ),
            "line_items[0][price_data][product_data][name]": order.subject
            or f"Order {order.order_id}",
            "metadata[order_id]": order.order_id,
            "metadata[tempay_kind]": str(order.kind),
            "payment_intent_data[metadata][order_id]": order.order_id,
        }

    async def _session_of(self, order: PaymentOrder) -> dict[str, Any]:
        """The order's Checkout Session, by replaying its create request (same key, same
        parameters): Stripe answers the stored response, so nothing new is created."""
        return await self._request(
            "POST",
            "/v1/checkout/sessions",
            data=self._session_params(order),
            idempotency_key=self._create_key(order.order_id),
        )

    def _intent_params(self, order: PaymentOrder) -> dict[str, str]:
        """The PaymentIntent's create request: a pure function of the order, like the
        session's. The metadata is what refunds, the statement and events read."""
        return {
            "amount": str(to_minor_units(order.amount, order.currency)),
            "currency": order.currency.lower(),
            "automatic_payment_methods[enabled]": "true",
            "description": order.subject or f"Order {order.order_id}",
            "metadata[order_id]": order.order_id,
            "metadata[tempay_kind]": str(order.kind),
            f"metadata[{CHANNEL_METADATA}]": PAYMENT_INTENT,
        }

    async def _intent_of(self, order: PaymentOrder) -> dict[str, Any]:
        """The order's PaymentIntent, by replaying its create request (see `_session_of`).
        The answer is as it was created; `_retrieve_intent` reads it as it is now."""
        return await self._request(
            "POST",
            "/v1/payment_intents",
            data=self._intent_params(order),
            idempotency_key=self._create_key(order.order_id),
        )

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        channel = channel_of(order)
        if order.timing.expires_after > MAX_ORDER_LIFETIME:
            raise ProviderRejected(
                f"stripe orders must expire within {MAX_ORDER_LIFETIME} (TEMPAY_PAYMENT_EXPIRY): "
                "tempay finds a payment at Stripe by its create key, which Stripe keeps 24 hours"
            )
        if channel == PAYMENT_INTENT:
            intent = await self._intent_of(order)
            secret = intent.get("client_secret")
            if not isinstance(secret, str) or not secret:
                raise ProviderError("stripe created a PaymentIntent without a client_secret")
            return CreatedPayment(
                provider_trade_no=_path_id(intent),
                payer_action=ClientSecretAction(client_secret=secret),
            )
        session = await self._session_of(order)
        url = session.get("url")
        if not isinstance(url, str) or not url:
            raise ProviderError("stripe created a Checkout Session without a url")
        return CreatedPayment(provider_trade_no=_id(session), payer_action=RedirectAction(url=url))

    async def _retrieve(self, session_id: str) -> dict[str, Any]:
        return await self._request(
            "GET",
            f"/v1/checkout/sessions/{session_id}",
            params=[("expand[]", "payment_intent")],
        )

    def _observation(
        self,
        session: Mapping[str, Any],
        source: str,
        state: ProviderPaymentState | None = None,
        notification_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> PaymentObservation:
        """A session (its PaymentIntent expanded or only an id) as an observation."""
        intent = session.get("payment_intent")
        intent = intent if isinstance(intent, Mapping) else None
        if state is None:
            state = session_state(
                session.get("status"),
                session.get("payment_status"),
                intent.get("status") if intent else None,
            )
        order_id = _order_id_of(session)
        if order_id is None:
            raise IgnoredEvent(f"Checkout Session {session.get('id')} is not a tempay order")
        amount = currency = None
        if state is ProviderPaymentState.PAID:
            if intent is not None and intent.get("status") == "succeeded":
                amount, currency = from_minor_units(
                    intent.get("amount_received"), intent.get("currency")
                )
            else:
                amount, currency = from_minor_units(
                    session.get("amount_total"), session.get("currency")
                )
        return PaymentObservation(
            order_id=order_id,
            provider=self.name,
            state=state,
            provider_trade_no=session.get("id"),
            amount=amount,
            currency=currency,
            occurred_at=occurred_at,
            source=source,  # type: ignore[arg-type]
            notification_id=notification_id,
        )

    async def _retrieve_intent(self, intent_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/payment_intents/{intent_id}")

    def _intent_observation(
        self,
        intent: Mapping[str, Any],
        source: str,
        notification_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> PaymentObservation:
        """A tempay PaymentIntent as an observation: its status mapped once
        (INTENT_STATUS_MAP), and what it received when it succeeded."""
        order_id = _order_id_of(intent)
        if order_id is None:
            raise IgnoredEvent(f"PaymentIntent {intent.get('id')} is not a tempay order")
        state = intent_state(intent.get("status"))
        amount = currency = None
        if state is ProviderPaymentState.PAID:
            amount, currency = from_minor_units(
                intent.get("amount_received"), intent.get("currency")
            )
        trade_no = intent.get("id")
        return PaymentObservation(
            order_id=order_id,
            provider=self.name,
            state=state,
            provider_trade_no=trade_no if isinstance(trade_no, str) and trade_no else None,
            amount=amount,
            currency=currency,
            occurred_at=occurred_at,
            source=source,  # type: ignore[arg-type]
            notification_id=notification_id,
        )

    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        if channel_of(order) == PAYMENT_INTENT:
            intent = await self._retrieve_intent(_path_id(await self._intent_of(order)))
            return _read(self._intent_observation, intent, "status_query", "status")
        session = await self._retrieve(_id(await self._session_of(order)))
        return _read(self._observation, session, "status_query", "status")

    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        if channel_of(order) == PAYMENT_INTENT:
            return await self._cancel_intent(order)
        session_id = _id(await self._session_of(order))
        try:
            expired = await self._request(
                "POST",
                f"/v1/checkout/sessions/{session_id}/expire",
                idempotency_key=f"tempay-expire-{order.order_id}",
            )
        except ProviderRejected:
            # Only open sessions can be expired: read what it became (paid, or expired).
            expired = await self._retrieve(session_id)
        return _close_outcome(_read(self._observation, expired, "close", "close"))

    async def _cancel_intent(self, order: PaymentOrder) -> CloseOutcome:
        """Cancel the PaymentIntent: no attempt can charge the payer after it. Stripe refuses
        to cancel one that succeeded (or is processing, or was canceled already): then what
        it is now is the answer, and only `canceled` is closed."""
        intent_id = _path_id(await self._intent_of(order))
        try:
            intent = await self._request(
                "POST",
                f"/v1/payment_intents/{intent_id}/cancel",
                data={"cancellation_reason": "abandoned"},
                idempotency_key=f"tempay-cancel-{order.order_id}",
            )
        except ProviderRejected:
            intent = await self._retrieve_intent(intent_id)
        return _close_outcome(_read(self._intent_observation, intent, "close", "close"))

    # ---- refunds ---------------------------------------------------------------------------

    async def _paid_intent(self, order_id: str) -> dict[str, Any] | None:
        """The order's succeeded PaymentIntent, found by its metadata through the Search API
        (order ids are letters, digits, '_', '-' and '.': nothing to escape in the query)."""
        answer = await self._request(
            "GET",
            "/v1/payment_intents/search",
            params=[("query", f"metadata['order_id']:'{order_id}'"), ("limit", "100")],
        )
        intents = answer.get("data")
        for intent in intents if isinstance(intents, list) else []:
            if isinstance(intent, dict) and intent.get("status") == "succeeded":
                return intent
        return None

    def _refund_observation(
        self,
        refund: Mapping[str, Any],
        source: str,
        notification_id: str | None = None,
    ) -> RefundObservation:
        metadata = refund.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        refund_id, order_id = metadata.get("refund_id"), metadata.get("order_id")
        if not refund_id or not order_id:
            raise IgnoredEvent(f"refund {refund.get('id')} is not a tempay refund")
        amount, currency = from_minor_units(refund.get("amount"), refund.get("currency"))
        return RefundObservation(
            refund_id=str(refund_id),
            order_id=str(order_id),
            state=refund_state(refund.get("status")),
            amount=amount,
            currency=currency,
            provider_refund_no=refund.get("id"),
            occurred_at=_when(refund.get("created")),
            source=source,  # type: ignore[arg-type]
            notification_id=notification_id,
        )

    async def create_refund(self, request: RefundRequest) -> RefundObservation:
        intent = await self._paid_intent(request.order_id)
        if intent is None:
            raise ProviderRefused(
                f"stripe has no paid PaymentIntent for order {request.order_id}",
                "payment_not_found",
            )
        if str(intent.get("currency", "")).upper() != request.currency:
            raise ProviderRefused(
                f"order {request.order_id} was paid in {str(intent.get('currency')).upper()}, "
                f"not {request.currency}",
                "currency_mismatch",
            )
        data = {
            "payment_intent": _id(intent),
            "amount": str(to_minor_units(request.amount, request.currency)),
            "metadata[refund_id]": request.refund_id,
            "metadata[order_id]": request.order_id,
        }
        if request.reason:
            data["metadata[reason]"] = request.reason[:500]
        refund = await self._request(
            "POST",
            "/v1/refunds",
            data=data,
            idempotency_key=f"tempay-refund-{request.refund_id}",
            moves_money=True,
        )
        try:
            return self._refund_observation(refund, "create")
        except NotificationError as exc:
            raise ProviderOutcomeUnknown(f"stripe refund answer unreadable: {exc}") from None

    async def query_refund(self, request: RefundRequest) -> RefundObservation | None:
        intent = await self._paid_intent(request.order_id)
        if intent is None:
            return None
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("payment_intent", _id(intent)),
            ("limit", "100"),
        ]
        while True:
            page = await self._request("GET", "/v1/refunds", params=params)
            refunds = page.get("data")
            refunds = refunds if isinstance(refunds, list) else []
            for refund in refunds:
                metadata = refund.get("metadata") if isinstance(refund, dict) else None
                if isinstance(metadata, dict) and metadata.get("refund_id") == request.refund_id:
                    try:
                        return self._refund_observation(refund, "status_query")
                    except NotificationError as exc:
                        raise ProviderError(f"stripe refund answer unreadable: {exc}") from None
            if not page.get("has_more") or not refunds:
                return None
            params = [*params[:2], ("starting_after", _id(refunds[-1]))]

    # ---- statements --------------------------------------------------------------------------

    async def _list(self, path: str, params: QueryParams) -> AsyncIterator[dict[str, Any]]:
        """Every object of a Stripe list, a page (PAGE_SIZE) at a time, following has_more
        with starting_after."""
        after: str | None = None
        while True:
            page = await self._request(
                "GET",
                path,
                params=[*params, ("limit", str(PAGE_SIZE))]
                + ([("starting_after", after)] if after else []),
            )
            data = page.get("data")
            if not isinstance(data, list) or not all(isinstance(o, dict) for o in data):
                raise StatementError(f"stripe GET {path}: the answer is not a list of objects")
            for obj in data:
                yield obj
            if not page.get("has_more"):
                return
            if not data:
                raise StatementError(f"stripe GET {path}: has_more on an empty page")
            after = _id(data[-1])

    async def statement(self, day: date) -> AsyncIterator[StatementLine]:
        """The payments and refunds Stripe made on `day` (UTC): the Checkout Sessions and
        tempay's PaymentIntents paid with a charge made that day, and the refunds that
        succeeded. See statement.py."""
        start, end = day_bounds(day)
        created_from = start - int(SESSION_LIFETIME.total_seconds())
        sessions = self._list(
            "/v1/checkout/sessions",
            [
                ("status", "complete"),
                ("created[gte]", str(created_from)),
                ("created[lt]", str(end)),
                ("expand[]", "data.payment_intent.latest_charge"),
            ],
        )
        async for session in sessions:
            line = session_line(session, start, end, _order_id_of(session))
            if line is not None:
                yield line
        intents = self._list(
            "/v1/payment_intents",
            [
                ("created[gte]", str(created_from)),
                ("created[lt]", str(end)),
                ("expand[]", "data.latest_charge"),
            ],
        )
        async for intent in intents:
            # Checkout's PaymentIntents are their sessions' lines (above).
            if is_tempay_intent(intent):
                line = intent_line(intent, start, end, _order_id_of(intent))
                if line is not None:
                    yield line
        refunds = self._list(
            "/v1/refunds",
            [
                ("created[gte]", str(start)),
                ("created[lt]", str(end)),
                ("expand[]", "data.payment_intent"),
            ],
        )
        async for refund in refunds:
            line = refund_line(refund)
            if line is not None:
                yield line

    # ---- notifications ---------------------------------------------------------------------

    def _event(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The signature first, on the raw body; then the event envelope."""
        try:
            verify(
                body,
                headers.get(SIGNATURE_HEADER),
                self._secrets,
                tolerance=self._tolerance.total_seconds(),
            )
        except SignatureError as exc:
            raise UnverifiedNotification(str(exc)) from None
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedNotification("body is not JSON") from None
        if not isinstance(event, dict):
            raise MalformedNotification("body is not a JSON object")
        data = event.get("data")
        if (
            not isinstance(event.get("id"), str)
            or not event["id"]
            or not isinstance(event.get("type"), str)
            or not isinstance(data, dict)
            or not isinstance(data.get("object"), dict)
        ):
            raise MalformedNotification("not a Stripe event (needs id, type and data.object)")
        return event

    def parse_any_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> ProviderObservation:
        event = self._event(headers, body)
        kind, obj, event_id = event["type"], event["data"]["object"], event["id"]
        created = _when(event.get("created"))
        if kind in SESSION_EVENTS:
            return self._observation(obj, "notification", SESSION_EVENTS[kind], event_id, created)
        if kind in INTENT_EVENTS:
            if is_tempay_intent(obj):
                return self._intent_observation(obj, "notification", event_id, created)
            order_id = _order_id_of(obj)
            if order_id is None:
                raise IgnoredEvent(f"PaymentIntent {obj.get('id')} is not a tempay order")
            if kind != "payment_intent.payment_failed":
                raise IgnoredEvent(
                    f"{kind} for PaymentIntent {obj.get('id')}, which tempay did not create: "
                    "a Checkout order settles by its session's events"
                )
            # No trade number: the order knows its session's, not this PaymentIntent's.
            return PaymentObservation(
                order_id=order_id,
                provider=self.name,
                state=ProviderPaymentState.PENDING,
                occurred_at=created,
                source="notification",
                notification_id=event_id,
            )
        if kind in REFUND_EVENTS:
            return self._refund_observation(obj, "notification", event_id)
        raise IgnoredEvent(f"event type {kind} is not used by tempay")

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        observation = self.parse_any_notification(headers, body)
        if not isinstance(observation, PaymentObservation):
            raise MalformedNotification("this Stripe event is not about a payment")
        return observation

    def acknowledgement(self) -> Acknowledgement:
        return Acknowledgement(200, json.dumps({"received": True}), "application/json")

    def refusal(self, status_code: int, message: str) -> Acknowledgement:
        if status_code < 300:
            # An IgnoredEvent: received and deliberately not acted on.
            body = {"received": True, "ignored": message}
            return Acknowledgement(status_code, json.dumps(body), "application/json")
        return Acknowledgement(
            status_code, json.dumps({"error": {"message": message}}), "application/json"
        )
