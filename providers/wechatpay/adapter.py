"""tempay's adapter for WeChat Pay API v3 (direct merchants): Native, H5, JSAPI (official
account and mini-program) and APP payments, order query and close, refunds, the encrypted,
signed notifications, and the daily trade bill (statement.py).

Every request is signed with the merchant's API key; every 2xx answer must carry a valid
WeChat Pay signature (made with the WeChat Pay public key PUBLIC_KEY_ID), or it is not
believed. Amounts are integer fen on the wire and Decimal CNY here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from providers.base import Acknowledgement, ChannelSpec, ProviderObservation
from providers.http import NOT_SENT, HTTPAdapter, unanswered
from providers.wechatpay import crypto
from providers.wechatpay.settings import WechatPayConfig
from providers.wechatpay.statement import BillDownload, check_tradebill, tradebill_lines
from tempay.channels import (
    AppAction,
    AppParameters,
    JsapiAction,
    JsapiParameters,
    PayerAction,
    PayerActionKind,
    PayerField,
    QrCodeAction,
    RedirectAction,
    parse_client_ip,
    parse_openid,
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
    InvalidInput,
    MalformedNotification,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRefused,
    ProviderRejected,
    SignatureError,
    StatementError,
    UnverifiedNotification,
)
from tempay.statements import StatementLine

NAME = "wechatpay"
CURRENCY = "CNY"

# The one place WeChat Pay's states map to the core's.
TRADE_STATE_MAP: dict[str, ProviderPaymentState] = {
    "SUCCESS": ProviderPaymentState.PAID,
    "REFUND": ProviderPaymentState.PAID,  # paid, then (partly) refunded: it was paid
    "NOTPAY": ProviderPaymentState.PENDING,
    "USERPAYING": ProviderPaymentState.PENDING,
    "CLOSED": ProviderPaymentState.CLOSED,
    "REVOKED": ProviderPaymentState.CLOSED,
    "PAYERROR": ProviderPaymentState.FAILED,
}

REFUND_STATUS_MAP: dict[str, ProviderRefundState] = {
    "SUCCESS": ProviderRefundState.SUCCEEDED,
    "PROCESSING": ProviderRefundState.PENDING,
    # ABNORMAL: the bank refused the money on its way back (card closed or frozen). It is
    # not final: the merchant resolves it by hand in the merchant platform, after which
    # WeChat Pay reports SUCCESS (or CLOSED). Reporting FAILED would make the amount
    # refundable again while this refund can still pay out: a double refund. So: PENDING.
    "ABNORMAL": ProviderRefundState.PENDING,
    "CLOSED": ProviderRefundState.FAILED,  # closed by WeChat Pay: no money went back
}

REFUND_EVENTS = {
    "REFUND.SUCCESS": "SUCCESS",
    "REFUND.ABNORMAL": "ABNORMAL",
    "REFUND.CLOSED": "CLOSED",
}
PAYMENT_EVENT = "TRANSACTION.SUCCESS"


@dataclass(frozen=True)
class Product:
    """A channel as WeChat Pay sells it: the create API, which of the merchant's app ids it is
    made for (WechatPayConfig field), and the answer's field the payer action is made from."""

    spec: ChannelSpec
    path: str
    appid_field: str
    answer_field: str


_K = PayerActionKind
_OPENID = frozenset({PayerField.OPENID})
_IP = frozenset({PayerField.CLIENT_IP})
# order.channel -> the payment product. The one list: the provider's spec (__init__.py)
# declares exactly these ChannelSpecs, and create_payment refuses what a spec says is needed
# and missing, so the core's check and the adapter's cannot drift apart.
PRODUCTS: dict[str, Product] = {
    p.spec.name: p
    for p in (
        Product(
            ChannelSpec("wechat_native", _K.QR_CODE, description="a QR code the payer scans"),
            "/v3/pay/transactions/native",
            "appid",
            "code_url",
        ),
        Product(
            ChannelSpec(
                "wechat_h5",
                _K.REDIRECT,
                _IP,
                "a mobile browser outside WeChat",
                public_payer_ip=True,
            ),
            "/v3/pay/transactions/h5",
            "appid",
            "h5_url",
        ),
        Product(
            ChannelSpec("wechat_jsapi", _K.JSAPI, _OPENID, "an official-account page"),
            "/v3/pay/transactions/jsapi",
            "appid",
            "prepay_id",
        ),
        Product(
            ChannelSpec("wechat_miniprogram", _K.JSAPI, _OPENID, "a mini-program"),
            "/v3/pay/transactions/jsapi",
            "miniprogram_appid",
            "prepay_id",
        ),
        Product(
            ChannelSpec("wechat_app", _K.APP, description="the merchant's app: the SDK's PayReq"),
            "/v3/pay/transactions/app",
            "app_appid",
            "prepay_id",
        ),
    )
}
CHANNELS = tuple(PRODUCTS)
WECHATPAY_CHANNELS = tuple(p.spec for p in PRODUCTS.values())
# An order that names no channel: a QR code to scan, which needs nothing of the payer.
DEFAULT_CHANNEL = "wechat_native"
# The app id setting each product needs, as an operator sets it.
APPID_VARIABLES = {
    "appid": "TEMPAY_WECHATPAY_APPID",
    "miniprogram_appid": "TEMPAY_WECHATPAY_MINIPROGRAM_APPID",
    "app_appid": "TEMPAY_WECHATPAY_APP_APPID",
}
# A prepay_id is signed into the payer's parameters, one value a line: WeChat's are
# "wx" and digits/hex ("wx201410272009395522657a690389285100"), string[1,64].
PREPAY_ID = re.compile(r"[0-9A-Za-z_\-]{1,64}")
# The h5_url the payer's browser is sent to, and the code_url a QR code holds.
H5_URL_PREFIX = "https://"
CODE_URL_PREFIX = "weixin://"

# Where a bill's download_url may point besides api_base: WeChat Pay's own API hosts (the
# answer naming it is signed, but the signed request and the bill go nowhere else).
BILL_HOSTS = ("api.mch.weixin.qq.com", "api2.mch.weixin.qq.com")
# Tradebill refusals that mean "not now", not "never": try again later.
BILL_NOT_READY = ("STATEMENT_CREATING",)
# Bill lines read at a time in a thread, so a long bill never stalls the event loop.
BILL_BATCH_LINES = 1000

# WeChat Pay's out_trade_no: 6-32 of digits, letters, _ - *.
OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-*]{6,32}")
OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")


class _BadData(ValueError):
    """An answer or notification whose content is not what WeChat Pay documents."""


def _trade_state(value: Any) -> ProviderPaymentState:
    try:
        return TRADE_STATE_MAP[value]
    except (KeyError, TypeError):
        raise _BadData(f"unknown trade_state {value!r}") from None


def _refund_state(value: Any) -> ProviderRefundState:
    try:
        return REFUND_STATUS_MAP[value]
    except (KeyError, TypeError):
        raise _BadData(f"unknown refund status {value!r}") from None


def to_fen(amount: Decimal, currency: str) -> int:
    """Decimal CNY -> integer fen, exactly; anything else is refused."""
    if currency != CURRENCY:
        raise ProviderRejected(f"wechatpay accepts only {CURRENCY} amounts, not {currency}")
    fen = amount.scaleb(2)
    if not fen.is_finite() or fen != fen.to_integral_value() or fen <= 0:
        raise ProviderRejected(f"amount {amount} is not a positive whole number of fen")
    return int(fen)


def from_fen(value: Any, field: str) -> Decimal:
    """Integer fen -> Decimal CNY (100 -> Decimal('1.00')), never through float."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _BadData(f"{field} must be a non-negative integer number of fen")
    return Decimal(value).scaleb(-2)


def _currency(amount: Mapping[str, Any], field: str) -> str:
    currency = amount.get("currency", CURRENCY)
    if currency != CURRENCY:
        raise _BadData(f"{field}.currency {currency!r} is not {CURRENCY}")
    return CURRENCY


def _timestamp(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise _BadData(f"{field} {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise _BadData(f"missing {field}")
    return value


def _object(data: Mapping[str, Any], field: str) -> dict[str, Any]:
    value = data.get(field)
    if not isinstance(value, dict):
        raise _BadData(f"{field} must be an object")
    return value


def _payment_observation(
    trade: Mapping[str, Any], source: str, notification_id: str | None = None
) -> PaymentObservation:
    state = _trade_state(trade.get("trade_state"))
    paid = state is ProviderPaymentState.PAID
    amount = currency = None
    if paid:
        money = _object(trade, "amount")
        amount = from_fen(money.get("total"), "amount.total")
        if amount <= 0:
            raise _BadData("a paid transaction needs a positive amount.total")
        currency = _currency(money, "amount")
    return PaymentObservation(
        order_id=_text(trade, "out_trade_no"),
        provider=NAME,
        state=state,
        provider_trade_no=trade.get("transaction_id") or None,
        amount=amount,
        currency=currency,
        occurred_at=_timestamp(trade.get("success_time"), "success_time") if paid else None,
        source=source,  # type: ignore[arg-type]
        notification_id=notification_id,
    )


def _refund_observation(
    refund: Mapping[str, Any],
    status_field: str,
    source: str,
    notification_id: str | None = None,
) -> RefundObservation:
    state = _refund_state(refund.get(status_field))
    money = _object(refund, "amount")
    amount = from_fen(money.get("refund"), "amount.refund")
    return RefundObservation(
        refund_id=_text(refund, "out_refund_no"),
        order_id=_text(refund, "out_trade_no"),
        state=state,
        amount=amount,
        currency=_currency(money, "amount"),
        provider_refund_no=refund.get("refund_id") or None,
        occurred_at=_timestamp(refund.get("success_time") or refund.get("create_time"), "time"),
        source=source,  # type: ignore[arg-type]
        notification_id=notification_id,
    )


def _payer_values(body: Mapping[str, Any]) -> list[str]:
    """The payer details a create request carries (payer.openid, scene_info.payer_client_ip)."""
    values = [
        (body.get("payer") or {}).get("openid"),
        (body.get("scene_info") or {}).get("payer_client_ip"),
    ]
    return [v for v in values if isinstance(v, str) and v]


def _redacted(value: Any, hidden: list[str]) -> Any:
    """`value` with each of `hidden` replaced in every string it holds (keys stay)."""
    if isinstance(value, str):
        for secret in hidden:
            value = value.replace(secret, "[payer detail]")
        return value
    if isinstance(value, dict):
        return {key: _redacted(item, hidden) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, hidden) for item in value]
    return value


class WechatPayAdapter(HTTPAdapter):
    name = NAME
    statement_timezone = "Asia/Shanghai"  # the trade bill's day

    def __init__(
        self,
        config: WechatPayConfig,
        tolerance: timedelta = timedelta(minutes=5),
    ) -> None:
        super().__init__(base_url=config.api_base, timeout=config.timeout)
        self._config = config
        self._tolerance = tolerance

    def __repr__(self) -> str:
        return f"WechatPayAdapter(mchid={self._config.mchid!r}, api={self._config.api_base!r})"

    # The signed HTTP exchange

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        moves_money: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """One signed request; the answer's status and JSON (empty for 204).

        Unreachable, 429 and 5xx raise ProviderError; for a call that moves money, a request
        that may have arrived without its answer raises ProviderOutcomeUnknown. A 2xx answer
        whose signature does not verify is never believed."""
        text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        request = self.http.client.build_request(method, path, content=text.encode("utf-8"))
        url = request.url.raw_path.decode("ascii")
        request.headers["Authorization"] = crypto.authorization(
            self._config.private_key,
            self._config.mchid,
            self._config.cert_serial,
            method,
            url,
            text,
            str(int(time.time())),
            crypto.new_nonce(),
        )
        request.headers["Accept"] = "application/json"
        request.headers["Wechatpay-Serial"] = self._config.public_key_id
        if body is not None:
            request.headers["Content-Type"] = "application/json"
        what = f"wechatpay {method} {path}"
        response = await self.http.send(request, what, moves_money=moves_money)
        status = response.status_code
        signed = any(k.lower() == crypto.SIGNATURE_HEADER.lower() for k in response.headers)
        if 200 <= status < 300 or signed:
            try:
                signed_answer = crypto.signed_headers(response.headers)
                crypto.verify_signed(
                    self._config.public_key,
                    self._config.public_key_id,
                    signed_answer,
                    response.content,
                )
                self._check_fresh(signed_answer.timestamp)
            except SignatureError as exc:
                raise unanswered(
                    f"{what}: HTTP {status} answer not believed: {exc}", moves_money
                ) from None
        if status == 429:
            raise ProviderError(f"{what}: rate limited (429)")
        if not response.content:
            return status, {}
        try:
            data = response.json()
        except ValueError:
            raise unanswered(f"{what}: HTTP {status} answer is not JSON", moves_money) from None
        if not isinstance(data, dict):
            raise unanswered(f"{what}: HTTP {status} answer is not an object", moves_money)
        return status, data

    @staticmethod
    def _refused(
        status: int, data: Mapping[str, Any], what: str, hide: Mapping[str, Any] | None = None
    ) -> ProviderRejected:
        """WeChat Pay's refusal, with its code. `hide`: the request whose payer details (an
        openid, an IP) must not reach the message or the details, should WeChat Pay's text
        quote them."""
        code = data.get("code")
        text = f"wechatpay refused {what}: HTTP {status} {code or ''} {data.get('message', '')}"
        hidden = _payer_values(hide or {})
        text, details = _redacted(text, hidden), _redacted(dict(data), hidden)
        if isinstance(code, str) and code:
            return ProviderRefused(text.strip(), code, details)
        return ProviderRejected(text.strip())

    @staticmethod
    def _bad_answer(exc: _BadData, what: str) -> ProviderError:
        return ProviderError(f"wechatpay {what} answer is malformed: {exc}")

    @staticmethod
    def _out_trade_no(order_id: str) -> str:
        if not OUT_TRADE_NO.fullmatch(order_id):
            raise ProviderRejected(
                f"order id {order_id!r} is not a WeChat Pay out_trade_no "
                "(6-32 of letters, digits, '_', '-', '*')"
            )
        return order_id

    def _trade_path(self, order_id: str) -> str:
        return f"/v3/pay/transactions/out-trade-no/{quote(self._out_trade_no(order_id), safe='')}"

    # Payments

    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        """The order at WeChat Pay on its channel's API, and what the payer does next.

        Refused before anything is sent (ProviderRejected): an unknown channel, a channel
        whose app id this deployment does not configure, a payer detail the channel needs
        and the order lacks or holds malformed (build_order checks the same; this is the
        second line), an amount or order id WeChat Pay cannot take. No message holds a payer
        detail."""
        channel = DEFAULT_CHANNEL if order.channel is None else order.channel
        product = PRODUCTS.get(channel)
        if product is None:
            raise ProviderRejected(
                f"wechatpay has no channel {channel!r}; use one of {', '.join(CHANNELS)}"
            )
        appid = getattr(self._config, product.appid_field)
        if appid is None:
            raise ProviderRejected(
                f"wechatpay channel {channel} needs {APPID_VARIABLES[product.appid_field]}, "
                "which this deployment does not set"
            )
        if not order.notify_url:
            raise ProviderRejected("wechatpay needs a notify_url")
        body: dict[str, Any] = {
            "appid": appid,
            "mchid": self._config.mchid,
            "description": (order.subject or order.order_id)[:127],
            "out_trade_no": self._out_trade_no(order.order_id),
            "notify_url": order.notify_url,
            "amount": {"total": to_fen(order.amount, order.currency), "currency": CURRENCY},
        }
        if PayerField.OPENID in product.spec.needs:
            body["payer"] = {"openid": self._payer_detail(order, product, PayerField.OPENID)}
        if PayerField.CLIENT_IP in product.spec.needs:
            body["scene_info"] = {
                "payer_client_ip": self._payer_detail(order, product, PayerField.CLIENT_IP),
                "h5_info": {"type": "Wap"},
            }
        status, data = await self._call("POST", product.path, body)
        if status != 200:
            raise self._refused(status, data, "create", hide=body)
        answer = data.get(product.answer_field)
        if not isinstance(answer, str) or not answer:
            raise ProviderError(f"wechatpay create answer lacks {product.answer_field}")
        # WeChat Pay assigns its transaction_id only once paid; the queries report it.
        return CreatedPayment(
            provider_trade_no="", payer_action=self._payer_action(product, appid, answer)
        )

    @staticmethod
    def _payer_detail(order: PaymentOrder, product: Product, field: PayerField) -> str:
        """The payer detail the channel needs, checked again; the refusal names the field,
        never its value."""
        value = order.payer.get(field) if order.payer is not None else None
        if value is None:
            raise ProviderRejected(
                f"wechatpay channel {product.spec.name} needs {field.value}; the order has none"
            )
        try:
            return parse_openid(value) if field is PayerField.OPENID else parse_client_ip(value)
        except InvalidInput:
            raise ProviderRejected(
                f"wechatpay channel {product.spec.name}: the order's {field.value} is malformed"
            ) from None

    def _payer_action(self, product: Product, appid: str, answer: str) -> PayerAction:
        """The answer's code_url, h5_url or prepay_id as what the payer does; a value that
        cannot be what WeChat Pay documents is not handed to a payer."""
        kind = product.spec.action
        if kind is PayerActionKind.QR_CODE:
            if not answer.startswith(CODE_URL_PREFIX):
                raise ProviderError("wechatpay create answer's code_url is not a weixin:// URL")
            return QrCodeAction(content=answer)
        if kind is PayerActionKind.REDIRECT:
            if not answer.startswith(H5_URL_PREFIX):
                raise ProviderError("wechatpay create answer's h5_url is not an https URL")
            return RedirectAction(url=answer)
        if not PREPAY_ID.fullmatch(answer):
            raise ProviderError("wechatpay create answer's prepay_id is malformed")
        # Fresh for each answer: WeChat's client checks the signature, not their reuse.
        timestamp, nonce = str(int(time.time())), crypto.new_nonce()
        key = self._config.private_key
        if kind is PayerActionKind.JSAPI:
            package = f"prepay_id={answer}"
            return JsapiAction(
                parameters=JsapiParameters(
                    appId=appid,
                    timeStamp=timestamp,
                    nonceStr=nonce,
                    package=package,
                    signType="RSA",
                    paySign=crypto.jsapi_pay_sign(key, appid, timestamp, nonce, package),
                )
            )
        return AppAction(
            parameters=AppParameters(
                appid=appid,
                partnerid=self._config.mchid,
                prepayid=answer,
                package="Sign=WXPay",
                noncestr=nonce,
                timestamp=timestamp,
                sign=crypto.app_pay_sign(key, appid, timestamp, nonce, answer),
            )
        )

    async def _query_trade(self, order_id: str) -> dict[str, Any] | None:
        """The transaction as WeChat Pay sees it; None when it has no such order."""
        path = f"{self._trade_path(order_id)}?mchid={quote(self._config.mchid, safe='')}"
        status, data = await self._call("GET", path)
        if status == 404 and data.get("code") == "ORDER_NOT_EXIST":
            return None
        if status != 200:
            raise self._refused(status, data, "order query")
        if data.get("out_trade_no") != order_id or data.get("mchid") != self._config.mchid:
            raise ProviderError("wechatpay order query answered about another order")
        return data

    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        trade = await self._query_trade(order.order_id)
        if trade is None:
            # The create call may never have reached WeChat Pay: nothing was paid.
            return PaymentObservation(
                order_id=order.order_id,
                provider=self.name,
                state=ProviderPaymentState.PENDING,
                source="status_query",
            )
        try:
            return _payment_observation(trade, "status_query")
        except _BadData as exc:
            raise self._bad_answer(exc, "order query") from None

    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        status, data = await self._call(
            "POST", f"{self._trade_path(order.order_id)}/close", {"mchid": self._config.mchid}
        )
        if status in (200, 204):
            return CloseOutcome(closed=True)
        if status == 404 and data.get("code") == "ORDER_NOT_EXIST":
            return CloseOutcome(closed=True)  # never created: nothing can be paid
        # Refused (for example ORDERPAID): what WeChat Pay holds decides.
        refusal = self._refused(status, data, "close")
        trade = await self._query_trade(order.order_id)
        if trade is None:
            raise refusal
        try:
            observation = _payment_observation(trade, "close")
        except _BadData as exc:
            raise self._bad_answer(exc, "order query") from None
        if observation.state is ProviderPaymentState.PAID:
            return CloseOutcome(closed=False, observation=observation)
        if observation.state is ProviderPaymentState.CLOSED:
            return CloseOutcome(closed=True, observation=observation)
        raise refusal

    # Refunds

    async def create_refund(self, request: RefundRequest) -> RefundObservation:
        if not OUT_REFUND_NO.fullmatch(request.refund_id):
            raise ProviderRejected(
                f"refund id {request.refund_id!r} is not a WeChat Pay out_refund_no "
                "(1-64 of letters, digits, '_', '-', '|', '*', '@')"
            )
        refund_fen = to_fen(request.amount, request.currency)
        # WeChat Pay wants the order's total too: take it from WeChat Pay itself.
        trade = await self._query_trade(request.order_id)
        if trade is None:
            raise ProviderRefused(
                f"wechatpay has no order {request.order_id}", "RESOURCE_NOT_EXISTS"
            )
        total = (trade.get("amount") or {}).get("total")
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise ProviderRefused(
                f"wechatpay order {request.order_id} is not paid ({trade.get('trade_state')})",
                "TRADE_STATUS_ERROR",
                {"trade_state": trade.get("trade_state")},
            )
        body: dict[str, Any] = {
            "out_trade_no": request.order_id,
            "out_refund_no": request.refund_id,
            "amount": {"refund": refund_fen, "total": total, "currency": CURRENCY},
        }
        if request.reason:
            body["reason"] = request.reason[:80]
        if request.notify_url:
            body["notify_url"] = request.notify_url
        status, data = await self._call("POST", "/v3/refund/domestic/refunds", body, True)
        if status != 200:
            raise self._refused(status, data, "refund")
        if data.get("out_refund_no") != request.refund_id:
            raise ProviderOutcomeUnknown("wechatpay refund answer is about another refund")
        try:
            return _refund_observation(data, "status", "create")
        except _BadData as exc:
            raise ProviderOutcomeUnknown(f"wechatpay refund answer is malformed: {exc}") from None

    async def query_refund(self, request: RefundRequest) -> RefundObservation | None:
        status, data = await self._call(
            "GET", f"/v3/refund/domestic/refunds/{quote(request.refund_id, safe='')}"
        )
        if status == 404 and data.get("code") == "RESOURCE_NOT_EXISTS":
            return None
        if status != 200:
            raise self._refused(status, data, "refund query")
        if data.get("out_refund_no") != request.refund_id:
            raise ProviderError("wechatpay refund query answered about another refund")
        try:
            return _refund_observation(data, "status", "status_query")
        except _BadData as exc:
            raise self._bad_answer(exc, "refund query") from None

    # Statements

    async def statement(self, day: date) -> AsyncIterator[StatementLine]:
        """The trade bill for `day` (Asia/Shanghai), bill_type ALL, gzipped on the wire: asked
        for with a signed, verified call, downloaded with a signed GET whose answer WeChat Pay
        does not sign, so it is trusted by its SHA1 alone (providers/wechatpay/statement.py).

        NO_STATEMENT_EXIST raises ProviderRefused with that code: WeChat Pay says so for a day
        without a successful trade, and for a day not billed yet (bills are made after 09:00
        the next day, and kept three months)."""
        query = urlencode({"bill_date": day.isoformat(), "bill_type": "ALL", "tar_type": "GZIP"})
        status, data = await self._call("GET", f"/v3/bill/tradebill?{query}")
        if status != 200:
            if data.get("code") in BILL_NOT_READY:
                raise ProviderError(
                    f"wechatpay bill for {day} is not ready yet ({data.get('code')}): "
                    "try again later"
                )
            if data.get("code") == "NO_STATEMENT_EXIST":
                raise ProviderRefused(
                    f"wechatpay has no bill for {day} (NO_STATEMENT_EXIST): no successful "
                    "trade that day, or the day is not billed yet (after 09:00 the next day) "
                    "or is older than three months",
                    "NO_STATEMENT_EXIST",
                    dict(data),
                )
            raise self._refused(status, data, f"the bill for {day}")
        fields: dict[str, str] = {}
        for name in ("hash_type", "hash_value", "download_url"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise StatementError(f"wechatpay tradebill answer for {day} lacks {name}")
            fields[name] = value
        download = BillDownload(fields["hash_type"], fields["hash_value"], gzipped=True)
        try:
            await self._download(fields["download_url"].strip(), download)
            bill = download.verified()
            mchid, appids = self._config.mchid, self._config.appids
            # Every line checked before the first is given (statement.read_tradebill).
            await asyncio.to_thread(check_tradebill, bill, mchid, appids)
            lines = tradebill_lines(bill, mchid, appids)
            while batch := await asyncio.to_thread(list, islice(lines, BILL_BATCH_LINES)):
                for line in batch:
                    yield line
        finally:
            download.close()

    def _bill_url(self, url: str) -> httpx.URL:
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise StatementError("wechatpay bill download_url is not a URL") from None
        base = httpx.URL(self._config.api_base)
        ours = (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)
        wechat = target.scheme == "https" and target.host in BILL_HOSTS
        if not (ours or wechat):
            raise StatementError(
                f"wechatpay bill download_url points at {target.scheme}://{target.host}, "
                f"neither {self._config.api_base} nor WeChat Pay's API: not followed"
            )
        return target

    async def _download(self, url: str, download: BillDownload) -> None:
        """A signed GET of the download_url, streamed into `download`."""
        target = self._bill_url(url)
        request = self.http.client.build_request("GET", target)
        request.headers["Authorization"] = crypto.authorization(
            self._config.private_key,
            self._config.mchid,
            self._config.cert_serial,
            "GET",
            request.url.raw_path.decode("ascii"),
            "",
            str(int(time.time())),
            crypto.new_nonce(),
        )
        what = "wechatpay bill download"
        try:
            response = await self.http.client.send(request, stream=True)
        except NOT_SENT as exc:
            raise ProviderError(f"{what}: unreachable ({type(exc).__name__}: {exc})") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"{what}: no answer ({type(exc).__name__}: {exc})") from exc
        try:
            if response.status_code != 200:
                raise await self._download_refused(response, what)
            async for chunk in response.aiter_bytes():
                download.feed(chunk)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{what}: cut off ({type(exc).__name__}: {exc})") from exc
        finally:
            await response.aclose()

    @staticmethod
    async def _download_refused(response: httpx.Response, what: str) -> ProviderError:
        """A refused download (the URL lives 30 s, so asking again usually helps): retryable.
        Only the start of the answer is read."""
        head = b""
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) > 4096:
                break
        try:
            data = json.loads(head)
        except ValueError:
            data = None
        detail = ""
        if isinstance(data, dict):
            detail = f" {data.get('code', '')} {data.get('message', '')}".rstrip()
        return ProviderError(f"{what}: HTTP {response.status_code}{detail}")

    # Notifications

    def _check_fresh(self, timestamp: str) -> None:
        """A signed message (answer or notification) from too long ago, or from the future,
        may be a replay: not believed."""
        sent_at = crypto.parse_timestamp(timestamp)
        if abs(time.time() - sent_at) > self._tolerance.total_seconds():
            raise SignatureError(
                f"{crypto.TIMESTAMP_HEADER} {sent_at} is outside the {self._tolerance} tolerance"
            )

    def _verified_event(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Signature and freshness first, on the raw body; then the event and its decrypted
        resource."""
        try:
            signed = crypto.signed_headers(headers)
        except SignatureError as exc:
            raise UnverifiedNotification(str(exc)) from None
        if signed.serial != self._config.public_key_id:
            raise UnverifiedNotification(
                f"{crypto.SERIAL_HEADER} {signed.serial!r} is not our WeChat Pay public key"
            )
        try:
            self._check_fresh(signed.timestamp)
            crypto.verify_signed(self._config.public_key, self._config.public_key_id, signed, body)
        except SignatureError as exc:
            raise UnverifiedNotification(str(exc)) from None
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedNotification("body is not JSON") from None
        if not isinstance(event, dict):
            raise MalformedNotification("body is not a JSON object")
        try:
            _text(event, "id")
            _text(event, "event_type")
            if event.get("resource_type") != "encrypt-resource":
                raise _BadData(f"resource_type {event.get('resource_type')!r} is not encrypted")
            resource = _object(event, "resource")
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise _BadData(f"unsupported algorithm {resource.get('algorithm')!r}")
            ciphertext, nonce = _text(resource, "ciphertext"), _text(resource, "nonce")
            associated = resource.get("associated_data") or ""
            if not isinstance(associated, str):
                raise _BadData("associated_data must be a string")
        except _BadData as exc:
            raise MalformedNotification(str(exc)) from None
        try:
            plain = crypto.decrypt_resource(
                self._config.apiv3_key.get_secret_value().encode("utf-8"),
                nonce,
                associated,
                ciphertext,
            )
        except crypto.DecryptionError as exc:
            # A signed body whose resource fails its GCM tag: the resource did not
            # authenticate under our APIv3 key (almost always a wrong key). That is an
            # authentication failure, not a syntax error, so 401: WeChat Pay retries, and
            # operators see it with the other verification failures.
            raise UnverifiedNotification(str(exc)) from None
        try:
            data = json.loads(plain)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedNotification("decrypted resource is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedNotification("decrypted resource is not a JSON object")
        if data.get("mchid") != self._config.mchid:
            raise MalformedNotification("notification is for another merchant")
        return event, data

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        """A payment notification; refund notifications are refused here (read them with
        `parse_any_notification`), so they never reach a payment."""
        event, data = self._verified_event(headers, body)
        if event["event_type"] != PAYMENT_EVENT:
            raise MalformedNotification(f"a {event['event_type']} notification is not a payment")
        return self._payment_notification(event, data)

    def parse_any_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> ProviderObservation:
        event, data = self._verified_event(headers, body)
        event_type = event["event_type"]
        if event_type == PAYMENT_EVENT:
            return self._payment_notification(event, data)
        if event_type in REFUND_EVENTS:
            return self._refund_notification(event, data)
        raise MalformedNotification(f"unknown event_type {event_type!r}")

    def _payment_notification(
        self, event: Mapping[str, Any], data: Mapping[str, Any]
    ) -> PaymentObservation:
        try:
            observation = _payment_observation(data, "notification", str(event["id"]))
        except _BadData as exc:
            raise MalformedNotification(str(exc)) from None
        if observation.state is not ProviderPaymentState.PAID:
            raise MalformedNotification(
                f"{PAYMENT_EVENT} with trade_state {data.get('trade_state')!r}"
            )
        return observation

    def _refund_notification(
        self, event: Mapping[str, Any], data: Mapping[str, Any]
    ) -> RefundObservation:
        expected = REFUND_EVENTS[event["event_type"]]
        if data.get("refund_status") != expected:
            raise MalformedNotification(
                f"{event['event_type']} with refund_status {data.get('refund_status')!r}"
            )
        try:
            return _refund_observation(data, "refund_status", "notification", str(event["id"]))
        except _BadData as exc:
            raise MalformedNotification(str(exc)) from None

    def acknowledgement(self) -> Acknowledgement:
        # WeChat Pay: 200 or 204, no body.
        return Acknowledgement(204, "", "text/plain")

    def refusal(self, status_code: int, message: str) -> Acknowledgement:
        body = json.dumps({"code": "FAIL", "message": message}, ensure_ascii=False)
        return Acknowledgement(status_code, body, "application/json")
