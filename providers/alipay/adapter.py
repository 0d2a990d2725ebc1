"""tempay's adapter for the Alipay open platform (RSA2): its wire format in, the core's types
out.

Payments are created by channel (CHANNELS): a signed page/wap pay URL for the payer's browser
or a signed app order string for the Alipay app SDK (no call: Alipay creates the trade when
the payer opens it), or a QR code from a signed alipay.trade.precreate (Alipay creates the
trade when the payer scans it). Either way the trade_no is unknown until the first
notification or status answer. Status query, close, refund and refund query are signed form
POSTs to the gateway whose answers are verified over their raw text.
Notifications are signed form posts; refunds arrive inside the trade's notifications. The daily
statement is the trade bill whose download URL a signed query answers (providers/bills.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.hazmat.primitives.asymmetric import rsa

from providers.alipay import signature
from providers.base import Acknowledgement, ProviderObservation
from providers.bills import download_bill, stream_trade_bill
from providers.http import HTTPAdapter, unanswered
from tempay.channels import AppAction, PayerAction, QrCodeAction, RedirectAction
from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundObservation,
    RefundRequest,
    format_amount,
    parse_currency,
)
from tempay.errors import (
    InvalidInput,
    MalformedNotification,
    ProviderError,
    ProviderRefused,
    ProviderRejected,
    SignatureError,
    UnverifiedNotification,
)
from tempay.statements import StatementLine, StatementLineKind

# Alipay's times are Beijing time, which has had no daylight saving since 1991.
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# The one place Alipay's trade statuses map to the core's provider states.
STATUS_MAP: dict[str, ProviderPaymentState] = {
    "WAIT_BUYER_PAY": ProviderPaymentState.PENDING,
    "TRADE_SUCCESS": ProviderPaymentState.PAID,
    "TRADE_FINISHED": ProviderPaymentState.PAID,
    "TRADE_CLOSED": ProviderPaymentState.CLOSED,
}

# alipay.trade.fastpay.refund.query: REFUND_SUCCESS is the only documented refund_status;
# a refund answered without one was never received or failed (see query_refund).
REFUND_STATUS_MAP: dict[str, ProviderRefundState] = {
    "REFUND_SUCCESS": ProviderRefundState.SUCCEEDED,
}

# Alipay's business refusals (sub_code) under the core's common codes; others keep their own.
REFUSAL_CODES: dict[str, str] = {
    "ACQ.TRADE_NOT_EXIST": "TRADE_NOT_EXIST",
    "ACQ.TRADE_STATUS_ERROR": "TRADE_STATUS_ERROR",
    "ACQ.TRADE_HAS_CLOSE": "TRADE_STATUS_ERROR",
    "ACQ.TRADE_HAS_FINISHED": "TRADE_STATUS_ERROR",
    "ACQ.TRADE_NOT_ALLOW_REFUND": "TRADE_STATUS_ERROR",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": "REFUND_AMOUNT_EXCEEDED",
    "ACQ.DISCORDANT_REPEAT_REQUEST": "REFUND_CONFLICT",
}

WAP_PAY = "alipay.trade.wap.pay"
PAGE_PAY = "alipay.trade.page.pay"
APP_PAY = "alipay.trade.app.pay"
PRECREATE = "alipay.trade.precreate"

# Payment channels: Alipay's method and product code for each. The method says what the payer
# gets (create_payment): a URL to open (wap, page), an order string for the app SDK (app), or
# a QR code to scan (precreate). providers/alipay/__init__.py declares the same names.
CHANNELS: dict[str, tuple[str, str]] = {
    "alipay_wap": (WAP_PAY, "QUICK_WAP_WAY"),
    "alipay_page": (PAGE_PAY, "FAST_INSTANT_TRADE_PAY"),
    "alipay_pc": (PAGE_PAY, "FAST_INSTANT_TRADE_PAY"),
    "alipay_app": (APP_PAY, "QUICK_MSECURITY_PAY"),
    "alipay_qr": (PRECREATE, "FACE_TO_FACE_PAYMENT"),
}
# An order that names no channel: a mobile browser's checkout page.
DEFAULT_CHANNEL = "alipay_wap"

# total_amount's documented range, in CNY (every payment method alike).
MIN_AMOUNT = Decimal("0.01")
MAX_AMOUNT = Decimal("100000000")
# The longest qr_code believed from a precreate answer (Alipay's are ~40 characters).
MAX_QR_CODE = 1024

SUCCESS = "10000"
# Errors about the request itself (auth, missing or invalid arguments, permissions): Alipay
# did not process it, and the same request will fail again.
REQUEST_ERRORS = ("20001", "40001", "40002", "40003", "40006")
# Alipay's "system busy, call again with the same arguments".
SYSTEM_ERRORS = ("ACQ.SYSTEM_ERROR", "isp.unknow-error", "aop.unknow-error")

NOTIFY_TYPE = "trade_status_sync"

BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"


def payment_state(trade_status: Any) -> ProviderPaymentState:
    try:
        return STATUS_MAP[trade_status]
    except (KeyError, TypeError):
        raise MalformedNotification(f"unknown trade_status {trade_status!r}") from None


def _amount(value: Any, field: str) -> Decimal:
    if not isinstance(value, str):
        raise MalformedNotification(f"{field} must be a decimal string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise MalformedNotification(f"{field} {value!r} is not a decimal") from None
    if not amount.is_finite() or amount < 0:
        raise MalformedNotification(f"{field} {value!r} is not an amount")
    return amount


def _time(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    # gmt_refund carries milliseconds ("2015-04-28 15:45:57.320"); the other times do not.
    for form in (TIME_FORMAT, TIME_FORMAT + ".%f"):
        try:
            return datetime.strptime(str(value), form).replace(tzinfo=CHINA)
        except ValueError:
            pass
    raise MalformedNotification(f"{field} {value!r} is not 'YYYY-MM-DD HH:MM:SS'")


def _currency(data: Mapping[str, Any]) -> str:
    """The trade's currency: trans_currency for cross-border trades, else CNY."""
    code = data.get("trans_currency") or data.get("currency") or "CNY"
    try:
        return parse_currency(str(code))
    except InvalidInput as exc:
        raise MalformedNotification(str(exc)) from None


class AlipayAnswerError(Exception):
    """A gateway answer that cannot be trusted or read (bad signature, bad shape)."""


class AlipayBusinessError(Exception):
    """Code 40004: Alipay processed the request and refused it (`sub_code`)."""

    def __init__(self, method: str, payload: Mapping[str, Any]) -> None:
        self.sub_code = str(payload.get("sub_code") or "")
        self.sub_msg = str(payload.get("sub_msg") or payload.get("msg") or "")
        self.payload = dict(payload)
        super().__init__(f"Alipay refused {method}: {self.sub_code} {self.sub_msg}")

    def refused(self) -> ProviderRefused:
        code = REFUSAL_CODES.get(self.sub_code, self.sub_code or "BUSINESS_FAILED")
        details = {"sub_code": self.sub_code, "sub_msg": self.sub_msg}
        return ProviderRefused(str(self), code, details)


class AlipayAdapter(HTTPAdapter):
    name = "alipay"
    statement_timezone = "Asia/Shanghai"  # the trade bill's day

    def __init__(
        self,
        *,
        app_id: str,
        private_key: rsa.RSAPrivateKey,
        alipay_public_key: rsa.RSAPublicKey,
        gateway: str = "https://openapi.alipay.com/gateway.do",
        seller_id: str,
        timeout: float = 10.0,
        notification_max_age: timedelta | None = timedelta(hours=48),
        notification_tolerance: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(timeout=timeout)
        self._app_id = app_id
        self._private_key = private_key
        self._alipay_public_key = alipay_public_key
        self._gateway = gateway
        self._seller_id = seller_id
        self._max_age = notification_max_age
        self._tolerance = notification_tolerance
        self._clock = clock

    def __repr__(self) -> str:
        return f"AlipayAdapter(app_id={self._app_id!r}, gateway={self._gateway!r})"

    # Requests

    def signed_params(
        self, method: str, biz_content: Mapping[str, Any], **extra: str
    ) -> dict[str, str]:
        """The common parameters, biz_content and extras (notify_url, return_url), signed."""
        params = {
            "app_id": self._app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": self._clock().astimezone(CHINA).strftime(TIME_FORMAT),
            "version": "1.0",
            "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
            **extra,
        }
        params = {k: v for k, v in params.items() if v}
        params["sign"] = signature.sign(self._private_key, signature.request_sign_content(params))
        return params

    def signed_query(self, method: str, biz_content: Mapping[str, Any], **extra: str) -> str:
        """The signed request as a URL query string (each value URL-encoded, as Alipay's SDKs
        do): a page/wap pay URL's query, and the whole of an app order string."""
        return urlencode(self.signed_params(method, biz_content, **extra))

    async def _call(
        self,
        method: str,
        biz_content: Mapping[str, Any],
        *,
        moves_money: bool = False,
        **extra: str,
    ) -> dict[str, Any]:
        """POST a signed request; the verified answer of code 10000. Raises AlipayBusinessError
        for 40004 refusals, ProviderRejected for bad requests, ProviderError (or, when
        `moves_money`, ProviderOutcomeUnknown once the request may have arrived) otherwise.
        `extra` are common parameters (notify_url), sent in the query with the others."""
        params = self.signed_params(method, biz_content, **extra)
        body = {"biz_content": params.pop("biz_content")}
        what = f"Alipay {method}"
        response = await self.http.request(
            "POST",
            self._gateway,
            what,
            moves_money=moves_money,
            params=params,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
        )
        if response.status_code != 200:
            raise unanswered(f"{what}: HTTP {response.status_code}", moves_money)
        try:
            payload = self._verified_answer(method, response.content)
        except AlipayAnswerError as exc:
            raise unanswered(f"{what}: {exc}", moves_money) from None
        code = str(payload.get("code"))
        sub_code = str(payload.get("sub_code") or "")
        if code == SUCCESS:
            return payload
        if code == "40004" and sub_code not in SYSTEM_ERRORS:
            raise AlipayBusinessError(method, payload)
        description = f"{code} {payload.get('msg', '')} {sub_code} {payload.get('sub_msg', '')}"
        if code in REQUEST_ERRORS:
            raise ProviderRejected(f"Alipay rejected {method}: {description.strip()}")
        raise unanswered(f"{what}: {description.strip()}", moves_money)

    def _verified_answer(self, method: str, content: bytes) -> dict[str, Any]:
        try:
            text = content.decode("utf-8")
            answer = signature.split_response(text, method.replace(".", "_") + "_response")
        except (UnicodeDecodeError, signature.ResponseShapeError) as exc:
            raise AlipayAnswerError(f"unreadable answer ({exc})") from None
        payload = answer.payload
        if answer.sign is None:
            # Alipay leaves some request errors (bad signature, unknown app) unsigned: they are
            # believed only as such errors, never as a result or a business answer.
            if str(payload.get("code")) in REQUEST_ERRORS:
                return payload
            raise AlipayAnswerError("unsigned answer")
        try:
            signature.verify(self._alipay_public_key, answer.raw.encode("utf-8"), answer.sign)
        except SignatureError as exc:
            raise AlipayAnswerError(f"answer signature not believed: {exc}") from None
        return payload

    # Payments

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        if order.currency != "CNY":
            raise ProviderRejected(f"Alipay takes CNY orders only, not {order.currency}")
        channel = DEFAULT_CHANNEL if order.channel is None else order.channel
        try:
            method, product_code = CHANNELS[channel]
        except KeyError:
            raise ProviderRejected(
                f"Alipay channel {channel!r} unknown: use one of {', '.join(CHANNELS)}"
            ) from None
        if not MIN_AMOUNT <= order.amount <= MAX_AMOUNT:
            raise ProviderRejected(
                f"Alipay takes amounts from {MIN_AMOUNT} to {MAX_AMOUNT} CNY, not {order.amount}"
            )
        # The URL, order string or QR code stops working when the order expires, so a payer
        # cannot open a trade after tempay has given up on it.
        expires = self._clock() + order.timing.expires_after
        biz = {
            "out_trade_no": order.order_id,
            "total_amount": format_amount(order.amount, order.currency),
            "subject": (order.subject or order.order_id)[:256],
            "product_code": product_code,
            "time_expire": expires.astimezone(CHINA).strftime(TIME_FORMAT),
        }
        action: PayerAction
        if method == PRECREATE:
            action = await self._precreate(order.order_id, biz, order.notify_url)
        elif method == APP_PAY:
            # The app SDK (payV2) takes the signed request itself; the app returns to the
            # merchant's app, so there is no return_url.
            action = AppAction(
                order_string=self.signed_query(method, biz, notify_url=order.notify_url)
            )
        else:
            query = self.signed_query(
                method, biz, notify_url=order.notify_url, return_url=order.return_url
            )
            separator = "&" if "?" in self._gateway else "?"
            action = RedirectAction(url=self._gateway + separator + query)
        # The trade exists at Alipay only once the payer opens or scans it: no trade_no yet.
        return CreatedPayment(provider_trade_no="", payer_action=action)

    async def _precreate(
        self, order_id: str, biz: Mapping[str, Any], notify_url: str
    ) -> QrCodeAction:
        """alipay.trade.precreate: Alipay's QR code for the order. Its answer is believed only
        for this order (out_trade_no) and only with a qr_code that is an https URL; anything
        else is a ProviderError, and asking again is safe (idempotent by out_trade_no)."""
        try:
            answer = await self._call(PRECREATE, biz, notify_url=notify_url)
        except AlipayBusinessError as exc:
            raise exc.refused() from None
        if answer.get("out_trade_no") != order_id:
            # A signed answer about another order: its QR code would take another order's
            # money, so it is not shown to this payer.
            raise ProviderError(
                f"Alipay {PRECREATE} answered for out_trade_no "
                f"{answer.get('out_trade_no')!r}, not {order_id!r}"
            )
        qr_code = answer.get("qr_code")
        if (
            not isinstance(qr_code, str)
            or not qr_code.startswith("https://")
            or len(qr_code) > MAX_QR_CODE
            or not qr_code.isprintable()
            or any(c.isspace() for c in qr_code)
        ):
            raise ProviderError(f"Alipay {PRECREATE} answer has no usable qr_code")
        return QrCodeAction(content=qr_code)

    def _trade_observation(
        self, order_id: str, trade: Mapping[str, Any], source: str
    ) -> PaymentObservation:
        try:
            state = payment_state(trade.get("trade_status"))
            paid = state is ProviderPaymentState.PAID
            return PaymentObservation(
                order_id=order_id,
                provider=self.name,
                state=state,
                provider_trade_no=trade.get("trade_no") or None,
                amount=_amount(trade.get("total_amount"), "total_amount") if paid else None,
                currency=_currency(trade) if paid else None,
                occurred_at=_time(trade.get("send_pay_date"), "send_pay_date") if paid else None,
                source=source,  # type: ignore[arg-type]
            )
        except MalformedNotification as exc:
            raise ProviderError(f"Alipay trade answer unreadable: {exc}") from None

    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        try:
            trade = await self._call("alipay.trade.query", {"out_trade_no": order.order_id})
        except AlipayBusinessError as exc:
            if exc.sub_code == "ACQ.TRADE_NOT_EXIST":
                # The payer has not opened the payment URL yet: nothing was paid.
                return PaymentObservation(
                    order_id=order.order_id,
                    provider=self.name,
                    state=ProviderPaymentState.PENDING,
                    source="status_query",
                )
            raise exc.refused() from None
        return self._trade_observation(order.order_id, trade, "status_query")

    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        try:
            trade = await self._call("alipay.trade.close", {"out_trade_no": order.order_id})
        except AlipayBusinessError as exc:
            if exc.sub_code == "ACQ.TRADE_NOT_EXIST":
                # Never opened, and the URL's time_expire has passed (or is about to).
                return CloseOutcome(closed=True)
            if exc.sub_code == "ACQ.TRADE_STATUS_ERROR":
                # Paid, finished or already closed: the status query that follows tells which.
                return CloseOutcome(closed=False)
            raise exc.refused() from None
        observation = PaymentObservation(
            order_id=order.order_id,
            provider=self.name,
            state=ProviderPaymentState.CLOSED,
            provider_trade_no=trade.get("trade_no") or None,
            source="close",
        )
        return CloseOutcome(closed=True, observation=observation)

    # Refunds

    async def create_refund(self, request: RefundRequest) -> RefundObservation:
        if request.currency != "CNY":
            raise ProviderRejected(f"Alipay refunds CNY only, not {request.currency}")
        biz = {
            "out_trade_no": request.order_id,
            "refund_amount": format_amount(request.amount, request.currency),
            "out_request_no": request.refund_id,
        }
        if request.reason:
            biz["refund_reason"] = request.reason[:256]
        try:
            answer = await self._call("alipay.trade.refund", biz, moves_money=True)
        except AlipayBusinessError as exc:
            raise exc.refused() from None
        # fund_change Y: this call moved the money. N: nothing moved now (a repeated request,
        # or still processing); the refund query tells which. refund_fee is the trade's
        # cumulative refund, not this refund's amount, so the amount comes from the query.
        succeeded = answer.get("fund_change") == "Y"
        try:
            occurred_at = _time(answer.get("gmt_refund_pay"), "gmt_refund_pay")
        except MalformedNotification:
            occurred_at = None
        return RefundObservation(
            refund_id=request.refund_id,
            order_id=request.order_id,
            state=ProviderRefundState.SUCCEEDED if succeeded else ProviderRefundState.PENDING,
            provider_refund_no=answer.get("trade_no") or None,
            occurred_at=occurred_at,
            source="create",
        )

    async def query_refund(self, request: RefundRequest) -> RefundObservation | None:
        biz = {
            "out_trade_no": request.order_id,
            "out_request_no": request.refund_id,
            "query_options": ["gmt_refund_pay"],
        }
        try:
            answer = await self._call("alipay.trade.fastpay.refund.query", biz)
        except AlipayBusinessError as exc:
            if exc.sub_code == "ACQ.TRADE_NOT_EXIST":
                return None
            raise exc.refused() from None
        status = answer.get("refund_status")
        if not status:
            # Documented: no refund_status means the refund was never received or failed.
            # Either way no money moved, and asking again with the same id is safe.
            return None
        try:
            state = REFUND_STATUS_MAP[status]
            amount = _amount(answer.get("refund_amount"), "refund_amount")
            occurred_at = _time(answer.get("gmt_refund_pay"), "gmt_refund_pay")
        except (KeyError, TypeError, MalformedNotification) as exc:
            raise ProviderError(f"Alipay refund answer unreadable: {exc}") from None
        return RefundObservation(
            refund_id=request.refund_id,
            order_id=request.order_id,
            state=state,
            amount=amount,
            currency="CNY",
            provider_refund_no=answer.get("trade_no") or None,
            occurred_at=occurred_at,
            source="status_query",
        )

    # Statements

    async def statement(self, day: date) -> AsyncIterator[StatementLine]:
        """The day's trade bill (Beijing time): its download URL from a signed, verified
        alipay.data.dataservice.bill.downloadurl.query, the zip downloaded to a temporary
        file, then read line by line (providers/bills.py). A bill that names another account
        than TEMPAY_ALIPAY_SELLER_ID, or another day, raises StatementError."""
        biz = {"bill_type": "trade", "bill_date": day.isoformat()}
        try:
            answer = await self._call(BILL_METHOD, biz)
        except AlipayBusinessError as exc:
            if exc.sub_code == "isp.bill_not_exist":
                # Alipay has a day's bill from about 09:00 the next day (Beijing time).
                raise ProviderRefused(
                    f"Alipay has no trade bill for {day} (yet?): {exc}",
                    "BILL_NOT_EXIST",
                    {"sub_code": exc.sub_code, "sub_msg": exc.sub_msg},
                ) from None
            raise exc.refused() from None
        url = answer.get("bill_download_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderError(f"Alipay {BILL_METHOD} answer for {day} has no bill_download_url")
        with tempfile.TemporaryDirectory(prefix="tempay-alipay-bill-") as directory:
            bill = Path(directory) / "bill.zip"
            # The URL is signed and short-lived: it stays out of messages.
            await download_bill(
                self.http.client, url, f"Alipay trade bill download for {day}", bill
            )
            lines = stream_trade_bill(bill, expected_account=self._seller_id, day=day)
            async for line in lines:
                if line.kind is StatementLineKind.REFUND:
                    # Alipay's refunds have no id of their own: its answers and notifications
                    # name the trade's trade_no, and so do the refunds tempay recorded.
                    line = line.model_copy(update={"provider_refund_no": line.provider_trade_no})
                yield line

    # Notifications

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        """A payment notification; a refund carried in a trade notification is refused here
        (read it with `parse_any_notification`), so it never reaches a payment."""
        observation = self.parse_any_notification(headers, body)
        if not isinstance(observation, PaymentObservation):
            raise MalformedNotification("a refund notification is not about a payment")
        return observation

    def parse_any_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> ProviderObservation:
        data = self.verified_form(body)
        for field in ("notify_id", "notify_type", "out_trade_no", "trade_status"):
            if not data.get(field):
                raise MalformedNotification(f"missing field {field}")
        if data["notify_type"] != NOTIFY_TYPE:
            raise MalformedNotification(f"unsupported notify_type {data['notify_type']!r}")
        state = payment_state(data["trade_status"])
        refund_fee = _amount(data.get("refund_fee") or "0", "refund_fee")
        if refund_fee > 0 or data.get("gmt_refund"):
            return self._refund_notification(data, state)
        paid = state is ProviderPaymentState.PAID
        amount = None
        if paid:
            amount = _amount(data.get("total_amount"), "total_amount")
            if amount <= 0:
                raise MalformedNotification("a paid notification needs a positive total_amount")
        return PaymentObservation(
            order_id=data["out_trade_no"],
            provider=self.name,
            state=state,
            provider_trade_no=data.get("trade_no") or None,
            amount=amount,
            currency=_currency(data) if paid else None,
            occurred_at=_time(data.get("gmt_payment" if paid else "gmt_close"), "time"),
            source="notification",
            notification_id=data["notify_id"],
        )

    def _refund_notification(
        self, data: Mapping[str, str], state: ProviderPaymentState
    ) -> RefundObservation:
        """Alipay reports a refund in the trade's notification: gmt_refund, refund_fee (the
        trade's cumulative refund) and out_biz_no (the refund's out_request_no)."""
        if not data.get("out_biz_no"):
            raise MalformedNotification("a refund notification needs out_biz_no")
        if state is ProviderPaymentState.PENDING:
            raise MalformedNotification("a refund of an unpaid trade")
        return RefundObservation(
            refund_id=data["out_biz_no"],
            order_id=data["out_trade_no"],
            state=ProviderRefundState.SUCCEEDED,
            amount=None,  # refund_fee is cumulative; query_refund gives this refund's amount
            currency=_currency(data),
            provider_refund_no=data.get("trade_no") or None,
            occurred_at=_time(data.get("gmt_refund"), "gmt_refund"),
            source="notification",
            notification_id=data["notify_id"],
        )

    def verified_form(self, body: bytes) -> dict[str, str]:
        """The notification's parameters, once the form is well formed, its RSA2 signature
        verifies with Alipay's public key, and it is addressed to this application."""
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise MalformedNotification("body is not a UTF-8 form") from None
        data: dict[str, str] = {}
        for key, value in pairs:
            if key in data:
                raise MalformedNotification(f"parameter {key!r} appears more than once")
            data[key] = value
        if data.get("charset", "utf-8").lower() != "utf-8":
            raise MalformedNotification(f"charset {data['charset']!r} is not utf-8")
        if data.get("sign_type", "RSA2") != "RSA2":
            raise UnverifiedNotification(f"sign_type {data['sign_type']!r} is not RSA2")
        content = signature.notification_sign_content(data).encode("utf-8")
        try:
            signature.verify(self._alipay_public_key, content, data.get("sign"))
        except SignatureError as exc:
            raise UnverifiedNotification(str(exc)) from None
        if data.get("app_id") != self._app_id:
            raise UnverifiedNotification(f"app_id {data.get('app_id')!r} is not this application")
        if data.get("seller_id") != self._seller_id:
            raise UnverifiedNotification(f"seller_id {data.get('seller_id')!r} is not ours")
        self._check_age(data)
        return data

    def _check_age(self, data: Mapping[str, str]) -> None:
        """Alipay resends a notification for about 25 hours; whether each resend carries a
        fresh notify_time is not documented, so only notifications older than the whole
        resend schedule (with margin) are refused. Replays within it change nothing: the
        notify_id is the same on every resend, and the workflow ignores repeats. Alipay dates
        a notification when it sends it, so one from the future is refused beyond the
        clock difference the other schemes allow (TEMPAY_NOTIFICATION_TOLERANCE)."""
        notify_time = _time(data.get("notify_time"), "notify_time")
        if notify_time is None:
            raise MalformedNotification("missing field notify_time")
        age = self._clock() - notify_time
        if self._max_age is not None and age > self._max_age:
            raise UnverifiedNotification(
                f"notify_time {data['notify_time']} is older than {self._max_age}"
            )
        if -age > self._tolerance:
            raise UnverifiedNotification(
                f"notify_time {data['notify_time']} (Beijing time) is "
                f"{-age.total_seconds():.0f} s ahead of this server's clock, over the "
                f"{self._tolerance.total_seconds():g} s tolerance (a clock that is off)"
            )

    def acknowledgement(self) -> Acknowledgement:
        return Acknowledgement(200, "success", "text/plain")
