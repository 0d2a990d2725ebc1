"""A local fake of the Alipay open platform gateway, for tests.

It holds its own RSA key pair (Alipay's) and the merchant application's public key, and signs
and verifies with Alipay's reference SDK (`alipay-sdk-python`), not with tempay's code:

- every request's `sign` is checked with the merchant's public key as Alipay does (bad sign:
  Alipay's unsigned `isv.invalid-signature` answer);
- `GET /gateway.do?...` is the payer opening a page/wap pay URL: the trade appears, waiting;
- `open_app(order_string)` is the Alipay app taking an app order string (alipay.trade.app.pay)
  from the merchant's app: its signature is checked with the merchant's public key, like a
  request's, then the trade appears, waiting;
- alipay.trade.precreate answers a `qr_code` and keeps the order, and `scan(qr_code)` is the
  payer's wallet scanning it: the trade appears, waiting (before that, a query finds no trade,
  as at Alipay);
- alipay.trade.query / close / refund / fastpay.refund.query answer in Alipay's documented
  format, `{"<method>_response": {...}, "sign": "..."}`, signed over the raw response text;
- `pay()` and `refund_notification()` build signed `trade_status_sync` notifications, and
  `deliver()` POSTs one to the trade's notify_url;
- alipay.data.dataservice.bill.downloadurl.query answers a `bill_download_url` for a day
  before today (Beijing time; today's and later: isp.bill_not_exist) under `GET /bills/...`,
  a zip in Alipay's trade bill layout written by providers/bills.py from the trades paid and
  refunds made that day. The bill names `bill_account` (the seller id with Alipay's CNY
  account suffix 0156); `paid_on()` and `refunded_on()` date a trade or refund to a past day.

Faults for the next API call (`faults.append(...)`): "system_error" (20000), "http_502",
"bad_sign" (answer signed with another key), "process_then_502" (done, answer lost),
"bill_expired" (a bill_download_url that answers 404).
"""

from __future__ import annotations

import io
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse

from providers.bills import BillEntry, write_trade_bill
from tempay.statements import StatementLine, StatementLineKind

CHINA = timezone(timedelta(hours=8))
METHODS = (
    "alipay.trade.precreate",
    "alipay.trade.query",
    "alipay.trade.close",
    "alipay.trade.refund",
    "alipay.trade.fastpay.refund.query",
    "alipay.data.dataservice.bill.downloadurl.query",
)
PAGE_METHODS = ("alipay.trade.page.pay", "alipay.trade.wap.pay")
APP_METHOD = "alipay.trade.app.pay"
# Each way to create a trade and the product code Alipay expects with it.
PRODUCT_CODES = {
    "alipay.trade.wap.pay": "QUICK_WAP_WAY",
    "alipay.trade.page.pay": "FAST_INSTANT_TRADE_PAY",
    APP_METHOD: "QUICK_MSECURITY_PAY",
    "alipay.trade.precreate": "FACE_TO_FACE_PAYMENT",
}
# total_amount: yuan with at most two places, in [0.01, 100000000] (Alipay's Price type).
AMOUNT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
# The merchant's Alipay user id (PID) this fake signs into every notification; tempay must be
# configured with the same one (TEMPAY_ALIPAY_SELLER_ID).
SELLER_ID = "2088101122136241"


def china_now() -> str:
    return datetime.now(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def rsa_pem_pair() -> tuple[str, str]:
    """A fresh key pair: (PKCS#1 private PEM, as Alipay's SDK reads it; SPKI public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def sdk_verify(public_pem: str, content: str, sign: str) -> bool:
    try:
        verify_with_rsa(public_pem, content.encode("utf-8"), sign)
    except Exception:  # rsa.VerificationError, bad base64, ...
        return False
    return True


def sign_notification(alipay_private_pem: str, params: dict[str, str]) -> dict[str, str]:
    """Sign a notification as Alipay does: RSA2 over the sorted params but sign, sign_type."""
    params = {k: v for k, v in params.items() if k not in ("sign", "sign_type")}
    content = get_sign_content(params)
    return {
        **params,
        "sign_type": "RSA2",
        "sign": sign_with_rsa2(alipay_private_pem, content, "utf-8"),
    }


@dataclass
class FakeTrade:
    out_trade_no: str
    trade_no: str
    total_amount: Decimal
    subject: str
    notify_url: str
    status: str = "WAIT_BUYER_PAY"
    gmt_create: str = field(default_factory=china_now)
    gmt_payment: str | None = None
    gmt_close: str | None = None
    refunded: Decimal = Decimal("0.00")


@dataclass
class FakePrecreate:
    """An order precreated for a QR code: no trade until the payer scans it."""

    out_trade_no: str
    total_amount: Decimal
    subject: str
    notify_url: str
    time_expire: datetime
    qr_code: str


@dataclass
class FakeRefund:
    out_trade_no: str
    out_request_no: str
    amount: Decimal
    gmt_refund_pay: str


class AlipayError(Exception):
    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str, signed: bool = True):
        self.body = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}
        self.signed = signed


def business_error(sub_code: str, sub_msg: str) -> AlipayError:
    return AlipayError("40004", "Business Failed", sub_code, sub_msg)


class FakeAlipayGateway:
    def __init__(self, app_id: str, merchant_public_pem: str, seller_id: str = SELLER_ID):
        self.app_id = app_id
        self.seller_id = seller_id
        self.merchant_public_pem = merchant_public_pem
        self.private_pem, self.public_pem = rsa_pem_pair()
        self.trades: dict[str, FakeTrade] = {}
        self.precreated: dict[str, FakePrecreate] = {}  # by out_trade_no
        self.refunds: dict[tuple[str, str], FakeRefund] = {}
        self.faults: list[str] = []
        self.requests: list[dict[str, str]] = []  # every verified API request's parameters
        self.rejected: list[str] = []  # sub_codes of refused requests (e.g. bad signatures)
        # The account its trade bills name: the PID with Alipay's CNY account suffix.
        self.bill_account = seller_id + "0156"
        self.bills: dict[str, bytes] = {}  # download token -> zip
        self.base_url = ""  # where the gateway is served, for bill_download_url

    # Signing, as Alipay

    def sign(self, content: str) -> str:
        return sign_with_rsa2(self.private_pem, content, "utf-8")

    def notification(self, trade: FakeTrade, **extra: str) -> dict[str, str]:
        params = {
            "notify_time": china_now(),
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_id": "2088102122524333",
            "buyer_logon_id": "159****5620",
            "seller_id": self.seller_id,
            "trade_status": trade.status,
            "total_amount": str(trade.total_amount),
            "receipt_amount": str(trade.total_amount),
            "buyer_pay_amount": str(trade.total_amount),
            "subject": trade.subject,
            "gmt_create": trade.gmt_create,
        }
        if trade.gmt_payment:
            params["gmt_payment"] = trade.gmt_payment
        if trade.gmt_close:
            params["gmt_close"] = trade.gmt_close
        params.update(extra)
        return sign_notification(self.private_pem, params)

    # The payer and Alipay's own actions

    def pay(self, out_trade_no: str) -> dict[str, str]:
        """The payer pays an opened trade; returns the signed notification Alipay sends."""
        trade = self.trades[out_trade_no]
        assert trade.status == "WAIT_BUYER_PAY", trade.status
        trade.status = "TRADE_SUCCESS"
        trade.gmt_payment = china_now()
        return self.notification(trade)

    def refund_notification(self, out_trade_no: str, out_request_no: str) -> dict[str, str]:
        trade = self.trades[out_trade_no]
        refund = self.refunds[(out_trade_no, out_request_no)]
        return self.notification(
            trade,
            out_biz_no=out_request_no,
            refund_fee=str(trade.refunded),
            gmt_refund=refund.gmt_refund_pay + ".123",
        )

    def paid_on(self, out_trade_no: str, day: date) -> None:
        """Date a paid trade's payment to `day` (noon, Beijing time), so its bill exists."""
        trade = self.trades[out_trade_no]
        assert trade.gmt_payment is not None, "pay it first"
        trade.gmt_payment = f"{day} 12:00:00"

    def refunded_on(self, out_trade_no: str, out_request_no: str, day: date) -> None:
        """Date a refund to `day` (15:00, Beijing time)."""
        self.refunds[(out_trade_no, out_request_no)].gmt_refund_pay = f"{day} 15:00:00"

    def bill(self, day: date) -> bytes:
        """The day's trade bill, as Alipay would serve it."""
        buffer = io.BytesIO()
        write_trade_bill(buffer, self._bill_entries(day), account=self.bill_account, day=day)
        return buffer.getvalue()

    def _bill_entries(self, day: date) -> list[BillEntry]:
        def at(stamp: str) -> datetime:
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)

        entries = [
            BillEntry(
                StatementLine(
                    kind=StatementLineKind.PAYMENT,
                    order_id=trade.out_trade_no,
                    provider_trade_no=trade.trade_no,
                    amount=trade.total_amount,
                    currency="CNY",
                    at=at(trade.gmt_payment),
                ),
                subject=trade.subject,
                created_at=at(trade.gmt_create),
            )
            for trade in self.trades.values()
            if trade.gmt_payment and at(trade.gmt_payment).date() == day
        ]
        for refund in self.refunds.values():
            if at(refund.gmt_refund_pay).date() != day:
                continue
            trade = self.trades[refund.out_trade_no]
            line = StatementLine(
                kind=StatementLineKind.REFUND,
                order_id=trade.out_trade_no,
                provider_trade_no=trade.trade_no,
                refund_id=refund.out_request_no,
                amount=refund.amount,
                currency="CNY",
                at=at(refund.gmt_refund_pay),
            )
            entries.append(BillEntry(line, subject=trade.subject))
        return entries

    async def deliver(self, notification: dict[str, str]) -> httpx.Response:
        trade = self.trades[notification["out_trade_no"]]
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                trade.notify_url,
                content=urlencode(notification).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )

    # The gateway

    def _verify_request(self, params: dict[str, str]) -> None:
        if not params.get("app_id") or not params.get("sign") or not params.get("method"):
            raise AlipayError(
                "40001",
                "Missing Required Arguments",
                "isv.missing-signature",
                "缺少签名参数",
                signed=False,
            )
        if params["app_id"] != self.app_id:
            raise AlipayError(
                "40002", "Invalid Arguments", "isv.invalid-app-id", "无效的AppID参数", signed=False
            )
        if params.get("sign_type") != "RSA2" or params.get("charset") != "utf-8":
            raise AlipayError(
                "40002",
                "Invalid Arguments",
                "isv.invalid-signature-type",
                "无效签名类型",
                signed=False,
            )
        # Alipay signs requests over every non-empty parameter but sign (sign_type included).
        content = get_sign_content({k: v for k, v in params.items() if k != "sign" and v})
        if not sdk_verify(self.merchant_public_pem, content, params["sign"]):
            raise AlipayError(
                "40002",
                "Invalid Arguments",
                "isv.invalid-signature",
                "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
                signed=False,
            )
        try:
            datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise AlipayError(
                "40002",
                "Invalid Arguments",
                "isv.invalid-timestamp",
                "非法的时间戳参数",
                signed=False,
            ) from None
        if params.get("version") != "1.0" or params.get("format", "JSON") != "JSON":
            raise AlipayError(
                "40002", "Invalid Arguments", "isv.invalid-parameter", "参数无效", signed=False
            )

    @staticmethod
    async def _params(request: Request) -> dict[str, str]:
        pairs = parse_qsl(urlsplit(str(request.url)).query, keep_blank_values=True)
        body = (await request.body()).decode("utf-8")
        pairs += parse_qsl(body, keep_blank_values=True)
        params: dict[str, str] = {}
        for key, value in pairs:
            if key in params:
                raise AlipayError(
                    "40002",
                    "Invalid Arguments",
                    "isv.invalid-parameter",
                    f"重复参数 {key}",
                    signed=False,
                )
            params[key] = value
        return params

    def answer(
        self, method: str, body: dict[str, Any], signed: bool = True, key: str | None = None
    ) -> Response:
        """Alipay's answer: the *_response JSON text, signed over exactly that text."""
        response_key = key or method.replace(".", "_") + "_response"
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        if not signed:
            text = f'{{"{response_key}":{raw}}}'
        else:
            signer = self.sign
            if self.faults and self.faults[0] == "bad_sign":
                self.faults.pop(0)
                other, _ = rsa_pem_pair()
                signer = lambda content: sign_with_rsa2(other, content, "utf-8")  # noqa: E731
            text = f'{{"{response_key}":{raw},"sign":"{signer(raw)}"}}'
        return Response(text.encode("utf-8"), media_type="text/html;charset=utf-8")

    def app(self) -> FastAPI:
        app = FastAPI(title="fake alipay gateway")

        @app.get("/bills/{token}")
        async def bill(token: str) -> Response:
            content = self.bills.get(token)
            if content is None:
                # Alipay's download links expire after 30 seconds.
                return HTMLResponse("<h1>文件不存在或已过期</h1>", status_code=404)
            return Response(content, media_type="application/zip")

        @app.api_route("/gateway.do", methods=["GET", "POST"])
        async def gateway(request: Request) -> Response:
            self.base_url = str(request.base_url).rstrip("/")
            method = "unknown"
            try:
                params = await self._params(request)
                method = params.get("method", "unknown")
                self._verify_request(params)
                if method not in METHODS + PAGE_METHODS:
                    raise AlipayError(
                        "40002",
                        "Invalid Arguments",
                        "isv.invalid-method",
                        "不存在的方法名",
                        signed=False,
                    )
                biz = json.loads(params.get("biz_content") or "{}")
                if request.method == "GET" or method in PAGE_METHODS:
                    return self._open_page(method, params, biz)
                fault = self.faults.pop(0) if self.faults and self.faults[0] != "bad_sign" else None
                if fault == "http_502":
                    return Response("bad gateway", status_code=502)
                if fault == "system_error":
                    raise AlipayError(
                        "20000", "Service Currently Unavailable", "isp.unknow-error", "系统繁忙"
                    )
                self.requests.append(params)
                if method == "alipay.trade.precreate":
                    result = self._alipay_trade_precreate(biz, params.get("notify_url", ""))
                else:
                    result = getattr(self, "_" + method.replace(".", "_"))(biz)
                if fault == "process_then_502":
                    return Response("bad gateway", status_code=502)
                if fault == "bill_expired":
                    self.bills.clear()  # the download link is dead before it is used
                return self.answer(method, {"code": "10000", "msg": "Success", **result})
            except AlipayError as exc:
                self.rejected.append(exc.body["sub_code"])
                if request.method == "GET":
                    return HTMLResponse(f"<h1>错误 {exc.body['sub_code']}</h1>", status_code=200)
                key = "error_response" if exc.body["sub_code"] == "isv.invalid-method" else None
                return self.answer(method, exc.body, signed=exc.signed, key=key)

        return app

    def _open_page(self, method: str, params: dict[str, str], biz: dict[str, Any]) -> Response:
        """The payer's browser opens the payment URL: the trade is created, waiting to pay."""
        if method not in PAGE_METHODS:
            raise AlipayError(
                "40002", "Invalid Arguments", "isv.invalid-method", "不存在的方法名", signed=False
            )
        trade = self._open_trade(method, biz, params.get("notify_url", ""))
        return HTMLResponse(
            f"<h1>支付宝收银台</h1><p>{trade.subject}</p><p>{trade.total_amount} CNY</p>"
            f"<p>{trade.status}</p>"
        )

    def open_app(self, order_string: str) -> FakeTrade:
        """The Alipay app takes an app order string from the merchant's app (the SDK's payV2)
        and the payer confirms: checked as Alipay checks a request (app_id, RSA2 signature with
        the merchant's public key over every parameter but sign, timestamp, version), then its
        biz_content; the trade is created, waiting to pay. Raises AlipayError (also recorded
        in `rejected`) for anything Alipay would refuse."""
        try:
            params = self._order_string_params(order_string)
            self._verify_request(params)
            if params["method"] != APP_METHOD:
                raise AlipayError(
                    "40002", "Invalid Arguments", "isv.invalid-method", "不存在的方法名"
                )
            if not params.get("notify_url"):
                raise business_error("ACQ.INVALID_PARAMETER", "notify_url")
            biz = self._biz(params)
            return self._open_trade(APP_METHOD, biz, params["notify_url"])
        except AlipayError as exc:
            self.rejected.append(exc.body["sub_code"])
            raise

    def scan(self, qr_code: str) -> FakeTrade:
        """The payer's wallet scans a precreated QR code: the trade is created, waiting to pay
        (the same trade again on a second scan). An unknown or expired code is refused."""
        order = next((o for o in self.precreated.values() if o.qr_code == qr_code), None)
        if order is None:
            raise business_error("ACQ.TRADE_NOT_EXIST", "二维码无效")
        if order.time_expire < datetime.now(CHINA):
            raise business_error("ACQ.TRADE_HAS_CLOSE", "交易已经超时")
        trade = self.trades.get(order.out_trade_no)
        if trade is None:
            trade = self._new_trade(
                order.out_trade_no, order.total_amount, order.subject, order.notify_url
            )
        return trade

    @staticmethod
    def _order_string_params(order_string: str) -> dict[str, str]:
        try:
            pairs = parse_qsl(order_string, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise AlipayError(
                "40002", "Invalid Arguments", "isv.invalid-parameter", "订单信息格式错误"
            ) from None
        params: dict[str, str] = {}
        for key, value in pairs:
            if key in params:
                raise AlipayError(
                    "40002", "Invalid Arguments", "isv.invalid-parameter", f"重复参数 {key}"
                )
            params[key] = value
        return params

    @staticmethod
    def _biz(params: dict[str, str]) -> dict[str, Any]:
        try:
            biz = json.loads(params.get("biz_content") or "")
        except ValueError:
            biz = None
        if not isinstance(biz, dict):
            raise business_error("ACQ.INVALID_PARAMETER", "biz_content")
        return biz

    def _checked_order(
        self, method: str, biz: dict[str, Any]
    ) -> tuple[str, Decimal, str, datetime | None]:
        """What Alipay checks of an order's biz_content before it makes a trade or a QR code:
        out_trade_no, total_amount (a Price string in range), subject, the product code that
        goes with the method, and time_expire (when given) not yet past."""
        out_trade_no = biz.get("out_trade_no")
        if not isinstance(out_trade_no, str) or not 0 < len(out_trade_no) <= 64:
            raise business_error("ACQ.INVALID_PARAMETER", "out_trade_no")
        amount_text = biz.get("total_amount")
        if not isinstance(amount_text, str) or not AMOUNT.fullmatch(amount_text):
            raise business_error("ACQ.INVALID_PARAMETER", "total_amount")
        try:
            amount = Decimal(amount_text)
        except InvalidOperation:
            raise business_error("ACQ.INVALID_PARAMETER", "total_amount") from None
        if not Decimal("0.01") <= amount <= Decimal("100000000"):
            raise business_error("ACQ.TOTAL_FEE_EXCEED", "订单金额超过限额")
        subject = biz.get("subject")
        if not isinstance(subject, str) or not 0 < len(subject) <= 256:
            raise business_error("ACQ.INVALID_PARAMETER", "subject")
        if biz.get("product_code", PRODUCT_CODES[method]) != PRODUCT_CODES[method]:
            raise business_error("ACQ.INVALID_PARAMETER", "product_code")
        time_expire = None
        if "time_expire" in biz:
            try:
                time_expire = datetime.strptime(
                    str(biz["time_expire"]), "%Y-%m-%d %H:%M:%S"
                ).replace(tzinfo=CHINA)
            except ValueError:
                raise business_error("ACQ.INVALID_PARAMETER", "time_expire") from None
            if time_expire < datetime.now(CHINA):
                raise business_error("ACQ.TRADE_HAS_CLOSE", "交易已经超时")
        return out_trade_no, amount, subject, time_expire

    def _open_trade(self, method: str, biz: dict[str, Any], notify_url: str) -> FakeTrade:
        out_trade_no, amount, subject, _ = self._checked_order(method, biz)
        trade = self.trades.get(out_trade_no)
        if trade is None:
            return self._new_trade(out_trade_no, amount, subject, notify_url)
        if trade.total_amount != amount:
            raise business_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
        return trade

    def _new_trade(
        self, out_trade_no: str, amount: Decimal, subject: str, notify_url: str
    ) -> FakeTrade:
        trade = FakeTrade(
            out_trade_no=out_trade_no,
            trade_no=datetime.now(CHINA).strftime("%Y%m%d") + "22001" + secrets.token_hex(6),
            total_amount=amount,
            subject=subject,
            notify_url=notify_url,
        )
        self.trades[out_trade_no] = trade
        return trade

    # API methods, by Alipay's documented behaviour

    def _alipay_trade_precreate(self, biz: dict[str, Any], notify_url: str) -> dict[str, Any]:
        """A QR code for the order; idempotent by out_trade_no: the same order again gets the
        same code, a changed amount is refused, and so is an order already paid or closed."""
        out_trade_no, amount, subject, time_expire = self._checked_order(
            "alipay.trade.precreate", biz
        )
        trade = self.trades.get(out_trade_no)
        if trade is not None and trade.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            raise business_error("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
        if trade is not None and trade.status == "TRADE_CLOSED":
            raise business_error("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        order = self.precreated.get(out_trade_no)
        if order is not None and order.total_amount != amount:
            raise business_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
        if order is None:
            order = FakePrecreate(
                out_trade_no=out_trade_no,
                total_amount=amount,
                subject=subject,
                notify_url=notify_url,
                # Without time_expire, Alipay's QR code lasts two hours.
                time_expire=time_expire or datetime.now(CHINA) + timedelta(hours=2),
                qr_code="https://qr.alipay.com/bax" + secrets.token_hex(10),
            )
            self.precreated[out_trade_no] = order
        return {"out_trade_no": out_trade_no, "qr_code": order.qr_code}

    def _trade(self, biz: dict[str, Any]) -> FakeTrade:
        trade = self.trades.get(biz.get("out_trade_no", ""))
        if trade is None:
            raise business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return trade

    def _alipay_trade_query(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        answer: dict[str, Any] = {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "159****5620",
            "trade_status": trade.status,
            "total_amount": str(trade.total_amount),
            "buyer_pay_amount": "0.00",
            "point_amount": "0.00",
            "invoice_amount": "0.00",
            "receipt_amount": "0.00",
            "buyer_user_id": "2088102122524333",
        }
        if trade.gmt_payment:
            answer.update(
                send_pay_date=trade.gmt_payment,
                buyer_pay_amount=str(trade.total_amount),
                receipt_amount=str(trade.total_amount),
                invoice_amount=str(trade.total_amount),
            )
        return answer

    def _alipay_trade_close(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        if trade.status != "WAIT_BUYER_PAY":
            raise business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        trade.status = "TRADE_CLOSED"
        trade.gmt_close = china_now()
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    def _alipay_trade_refund(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        amount = Decimal(biz["refund_amount"])
        key = (trade.out_trade_no, biz["out_request_no"])
        existing = self.refunds.get(key)
        if existing is not None:
            if existing.amount != amount:
                raise business_error("ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致")
            fund_change = "N"
        else:
            if trade.status != "TRADE_SUCCESS":
                raise business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            if amount <= 0 or trade.refunded + amount > trade.total_amount:
                raise business_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            existing = FakeRefund(trade.out_trade_no, biz["out_request_no"], amount, china_now())
            self.refunds[key] = existing
            trade.refunded += amount
            if trade.refunded == trade.total_amount:
                trade.status = "TRADE_CLOSED"
            fund_change = "Y"
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "159****5620",
            "fund_change": fund_change,
            "refund_fee": str(trade.refunded),
            "gmt_refund_pay": existing.gmt_refund_pay,
            "buyer_user_id": "2088102122524333",
        }

    def _alipay_trade_fastpay_refund_query(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        refund = self.refunds.get((trade.out_trade_no, biz.get("out_request_no", "")))
        answer: dict[str, Any] = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        if refund is None:
            return answer  # documented: no refund_status when the refund was not received
        answer.update(
            out_request_no=refund.out_request_no,
            total_amount=str(trade.total_amount),
            refund_amount=str(refund.amount),
            refund_status="REFUND_SUCCESS",
        )
        if "gmt_refund_pay" in biz.get("query_options", []):
            answer["gmt_refund_pay"] = refund.gmt_refund_pay
        return answer

    def _alipay_data_dataservice_bill_downloadurl_query(
        self, biz: dict[str, Any]
    ) -> dict[str, Any]:
        if biz.get("bill_type") not in ("trade", "signcustomer"):
            raise business_error("isp.bill_type_not_exist", "账单类型不存在")
        try:
            day = date.fromisoformat(str(biz.get("bill_date")))
        except ValueError:
            raise business_error("isv.invalid-parameter", "账单日期格式不正确") from None
        if day >= datetime.now(CHINA).date():
            raise business_error("isp.bill_not_exist", "账单不存在")
        token = secrets.token_hex(16)
        self.bills[token] = self.bill(day)
        name = f"{self.bill_account}_{day:%Y%m%d}.csv.zip"
        return {"bill_download_url": f"{self.base_url}/bills/{token}?downloadFileName={name}"}
