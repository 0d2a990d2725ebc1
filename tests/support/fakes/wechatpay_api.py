"""A local fake of the WeChat Pay API v3 (direct merchant), for tests over real HTTP.

It has its own platform RSA key pair (the "WeChat Pay public key" PUB_KEY_ID_...), checks the
Authorization signature of every /v3 request with the merchant's public key (401 SIGN_ERROR
otherwise, as documented), keeps orders and refunds in memory, signs every answer, and
produces encrypted, signed notifications. Signatures are made with the reference SDK's
`wechatpayv3.utils.rsa_sign`, independently of tempay's own code.

Tests drive the payer's side directly: `pay`, `set_state`, `finish_refund`, then
`notify_payment` / `notify_refund` POST the notification to the order's notify_url.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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

    def pay(self, out_trade_no: str) -> dict[str, Any]:
        order = self.orders[out_trade_no]
        order.update(
            trade_state="SUCCESS",
            transaction_id=f"4200{secrets.randbelow(10**24):024d}",
            success_time=now_text(),
        )
        return self.transaction(order)

    def set_state(self, out_trade_no: str, state: str) -> None:
        self.orders[out_trade_no]["trade_state"] = state

    def finish_refund(self, out_refund_no: str, status: str) -> dict[str, Any]:
        refund = self.refunds[out_refund_no]
        refund["status"] = status
        if status == "SUCCESS":
            refund["success_time"] = now_text()
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
                payer={"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
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

        async def create(request: Request, trade_type: str, url_field: str) -> Response:
            body = json.loads(await request.body())
            if body.get("mchid") != self.mchid or body.get("appid") != self.appid:
                return self.error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
            amount = body.get("amount") or {}
            total = amount.get("total")
            if not isinstance(total, int) or total <= 0 or amount.get("currency") != "CNY":
                return self.error(400, "PARAM_ERROR", "amount.total 无效")
            if not body.get("notify_url") or not body.get("description"):
                return self.error(400, "PARAM_ERROR", "缺少参数")
            if trade_type == "MWEB":
                scene = body.get("scene_info") or {}
                if not scene.get("payer_client_ip") or not (scene.get("h5_info") or {}).get("type"):
                    return self.error(400, "PARAM_ERROR", "scene_info 无效")
            out_trade_no = body["out_trade_no"]
            existing = self.orders.get(out_trade_no)
            if existing is not None:
                if existing["trade_state"] in ("SUCCESS", "REFUND"):
                    return self.error(400, "ORDERPAID", "该订单已支付")
                if existing["amount"]["total"] != total or existing["trade_type"] != trade_type:
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
                    "prepay_id": f"wx{secrets.token_hex(14)}",
                }
            prepay = self.orders[out_trade_no]["prepay_id"]
            if url_field == "h5_url":
                url = f"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay}"
            else:
                url = f"weixin://wxpay/bizpayurl?pr={prepay[-7:]}"
            return self.answer(200, {url_field: url})

        @app.post("/v3/pay/transactions/h5")
        async def create_h5(request: Request) -> Response:
            return await create(request, "MWEB", "h5_url")

        @app.post("/v3/pay/transactions/native")
        async def create_native(request: Request) -> Response:
            return await create(request, "NATIVE", "code_url")

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

        return app
