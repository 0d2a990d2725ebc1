"""The sandbox provider: an HTTP payment platform modelled on Alipay, for demos, tests and
benchmarks. Payments, refunds and transfers (payouts) persist in SQLite with their pending
processing and notifications; notifications are signed and retried until the merchant
acknowledges them.

Run it with `python -m providers.sandbox.app` (settings from `TEMPAY_SANDBOX_*`).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from importlib.resources import files
from string import Template
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import segno
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from providers.bills import CHINA
from providers.sandbox import notifier as notifier_module
from providers.sandbox.channels import CHANNELS, ORDER_STRING_CHANNEL, channel_names
from providers.sandbox.keys import MERCHANT_PUBLIC_KEY_NAME, ensure_keypair, load_private_key
from providers.sandbox.notifier import NotificationMode, Notifier, utc_iso
from providers.sandbox.processing import Processor
from providers.sandbox.settings import Faults, FaultsPatch, SandboxSettings
from providers.sandbox.statements import statement_zip
from providers.sandbox.store import (
    REFUND_FAILED,
    REFUND_PROCESSING,
    TRADE_CLOSED,
    TRADE_FAILED,
    TRADE_SUCCESS,
    TRANSFER_PROCESSING,
    WAIT_BUYER_PAY,
    Delivery,
    DeliveryKind,
    Refund,
    SandboxStore,
    Trade,
    Transfer,
    Transition,
)
from providers.sandbox.wallet import (
    MerchantKey,
    PageRefusal,
    WalletAction,
    WalletChecks,
    parse_action,
)
from tempay.channels import PayerActionKind, PayerField, parse_client_ip, parse_openid
from tempay.domain import (
    ORDER_ID_PATTERN,
    format_amount,
    parse_amount,
    parse_currency,
    parse_order_id,
)
from tempay.errors import InvalidInput

DATABASE_NAME = "sandbox.db"


class SandboxError(Exception):
    """An API error: rendered as {"code", "message", ...extra} with `status`."""

    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


class QueryCounter:
    """How many status queries (payment, refund, transfer) arrived in each wall-clock second:
    the rate this provider sees, for benchmarks (GET /sandbox/stats). Keeps the last hour,
    and how many distinct transactions were asked about at least once."""

    KEEP_SECONDS = 3600

    def __init__(self) -> None:
        self.total = 0
        self.per_second: dict[int, int] = {}
        self.subjects: set[str] = set()

    def record(self, subject: str, now: float | None = None) -> None:
        second = int(time.time() if now is None else now)
        self.total += 1
        self.subjects.add(subject)
        self.per_second[second] = self.per_second.get(second, 0) + 1
        if len(self.per_second) > self.KEEP_SECONDS:
            for old in sorted(self.per_second)[: len(self.per_second) - self.KEEP_SECONDS]:
                del self.per_second[old]

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "distinct": len(self.subjects),
            "per_second": [[second, self.per_second[second]] for second in sorted(self.per_second)],
        }


@dataclass
class Sandbox:
    """Everything the routes need, built in the lifespan."""

    settings: SandboxSettings
    store: SandboxStore
    faults: Faults
    notifier: Notifier
    processor: Processor
    public_key_pem: bytes
    merchant_key: MerchantKey
    status_queries: QueryCounter = field(default_factory=QueryCounter)


# Request bodies


class CreatePaymentRequest(BaseModel):
    out_trade_no: StrictStr
    # Strings only: money never travels as a JSON number.
    amount: StrictStr
    currency: StrictStr
    notify_url: StrictStr = Field(max_length=2048)
    body: StrictStr = Field(default="", max_length=1000)
    subject: StrictStr = Field(default="", max_length=256)
    channel: StrictStr = Field(default="alipay_wap", max_length=64)
    return_url: StrictStr = Field(default="", max_length=2048)
    # What the channel needs of the payer (wechat_jsapi and wechat_miniprogram: the openid,
    # wechat_h5: the IP the payer's browser connects from); others are not kept.
    payer_openid: StrictStr | None = Field(default=None, max_length=128)
    payer_client_ip: StrictStr | None = Field(default=None, max_length=64)
    # The merchant's app, as WeChat's prepay request names it; when given, it must be ours.
    app_id: StrictStr | None = Field(default=None, max_length=32)


class ScriptedPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: StrictStr | None = None
    currency: StrictStr | None = None
    notification: NotificationMode = "normal"
    force: StrictBool = False


class ScriptedDecline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notification: NotificationMode = "normal"


class CreateRefundRequest(BaseModel):
    out_request_no: StrictStr
    refund_amount: StrictStr
    currency: StrictStr
    notify_url: StrictStr = Field(max_length=2048)
    reason: StrictStr = Field(default="", max_length=256)


class ScriptedRefundFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr = Field(default="REFUND_FAILED: refused by the sandbox", max_length=256)
    notification: NotificationMode = "normal"


TransferFault = Literal["timeout", "error"]


class CreateTransferRequest(BaseModel):
    out_biz_no: StrictStr
    amount: StrictStr
    currency: StrictStr
    payee_account: StrictStr = Field(min_length=1, max_length=128)
    notify_url: StrictStr = Field(max_length=2048)
    payee_name: StrictStr = Field(default="", max_length=128)
    remark: StrictStr = Field(default="", max_length=256)
    # This call's answer is lost (timeout) or a 503 (error), after the transfer is recorded.
    sandbox_fault: TransferFault | None = None


# JSON shapes


def status_json(trade: Trade) -> dict[str, Any]:
    return {
        "out_trade_no": trade.out_trade_no,
        "trade_no": trade.trade_no,
        "status": trade.status,
        "amount": trade.amount,
        "currency": trade.currency,
        "paid_amount": trade.paid_amount,
        "paid_currency": trade.paid_currency,
        "paid_at": trade.paid_at,
        "closed_at": trade.closed_at,
    }


def action_kind(trade: Trade) -> PayerActionKind:
    """The kind of payer action the trade's channel answers with (a trade from before
    channels were checked, on a channel no longer offered, is a redirect)."""
    spec = CHANNELS.get(trade.channel)
    return PayerActionKind.REDIRECT if spec is None else spec.action


def created_json(trade: Trade, public_url: str) -> dict[str, Any]:
    """The create answer: the trade, and what the payer's side needs for its kind of action
    (the checkout page, the QR code's content, the prepay_id the merchant signs a parameter
    set over, or the client_secret)."""
    kind = action_kind(trade)
    answer: dict[str, Any] = {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "status": trade.status,
        "amount": trade.amount,
        "currency": trade.currency,
        "channel": trade.channel,
        "action": kind.value,
    }
    if kind in (PayerActionKind.REDIRECT, PayerActionKind.QR_CODE):
        # For QR kinds, the page that shows the code.
        answer["payment_url"] = payment_url(public_url, trade.trade_no)
    if trade.qr_code is not None:
        answer["qr_code"] = qr_content(public_url, trade.qr_code)
    if trade.prepay_id is not None:
        answer["prepay_id"] = trade.prepay_id
    if trade.client_secret is not None:
        answer["client_secret"] = trade.client_secret
    return answer


def refund_json(refund: Refund) -> dict[str, Any]:
    return {
        "out_trade_no": refund.out_trade_no,
        "trade_no": refund.trade_no,
        "out_request_no": refund.out_request_no,
        "refund_no": refund.refund_no,
        "status": refund.status,
        "refund_amount": refund.amount,
        "currency": refund.currency,
        "reason": refund.reason,
        "fail_reason": refund.fail_reason,
        "created_at": refund.created_at,
        "gmt_refund": refund.finished_at,
    }


def transfer_json(transfer: Transfer) -> dict[str, Any]:
    return {
        "out_biz_no": transfer.out_biz_no,
        "transfer_no": transfer.transfer_no,
        "status": transfer.status,
        "amount": transfer.amount,
        "currency": transfer.currency,
        "payee_account": transfer.payee_account,
        "payee_name": transfer.payee_name,
        "remark": transfer.remark,
        "fail_reason": transfer.fail_reason,
        "created_at": transfer.created_at,
        "gmt_finish": transfer.finished_at,
    }


# The status field a notification of each kind names.
STATUS_FIELDS: dict[DeliveryKind, str] = {
    "trade": "trade_status",
    "refund": "refund_status",
    "transfer": "transfer_status",
}


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    next_at = delivery.next_attempt_at
    return {
        "notify_id": delivery.notify_id,
        "kind": delivery.kind,
        STATUS_FIELDS[delivery.kind]: delivery.status,
        "attempts": delivery.attempts,
        "delivered": delivery.delivered,
        "given_up": delivery.given_up,
        "dropped": delivery.dropped,
        "next_attempt_at": None
        if next_at is None
        else utc_iso(datetime.fromtimestamp(next_at, UTC)),
        "last_response_status": delivery.last_response_status,
        "last_error": delivery.last_error,
    }


def payment_url(public_url: str, trade_no: str) -> str:
    return f"{public_url.rstrip('/')}/checkout/{trade_no}"


def qr_content(public_url: str, code: str) -> str:
    """What a QR trade's code encodes; opening it is scanning it."""
    return f"{public_url.rstrip('/')}/qr/{code}"


def error_response(error: SandboxError) -> JSONResponse:
    content = {"code": error.code, "message": error.message, **error.extra}
    return JSONResponse(content, status_code=error.status)


# Trade operations shared by the JSON API, the scripted API and the checkout page


def _http_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"{field} {value!r} must be an http or https URL")
    return value


def _now() -> str:
    return utc_iso(datetime.now(UTC))


def _channel_terms(request: CreatePaymentRequest, settings: SandboxSettings) -> dict[str, Any]:
    """The channel's checks and what it adds to the trade: the payer details it needs (and
    only those), and the prepay_id, QR code or client_secret its payer action carries."""
    spec = CHANNELS.get(request.channel)
    if spec is None:
        raise SandboxError(
            400,
            "CHANNEL_NOT_SUPPORTED",
            f"channel {request.channel!r} is not offered: one of {channel_names()}",
        )
    if request.app_id is not None and request.app_id != settings.app_id:
        raise SandboxError(400, "APPID_NOT_MATCH", "app_id is not this merchant's app")
    terms: dict[str, Any] = {}
    if PayerField.OPENID in spec.needs:
        if request.payer_openid is None:
            raise SandboxError(400, "PAYER_REQUIRED", f"channel {spec.name} needs payer_openid")
        terms["payer_openid"] = parse_openid(request.payer_openid)
    if PayerField.CLIENT_IP in spec.needs:
        if request.payer_client_ip is None:
            raise SandboxError(400, "PAYER_REQUIRED", f"channel {spec.name} needs payer_client_ip")
        terms["payer_client_ip"] = parse_client_ip(request.payer_client_ip)
    if spec.action is PayerActionKind.QR_CODE:
        terms["qr_code"] = secrets.token_hex(12)
    elif spec.action is PayerActionKind.JSAPI or (
        spec.action is PayerActionKind.APP and spec.name != ORDER_STRING_CHANNEL
    ):
        terms["prepay_id"] = "wx" + secrets.token_hex(16)
    return terms


def new_trade(request: CreatePaymentRequest, settings: SandboxSettings) -> Trade:
    currency = parse_currency(request.currency)
    terms = _channel_terms(request, settings)
    trade_no = "SBX" + uuid.uuid4().hex[:20].upper()
    if CHANNELS[request.channel].action is PayerActionKind.CLIENT_SECRET:
        # Stripe's shape: the PaymentIntent's id, "_secret_", and a random part.
        terms["client_secret"] = f"pi_{trade_no}_secret_{secrets.token_hex(16)}"
    return Trade(
        trade_no=trade_no,
        out_trade_no=parse_order_id(request.out_trade_no),
        amount=format_amount(parse_amount(request.amount, currency), currency),
        currency=currency,
        subject=request.subject,
        body=request.body,
        channel=request.channel,
        return_url=_http_url(request.return_url, "return_url") if request.return_url else "",
        notify_url=_http_url(request.notify_url, "notify_url"),
        status=WAIT_BUYER_PAY,
        paid_amount=None,
        paid_currency=None,
        paid_at=None,
        closed_at=None,
        created_at=_now(),
        **terms,
    )


def same_terms(a: Trade, b: Trade) -> bool:
    # The payer's IP may change between two tries of one order; the channel and openid not.
    return (a.amount, a.currency, a.notify_url, a.channel, a.payer_openid) == (
        b.amount,
        b.currency,
        b.notify_url,
        b.channel,
        b.payer_openid,
    )


def trade_not_found(out_trade_no: str) -> SandboxError:
    return SandboxError(404, "TRADE_NOT_EXIST", f"no trade with out_trade_no {out_trade_no!r}")


def _require_trade(sandbox: Sandbox, out_trade_no: str) -> Trade:
    trade = sandbox.store.get_trade(out_trade_no)
    if trade is None:
        raise trade_not_found(out_trade_no)
    return trade


def _moved(transition: Transition | None, out_trade_no: str, action: str) -> Trade:
    """The transitioned trade, or the error a real provider would give."""
    if transition is None:
        raise trade_not_found(out_trade_no)
    if not transition.changed:
        trade = transition.trade
        raise SandboxError(
            409,
            "TRADE_STATUS_ERROR",
            f"cannot {action} a trade in status {trade.status}",
            status_json(trade),
        )
    return transition.trade


def pay(sandbox: Sandbox, out_trade_no: str, scripted: ScriptedPayment | None = None) -> Trade:
    """The payer pays: TRADE_SUCCESS, and a notification is enqueued."""
    scripted = scripted or ScriptedPayment()
    trade = _require_trade(sandbox, out_trade_no)
    paid_currency = parse_currency(scripted.currency) if scripted.currency else trade.currency
    paid_amount = parse_amount(scripted.amount or trade.amount, paid_currency)
    # `force` simulates money landing after the merchant closed the order.
    allowed = (WAIT_BUYER_PAY, TRADE_CLOSED) if scripted.force else (WAIT_BUYER_PAY,)
    transition = sandbox.store.transition(
        out_trade_no,
        allowed_from=allowed,
        status=TRADE_SUCCESS,
        changes={
            "paid_amount": format_amount(paid_amount, paid_currency),
            "paid_currency": paid_currency,
            "paid_at": _now(),
        },
        deliveries=sandbox.notifier.plan(scripted.notification),
    )
    paid = _moved(transition, out_trade_no, "pay")
    sandbox.notifier.wake()
    return paid


def decline(sandbox: Sandbox, out_trade_no: str, mode: NotificationMode = "normal") -> Trade:
    """The payer declines (or the payment fails): TRADE_FAILED, and a notification."""
    transition = sandbox.store.transition(
        out_trade_no,
        allowed_from=(WAIT_BUYER_PAY,),
        status=TRADE_FAILED,
        deliveries=sandbox.notifier.plan(mode),
    )
    failed = _moved(transition, out_trade_no, "decline")
    sandbox.notifier.wake()
    return failed


def close(sandbox: Sandbox, out_trade_no: str) -> Trade:
    """Close an unpaid trade; closing again is a no-op; a paid trade cannot be closed."""
    transition = sandbox.store.transition(
        out_trade_no,
        allowed_from=(WAIT_BUYER_PAY,),
        status=TRADE_CLOSED,
        changes={"closed_at": _now()},
    )
    if transition is None:
        raise trade_not_found(out_trade_no)
    trade = transition.trade
    if trade.status == TRADE_SUCCESS:
        # The merchant must learn that the payer paid, and how much: include the status.
        raise SandboxError(
            409, "TRADE_ALREADY_PAID", "the trade is already paid", status_json(trade)
        )
    return trade


# Refunds: accepted as REFUND_PROCESSING, finished by the processor (or failed by script)


def _merchant_no(value: str, field: str) -> str:
    if not ORDER_ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        )
    return value


def new_refund(out_trade_no: str, request: CreateRefundRequest, delay: float) -> Refund:
    currency = parse_currency(request.currency)
    return Refund(
        refund_no="SBR" + uuid.uuid4().hex[:20].upper(),
        out_request_no=_merchant_no(request.out_request_no, "out_request_no"),
        out_trade_no=out_trade_no,
        trade_no="",  # the trade's, filled in when recorded
        amount=format_amount(parse_amount(request.refund_amount, currency), currency),
        currency=currency,
        reason=request.reason,
        notify_url=_http_url(request.notify_url, "notify_url"),
        status=REFUND_PROCESSING,
        fail_reason=None,
        complete_at=time.time() + delay,
        finished_at=None,
        created_at=_now(),
    )


def refund_not_found(out_request_no: str) -> SandboxError:
    return SandboxError(
        404, "REFUND_NOT_EXIST", f"no refund with out_request_no {out_request_no!r}"
    )


def request_refund(sandbox: Sandbox, out_trade_no: str, request: CreateRefundRequest) -> Refund:
    """Accept a refund, or return the one already accepted under this out_request_no."""
    candidate = new_refund(out_trade_no, request, sandbox.faults.refund_delay_seconds)
    decision = sandbox.store.request_refund(candidate)
    refund, trade = decision.refund, decision.trade
    match decision.outcome:
        case "created" | "existing":
            assert refund is not None
            if decision.outcome == "created":
                sandbox.processor.wake()
            return refund
        case "conflict":
            assert refund is not None
            raise SandboxError(
                409,
                "REFUND_CONFLICT",
                f"out_request_no {refund.out_request_no!r} is already a refund of "
                f"{refund.amount} {refund.currency} on trade {refund.out_trade_no!r}",
            )
        case "trade_not_found":
            raise trade_not_found(out_trade_no)
        case "trade_not_paid":
            assert trade is not None
            raise SandboxError(
                409,
                "TRADE_STATUS_ERROR",
                f"cannot refund a trade in status {trade.status}",
                status_json(trade),
            )
        case "currency_mismatch":
            assert trade is not None
            raise InvalidInput(
                f"currency {candidate.currency} differs from the paid currency "
                f"{trade.paid_currency}"
            )
        case "amount_exceeded":
            assert decision.refundable is not None
            raise SandboxError(
                409,
                "REFUND_AMOUNT_EXCEEDED",
                f"refund of {candidate.amount} {candidate.currency} exceeds the refundable "
                f"{format_amount(decision.refundable, candidate.currency)}",
                {
                    "refundable_amount": format_amount(decision.refundable, candidate.currency),
                    "currency": candidate.currency,
                },
            )


def fail_refund(
    sandbox: Sandbox, out_request_no: str, instruction: ScriptedRefundFailure | None = None
) -> Refund:
    """A processing refund fails: its amount becomes refundable again, and it notifies."""
    instruction = instruction or ScriptedRefundFailure()
    transition = sandbox.store.finish_refund(
        out_request_no,
        status=REFUND_FAILED,
        fail_reason=instruction.reason,
        finished_at=_now(),
        deliveries=sandbox.notifier.plan(instruction.notification),
    )
    if transition is None:
        raise refund_not_found(out_request_no)
    if not transition.changed:
        refund = transition.refund
        raise SandboxError(
            409,
            "REFUND_STATUS_ERROR",
            f"cannot fail a refund in status {refund.status}",
            refund_json(refund),
        )
    sandbox.notifier.wake()
    return transition.refund


# Transfers (payouts): accepted as TRANSFER_PROCESSING, finished by the processor


def new_transfer(request: CreateTransferRequest, delay: float) -> Transfer:
    currency = parse_currency(request.currency)
    return Transfer(
        transfer_no="SBT" + uuid.uuid4().hex[:20].upper(),
        out_biz_no=_merchant_no(request.out_biz_no, "out_biz_no"),
        amount=format_amount(parse_amount(request.amount, currency), currency),
        currency=currency,
        payee_account=request.payee_account,
        payee_name=request.payee_name,
        remark=request.remark,
        notify_url=_http_url(request.notify_url, "notify_url"),
        status=TRANSFER_PROCESSING,
        fail_reason=None,
        complete_at=time.time() + delay,
        finished_at=None,
        created_at=_now(),
    )


def request_transfer(sandbox: Sandbox, request: CreateTransferRequest) -> Transfer:
    """Accept a transfer, or return the one already accepted under this out_biz_no: a
    repeated call never pays twice."""
    candidate = new_transfer(request, sandbox.faults.transfer_delay_seconds)
    transfer, outcome = sandbox.store.request_transfer(candidate)
    if outcome == "conflict":
        raise SandboxError(
            409,
            "TRANSFER_CONFLICT",
            f"out_biz_no {transfer.out_biz_no!r} is already a transfer of {transfer.amount} "
            f"{transfer.currency} to {transfer.payee_account!r}",
        )
    if outcome == "created":
        sandbox.processor.wake()
    return transfer


def transfer_not_found(out_biz_no: str) -> SandboxError:
    return SandboxError(404, "TRANSFER_NOT_EXIST", f"no transfer with out_biz_no {out_biz_no!r}")


def drawn_transfer_fault(faults: Faults) -> TransferFault | None:
    rng = notifier_module.rng
    if faults.transfer_timeout_rate and rng.random() < faults.transfer_timeout_rate:
        return "timeout"
    if faults.transfer_error_rate and rng.random() < faults.transfer_error_rate:
        return "error"
    return None


async def hold_answer(request: Request, seconds: float) -> None:
    """Answer late, as a provider whose reply the caller times out on; stop waiting once the
    caller has hung up (nobody is left to answer, and shutdown need not wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(0.05, remaining))


async def status_query_faults(sandbox: Sandbox, subject: str) -> None:
    """Counts every status query (`subject` names what it asks about), then injects its
    slowness and failures."""
    sandbox.status_queries.record(subject)
    faults = sandbox.faults
    if faults.status_delay_seconds:
        await asyncio.sleep(faults.status_delay_seconds)
    if faults.status_fail_rate and notifier_module.rng.random() < faults.status_fail_rate:
        raise SandboxError(503, "SYSTEM_ERROR", "injected fault: status query failed")


# HTML pages

TEMPLATES = files("providers.sandbox") / "templates"


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def pay_forms(base: str, hidden: dict[str, str] | None = None) -> str:
    """Pay and Decline, posting to `{base}/pay` and `{base}/decline` with `hidden` fields."""
    e = html.escape
    fields = "".join(
        f'<input type="hidden" name="{e(name)}" value="{e(value)}">'
        for name, value in (hidden or {}).items()
    )
    return (
        '<div class="actions">\n'
        f'    <form method="post" action="{e(base)}/pay">{fields}'
        '<button class="pay" type="submit">Pay</button></form>\n'
        f'    <form method="post" action="{e(base)}/decline">{fields}'
        '<button class="decline" type="submit">Decline</button></form>\n'
        "  </div>"
    )


def qr_svg(content: str) -> str:
    """The QR code of `content`, as inline SVG (segno escapes nothing it is not given)."""
    return segno.make(content, error="m").svg_inline(scale=5)


def trade_page(trade: Trade, actions: str, note: str = "") -> str:
    """A trade's page: its terms, then `actions` (HTML) when it still waits for the payer."""
    e = html.escape
    if trade.status != WAIT_BUYER_PAY:
        actions = f'<p class="status">This payment is {e(trade.status)}.</p>'
    return _template("checkout.html").substitute(
        title=e(trade.subject or "Payment"),
        description=e(trade.body),
        amount=e(trade.amount),
        currency=e(trade.currency),
        out_trade_no=e(trade.out_trade_no),
        trade_no=e(trade.trade_no),
        note=note,
        actions=actions,
    )


def checkout_page(trade: Trade, public_url: str) -> str:
    """The page at the trade's payment_url: Pay and Decline for redirects, the QR code for QR
    kinds (scanning it leads to Pay and Decline), and where to go for wallet kinds."""
    kind = action_kind(trade)
    if kind is PayerActionKind.REDIRECT:
        return trade_page(trade, pay_forms(f"/checkout/{trade.trade_no}"))
    if kind is PayerActionKind.QR_CODE:
        assert trade.qr_code is not None
        content = qr_content(public_url, trade.qr_code)
        return trade_page(
            trade,
            f'<figure class="qr" aria-label="QR code">{qr_svg(content)}<figcaption>Scan '
            f'with the wallet, or <a class="scan" href="{html.escape(content)}">open it on '
            "this device</a> as scanning it would.</figcaption></figure>",
        )
    return trade_page(
        trade,
        '<p class="status">This payment is paid in the payer\'s wallet: the merchant hands it '
        'the payer\'s parameters, which the <a href="/wallet">wallet page</a> takes.</p>',
    )


def wallet_page(trade: Trade, action: WalletAction) -> str:
    """The wallet, once the payer's parameters verified: Pay and Decline carry them again
    (each is checked again), so the page keeps no state."""
    checked = {
        PayerActionKind.JSAPI: "paySign, appId, prepay_id and timeStamp verified",
        PayerActionKind.CLIENT_SECRET: "client_secret verified",
    }.get(PayerActionKind(action.kind), "sign, app id, the payment and timestamp verified")
    return trade_page(
        trade,
        pay_forms("/wallet", {"payer_action": action.model_dump_json()}),
        note=f'<p class="verified">Sandbox wallet: {html.escape(checked)}.</p>',
    )


def result_page(
    heading: str, message: str, return_url: str = "", status: int = 200
) -> HTMLResponse:
    link = (
        f'<p><a href="{html.escape(return_url)}">Return to the merchant</a></p>'
        if return_url
        else ""
    )
    page = _template("result.html").substitute(
        heading=html.escape(heading), message=html.escape(message), link=link
    )
    return HTMLResponse(page, status_code=status)


# The application


async def _sandbox(request: Request) -> Sandbox:
    # async: a plain def dependency would cost a thread-pool hop on every request.
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(_sandbox)]


def _open_sandbox(settings: SandboxSettings) -> Sandbox:
    private_path, public_path = ensure_keypair(settings.directory)
    store = SandboxStore(settings.directory / DATABASE_NAME)
    faults = Faults.from_settings(settings)
    notifier = Notifier(store, settings, faults, load_private_key(private_path))
    processor = Processor(store, notifier)
    merchant_key = MerchantKey(settings.directory / MERCHANT_PUBLIC_KEY_NAME)
    return Sandbox(
        settings, store, faults, notifier, processor, public_path.read_bytes(), merchant_key
    )


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    """The sandbox app. Routes are async on purpose: store calls are short, and the
    notifier's wake-up event must be set from the event loop's thread."""
    settings = settings or SandboxSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sandbox = _open_sandbox(settings)
        app.state.sandbox = sandbox
        await sandbox.notifier.start()
        await sandbox.processor.start()
        try:
            yield
        finally:
            await sandbox.processor.stop()
            await sandbox.notifier.stop()
            sandbox.store.close()

    app = FastAPI(title="tempay sandbox provider", lifespan=lifespan)
    _add_error_handlers(app)
    _add_payment_routes(app)
    _add_refund_routes(app)
    _add_transfer_routes(app)
    _add_checkout_routes(app)
    _add_statement_routes(app)
    _add_sandbox_routes(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SandboxError)
    async def sandbox_error(_: Request, exc: SandboxError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(PageRefusal)
    async def page_refusal(_: Request, exc: PageRefusal) -> HTMLResponse:
        return result_page(exc.heading, exc.message, status=exc.status)

    @app.exception_handler(InvalidInput)
    async def invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(SandboxError(400, "INVALID_PARAMETER", str(exc)))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_describe(error) for error in exc.errors())
        return error_response(SandboxError(400, "INVALID_PARAMETER", problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "NOT_FOUND" if exc.status_code == 404 else f"HTTP_{exc.status_code}"
        return error_response(SandboxError(exc.status_code, code, str(exc.detail)))


def _describe(error: Any) -> str:
    """'amount: Input should be a valid string', naming the field rather than its place."""
    where = ".".join(str(part) for part in error["loc"][1:] if isinstance(part, str))
    return f"{where or 'request body'}: {error['msg']}"


def _add_payment_routes(app: FastAPI) -> None:
    @app.post("/payments")
    async def create_payment(request: CreatePaymentRequest, sandbox: SandboxDep) -> dict[str, Any]:
        candidate = new_trade(request, sandbox.settings)
        trade, created = sandbox.store.create_trade(candidate)
        if not created and not same_terms(trade, candidate):
            raise SandboxError(
                409,
                "ORDER_CONFLICT",
                f"out_trade_no {trade.out_trade_no!r} already exists with different terms",
            )
        return created_json(trade, sandbox.settings.public_url)

    @app.get("/payments/{out_trade_no}")
    async def query_payment(out_trade_no: str, sandbox: SandboxDep) -> dict[str, Any]:
        await status_query_faults(sandbox, f"payment/{out_trade_no}")
        return status_json(_require_trade(sandbox, out_trade_no))

    @app.post("/payments/{out_trade_no}/close")
    async def close_payment(out_trade_no: str, sandbox: SandboxDep) -> dict[str, Any]:
        return status_json(close(sandbox, out_trade_no))


def _add_refund_routes(app: FastAPI) -> None:
    @app.post("/payments/{out_trade_no}/refunds")
    async def create_refund(
        out_trade_no: str, request: CreateRefundRequest, sandbox: SandboxDep
    ) -> dict[str, Any]:
        return refund_json(request_refund(sandbox, out_trade_no, request))

    @app.get("/payments/{out_trade_no}/refunds/{out_request_no}")
    async def query_refund(
        out_trade_no: str, out_request_no: str, sandbox: SandboxDep
    ) -> dict[str, Any]:
        await status_query_faults(sandbox, f"refund/{out_trade_no}/{out_request_no}")
        refund = sandbox.store.get_refund(out_request_no)
        if refund is None or refund.out_trade_no != out_trade_no:
            raise refund_not_found(out_request_no)
        return refund_json(refund)


def _add_transfer_routes(app: FastAPI) -> None:
    @app.post("/transfers")
    async def create_transfer(
        body: CreateTransferRequest, request: Request, sandbox: SandboxDep
    ) -> dict[str, Any]:
        transfer = request_transfer(sandbox, body)
        # Faults strike after the transfer is recorded: the caller cannot tell if money moved.
        fault = body.sandbox_fault or drawn_transfer_fault(sandbox.faults)
        if fault == "error":
            raise SandboxError(
                503, "SYSTEM_ERROR", "injected fault: system busy, query the transfer's status"
            )
        if fault == "timeout":
            await hold_answer(request, sandbox.faults.transfer_timeout_seconds)
            transfer = sandbox.store.get_transfer(transfer.out_biz_no) or transfer
        return transfer_json(transfer)

    @app.get("/transfers/{out_biz_no}")
    async def query_transfer(out_biz_no: str, sandbox: SandboxDep) -> dict[str, Any]:
        await status_query_faults(sandbox, f"transfer/{out_biz_no}")
        transfer = sandbox.store.get_transfer(out_biz_no)
        if transfer is None:
            raise transfer_not_found(out_biz_no)
        return transfer_json(transfer)


def _statement_day(text: str) -> date:
    try:
        if not re.fullmatch(r"\d{4}-\d\d-\d\d", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"statement day {text[:40]!r} must be a date, YYYY-MM-DD") from None


def _add_statement_routes(app: FastAPI) -> None:
    @app.get("/statements/{day_text}")
    async def statement(day_text: str, sandbox: SandboxDep) -> Response:
        """The day's trade bill (Asia/Shanghai), zipped as Alipay's. Unlike Alipay, which
        has a day's bill the next morning, today's is served as it stands so far."""
        day = _statement_day(day_text)
        if day > datetime.now(CHINA).date():
            raise SandboxError(
                404,
                "BILL_NOT_EXIST",
                f"no statement for {day}: the day has not begun in Asia/Shanghai",
            )
        account = sandbox.settings.account
        # Built off the event loop: a busy day's rows are many store reads and a deflate.
        content = await asyncio.to_thread(
            statement_zip, sandbox.store, sandbox.faults, account, day
        )
        filename = f"{account}_{day:%Y%m%d}.csv.zip"
        return Response(
            content,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def _add_checkout_routes(app: FastAPI) -> None:
    """The pages a payer uses: the checkout page at payment_url (a redirect's Pay and Decline,
    or a QR kind's code), the page scanning a QR code opens, and the wallet."""

    @app.get("/checkout/{trade_no}", response_class=HTMLResponse)
    async def checkout(trade_no: str, request: Request, sandbox: SandboxDep) -> HTMLResponse:
        trade = _trade_by_trade_no(sandbox, trade_no)
        _from_payers_network(trade, request)
        return HTMLResponse(checkout_page(trade, sandbox.settings.public_url))

    @app.post("/checkout/{trade_no}/{act}", response_class=HTMLResponse)
    async def checkout_act(
        trade_no: str, act: PayerAct, request: Request, sandbox: SandboxDep
    ) -> HTMLResponse:
        trade = _trade_by_trade_no(sandbox, trade_no)
        kind = action_kind(trade)
        if kind is not PayerActionKind.REDIRECT:
            where = (
                "by scanning its QR code" if kind is PayerActionKind.QR_CODE else "in the wallet"
            )
            raise PageRefusal(409, "Payment not possible here", f"This payment is paid {where}.")
        _from_payers_network(trade, request)
        return _payer_act(sandbox, trade, act)

    @app.get("/qr/{code}", response_class=HTMLResponse)
    async def scanned(code: str, sandbox: SandboxDep) -> HTMLResponse:
        """What scanning a QR trade's code opens."""
        trade = _trade_by_qr_code(sandbox, code)
        return HTMLResponse(trade_page(trade, pay_forms(f"/qr/{code}")))

    @app.post("/qr/{code}/{act}", response_class=HTMLResponse)
    async def scanned_act(code: str, act: PayerAct, sandbox: SandboxDep) -> HTMLResponse:
        return _payer_act(sandbox, _trade_by_qr_code(sandbox, code), act)

    @app.get("/wallet", response_class=HTMLResponse)
    async def wallet_entry() -> HTMLResponse:
        return HTMLResponse(_template("wallet.html").substitute())

    @app.post("/wallet", response_class=HTMLResponse)
    async def wallet(request: Request, sandbox: SandboxDep) -> HTMLResponse:
        """The payer's parameters as the JS bridge, the app SDK or Stripe.js would get them
        (tempay's payer_action: JSON, or the form field `payer_action`): verified, then Pay
        and Decline."""
        action = parse_action(await _submitted_action(request))
        trade = _wallet_checks(sandbox).verified_trade(action)
        return HTMLResponse(wallet_page(trade, action))

    @app.post("/wallet/{act}", response_class=HTMLResponse)
    async def wallet_act(act: PayerAct, request: Request, sandbox: SandboxDep) -> HTMLResponse:
        action = parse_action(await _submitted_action(request))
        trade = _wallet_checks(sandbox).verified_trade(action)
        return _payer_act(sandbox, trade, act)


# What a payer does on a page
PayerAct = Literal["pay", "decline"]
# A payer action is a few hundred bytes; an order string a few kilobytes at most.
MAX_WALLET_BODY = 16 * 1024


def _trade_by_trade_no(sandbox: Sandbox, trade_no: str) -> Trade:
    trade = sandbox.store.get_trade_by_trade_no(trade_no)
    if trade is None:
        raise PageRefusal(404, "Payment not found", f"No trade {trade_no[:64]}.")
    return trade


def _trade_by_qr_code(sandbox: Sandbox, code: str) -> Trade:
    trade = sandbox.store.get_trade_by_qr_code(code)
    if trade is None:
        raise PageRefusal(404, "Payment not found", "This QR code is no payment's.")
    return trade


def _wallet_checks(sandbox: Sandbox) -> WalletChecks:
    return WalletChecks(sandbox.store, sandbox.settings, sandbox.merchant_key)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _from_payers_network(trade: Trade, request: Request) -> None:
    """WeChat H5: the page opens only from the IP the merchant named at create (the payer's
    own, seen by the merchant). The refusal shows the visitor's address, never the named one."""
    if trade.payer_client_ip is None:
        return
    seen = request.client.host if request.client else ""
    if _address(seen) is None or _address(seen) != _address(trade.payer_client_ip):
        raise PageRefusal(
            403,
            "Network check failed",
            "This payment must be paid from the network the merchant named for it; your "
            f"browser connects from {seen or 'an unknown address'}.",
        )


async def _submitted_action(request: Request) -> Any:
    """The payer action in the request: a JSON body, or a form's `payer_action` field."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WALLET_BODY:
            raise PageRefusal(413, "Too large", "A payer action is a few kilobytes at most.")
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            return json.loads(body)
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        [text] = fields["payer_action"]
        return json.loads(text)
    except (ValueError, KeyError, RecursionError):  # RecursionError: JSON nested too deep
        raise PageRefusal(
            400,
            "The wallet refused this payment",
            "send the payer action as JSON, or as the form field payer_action",
        ) from None


def _payer_act(sandbox: Sandbox, trade: Trade, act: PayerAct) -> HTMLResponse:
    try:
        if act == "pay":
            trade = pay(sandbox, trade.out_trade_no)
        else:
            trade = decline(sandbox, trade.out_trade_no)
    except SandboxError as error:
        return result_page("Payment not possible", error.message, trade.return_url, error.status)
    if act == "pay":
        heading, message = (
            "Payment succeeded",
            f"You paid {trade.paid_amount} {trade.paid_currency}.",
        )
    else:
        heading, message = "Payment declined", "No money was taken."
    return result_page(heading, message, trade.return_url)


def _add_sandbox_routes(app: FastAPI) -> None:
    @app.post("/sandbox/payments/{out_trade_no}/pay")
    async def scripted_pay(
        out_trade_no: str, sandbox: SandboxDep, instruction: ScriptedPayment | None = None
    ) -> dict[str, Any]:
        return status_json(pay(sandbox, out_trade_no, instruction))

    @app.post("/sandbox/payments/{out_trade_no}/decline")
    async def scripted_decline(
        out_trade_no: str, sandbox: SandboxDep, instruction: ScriptedDecline | None = None
    ) -> dict[str, Any]:
        mode = instruction.notification if instruction else "normal"
        return status_json(decline(sandbox, out_trade_no, mode))

    @app.get("/sandbox/notifications")
    async def notifications(
        sandbox: SandboxDep,
        out_trade_no: str | None = None,
        out_request_no: str | None = None,
        out_biz_no: str | None = None,
    ) -> list[dict[str, Any]]:
        """The notifications about one trade, refund or transfer, and how their delivery went."""
        named = [n for n in (out_trade_no, out_request_no, out_biz_no) if n is not None]
        if len(named) != 1:
            raise InvalidInput("name exactly one of out_trade_no, out_request_no, out_biz_no")
        if out_trade_no is not None:
            _require_trade(sandbox, out_trade_no)
            deliveries = sandbox.store.deliveries_for(out_trade_no)
        elif out_request_no is not None:
            if sandbox.store.get_refund(out_request_no) is None:
                raise refund_not_found(out_request_no)
            deliveries = sandbox.store.deliveries_for(out_request_no, "refund")
        else:
            assert out_biz_no is not None
            if sandbox.store.get_transfer(out_biz_no) is None:
                raise transfer_not_found(out_biz_no)
            deliveries = sandbox.store.deliveries_for(out_biz_no, "transfer")
        return [delivery_json(d) for d in deliveries]

    @app.post("/sandbox/refunds/{out_request_no}/fail")
    async def scripted_refund_failure(
        out_request_no: str, sandbox: SandboxDep, instruction: ScriptedRefundFailure | None = None
    ) -> dict[str, Any]:
        return refund_json(fail_refund(sandbox, out_request_no, instruction))

    @app.get("/sandbox/refunds")
    async def refunds(sandbox: SandboxDep, out_trade_no: str | None = None) -> list[dict[str, Any]]:
        """Ground truth: every refund (of one trade), and how often its id was requested."""
        return [
            {**refund_json(refund), "requests": refund.requests}
            for refund in sandbox.store.refunds(out_trade_no)
        ]

    @app.get("/sandbox/transfers")
    async def transfers(sandbox: SandboxDep, out_biz_no: str | None = None) -> list[dict[str, Any]]:
        """Ground truth: every transfer, how often its out_biz_no was requested, and how many
        times money actually left (never more than once)."""
        return [
            transfer_json(transfer) | {"requests": transfer.requests, "paid_out": transfer.paid_out}
            for transfer in sandbox.store.transfers(out_biz_no)
        ]

    @app.get("/sandbox/faults")
    async def get_faults(sandbox: SandboxDep) -> Faults:
        return sandbox.faults

    @app.put("/sandbox/faults")
    async def put_faults(patch: FaultsPatch, sandbox: SandboxDep) -> Faults:
        sandbox.faults.apply(patch)
        return sandbox.faults

    @app.get("/sandbox/stats")
    async def stats(sandbox: SandboxDep) -> dict[str, Any]:
        """Status queries received: the total and the count in each second (unix time)."""
        return {"status_queries": sandbox.status_queries.as_json()}

    @app.get("/keys/notify.pem")
    async def public_key(sandbox: SandboxDep) -> Response:
        return Response(sandbox.public_key_pem, media_type="application/x-pem-file")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


def main() -> None:
    settings = SandboxSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
