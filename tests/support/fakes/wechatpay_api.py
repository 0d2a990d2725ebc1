"""A local fake of the WeChat Pay API v3 (direct merchant), for tests over real HTTP.

It has its own platform RSA key pair (the "WeChat Pay public key" PUB_KEY_ID_...), checks the
Authorization signature of every /v3 request with the merchant's public key (401 SIGN_ERROR
otherwise, as documented), keeps orders and refunds in memory, signs every answer, and
produces encrypted, signed notifications. Signatures are made with the reference SDK's
`wechatpayv3.utils.rsa_sign`, independently of tempay's own code.

Payments: Native (code_url), H5 (h5_url; scene_info.payer_client_ip required, an IPv4 or
IPv6 address), JSAPI for official accounts and mini-programs (prepay_id; payer.openid
required, and it must be an openid issued under the order's appid: `new_payer(appid)`) and
APP (prepay_id). Every appid must be one bound to the merchant (`appid` and `other_appids`),
else APPID_MCHID_NOT_MATCH, as WeChat Pay answers.

Tests drive the payer's side directly: `pay`, `set_state`, `finish_refund`, then
`notify_payment` / `notify_refund` POST the notification to the order's notify_url. A JSAPI
or APP order can be paid as WeChat's client does it: `pay_jsapi(parameters, openid)` and
`pay_app(parameters)` check the merchant's paySign / sign over the documented message, the
prepay_id, the appid and (JSAPI) the payer, and refuse (PayerRefused) what WeChat refuses.

Daily trade bills: GET /v3/bill/tradebill answers a signed `{hash_type, hash_value,
download_url}` for the day's paid orders and successful refunds (`tradebill`, in WeChat Pay's
layout: backtick-prefixed fields, totals at the end; NO_STATEMENT_EXIST for a day without
any), gzipped when tar_type=GZIP is asked; GET /v3/billdownload/file serves it unsigned, as
WeChat Pay does. `bill_content` serves given bytes instead; `bill_hash_corrupt` announces a
wrong hash.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import ipaddress
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request, Response
from wechatpayv3.utils import rsa_sign

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
CHINA = timezone(timedelta(hours=8))
_AUTH = re.compile(r'(\w+)="([^"]*)"')

# The trade bill (bill_type ALL), as WeChat Pay documents it.
BILL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
    "费率备注"
)
BILL_SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
FEE_RATE = Decimal("0.006")
# What each create API records as the order's trade_type (a mini-program's is JSAPI too).
TRADE_TYPES = {"native": "NATIVE", "h5": "MWEB", "jsapi": "JSAPI", "app": "APP"}


class PayerRefused(ValueError):
    """WeChat's client refused to pay with these parameters (as it shows the payer an error)."""


def required(path: str, name: str) -> tuple[str, str]:
    """WeChat Pay's PARAM_ERROR message for a missing required field."""
    return "PARAM_ERROR", f"输入源“{path}”映射到字段“{name}”必填性规则校验失败,此字段为必填项"


def yuan(fen: int) -> Decimal:
    return Decimal(fen).scaleb(-2)


def bill_record(fields: list[Any]) -> str:
    """One bill line: every field prefixed with a backtick."""
    return ",".join(f"`{value}" for value in fields)


def bill_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(CHINA)


def now_text() -> str:
    return datetime.now(CHINA).isoformat(timespec="seconds")


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def encrypt(apiv3_key: bytes, nonce: str, associated_data: str, plaintext: bytes) -> str:
    """AEAD_AES_256_GCM as WeChat Pay does it: base64(ciphertext || 16-byte tag)."""
    sealed = AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, associated_data.encode())
    return base64.b64encode(sealed).decode()


def signed_notification(
    platform_key: rsa.RSAPrivateKey,
    public_key_id: str,
    apiv3_key: bytes,
    event_type: str,
    resource: dict[str, Any],
    original_type: str,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A notification exactly as WeChat Pay sends it: headers and raw body."""
    nonce = secrets.token_hex(6)  # 12 characters, as WeChat Pay's resource nonces
    associated = original_type
    body = json.dumps(
        {
            "id": event_id or f"EV-{uuid.uuid4().hex[:20]}",
            "create_time": now_text(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功" if event_type == "TRANSACTION.SUCCESS" else "退款状态变更",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": encrypt(
                    apiv3_key, nonce, associated, json.dumps(resource, ensure_ascii=False).encode()
                ),
                "associated_data": associated,
                "nonce": nonce,
            },
        },
        ensure_ascii=False,
    )
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    header_nonce = secrets.token_hex(16)
    headers = {
        "Content-Type": "application/json",
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Signature": rsa_sign(platform_key, f"{stamp}\n{header_nonce}\n{body}\n"),
        "Wechatpay-Serial": public_key_id,
        "Wechatpay-Signature-Type": SCHEMA,
    }
    return headers, body.encode("utf-8")


@dataclass
class FakeWechatPay:
    mchid: str
    appid: str
    apiv3_key: bytes
    merchant_public_key: rsa.RSAPublicKey
    cert_serial: str
    public_key_id: str = "PUB_KEY_ID_0114232134912410000000000000000000"
    # The merchant's other app ids bound to its mchid (mini-program, mobile app).
    other_appids: tuple[str, ...] = ()
    # Every openid WeChat issued -> the app id it was issued under (`new_payer`).
    openids: dict[str, str] = field(default_factory=dict)
    platform_key: rsa.RSAPrivateKey = field(default_factory=new_key)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every /v3 request: (method, path with query, Authorization check passed).
    requests: list[tuple[str, str, bool]] = field(default_factory=list)
    # Faults: answer the next N /v3 requests with this status; sign answers with another
    # key; record a refund, then answer 500 (its answer "lost").
    fail_status: int | None = None
    fail_times: int = 0
    answer_key: rsa.RSAPrivateKey | None = None
    refund_answer_key: rsa.RSAPrivateKey | None = None  # only for refund creation
    refund_then_fail: bool = False
    answer_clock_offset: int = 0  # seconds added to the Wechatpay-Timestamp of answers
    # Creates: answer this (signed) body instead of the order's; or refuse with (status,
    # code, message), the message formatted with the request's {openid} and {ip}, as
    # WeChat Pay's own messages may quote what they refuse.
    create_answer: dict[str, Any] | None = None
    create_refusal: tuple[int, str, str] | None = None
    # Bills: download token -> the bytes served; a bill to serve instead of the day's own;
    # announce a hash that does not match.
    bills: dict[str, bytes] = field(default_factory=dict)
    bill_content: bytes | None = None
    bill_hash_corrupt: bool = False

    # Signed answers

    def answer(
        self, status: int, data: dict[str, Any] | None = None, key: rsa.RSAPrivateKey | None = None
    ) -> Response:
        body = "" if data is None else json.dumps(data, ensure_ascii=False)
        stamp, nonce = str(int(time.time()) + self.answer_clock_offset), secrets.token_hex(16)
        key = key or self.answer_key or self.platform_key
        headers = {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": rsa_sign(key, f"{stamp}\n{nonce}\n{body}\n"),
            "Wechatpay-Serial": self.public_key_id,
            # Current answers name the scheme (the reference SDK refuses an answer without it).
            "Wechatpay-Signature-Type": SCHEMA,
            "Request-ID": uuid.uuid4().hex,
        }
        if data is None:
            return Response(status_code=status, headers=headers)
        return Response(body.encode(), status, headers, media_type="application/json")

    def error(self, status: int, code: str, message: str) -> Response:
        return self.answer(status, {"code": code, "message": message})

    def check_authorization(self, method: str, url: str, body: str, value: str | None) -> str:
        """'' when the request is signed by our merchant, else why not."""
        if not value or not value.startswith(SCHEMA + " "):
            return "Authorization schema"
        params = dict(_AUTH.findall(value[len(SCHEMA) + 1 :]))
        if params.get("mchid") != self.mchid:
            return "mchid"
        if params.get("serial_no") != self.cert_serial:
            return "serial_no"
        try:
            stamp = int(params["timestamp"])
            signature = base64.b64decode(params["signature"], validate=True)
            nonce = params["nonce_str"]
        except (KeyError, ValueError):
            return "Authorization parameters"
        if abs(time.time() - stamp) > 300:
            return "timestamp"
        message = f"{method}\n{url}\n{stamp}\n{nonce}\n{body}\n".encode()
        try:
            self.merchant_public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "signature"
        return ""

    # The payer's side and WeChat Pay's own processing, driven by tests

    def pay(self, out_trade_no: str, at: datetime | None = None) -> dict[str, Any]:
        """The payer pays (`at`: when, for the day's bill; default now)."""
        order = self.orders[out_trade_no]
        order.update(
            trade_state="SUCCESS",
            transaction_id=f"4200{secrets.randbelow(10**24):024d}",
            success_time=now_text() if at is None else at.isoformat(timespec="seconds"),
        )
        return self.transaction(order)

    @property
    def appids(self) -> frozenset[str]:
        """The app ids bound to this merchant: orders for any other are refused."""
        return frozenset((self.appid, *self.other_appids))

    def new_payer(self, appid: str) -> str:
        """A WeChat user's openid under `appid` (each app sees a user under its own openid)."""
        openid = "o" + secrets.token_urlsafe(21)[:27]
        self.openids[openid] = appid
        return openid

    def _prepaid(self, prepay_id: str) -> dict[str, Any]:
        found = [o for o in self.orders.values() if o["prepay_id"] == prepay_id]
        if not found:
            raise PayerRefused("no such prepay_id")
        return found[0]

    def _check_payer_sign(self, signature: str, *lines: str) -> None:
        message = "".join(line + "\n" for line in lines).encode()
        try:
            raw = base64.b64decode(signature, validate=True)
            self.merchant_public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, ValueError, InvalidSignature):
            raise PayerRefused("支付验证签名失败") from None

    def pay_jsapi(self, parameters: dict[str, Any], openid: str) -> dict[str, Any]:
        """The payer `openid` pays in WeChat with `getBrandWCPayRequest(parameters)`: WeChat
        checks the paySign with the merchant's key, that the prepay order is for this appId
        and this payer, and that it is unpaid."""
        package = str(parameters.get("package", ""))
        if parameters.get("signType") != "RSA" or not package.startswith("prepay_id="):
            raise PayerRefused("signType or package")
        order = self._prepaid(package.removeprefix("prepay_id="))
        self._check_payer_sign(
            str(parameters.get("paySign", "")),
            str(parameters.get("appId", "")),
            str(parameters.get("timeStamp", "")),
            str(parameters.get("nonceStr", "")),
            package,
        )
        if order["trade_type"] != "JSAPI" or parameters.get("appId") != order["appid"]:
            raise PayerRefused("appId does not match the prepay order")
        if openid != order["payer_openid"]:
            raise PayerRefused("the order is another payer's")
        if order["trade_state"] != "NOTPAY":
            raise PayerRefused(f"order is {order['trade_state']}")
        return self.pay(order["out_trade_no"])

    def pay_app(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The payer pays in the merchant's app with the SDK's PayReq(parameters)."""
        if parameters.get("package") != "Sign=WXPay" or parameters.get("partnerid") != self.mchid:
            raise PayerRefused("package or partnerid")
        order = self._prepaid(str(parameters.get("prepayid", "")))
        self._check_payer_sign(
            str(parameters.get("sign", "")),
            str(parameters.get("appid", "")),
            str(parameters.get("timestamp", "")),
            str(parameters.get("noncestr", "")),
            str(parameters.get("prepayid", "")),
        )
        if order["trade_type"] != "APP" or parameters.get("appid") != order["appid"]:
            raise PayerRefused("appid does not match the prepay order")
        if order["trade_state"] != "NOTPAY":
            raise PayerRefused(f"order is {order['trade_state']}")
        return self.pay(order["out_trade_no"])

    def set_state(self, out_trade_no: str, state: str) -> None:
        self.orders[out_trade_no]["trade_state"] = state

    def finish_refund(
        self, out_refund_no: str, status: str, at: datetime | None = None
    ) -> dict[str, Any]:
        refund = self.refunds[out_refund_no]
        refund["status"] = status
        if status == "SUCCESS":
            refund["success_time"] = now_text() if at is None else at.isoformat(timespec="seconds")
            self.orders[refund["out_trade_no"]]["trade_state"] = "REFUND"
        return refund

    def transaction(self, order: dict[str, Any]) -> dict[str, Any]:
        """The order as the query API and TRANSACTION.SUCCESS notifications show it."""
        paid = order["trade_state"] in ("SUCCESS", "REFUND")
        data: dict[str, Any] = {
            "appid": order["appid"],
            "mchid": order["mchid"],
            "out_trade_no": order["out_trade_no"],
            "trade_type": order["trade_type"],
            "trade_state": order["trade_state"],
            "trade_state_desc": {"SUCCESS": "支付成功", "NOTPAY": "未支付"}.get(
                order["trade_state"], order["trade_state"]
            ),
            "attach": "",
        }
        if paid:
            total = order["amount"]["total"]
            data.update(
                transaction_id=order["transaction_id"],
                bank_type="OTHERS",
                success_time=order["success_time"],
                payer={"openid": order["payer_openid"] or "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                amount={
                    "total": total,
                    "payer_total": total,
                    "currency": "CNY",
                    "payer_currency": "CNY",
                },
            )
        else:
            data["amount"] = {"payer_currency": "CNY"}
        return data

    def payment_notification(self, out_trade_no: str, **kwargs: Any) -> tuple[dict, bytes]:
        return signed_notification(
            self.platform_key,
            self.public_key_id,
            self.apiv3_key,
            "TRANSACTION.SUCCESS",
            self.transaction(self.orders[out_trade_no]),
            "transaction",
            **kwargs,
        )

    def refund_notification(self, out_refund_no: str, **kwargs: Any) -> tuple[dict, bytes]:
        refund = self.refunds[out_refund_no]
        resource = {
            "mchid": self.mchid,
            "out_trade_no": refund["out_trade_no"],
            "transaction_id": refund["transaction_id"],
            "out_refund_no": out_refund_no,
            "refund_id": refund["refund_id"],
            "refund_status": refund["status"],
            "success_time": refund.get("success_time") or now_text(),
            "user_received_account": "招商银行信用卡0403",
            "amount": {
                "total": refund["amount"]["total"],
                "refund": refund["amount"]["refund"],
                "payer_total": refund["amount"]["total"],
                "payer_refund": refund["amount"]["refund"],
            },
        }
        return signed_notification(
            self.platform_key,
            self.public_key_id,
            self.apiv3_key,
            f"REFUND.{refund['status']}",
            resource,
            "refund",
            **kwargs,
        )

    def tradebill(self, day: date) -> bytes | None:
        """The day's trade bill (Asia/Shanghai days), UTF-8 with CRLF line ends; None when
        the day has no successful trade (WeChat Pay: NO_STATEMENT_EXIST)."""
        rows: list[tuple[datetime, list[Any]]] = []
        for order in self.orders.values():
            if order["trade_state"] not in ("SUCCESS", "REFUND"):
                continue
            at = bill_time(order["success_time"])
            if at.date() != day:
                continue
            total = yuan(order["amount"]["total"])
            fee = (total * FEE_RATE).quantize(Decimal("0.00001"))
            rows.append((at, [
                at.strftime("%Y-%m-%d %H:%M:%S"), order["appid"], order["mchid"], "0", "",
                order["transaction_id"], order["out_trade_no"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                order["trade_type"], "SUCCESS", "OTHERS", "CNY", total, "0.00", "0", "0",
                "0.00", "0.00", "", "", order["description"], "", fee, "0.60%", total,
                "0.00", "",
            ]))  # fmt: skip
        for refund in self.refunds.values():
            if refund["status"] != "SUCCESS" or bill_time(refund["success_time"]).date() != day:
                continue
            at = bill_time(refund["success_time"])
            order = self.orders[refund["out_trade_no"]]
            amount = yuan(refund["amount"]["refund"])
            fee = -(amount * FEE_RATE).quantize(Decimal("0.00001"))
            rows.append((at, [
                at.strftime("%Y-%m-%d %H:%M:%S"), order["appid"], order["mchid"], "0", "",
                order["transaction_id"], order["out_trade_no"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                order["trade_type"], "REFUND", "OTHERS", "CNY", "0.00", "0.00",
                refund["refund_id"], refund["out_refund_no"], amount, "0.00", "ORIGINAL",
                "SUCCESS", order["description"], "", fee, "0.60%", "0.00", amount, "",
            ]))  # fmt: skip
        if not rows:
            return None
        rows.sort(key=lambda row: row[0])
        details = [fields for _, fields in rows]
        totals = [
            len(details),
            sum((Decimal(str(r[12])) for r in details), Decimal("0.00")),
            sum((Decimal(str(r[16])) for r in details), Decimal("0.00")),
            "0.00",
            sum((Decimal(str(r[22])) for r in details), Decimal("0.00000")),
            sum((Decimal(str(r[24])) for r in details), Decimal("0.00")),
            sum((Decimal(str(r[25])) for r in details), Decimal("0.00")),
        ]
        lines = [BILL_HEADER, *map(bill_record, details), BILL_SUMMARY_HEADER, bill_record(totals)]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    async def deliver(self, url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, content=body, headers=headers)

    async def notify_payment(self, out_trade_no: str) -> httpx.Response:
        headers, body = self.payment_notification(out_trade_no)
        return await self.deliver(self.orders[out_trade_no]["notify_url"], headers, body)

    # The API

    def app(self) -> FastAPI:
        app = FastAPI(title="fake WeChat Pay API v3")

        @app.middleware("http")
        async def authenticate(request: Request, call_next: Any) -> Response:
            if not request.url.path.startswith("/v3/"):
                return await call_next(request)
            raw = await request.body()
            url = request.scope["raw_path"].decode()
            if request.scope["query_string"]:
                url += "?" + request.scope["query_string"].decode()
            problem = self.check_authorization(
                request.method, url, raw.decode(), request.headers.get("authorization")
            )
            self.requests.append((request.method, url, not problem))
            if problem:
                # As documented: 401 SIGN_ERROR, and not signed.
                return Response(
                    json.dumps({"code": "SIGN_ERROR", "message": f"签名错误 ({problem})"}),
                    401,
                    media_type="application/json",
                )
            if self.fail_status is not None and self.fail_times > 0:
                self.fail_times -= 1
                return self.error(self.fail_status, "SYSTEM_ERROR", "系统错误")
            return await call_next(request)

        async def create(request: Request, api: str) -> Response:
            body = json.loads(await request.body())
            trade_type = TRADE_TYPES[api]
            if self.create_refusal is not None:
                status, code, message = self.create_refusal
                ip = (body.get("scene_info") or {}).get("payer_client_ip")
                openid = (body.get("payer") or {}).get("openid")
                return self.error(status, code, message.format(openid=openid, ip=ip))
            if not body.get("appid"):
                return self.error(400, *required("/body/appid", "公众号ID"))
            if body.get("mchid") != self.mchid or body.get("appid") not in self.appids:
                return self.error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配,请检查后再试")
            amount = body.get("amount") or {}
            total = amount.get("total")
            # amount.currency is optional and CNY, the only one a direct merchant takes.
            if not isinstance(total, int) or total <= 0 or amount.get("currency", "CNY") != "CNY":
                return self.error(400, "PARAM_ERROR", "amount.total 无效")
            if not body.get("notify_url") or not body.get("description"):
                return self.error(400, "PARAM_ERROR", "缺少参数")
            scene = body.get("scene_info") or {}
            if trade_type == "MWEB":
                ip = scene.get("payer_client_ip")
                if not ip:
                    return self.error(
                        400, *required("/body/scene_info/payer_client_ip", "用户终端IP")
                    )
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    return self.error(400, "PARAM_ERROR", "用户终端IP格式不正确")
                if not (scene.get("h5_info") or {}).get("type"):
                    return self.error(400, *required("/body/scene_info/h5_info/type", "场景类型"))
            openid = (body.get("payer") or {}).get("openid")
            if trade_type == "JSAPI":
                if not openid:
                    return self.error(400, *required("/body/payer/openid", "用户标识"))
                if self.openids.get(openid) != body["appid"]:
                    return self.error(400, "PARAM_ERROR", "appid和openid不匹配")
            out_trade_no = body["out_trade_no"]
            existing = self.orders.get(out_trade_no)
            if existing is not None:
                if existing["trade_state"] in ("SUCCESS", "REFUND"):
                    return self.error(400, "ORDERPAID", "该订单已支付")
                if (
                    existing["amount"]["total"] != total
                    or existing["trade_type"] != trade_type
                    or existing["appid"] != body["appid"]
                    or existing["payer_openid"] != openid
                ):
                    return self.error(400, "INVALID_REQUEST", "201 商户订单号重复")
            else:
                self.orders[out_trade_no] = {
                    "appid": body["appid"],
                    "mchid": body["mchid"],
                    "out_trade_no": out_trade_no,
                    "trade_type": trade_type,
                    "trade_state": "NOTPAY",
                    "amount": {"total": total, "currency": "CNY"},
                    "notify_url": body["notify_url"],
                    "description": body["description"],
                    "prepay_id": f"wx{secrets.token_hex(17)}",
                    "payer_openid": openid,
                    "scene_info": scene,
                }
            prepay = self.orders[out_trade_no]["prepay_id"]
            if self.create_answer is not None:
                return self.answer(200, self.create_answer)
            if trade_type == "MWEB":
                url = f"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay}"
                return self.answer(200, {"h5_url": url})
            if trade_type == "NATIVE":
                return self.answer(200, {"code_url": f"weixin://wxpay/bizpayurl?pr={prepay[-7:]}"})
            return self.answer(200, {"prepay_id": prepay})

        @app.post("/v3/pay/transactions/h5")
        async def create_h5(request: Request) -> Response:
            return await create(request, "h5")

        @app.post("/v3/pay/transactions/native")
        async def create_native(request: Request) -> Response:
            return await create(request, "native")

        @app.post("/v3/pay/transactions/jsapi")
        async def create_jsapi(request: Request) -> Response:
            return await create(request, "jsapi")

        @app.post("/v3/pay/transactions/app")
        async def create_app(request: Request) -> Response:
            return await create(request, "app")

        @app.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
        async def query(out_trade_no: str, mchid: str = "") -> Response:
            if mchid != self.mchid:
                return self.error(400, "PARAM_ERROR", "mchid 无效")
            order = self.orders.get(out_trade_no)
            if order is None:
                return self.error(404, "ORDER_NOT_EXIST", "订单不存在")
            return self.answer(200, self.transaction(order))

        @app.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
        async def close(out_trade_no: str, request: Request) -> Response:
            body = json.loads(await request.body())
            if body.get("mchid") != self.mchid:
                return self.error(400, "PARAM_ERROR", "mchid 无效")
            order = self.orders.get(out_trade_no)
            if order is None:
                return self.error(404, "ORDER_NOT_EXIST", "订单不存在")
            if order["trade_state"] in ("SUCCESS", "REFUND"):
                return self.error(400, "ORDERPAID", "订单已支付")
            order["trade_state"] = "CLOSED"
            return self.answer(204)

        @app.post("/v3/refund/domestic/refunds")
        async def refund(request: Request) -> Response:
            body = json.loads(await request.body())
            order = self.orders.get(body.get("out_trade_no", ""))
            if order is None:
                return self.error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
            amount = body.get("amount") or {}
            if amount.get("currency") != "CNY" or amount.get("total") != order["amount"]["total"]:
                return self.error(400, "PARAM_ERROR", "订单金额或币种信息不一致")
            if order["trade_state"] not in ("SUCCESS", "REFUND"):
                return self.error(400, "INVALID_REQUEST", "订单状态不正确,无法退款")
            out_refund_no = body["out_refund_no"]
            existing = self.refunds.get(out_refund_no)
            if existing is not None:
                if existing["amount"]["refund"] != amount.get("refund"):
                    return self.error(400, "INVALID_REQUEST", "同一退款单号参数不一致")
                return self.answer(200, existing, self.refund_answer_key)
            refunded = sum(
                r["amount"]["refund"]
                for r in self.refunds.values()
                if r["out_trade_no"] == order["out_trade_no"] and r["status"] != "CLOSED"
            )
            refund_fen = amount.get("refund")
            if not isinstance(refund_fen, int) or refund_fen <= 0:
                return self.error(400, "PARAM_ERROR", "退款金额无效")
            if refunded + refund_fen > order["amount"]["total"]:
                return self.error(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
            record = {
                "refund_id": f"5030{secrets.randbelow(10**25):025d}",
                "out_refund_no": out_refund_no,
                "transaction_id": order["transaction_id"],
                "out_trade_no": order["out_trade_no"],
                "channel": "ORIGINAL",
                "user_received_account": "招商银行信用卡0403",
                "create_time": now_text(),
                "status": "PROCESSING",
                "funds_account": "UNSETTLED",
                "amount": {
                    "total": order["amount"]["total"],
                    "refund": refund_fen,
                    "payer_total": order["amount"]["total"],
                    "payer_refund": refund_fen,
                    "settlement_refund": refund_fen,
                    "settlement_total": order["amount"]["total"],
                    "discount_refund": 0,
                    "currency": "CNY",
                    "refund_fee": 0,
                },
            }
            self.refunds[out_refund_no] = record
            if self.refund_then_fail:
                return self.error(500, "SYSTEM_ERROR", "系统错误")
            return self.answer(200, record, self.refund_answer_key)

        @app.get("/v3/refund/domestic/refunds/{out_refund_no}")
        async def query_refund(out_refund_no: str) -> Response:
            refund = self.refunds.get(out_refund_no)
            if refund is None:
                return self.error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            return self.answer(200, refund)

        @app.get("/v3/bill/tradebill")
        async def tradebill(
            request: Request, bill_date: str = "", bill_type: str = "ALL", tar_type: str = ""
        ) -> Response:
            try:
                day = date.fromisoformat(bill_date)
            except ValueError:
                return self.error(400, "PARAM_ERROR", "账单日期格式不正确")
            if bill_type != "ALL" or tar_type not in ("", "GZIP"):
                return self.error(400, "PARAM_ERROR", "bill_type 或 tar_type 无效")
            content = self.bill_content if self.bill_content is not None else self.tradebill(day)
            if content is None:
                return self.error(400, "NO_STATEMENT_EXIST", "账单文件不存在")
            digest = hashlib.sha1(content + (b"!" if self.bill_hash_corrupt else b""))
            token = secrets.token_urlsafe(24)
            self.bills[token] = gzip.compress(content) if tar_type == "GZIP" else content
            base = str(request.base_url).rstrip("/")
            return self.answer(
                200,
                {
                    "hash_type": "SHA1",
                    "hash_value": digest.hexdigest(),
                    "download_url": f"{base}/v3/billdownload/file?token={token}",
                },
            )

        @app.get("/v3/billdownload/file")
        async def bill_download(token: str = "") -> Response:
            content = self.bills.get(token)
            if content is None:
                return self.error(400, "PARAM_ERROR", "token 无效或已过期")
            # As WeChat Pay: the file is not signed (its hash was, in the tradebill answer).
            return Response(content, 200, media_type="application/octet-stream")

        return app
