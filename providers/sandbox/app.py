"""The sandbox provider: an HTTP payment platform modelled on Alipay, for demos, tests and
benchmarks. Trades and pending notifications persist in SQLite; notifications are signed
and retried until the merchant acknowledges them.

Run it with `python -m providers.sandbox.app` (settings from `TEMPAY_SANDBOX_*`).
"""

from __future__ import annotations

import asyncio
import html
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from string import Template
from typing import Annotated, Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from providers.sandbox import notifier as notifier_module
from providers.sandbox.keys import ensure_keypair, load_private_key
from providers.sandbox.notifier import NotificationMode, Notifier, utc_iso
from providers.sandbox.settings import Faults, FaultsPatch, SandboxSettings
from providers.sandbox.store import (
    TRADE_CLOSED,
    TRADE_FAILED,
    TRADE_SUCCESS,
    WAIT_BUYER_PAY,
    Delivery,
    SandboxStore,
    Trade,
    Transition,
)
from tempay.domain import InvalidInput, format_amount, parse_amount, parse_currency, parse_order_id

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


@dataclass
class Sandbox:
    """Everything the routes need, built in the lifespan."""

    settings: SandboxSettings
    store: SandboxStore
    faults: Faults
    notifier: Notifier
    public_key_pem: bytes


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


class ScriptedPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: StrictStr | None = None
    currency: StrictStr | None = None
    notification: NotificationMode = "normal"
    force: StrictBool = False


class ScriptedDecline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notification: NotificationMode = "normal"


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


def created_json(trade: Trade, public_url: str) -> dict[str, Any]:
    return {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "status": trade.status,
        "amount": trade.amount,
        "currency": trade.currency,
        "payment_url": payment_url(public_url, trade.trade_no),
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    next_at = delivery.next_attempt_at
    return {
        "notify_id": delivery.notify_id,
        "trade_status": delivery.trade_status,
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


def new_trade(request: CreatePaymentRequest) -> Trade:
    currency = parse_currency(request.currency)
    return Trade(
        trade_no="SBX" + uuid.uuid4().hex[:20].upper(),
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
    )


def same_terms(a: Trade, b: Trade) -> bool:
    return (a.amount, a.currency, a.notify_url) == (b.amount, b.currency, b.notify_url)


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


# HTML pages

TEMPLATES = files("providers.sandbox") / "templates"

PAY_FORMS = Template(
    '<div class="actions">\n'
    '    <form method="post" action="/checkout/$trade_no/pay">'
    '<button class="pay" type="submit">Pay</button></form>\n'
    '    <form method="post" action="/checkout/$trade_no/decline">'
    '<button class="decline" type="submit">Decline</button></form>\n'
    "  </div>"
)


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def checkout_page(trade: Trade) -> str:
    e = html.escape
    if trade.status == WAIT_BUYER_PAY:
        actions = PAY_FORMS.substitute(trade_no=e(trade.trade_no))
    else:
        actions = f'<p class="status">This payment is {e(trade.status)}.</p>'
    return _template("checkout.html").substitute(
        title=e(trade.subject or "Payment"),
        description=e(trade.body),
        amount=e(trade.amount),
        currency=e(trade.currency),
        out_trade_no=e(trade.out_trade_no),
        trade_no=e(trade.trade_no),
        actions=actions,
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
    return Sandbox(settings, store, faults, notifier, public_path.read_bytes())


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    """The sandbox app. Routes are async on purpose: store calls are short, and the
    notifier's wake-up event must be set from the event loop's thread."""
    settings = settings or SandboxSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sandbox = _open_sandbox(settings)
        app.state.sandbox = sandbox
        await sandbox.notifier.start()
        try:
            yield
        finally:
            await sandbox.notifier.stop()
            sandbox.store.close()

    app = FastAPI(title="tempay sandbox provider", lifespan=lifespan)
    _add_error_handlers(app)
    _add_payment_routes(app)
    _add_checkout_routes(app)
    _add_sandbox_routes(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SandboxError)
    async def sandbox_error(_: Request, exc: SandboxError) -> JSONResponse:
        return error_response(exc)

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
        candidate = new_trade(request)
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
        faults = sandbox.faults
        if faults.status_delay_seconds:
            await asyncio.sleep(faults.status_delay_seconds)
        if faults.status_fail_rate and notifier_module.rng.random() < faults.status_fail_rate:
            raise SandboxError(503, "SYSTEM_ERROR", "injected fault: status query failed")
        return status_json(_require_trade(sandbox, out_trade_no))

    @app.post("/payments/{out_trade_no}/close")
    async def close_payment(out_trade_no: str, sandbox: SandboxDep) -> dict[str, Any]:
        return status_json(close(sandbox, out_trade_no))


def _add_checkout_routes(app: FastAPI) -> None:
    @app.get("/checkout/{trade_no}", response_class=HTMLResponse)
    async def checkout(trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
        trade = sandbox.store.get_trade_by_trade_no(trade_no)
        if trade is None:
            return result_page("Payment not found", f"No trade {trade_no}.", status=404)
        return HTMLResponse(checkout_page(trade))

    @app.post("/checkout/{trade_no}/pay", response_class=HTMLResponse)
    async def checkout_pay(trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
        return _checkout_action(sandbox, trade_no, paying=True)

    @app.post("/checkout/{trade_no}/decline", response_class=HTMLResponse)
    async def checkout_decline(trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
        return _checkout_action(sandbox, trade_no, paying=False)


def _checkout_action(sandbox: Sandbox, trade_no: str, *, paying: bool) -> HTMLResponse:
    trade = sandbox.store.get_trade_by_trade_no(trade_no)
    if trade is None:
        return result_page("Payment not found", f"No trade {trade_no}.", status=404)
    try:
        if paying:
            trade = pay(sandbox, trade.out_trade_no)
        else:
            trade = decline(sandbox, trade.out_trade_no)
    except SandboxError as error:
        return result_page("Payment not possible", error.message, trade.return_url, error.status)
    if paying:
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
    async def notifications(out_trade_no: str, sandbox: SandboxDep) -> list[dict[str, Any]]:
        _require_trade(sandbox, out_trade_no)
        return [delivery_json(d) for d in sandbox.store.deliveries_for(out_trade_no)]

    @app.get("/sandbox/faults")
    async def get_faults(sandbox: SandboxDep) -> Faults:
        return sandbox.faults

    @app.put("/sandbox/faults")
    async def put_faults(patch: FaultsPatch, sandbox: SandboxDep) -> Faults:
        sandbox.faults.apply(patch)
        return sandbox.faults

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
