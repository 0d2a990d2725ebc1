"""tempay's adapter for the sandbox provider: its wire format in, the core's types out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.base import (
    Acknowledgement,
    MalformedNotification,
    ProviderAdapter,
    ProviderError,
    ProviderRejected,
    UnverifiedNotification,
)
from providers.sandbox.keys import load_public_key
from providers.sandbox.signature import SIGNATURE_HEADER, SignatureError, verify_body
from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    ProviderPaymentState,
    format_amount,
)

# The one place the sandbox's trade statuses map to the core's provider states.
STATUS_MAP: dict[str, ProviderPaymentState] = {
    "WAIT_BUYER_PAY": ProviderPaymentState.PENDING,
    "TRADE_SUCCESS": ProviderPaymentState.PAID,
    "TRADE_FAILED": ProviderPaymentState.FAILED,
    "TRADE_CLOSED": ProviderPaymentState.CLOSED,
}


def _state(status: Any) -> ProviderPaymentState:
    try:
        return STATUS_MAP[status]
    except (KeyError, TypeError):
        raise MalformedNotification(f"unknown trade_status {status!r}") from None


def _decimal(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedNotification(f"{field} must be a decimal string")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise MalformedNotification(f"{field} {value!r} is not a decimal") from None


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise MalformedNotification(f"{field} {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _trade_observation(trade: Mapping[str, Any], source: str) -> PaymentObservation:
    """Map a status-query (or close) answer to an observation."""
    state = _state(trade.get("status"))
    paid = state is ProviderPaymentState.PAID
    return PaymentObservation(
        order_id=str(trade["out_trade_no"]),
        provider="sandbox",
        state=state,
        provider_trade_no=trade.get("trade_no"),
        amount=_decimal(trade.get("paid_amount"), "paid_amount") if paid else None,
        currency=trade.get("paid_currency") if paid else None,
        occurred_at=_timestamp(trade.get("paid_at") or trade.get("closed_at"), "paid_at"),
        source=source,  # type: ignore[arg-type]
    )


class SandboxAdapter(ProviderAdapter):
    name = "sandbox"

    def __init__(
        self,
        base_url: str,
        public_key_file: Path | None = None,
        tolerance: timedelta = timedelta(minutes=5),
        timeout: float = 10.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._public_key_file = public_key_file
        self._public_key: rsa.RSAPublicKey | None = None
        self._tolerance = tolerance
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self._base_url, timeout=self._timeout)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderError(f"sandbox unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise ProviderError(f"sandbox {method} {path}: HTTP {response.status_code}")
        return response

    @staticmethod
    def _rejected(response: httpx.Response, what: str) -> ProviderRejected:
        return ProviderRejected(
            f"sandbox refused {what}: HTTP {response.status_code} {response.text}"
        )

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        response = await self._call(
            "POST",
            "/payments",
            json={
                "out_trade_no": order.order_id,
                "amount": format_amount(order.amount, order.currency),
                "currency": order.currency.lower(),
                "body": order.subject or order.order_id,
                "subject": order.subject,
                "channel": order.channel,
                "return_url": order.return_url,
                "notify_url": order.notify_url,
            },
        )
        if response.status_code != 200:
            raise self._rejected(response, "create")
        trade = response.json()
        return CreatedPayment(provider_trade_no=trade["trade_no"], payment_url=trade["payment_url"])

    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        response = await self._call("GET", f"/payments/{order.order_id}")
        if response.status_code == 404:
            # The create call may not have reached the provider: nothing was paid.
            return PaymentObservation(
                order_id=order.order_id,
                provider=self.name,
                state=ProviderPaymentState.PENDING,
                source="status_query",
            )
        if response.status_code != 200:
            raise self._rejected(response, "status query")
        return _trade_observation(response.json(), "status_query")

    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        response = await self._call("POST", f"/payments/{order.order_id}/close")
        if response.status_code == 200:
            trade = response.json()
            return CloseOutcome(
                closed=trade.get("status") == "TRADE_CLOSED",
                observation=_trade_observation(trade, "close"),
            )
        if response.status_code == 409 and response.json().get("code") == "TRADE_ALREADY_PAID":
            return CloseOutcome(
                closed=False, observation=_trade_observation(response.json(), "close")
            )
        if response.status_code == 404:
            return CloseOutcome(closed=True)
        raise self._rejected(response, "close")

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        if self._public_key is None:
            if self._public_key_file is None:
                raise UnverifiedNotification("no sandbox public key configured")
            self._public_key = load_public_key(self._public_key_file)
        return self._public_key

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        try:
            verify_body(self.public_key, body, headers.get(SIGNATURE_HEADER))
        except SignatureError as exc:
            raise UnverifiedNotification(str(exc)) from None
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedNotification("body is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedNotification("body is not a JSON object")
        missing = [
            f
            for f in ("notify_id", "notify_time", "out_trade_no", "trade_status")
            if not data.get(f)
        ]
        if missing:
            raise MalformedNotification(f"missing fields: {', '.join(missing)}")
        notify_time = _timestamp(data["notify_time"], "notify_time")
        assert notify_time is not None
        if abs(datetime.now(UTC) - notify_time) > self._tolerance:
            raise UnverifiedNotification(
                f"notify_time {data['notify_time']} is outside the {self._tolerance} tolerance"
            )
        state = _state(data["trade_status"])
        paid = state is ProviderPaymentState.PAID
        if paid:
            received = _decimal(data.get("receipt_amount"), "receipt_amount")
            if received is None or not received.is_finite() or received <= 0:
                raise MalformedNotification("a paid notification needs a positive receipt_amount")
            if not data.get("currency"):
                raise MalformedNotification("a paid notification needs a currency")
        return PaymentObservation(
            order_id=str(data["out_trade_no"]),
            provider=self.name,
            state=state,
            provider_trade_no=data.get("trade_no"),
            amount=_decimal(data.get("receipt_amount"), "receipt_amount") if paid else None,
            currency=str(data.get("currency") or "").upper() or None if paid else None,
            occurred_at=_timestamp(data.get("gmt_payment"), "gmt_payment"),
            source="notification",
            notification_id=str(data["notify_id"]),
        )

    def acknowledgement(self) -> Acknowledgement:
        return Acknowledgement(200, "success", "text/plain")
