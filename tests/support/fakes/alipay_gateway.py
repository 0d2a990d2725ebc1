"""A local fake of the Alipay open platform gateway, for tests.

It holds its own RSA key pair (Alipay's) and the merchant application's public key, and signs
and verifies with Alipay's reference SDK (`alipay-sdk-python`), not with tempay's code:

- every request's `sign` is checked with the merchant's public key as Alipay does (bad sign:
  Alipay's unsigned `isv.invalid-signature` answer);
- `GET /gateway.do?...` is the payer opening a page/wap pay URL: the trade appears, waiting;
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
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
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
    "alipay.trade.query",
    "alipay.trade.close",
    "alipay.trade.refund",
    "alipay.trade.fastpay.refund.query",
    "alipay.data.dataservice.bill.downloadurl.query",
)
PAGE_METHODS = ("alipay.trade.page.pay", "alipay.trade.wap.pay")
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
        out_trade_no = biz["out_trade_no"]
        amount = Decimal(biz["total_amount"])
        expected = "QUICK_WAP_WAY" if method == "alipay.trade.wap.pay" else "FAST_INSTANT_TRADE_PAY"
        if biz.get("product_code") != expected:
            raise business_error("ACQ.INVALID_PARAMETER", "product_code")
        time_expire = datetime.strptime(biz["time_expire"], "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=CHINA
        )
        if time_expire < datetime.now(CHINA):
            raise business_error("ACQ.TRADE_HAS_CLOSE", "交易已经超时")
        trade = self.trades.get(out_trade_no)
        if trade is None:
            trade = FakeTrade(
                out_trade_no=out_trade_no,
                trade_no=datetime.now(CHINA).strftime("%Y%m%d") + "22001" + secrets.token_hex(6),
                total_amount=amount,
                subject=biz["subject"],
                notify_url=params.get("notify_url", ""),
            )
            self.trades[out_trade_no] = trade
        elif trade.total_amount != amount:
            raise business_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
        return HTMLResponse(
            f"<h1>支付宝收银台</h1><p>{trade.subject}</p><p>{trade.total_amount} CNY</p>"
            f"<p>{trade.status}</p>"
        )

    # API methods, by Alipay's documented behaviour

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
