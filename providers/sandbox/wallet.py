"""What the sandbox's wallet page checks before it offers the payer Pay: the checks WeChat's
JS bridge and SDK, Alipay's SDK and Stripe.js make of what the merchant handed the payer.

- JSAPI (wechat_jsapi, wechat_miniprogram): `paySign` verifies with the merchant's public key
  over appId, timeStamp, nonceStr and package; appId is the merchant's app; signType is RSA;
  the package's prepay_id exists and is a JSAPI payment's; timeStamp is fresh.
- APP, WeChat's PayReq (wechat_app): `sign` verifies over appid, timestamp, noncestr and
  prepayid; appid and partnerid are the merchant's; package is Sign=WXPay; the prepay_id is a
  wechat_app payment's; timestamp is fresh.
- APP, Alipay's order string (alipay_app): `sign` verifies (RSA2) over the other parameters;
  app_id is the merchant's, method alipay.trade.app.pay; biz_content names an alipay_app
  payment by out_trade_no, at its total_amount exactly; timestamp is fresh.
- client_secret (stripe_payment_intent): it is the secret of an existing PaymentIntent
  (compared in constant time).

And the payment must still be waiting for the payer. Every refusal is a PageRefusal, raised
before anything changes; none of its messages holds a signature, a secret or payer data.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import TypeAdapter, ValidationError

from providers.bills import CHINA
from providers.sandbox import wallet_signature
from providers.sandbox.channels import CHANNELS, ORDER_STRING_CHANNEL
from providers.sandbox.keys import load_public_key
from providers.sandbox.settings import SandboxSettings
from providers.sandbox.store import WAIT_BUYER_PAY, SandboxStore, Trade
from tempay.channels import (
    AppAction,
    AppParameters,
    ClientSecretAction,
    JsapiAction,
    JsapiParameters,
    PayerAction,
    PayerActionKind,
)
from tempay.errors import SignatureError

WalletAction = JsapiAction | AppAction | ClientSecretAction

PAYER_ACTIONS: TypeAdapter[PayerAction] = TypeAdapter(PayerAction)
PREPAY_PACKAGE = re.compile(r"prepay_id=([A-Za-z0-9_\-]{1,64})")
CLIENT_SECRET = re.compile(r"pi_(SBX[0-9A-F]{20})_secret_[0-9a-f]{32}")
TIMESTAMP = re.compile(r"[0-9]{1,10}")
# Alipay's request timestamp, in Beijing time.
ALIPAY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
APP_PAY_METHOD = "alipay.trade.app.pay"
# A parameter set may come from a clock a little ahead of ours.
FUTURE_SKEW_SECONDS = 60.0


class PageRefusal(Exception):
    """A page refuses what the payer brought (or where from): `status` and a message the
    payer can read. Raised before anything changes."""

    def __init__(self, status: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.heading = heading
        self.message = message


def refused(status: int, message: str) -> PageRefusal:
    return PageRefusal(status, "The wallet refused this payment", message)


class MerchantKey:
    """The sandbox merchant's public key, read from the data dir (again whenever the file
    changes): tempay's adapter makes the pair when it first signs, which may be after the
    sandbox started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._key: rsa.RSAPublicKey | None = None

    def get(self) -> rsa.RSAPublicKey:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._key is None or stamp != self._stamp:
                self._key, self._stamp = load_public_key(self.path), stamp
        except (OSError, ValueError):
            raise PageRefusal(
                503,
                "The merchant has no key",
                f"The sandbox merchant's public key ({self.path.name}) is missing or "
                "unreadable: tempay makes it when it first signs a payer's parameters.",
            ) from None
        return self._key


def parse_action(data: Any) -> WalletAction:
    """The payer action as tempay's checkout answer has it (`kind` and its fields)."""
    try:
        action = PAYER_ACTIONS.validate_python(data)
    except ValidationError as exc:
        # Where and what, never the value (it may be a secret).
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payer_action'}: {e['msg']}"
            for e in exc.errors()
        )
        raise refused(400, f"not a payer action: {problems}") from None
    if not isinstance(action, JsapiAction | AppAction | ClientSecretAction):
        raise refused(
            400, f"a {action.kind} action is opened in a browser, not handed to the wallet"
        )
    return action


class WalletChecks:
    """Checks a wallet action against the sandbox's trades, its merchant's key and app."""

    def __init__(
        self, store: SandboxStore, settings: SandboxSettings, merchant_key: MerchantKey
    ) -> None:
        self.store = store
        self.settings = settings
        self.merchant_key = merchant_key

    def verified_trade(self, action: WalletAction, now: float | None = None) -> Trade:
        """The trade the action pays, once every check passed; PageRefusal otherwise."""
        now = time.time() if now is None else now
        if isinstance(action, JsapiAction):
            trade = self._jsapi(action.parameters, now)
        elif isinstance(action, ClientSecretAction):
            trade = self._client_secret(action.client_secret)
        elif action.parameters is not None:
            trade = self._wechat_app(action.parameters, now)
        else:
            assert action.order_string is not None
            trade = self._order_string(action.order_string, now)
        if trade.status != WAIT_BUYER_PAY:
            raise refused(409, f"this payment is {trade.status}: it cannot be paid again")
        return trade

    # One per kind

    def _jsapi(self, p: JsapiParameters, now: float) -> Trade:
        message = wallet_signature.jsapi_message(p.appId, p.timeStamp, p.nonceStr, p.package)
        self._signed(message, p.paySign, "paySign")
        if p.signType != "RSA":
            raise refused(400, "signType must be RSA")
        self._our_app(p.appId, "appId")
        match = PREPAY_PACKAGE.fullmatch(p.package)
        if match is None:
            raise refused(400, "package must be prepay_id=<the prepay_id>")
        trade = self._prepaid(match.group(1), PayerActionKind.JSAPI)
        self._fresh_unix(p.timeStamp, "timeStamp", now)
        return trade

    def _wechat_app(self, p: AppParameters, now: float) -> Trade:
        message = wallet_signature.app_message(p.appid, p.timestamp, p.noncestr, p.prepayid)
        self._signed(message, p.sign, "sign")
        self._our_app(p.appid, "appid")
        if p.partnerid != self.settings.account:
            raise refused(400, "partnerid is not this merchant's id")
        if p.package != "Sign=WXPay":
            raise refused(400, "package must be Sign=WXPay")
        trade = self._prepaid(p.prepayid, PayerActionKind.APP)
        self._fresh_unix(p.timestamp, "timestamp", now)
        return trade

    def _order_string(self, text: str, now: float) -> Trade:
        try:
            params = wallet_signature.parse_order_string(text)
            content = wallet_signature.order_string_content(params)
            self._signed(content, params.get("sign", ""), "sign")
        except SignatureError as exc:
            raise refused(401, str(exc)) from None
        self._our_app(params.get("app_id", ""), "app_id")
        if params.get("method") != APP_PAY_METHOD:
            raise refused(400, f"method must be {APP_PAY_METHOD}")
        if params.get("sign_type") != "RSA2":
            raise refused(400, "sign_type must be RSA2")
        try:
            biz = json.loads(params.get("biz_content", ""))
        except ValueError:
            biz = None
        if not isinstance(biz, dict) or not isinstance(biz.get("out_trade_no"), str):
            raise refused(400, "biz_content must be a JSON object naming out_trade_no")
        trade = self.store.get_trade(biz["out_trade_no"])
        if trade is None or trade.channel != ORDER_STRING_CHANNEL:
            raise refused(404, "biz_content names no alipay_app payment of this merchant")
        if not _same_amount(biz.get("total_amount"), trade.amount):
            raise refused(400, "total_amount is not the payment's amount")
        try:
            signed_at = datetime.strptime(params.get("timestamp", ""), ALIPAY_TIME_FORMAT)
        except ValueError:
            raise refused(400, "timestamp must be yyyy-MM-dd HH:mm:ss") from None
        self._fresh(signed_at.replace(tzinfo=CHINA).timestamp(), "timestamp", now)
        return trade

    def _client_secret(self, secret: str) -> Trade:
        match = CLIENT_SECRET.fullmatch(secret)
        trade = None if match is None else self.store.get_trade_by_trade_no(match.group(1))
        known = trade.client_secret if trade is not None else None
        if trade is None or known is None or not hmac.compare_digest(known, secret):
            raise refused(401, "the client_secret is not one of this platform's payments")
        return trade

    # Shared checks

    def _signed(self, message: bytes, signature: str, name: str) -> None:
        try:
            wallet_signature.verify(self.merchant_key.get(), message, signature, name)
        except SignatureError as exc:
            raise refused(401, str(exc)) from None

    def _our_app(self, app_id: str, name: str) -> None:
        if not hmac.compare_digest(app_id.encode(), self.settings.app_id.encode()):
            raise refused(400, f"{name} is not this merchant's app")

    def _prepaid(self, prepay_id: str, kind: PayerActionKind) -> Trade:
        trade = self.store.get_trade_by_prepay_id(prepay_id)
        if trade is None:
            raise refused(404, "no payment has this prepay_id")
        spec = CHANNELS.get(trade.channel)
        if spec is None or spec.action is not kind:
            raise refused(400, f"this prepay_id is a {trade.channel} payment's, not {kind}")
        return trade

    def _fresh_unix(self, value: str, name: str, now: float) -> None:
        if not TIMESTAMP.fullmatch(value):
            raise refused(400, f"{name} must be seconds since 1970")
        self._fresh(float(value), name, now)

    def _fresh(self, signed_at: float, name: str, now: float) -> None:
        tolerance = self.settings.wallet_tolerance_seconds
        if now - signed_at > tolerance:
            raise refused(401, f"{name} is older than {tolerance:.0f} s: ask the merchant again")
        if signed_at - now > FUTURE_SKEW_SECONDS:
            raise refused(401, f"{name} is in the future")


def _same_amount(value: Any, amount: str) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value) == Decimal(amount)
    except InvalidOperation:
        return False
