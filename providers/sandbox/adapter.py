"""tempay's adapter for the sandbox provider: its wire format in, the core's types out.

Payments, refunds and transfers (withdrawal payouts). A create call that may have reached the
provider without its answer coming back raises ProviderOutcomeUnknown: query before retrying.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.base import Acknowledgement, ChannelSpec, ProviderObservation
from providers.bills import CHINA, download_bill, stream_trade_bill
from providers.http import HTTPAdapter
from providers.sandbox import wallet_signature
from providers.sandbox.channels import (
    CHANNELS,
    DEFAULT_CHANNEL,
    ORDER_STRING_CHANNEL,
    channel_names,
)
from providers.sandbox.keys import ensure_merchant_keypair, load_private_key, load_public_key
from providers.sandbox.settings import DEFAULT_ACCOUNT, DEFAULT_APP_ID
from providers.sandbox.signature import SIGNATURE_HEADER, verify_body
from tempay.channels import (
    AppAction,
    AppParameters,
    ClientSecretAction,
    JsapiAction,
    JsapiParameters,
    PayerAction,
    PayerActionKind,
    QrCodeAction,
    RedirectAction,
)
from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    ProviderTransferState,
    RefundObservation,
    RefundRequest,
    TransferObservation,
    TransferRequest,
    format_amount,
)
from tempay.errors import (
    MalformedNotification,
    ProviderError,
    ProviderRefused,
    ProviderRejected,
    SignatureError,
    UnverifiedNotification,
    VerificationUnavailable,
)
from tempay.statements import StatementLine

# The one place the sandbox's trade statuses map to the core's provider states.
STATUS_MAP: dict[str, ProviderPaymentState] = {
    "WAIT_BUYER_PAY": ProviderPaymentState.PENDING,
    "TRADE_SUCCESS": ProviderPaymentState.PAID,
    "TRADE_FAILED": ProviderPaymentState.FAILED,
    "TRADE_CLOSED": ProviderPaymentState.CLOSED,
}


REFUND_STATUS_MAP: dict[str, ProviderRefundState] = {
    "REFUND_PROCESSING": ProviderRefundState.PENDING,
    "REFUND_SUCCESS": ProviderRefundState.SUCCEEDED,
    "REFUND_FAILED": ProviderRefundState.FAILED,
}

TRANSFER_STATUS_MAP: dict[str, ProviderTransferState] = {
    "TRANSFER_PROCESSING": ProviderTransferState.PENDING,
    "TRANSFER_SUCCESS": ProviderTransferState.SUCCEEDED,
    "TRANSFER_FAILED": ProviderTransferState.FAILED,
}

# notify_type of each kind of notification; one without a notify_type is a payment's.
REFUND_NOTIFICATION = "refund_status_sync"
TRANSFER_NOTIFICATION = "transfer_status_sync"

# Alipay's app payment, as its order string names it.
APP_PAY_METHOD = "alipay.trade.app.pay"
APP_PAY_PRODUCT = "QUICK_MSECURITY_PAY"


def _refund_state(status: Any) -> ProviderRefundState:
    try:
        return REFUND_STATUS_MAP[status]
    except (KeyError, TypeError):
        raise MalformedNotification(f"unknown refund_status {status!r}") from None


def _transfer_state(status: Any) -> ProviderTransferState:
    try:
        return TRANSFER_STATUS_MAP[status]
    except (KeyError, TypeError):
        raise MalformedNotification(f"unknown transfer_status {status!r}") from None


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


def _refund_observation(refund: Mapping[str, Any], source: str) -> RefundObservation:
    """Map a refund answer (create or status query) to an observation."""
    return RefundObservation(
        refund_id=str(refund["out_request_no"]),
        order_id=str(refund["out_trade_no"]),
        state=_refund_state(refund.get("status")),
        amount=_decimal(refund.get("refund_amount"), "refund_amount"),
        currency=refund.get("currency"),
        provider_refund_no=refund.get("refund_no"),
        occurred_at=_timestamp(refund.get("gmt_refund"), "gmt_refund"),
        source=source,  # type: ignore[arg-type]
    )


def _transfer_observation(transfer: Mapping[str, Any], source: str) -> TransferObservation:
    """Map a transfer answer (create or status query) to an observation."""
    return TransferObservation(
        withdrawal_id=str(transfer["out_biz_no"]),
        state=_transfer_state(transfer.get("status")),
        amount=_decimal(transfer.get("amount"), "amount"),
        currency=transfer.get("currency"),
        provider_transfer_no=transfer.get("transfer_no"),
        fail_reason=transfer.get("fail_reason"),
        occurred_at=_timestamp(transfer.get("gmt_finish"), "gmt_finish"),
        source=source,  # type: ignore[arg-type]
    )


def _error_code(response: httpx.Response) -> tuple[str | None, dict[str, Any]]:
    """The sandbox's error code and the rest of its error body."""
    try:
        body = response.json()
    except ValueError:
        return None, {}
    if not isinstance(body, dict):
        return None, {}
    code = body.get("code")
    return (code if isinstance(code, str) else None), body


def _required(data: Mapping[str, Any], *fields: str) -> None:
    missing = [f for f in fields if not data.get(f)]
    if missing:
        raise MalformedNotification(f"missing fields: {', '.join(missing)}")


class SandboxAdapter(HTTPAdapter):
    name = "sandbox"
    statement_timezone = "Asia/Shanghai"  # its statement is Alipay's layout, and day

    def __init__(
        self,
        base_url: str,
        public_key_file: Path | None = None,
        tolerance: timedelta = timedelta(minutes=5),
        timeout: float = 10.0,
        account: str = DEFAULT_ACCOUNT,
        app_id: str = DEFAULT_APP_ID,
        merchant_key_directory: Path | None = None,
    ) -> None:
        super().__init__(base_url=base_url.rstrip("/"), timeout=timeout)
        self._public_key_file = public_key_file
        self._public_key: rsa.RSAPublicKey | None = None
        self._tolerance = tolerance
        self._account = account
        self._app_id = app_id
        self._merchant_key_directory = merchant_key_directory
        self._merchant_key: rsa.RSAPrivateKey | None = None

    async def _call(
        self, method: str, path: str, *, moves_money: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One call. For one that moves money (refunds, transfers), an answer lost once the
        request may have left is an unknown outcome, not a plain failure."""
        what = f"sandbox {method} {path}"
        return await self.http.request(method, path, what, moves_money=moves_money, **kwargs)

    @staticmethod
    def _rejected(response: httpx.Response, what: str) -> ProviderRejected:
        return ProviderRejected(
            f"sandbox refused {what}: HTTP {response.status_code} {response.text}"
        )

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        """POST /payments on the order's channel, then its payer action: the sandbox's answer
        as it is (a checkout URL, a QR code's content, a client_secret), or, for JSAPI and app
        channels, a parameter set the merchant signs with its own key, as on WeChat Pay and
        Alipay."""
        channel = DEFAULT_CHANNEL if order.channel is None else order.channel
        spec = CHANNELS.get(channel)
        if spec is None:
            raise ProviderRejected(f"sandbox has no channel {channel!r}: one of {channel_names()}")
        if spec.action in (PayerActionKind.JSAPI, PayerActionKind.APP):
            self.merchant_key()  # a key that cannot be had fails before the provider is asked
        body: dict[str, Any] = {
            "out_trade_no": order.order_id,
            "amount": format_amount(order.amount, order.currency),
            "currency": order.currency.lower(),
            "body": order.subject or order.order_id,
            "subject": order.subject,
            "channel": channel,
            "return_url": order.return_url,
            "notify_url": order.notify_url,
            "app_id": self._app_id,
        }
        if order.payer is not None and order.payer.openid is not None:
            body["payer_openid"] = order.payer.openid
        if order.payer is not None and order.payer.client_ip is not None:
            body["payer_client_ip"] = order.payer.client_ip
        response = await self._call("POST", "/payments", json=body)
        if response.status_code != 200:
            raise self._rejected(response, "create")
        trade = response.json()
        return CreatedPayment(
            provider_trade_no=trade["trade_no"], payer_action=self._payer_action(spec, order, trade)
        )

    def _payer_action(
        self, spec: ChannelSpec, order: PaymentOrder, trade: Mapping[str, Any]
    ) -> PayerAction:
        """The channel's kind of action from the create answer; signed where the merchant
        signs (JSAPI paySign, WeChat's APP sign, Alipay's order string)."""

        def answered(field: str) -> str:
            value = trade.get(field)
            if not isinstance(value, str) or not value:
                raise ProviderRejected(f"sandbox answered a {spec.name} payment without {field}")
            return value

        now, nonce = str(int(time.time())), secrets.token_hex(16)
        match spec.action:
            case PayerActionKind.REDIRECT:
                return RedirectAction(url=answered("payment_url"))
            case PayerActionKind.QR_CODE:
                return QrCodeAction(content=answered("qr_code"))
            case PayerActionKind.CLIENT_SECRET:
                return ClientSecretAction(client_secret=answered("client_secret"))
            case PayerActionKind.JSAPI:
                package = f"prepay_id={answered('prepay_id')}"
                message = wallet_signature.jsapi_message(self._app_id, now, nonce, package)
                return JsapiAction(
                    parameters=JsapiParameters(
                        appId=self._app_id,
                        timeStamp=now,
                        nonceStr=nonce,
                        package=package,
                        signType="RSA",
                        paySign=wallet_signature.sign(self.merchant_key(), message),
                    )
                )
            case PayerActionKind.APP if spec.name == ORDER_STRING_CHANNEL:
                return AppAction(order_string=self._order_string(order))
            case PayerActionKind.APP:
                prepay_id = answered("prepay_id")
                message = wallet_signature.app_message(self._app_id, now, nonce, prepay_id)
                return AppAction(
                    parameters=AppParameters(
                        appid=self._app_id,
                        partnerid=self._account,
                        prepayid=prepay_id,
                        package="Sign=WXPay",
                        noncestr=nonce,
                        timestamp=now,
                        sign=wallet_signature.sign(self.merchant_key(), message),
                    )
                )
        raise ProviderRejected(
            f"sandbox channel {spec.name} has no payer action"
        )  # pragma: no cover

    def _order_string(self, order: PaymentOrder) -> str:
        """Alipay's app order string (what `sdkExecute` makes): signed by the merchant, no
        call to the provider."""
        biz_content = {
            "out_trade_no": order.order_id,
            "total_amount": format_amount(order.amount, order.currency),
            "subject": order.subject or order.order_id,
            "product_code": APP_PAY_PRODUCT,
        }
        params = {
            "app_id": self._app_id,
            "method": APP_PAY_METHOD,
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
        }
        return wallet_signature.order_string(params, self.merchant_key())

    def merchant_key(self) -> rsa.RSAPrivateKey:
        """The sandbox merchant's private key, made in the data dir on first use (the sandbox
        verifies with its public half, from the same folder)."""
        if self._merchant_key is None:
            if self._merchant_key_directory is None:
                raise ProviderRejected("no sandbox merchant key directory configured")
            try:
                private_path, _ = ensure_merchant_keypair(self._merchant_key_directory)
                self._merchant_key = load_private_key(private_path)
            except (OSError, ValueError) as exc:
                raise ProviderError(
                    f"sandbox merchant key in {self._merchant_key_directory} cannot be made or "
                    f"read ({type(exc).__name__})"
                ) from None
        return self._merchant_key

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
            try:
                self._public_key = load_public_key(self._public_key_file)
            except (OSError, ValueError) as exc:
                # Ours to fix, not the sender's: 503, so a notification is sent again later.
                raise VerificationUnavailable(
                    f"sandbox public key {self._public_key_file} unreadable "
                    f"({type(exc).__name__}); is the sandbox running?"
                ) from None
        return self._public_key

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        """A payment notification; refund and transfer notifications are refused here (read
        them with `parse_any_notification`), so they never reach a payment."""
        data = self._verified_json(headers, body)
        notify_type = data.get("notify_type")
        if notify_type in (REFUND_NOTIFICATION, TRANSFER_NOTIFICATION):
            raise MalformedNotification(f"a {notify_type} notification is not about a payment")
        return self._payment_notification(data)

    def parse_any_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> ProviderObservation:
        """Payment, refund or transfer notification, by its notify_type."""
        data = self._verified_json(headers, body)
        notify_type = data.get("notify_type")
        if notify_type == REFUND_NOTIFICATION:
            return self._refund_notification(data)
        if notify_type == TRANSFER_NOTIFICATION:
            return self._transfer_notification(data)
        return self._payment_notification(data)

    def _verified_json(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The signature first, on the raw body; then the body as a JSON object."""
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
        return data

    def _check_fresh(self, data: Mapping[str, Any]) -> None:
        notify_time = _timestamp(data["notify_time"], "notify_time")
        assert notify_time is not None
        if abs(datetime.now(UTC) - notify_time) > self._tolerance:
            raise UnverifiedNotification(
                f"notify_time {data['notify_time']} is outside the {self._tolerance} tolerance"
            )

    def _payment_notification(self, data: Mapping[str, Any]) -> PaymentObservation:
        _required(data, "notify_id", "notify_time", "out_trade_no", "trade_status")
        self._check_fresh(data)
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

    def _refund_notification(self, data: Mapping[str, Any]) -> RefundObservation:
        _required(
            data, "notify_id", "notify_time", "out_trade_no", "out_request_no", "refund_status"
        )
        self._check_fresh(data)
        state = _refund_state(data["refund_status"])
        amount = _decimal(data.get("refund_amount"), "refund_amount")
        if state is ProviderRefundState.SUCCEEDED:
            if amount is None or not amount.is_finite() or amount <= 0:
                raise MalformedNotification("a refund notification needs a positive refund_amount")
            if not data.get("currency"):
                raise MalformedNotification("a refund notification needs a currency")
        return RefundObservation(
            refund_id=str(data["out_request_no"]),
            order_id=str(data["out_trade_no"]),
            state=state,
            amount=amount,
            currency=str(data.get("currency") or "").upper() or None,
            provider_refund_no=data.get("refund_no"),
            occurred_at=_timestamp(data.get("gmt_refund"), "gmt_refund"),
            source="notification",
            notification_id=str(data["notify_id"]),
        )

    def _transfer_notification(self, data: Mapping[str, Any]) -> TransferObservation:
        _required(data, "notify_id", "notify_time", "out_biz_no", "transfer_status")
        self._check_fresh(data)
        state = _transfer_state(data["transfer_status"])
        amount = _decimal(data.get("amount"), "amount")
        if state is ProviderTransferState.SUCCEEDED:
            if amount is None or not amount.is_finite() or amount <= 0:
                raise MalformedNotification("a transfer notification needs a positive amount")
            if not data.get("currency"):
                raise MalformedNotification("a transfer notification needs a currency")
        return TransferObservation(
            withdrawal_id=str(data["out_biz_no"]),
            state=state,
            amount=amount,
            currency=str(data.get("currency") or "").upper() or None,
            provider_transfer_no=data.get("transfer_no"),
            fail_reason=data.get("fail_reason"),
            occurred_at=_timestamp(data.get("gmt_finish"), "gmt_finish"),
            source="notification",
            notification_id=str(data["notify_id"]),
        )

    def acknowledgement(self) -> Acknowledgement:
        return Acknowledgement(200, "success", "text/plain")

    # Refunds and transfers

    @staticmethod
    def _refused(response: httpx.Response, what: str) -> ProviderRejected:
        code, details = _error_code(response)
        message = f"sandbox refused {what}: HTTP {response.status_code} {response.text}"
        return (
            ProviderRejected(message) if code is None else ProviderRefused(message, code, details)
        )

    async def create_refund(self, request: RefundRequest) -> RefundObservation:
        response = await self._call(
            "POST",
            f"/payments/{request.order_id}/refunds",
            moves_money=True,
            json={
                "out_request_no": request.refund_id,
                "refund_amount": format_amount(request.amount, request.currency),
                "currency": request.currency,
                "reason": request.reason,
                "notify_url": request.notify_url,
            },
        )
        if response.status_code != 200:
            raise self._refused(response, "refund")
        return _refund_observation(response.json(), "create")

    async def query_refund(self, request: RefundRequest) -> RefundObservation | None:
        response = await self._call(
            "GET", f"/payments/{request.order_id}/refunds/{request.refund_id}"
        )
        if response.status_code == 404 and _error_code(response)[0] == "REFUND_NOT_EXIST":
            return None
        if response.status_code != 200:
            raise self._refused(response, "refund status query")
        return _refund_observation(response.json(), "status_query")

    async def create_transfer(self, request: TransferRequest) -> TransferObservation:
        response = await self._call(
            "POST",
            "/transfers",
            moves_money=True,
            json={
                "out_biz_no": request.withdrawal_id,
                "amount": format_amount(request.amount, request.currency),
                "currency": request.currency,
                "payee_account": request.payee_account,
                "payee_name": request.payee_name,
                "notify_url": request.notify_url,
            },
        )
        if response.status_code != 200:
            raise self._refused(response, "transfer")
        return _transfer_observation(response.json(), "create")

    async def query_transfer(self, request: TransferRequest) -> TransferObservation | None:
        response = await self._call("GET", f"/transfers/{request.withdrawal_id}")
        if response.status_code == 404 and _error_code(response)[0] == "TRANSFER_NOT_EXIST":
            return None
        if response.status_code != 200:
            raise self._refused(response, "transfer status query")
        return _transfer_observation(response.json(), "status_query")

    # Statements

    async def statement(self, day: date) -> AsyncIterator[StatementLine]:
        """GET /statements/{day}: Alipay's trade bill layout, downloaded to a temporary file
        and read line by line; a bill naming another account or day is refused."""
        path = f"/statements/{day.isoformat()}"
        with tempfile.TemporaryDirectory(prefix="tempay-sandbox-statement-") as directory:
            bill = Path(directory) / "bill.zip"
            await download_bill(self.http.client, path, f"sandbox GET {path}", bill)
            async for line in stream_trade_bill(
                bill, expected_account=self._account, day=day, currencies_in_remarks=True
            ):
                yield line
