"""tempay's adapter for Stripe: Checkout Sessions, Refunds and signed webhook events.

Over Stripe's REST API with httpx: form-encoded bodies, `Authorization: Bearer sk_...`, a
pinned `Stripe-Version`, and an `Idempotency-Key` on every POST.

Finding an order's Checkout Session. The core hands query_payment and close_payment only the
order, and Stripe cannot look a session up by client_reference_id or metadata: the sessions
list filters by payment_intent, customer, status and creation time only, and the Search API
covers PaymentIntents but not sessions. A PaymentIntent does not help either: Checkout
creates it only when the payer submits the form, so an untouched session has none, and
search results lag up to a minute, too late for the close-then-query at expiry. Storing
order -> session locally would tie the worker and the webhook to one disk.

So the session is found again with the request that created it. Stripe keeps an
Idempotency-Key's response for at least 24 hours, and a POST repeating a stored key with
the same parameters answers the stored response (the same session) and creates nothing.
The create parameters are therefore a pure function of the order (`_session_params`), and
`tempay-create-{order_id}` is both the idempotency key of create and the order's index at
Stripe. This is also why the session carries no `expires_at`: a "now + N" in the body would
differ on every retry, and Stripe answers a changed body with an idempotency_error. Stripe's
own expiry (24 hours) is the backstop; tempay expires the session itself at the order's
expiry (`close_payment`), which must therefore come well inside the key's 24 hours:
create_payment refuses orders that expire later than MAX_ORDER_LIFETIME.

Refunds know only the order id, not the order's terms, so they find the payment through the
Search API (`metadata['order_id']`, set on the PaymentIntent through payment_intent_data).
By the time anybody refunds, the payment is long searchable.

The daily statement (`statement`) lists the day's paid Checkout Sessions and refunds;
statement.py says why those lists and how they map.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
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
    refund_line,
    session_line,
)
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

# Events about a Checkout Session. None: the session itself says (completed is PAID when
# payment_status is paid, PENDING while a delayed method such as a bank debit settles).
SESSION_EVENTS: dict[str, ProviderPaymentState | None] = {
    "checkout.session.completed": None,
    "checkout.session.async_payment_succeeded": ProviderPaymentState.PAID,
    "checkout.session.async_payment_failed": ProviderPaymentState.FAILED,
    "checkout.session.expired": ProviderPaymentState.CLOSED,
}
# A declined card inside an open Checkout Session is not the payment's end: the payer stays
# on the page and may try another card until the session expires. FAILED is terminal in
# tempay (a later success would become NEEDS_REVIEW), so this event is only PENDING news;
# the end comes as checkout.session.expired (CLOSED) or async_payment_failed (FAILED).
INTENT_EVENTS: dict[str, ProviderPaymentState] = {
    "payment_intent.payment_failed": ProviderPaymentState.PENDING,
}
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

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        if order.timing.expires_after > MAX_ORDER_LIFETIME:
            raise ProviderRejected(
                f"stripe orders must expire within {MAX_ORDER_LIFETIME} (TEMPAY_PAYMENT_EXPIRY): "
                "tempay finds a Checkout Session by its create key, which Stripe keeps 24 hours"
            )
        session = await self._session_of(order)
        url = session.get("url")
        if not isinstance(url, str) or not url:
            raise ProviderError("stripe created a Checkout Session without a url")
        return CreatedPayment(provider_trade_no=_id(session), payment_url=url)

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

    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        session = await self._session_of(order)
        try:
            return self._observation(await self._retrieve(_id(session)), "status_query")
        except NotificationError as exc:
            raise ProviderError(f"stripe status answer unreadable: {exc}") from None

    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
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
        try:
            observation = self._observation(expired, "close")
        except NotificationError as exc:
            raise ProviderError(f"stripe close answer unreadable: {exc}") from None
        return CloseOutcome(
            closed=observation.state is ProviderPaymentState.CLOSED, observation=observation
        )

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
        """The payments and refunds Stripe made on `day` (UTC): the Checkout Sessions paid
        with a charge made that day, and the refunds that succeeded. See statement.py."""
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
            order_id = _order_id_of(obj)
            if order_id is None:
                raise IgnoredEvent(f"PaymentIntent {obj.get('id')} is not a tempay order")
            return PaymentObservation(
                order_id=order_id,
                provider=self.name,
                state=INTENT_EVENTS[kind],
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
