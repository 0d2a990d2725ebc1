"""The backend API under /api: merchants' services start and read transactions over HTTP.

It does what the CLI does (transactions/), with the same idempotency: a payment,
recharge or withdrawal by its merchant id, a refund by its refund id. Every route needs
`Authorization: Bearer <TEMPAY_API_KEY>`; with no key set, every route answers 503. Amounts
are JSON strings ("10.00"): a JSON number is refused, so a float never meets the money.
Errors are `{"error": "..."}` (validation errors add FastAPI's `detail` list):

- 400 the body is not JSON; 422 it is, but a field is missing, mistyped or invalid
- 401 missing or wrong key; 503 the API is disabled (no key), Temporal is unreachable or no
  worker answers a query; 504 the worker or provider did not answer within
  TEMPAY_API_TIMEOUT (the transaction is recorded and goes on)
- 404 unknown transaction; 409 the id exists with other terms, or the payment cannot take
  this refund now (over-refund, not paid, refund id reused, window ended); 422 a refund in
  another currency than the payment's, or one the provider refused (status FAILED).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Request, Response, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from book import Book
from providers.base import ProviderAdapter
from providers.registry import PROVIDER_NAMES, PROVIDERS
from tempay.domain import (
    MINOR_UNITS,
    ORDER_ID_PATTERN,
    CheckoutInfo,
    PaymentView,
    RefundAccepted,
    RefundView,
    TransactionKind,
    TransactionStatus,
    WithdrawalSubmitted,
    WithdrawalView,
    parse_currency,
    parse_order_id,
)
from tempay.errors import (
    BookUnavailable,
    InvalidInput,
    OrderConflict,
    RefundRefused,
    TemporalUnavailable,
    TransactionNotFound,
    WorkerUnavailable,
)
from tempay.settings import Settings
from tempay.statements import ReconciliationReport
from transactions import (
    build_order,
    build_withdrawal,
    chosen_provider,
    payment_view,
    refund_view,
    start_payment,
    start_refund,
    start_withdrawal,
    withdrawal_view,
)
from transactions.read import parse_provider
from transactions.reconcile import parse_day
from transactions.reconcile import report as reconciliation_report

log = logging.getLogger("tempay.api")

T = TypeVar("T")

DISABLED = "the API is disabled: set TEMPAY_API_KEY"


class TemporalSource(Protocol):
    """webhook.app.TemporalConnection: the webhook's lazily connecting client, shared."""

    async def get(self) -> Client: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body or {}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(
            {**self.body, "error": self.message}, status_code=self.status, headers=headers
        )


# Request bodies


def _money_string(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, int | float):
        raise ValueError(
            'amounts are JSON strings such as "10.00", not numbers: '
            "a JSON number may already have lost its exact value"
        )
    if not isinstance(value, str):
        raise ValueError('amount must be a string such as "10.00"')
    return value


Money = Annotated[
    str,
    BeforeValidator(_money_string),
    Field(
        description='a decimal string with at most the currency\'s minor units, e.g. "10.00"',
        examples=["10.00"],
        max_length=32,
        # Documented, not enforced here: parse_amount's error names the currency's scale.
        json_schema_extra={"pattern": r"^[0-9]{1,12}(\.[0-9]{1,4})?$"},
    ),
]
Id = Annotated[
    str,
    Field(
        description="1-64 characters of letters, digits, '_', '-' or '.'",
        min_length=1,
        max_length=64,
        examples=["A1001"],
        json_schema_extra={"pattern": ORDER_ID_PATTERN.pattern},
    ),
]
Currency = Annotated[
    str,
    Field(
        description="ISO 4217 code",
        examples=["CNY"],
        max_length=8,
        json_schema_extra={"enum": sorted(MINOR_UNITS)},
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Documented as the providers tempay ships; a deployment answers 422 for one it has not set up.
Provider = Annotated[
    str,
    Field(
        description="a provider configured on this deployment",
        max_length=64,
        json_schema_extra={"enum": list(PROVIDER_NAMES)},
    ),
]
CHANNELS_OFFERED = "; ".join(
    f"{spec.name}: "
    + ", ".join(
        f"{c.name} ({c.action}{', the default' if c.name == spec.default_channel else ''})"
        for c in spec.channels
    )
    for spec in PROVIDERS
    if spec.channels
)
Channel = Annotated[
    str | None,
    Field(
        description="the provider's payment product, with the kind of payer_action it "
        f"answers: {CHANNELS_OFFERED}. Unset: the provider's default",
        max_length=64,
    ),
]


class PaymentIn(Body):
    order_id: Id
    amount: Money
    currency: Currency
    # Unset: TEMPAY_DEFAULT_PROVIDER, or the sandbox under `tempay dev`; else 422.
    provider: Provider | None = None
    channel: Channel = None
    subject: str = Field(default="", max_length=256)
    return_url: str = Field(default="", max_length=2048)
    payer_openid: str | None = Field(
        default=None,
        max_length=128,
        description="the payer's openid under the channel's WeChat app: wechat_jsapi and "
        "wechat_miniprogram need it. Personal data: never logged, listed or put in the book",
    )
    payer_client_ip: str | None = Field(
        default=None,
        max_length=64,
        description="the IP address the payer's browser connects from: wechat_h5 needs it "
        "(WeChat Pay checks it). Personal data, as payer_openid",
    )


class RechargeIn(PaymentIn):
    account_id: str = Field(description="the account to top up", min_length=1, max_length=128)


class RefundIn(Body):
    refund_id: Id
    amount: Money
    currency: Currency | None = Field(default=None, description="the payment's if unset")
    reason: str = Field(default="", max_length=256)


class WithdrawalIn(Body):
    withdrawal_id: Id
    amount: Money
    currency: Currency
    payee_account: str = Field(min_length=1, max_length=128)
    payee_name: str = Field(default="", max_length=128)
    # Unset: TEMPAY_DEFAULT_PROVIDER, or the sandbox under `tempay dev`; else 422.
    provider: Provider | None = None


class ErrorOut(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors: FastAPI's list, field by field"
    )


class RefusedRefundOut(RefundAccepted):
    error: str


# Errors


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = [{k: v for k, v in e.items() if k not in ("ctx", "url")} for e in exc.errors()]
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(
            {"error": "the body is not valid JSON", "detail": jsonable_encoder(errors)}, 400
        )
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing" for e in errors):
        return JSONResponse(
            {
                "error": "the body must be a JSON object (Content-Type: application/json)",
                "detail": jsonable_encoder(errors),
            },
            422,
        )
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        message = str(e.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return JSONResponse(
        {"error": "invalid request: " + "; ".join(parts), "detail": jsonable_encoder(errors)},
        422,
    )


def _error_response(exc: Exception) -> Response | None:
    """The answer for a known failure, None for a bug (which FastAPI turns into a 500)."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, RequestValidationError):
        return _validation_response(exc)
    # FastAPI's own (e.g. a body that is not UTF-8) are Starlette's, not fastapi.HTTPException.
    if isinstance(exc, HTTPException):
        return ApiError(exc.status_code, str(exc.detail)).response()
    status: int | None = None
    if isinstance(exc, InvalidInput):
        status = 422
    elif isinstance(exc, TransactionNotFound):
        status = 404
    elif isinstance(exc, OrderConflict | RefundRefused):
        status = 409
    elif isinstance(exc, TemporalUnavailable | WorkerUnavailable | BookUnavailable):
        status = 503
    elif isinstance(exc, RPCError):
        log.error("Temporal refused an API request: %s", exc.message)
        return ApiError(503, f"Temporal refused the request: {exc.message}").response()
    if status is None:
        return None
    return ApiError(status, str(exc)).response()


def _authorize(settings: Settings, request: Request) -> None:
    if settings.api_key is None:
        raise ApiError(503, DISABLED)
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    expected = settings.api_key.get_secret_value().encode()
    # compare_digest takes the same time whatever matches; the lengths may differ.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), expected
    ):
        raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`")


def _route_class(settings: Settings) -> type[APIRoute]:
    class ApiRoute(APIRoute):
        """Checks the key before anything else (even before the body is parsed), then turns
        the engine's exceptions into the JSON errors above."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def run(request: Request) -> Response:
                try:
                    _authorize(settings, request)
                    return await handler(request)
                except Exception as exc:
                    answer = _error_response(exc)
                    if answer is None:
                        raise
                    return answer

            return run

    return ApiRoute


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what}
    for code, what in {
        400: "the body is not JSON",
        401: "missing or wrong API key",
        422: "invalid input",
        503: "API disabled (no TEMPAY_API_KEY), Temporal unreachable or no worker",
    }.items()
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "unknown"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "the id exists with other terms"}
}
TIMEOUT: dict[int | str, dict[str, Any]] = {
    504: {"model": ErrorOut, "description": "no answer within TEMPAY_API_TIMEOUT; it goes on"}
}


def create_api_router(
    settings: Settings,
    temporal: TemporalSource,
    providers: dict[str, ProviderAdapter],
    book: Book | None = None,
) -> APIRouter:
    # HTTPBearer only describes the scheme in /openapi.json; ApiRoute enforces it.
    bearer = HTTPBearer(
        auto_error=False, scheme_name="apiKey", description="TEMPAY_API_KEY as a bearer token"
    )
    router = APIRouter(
        prefix="/api",
        tags=["api"],
        dependencies=[Security(bearer)],
        route_class=_route_class(settings),
        responses=ERRORS,
    )
    seconds = settings.api_timeout.total_seconds()

    async def within(call: Awaitable[T], late: str) -> T:
        try:
            return await asyncio.wait_for(call, seconds)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # Cancelled at the timeout, an update call raises the latter instead.
            raise ApiError(504, f"no answer within {seconds:g} s; {late}") from None

    def provider(named: str | None) -> str:
        name = chosen_provider(settings, named)
        if name not in providers:
            raise InvalidInput(
                f"unknown provider {name!r}: one of {', '.join(sorted(providers)) or 'none'}"
            )
        return name

    async def checkout(body: PaymentIn, kind: TransactionKind, **extra: Any) -> CheckoutInfo:
        order = build_order(
            settings,
            order_id=body.order_id,
            amount=body.amount,
            currency=body.currency,
            provider=provider(body.provider),
            channel=body.channel,
            subject=body.subject,
            return_url=body.return_url,
            kind=kind,
            payer_openid=body.payer_openid,
            payer_client_ip=body.payer_client_ip,
            **extra,
        )
        client = await temporal.get()
        return await within(
            start_payment(client, settings, order, book),
            f"order {order.order_id} is recorded and goes on once a worker runs: "
            f"GET /api/payments/{order.order_id}",
        )

    @router.post(
        "/payments",
        response_model=CheckoutInfo,
        responses={**CONFLICT, **TIMEOUT},
        summary="Start a payment (idempotent by order id)",
    )
    async def create_payment(body: PaymentIn) -> CheckoutInfo:
        """The same order again returns the same transaction and payment_url (200 both
        times); the same order id with other terms is 409."""
        return await checkout(body, TransactionKind.PAYMENT)

    @router.post(
        "/recharges",
        response_model=CheckoutInfo,
        responses={**CONFLICT, **TIMEOUT},
        summary="Top up an account (idempotent by order id)",
    )
    async def create_recharge(body: RechargeIn) -> CheckoutInfo:
        account_id = body.account_id.strip()
        if not account_id:
            raise InvalidInput("account_id must name the account to top up")
        if not body.subject:
            body = body.model_copy(update={"subject": f"Top up {account_id}"})
        return await checkout(body, TransactionKind.RECHARGE, account_id=account_id)

    @router.get(
        "/payments/{order_id}",
        response_model=PaymentView,
        responses=NOT_FOUND,
        summary="A payment or recharge, with its refunds",
    )
    async def get_payment(order_id: str) -> PaymentView:
        client = await temporal.get()
        return await within(payment_view(client, parse_order_id(order_id), book), "try again")

    @router.post(
        "/payments/{order_id}/refunds",
        status_code=201,
        response_model=RefundAccepted,
        responses={
            **NOT_FOUND,
            409: {
                "model": ErrorOut,
                "description": "more than is refundable, a payment not paid (or past its "
                "refund window), or this refund id with another amount or payment",
            },
            422: {
                "model": ErrorOut | RefusedRefundOut,
                "description": "invalid input, a currency other than the payment's, or the "
                "provider refused the refund (then the body is the refund, status FAILED)",
            },
            **TIMEOUT,
        },
        summary="Refund (part of) a paid payment (idempotent by refund id)",
    )
    async def create_refund(order_id: str, body: RefundIn) -> Any:
        """201 once the provider has the refund (PENDING, SUCCEEDED, or NEEDS_REVIEW when
        its answer needs a person); the same refund id and amount again returns the same
        refund."""
        order_id = parse_order_id(order_id)
        client = await temporal.get()
        if body.currency is not None:
            # Never refundable in another currency, whatever the payment's state: 422.
            currency = parse_currency(body.currency)
            payment = await within(payment_view(client, order_id, book), "try again")
            if currency != payment.currency:
                raise InvalidInput(
                    f"refund currency {currency} differs from order {order_id}'s {payment.currency}"
                )
        accepted = await within(
            start_refund(
                client,
                settings,
                order_id=order_id,
                refund_id=body.refund_id,
                amount=body.amount,
                currency=body.currency,
                reason=body.reason,
                book=book,
            ),
            f"refund {body.refund_id} is recorded and retried: GET /api/refunds/{body.refund_id}",
        )
        if accepted.status is TransactionStatus.FAILED:
            raise ApiError(
                422,
                f"the provider refused refund {accepted.refund_id}: {accepted.fail_reason}",
                accepted.model_dump(mode="json"),
            )
        return accepted

    @router.get(
        "/refunds/{refund_id}",
        response_model=RefundView,
        responses=NOT_FOUND,
        summary="A refund",
    )
    async def get_refund(refund_id: str) -> RefundView:
        client = await temporal.get()
        return await within(refund_view(client, parse_order_id(refund_id), book), "try again")

    @router.post(
        "/withdrawals",
        response_model=WithdrawalSubmitted,
        responses={**CONFLICT, **TIMEOUT},
        summary="Pay out to a payee (idempotent by withdrawal id)",
    )
    async def create_withdrawal(body: WithdrawalIn) -> WithdrawalSubmitted:
        """Returns once the provider holds the transfer (200 every time); the same
        withdrawal id with other terms is 409."""
        order = build_withdrawal(
            settings,
            withdrawal_id=body.withdrawal_id,
            amount=body.amount,
            currency=body.currency,
            payee_account=body.payee_account,
            payee_name=body.payee_name,
            provider=provider(body.provider),
        )
        client = await temporal.get()
        return await within(
            start_withdrawal(client, settings, order, book),
            f"withdrawal {order.withdrawal_id} is recorded and goes on once a worker runs: "
            f"GET /api/withdrawals/{order.withdrawal_id}",
        )

    @router.get(
        "/withdrawals/{withdrawal_id}",
        response_model=WithdrawalView,
        responses=NOT_FOUND,
        summary="A withdrawal",
    )
    async def get_withdrawal(withdrawal_id: str) -> WithdrawalView:
        client = await temporal.get()
        return await within(
            withdrawal_view(client, parse_order_id(withdrawal_id), book), "try again"
        )

    @router.get(
        "/reconciliations/{provider}/{day}",
        response_model=ReconciliationReport,
        responses=NOT_FOUND,
        summary="A provider's reconciliation of a day: counts and discrepancies",
    )
    async def get_reconciliation(provider: str, day: str) -> ReconciliationReport:
        """The report as the book holds it (`tempay reconcile` prints the same): the
        provider's own day (YYYY-MM-DD), counts by type, and each discrepancy with both
        sides and the action taken. 404 until the day has been compared."""
        name, when = parse_provider(provider), parse_day(day)
        if book is None:
            raise BookUnavailable("no book is open: reconciliations live only there")
        return await reconciliation_report(book, name, when)

    return router


__all__ = ["create_api_router"]
