"""FastAPI service: verify provider notifications, signal the workflow, then acknowledge.

A notification is acknowledged only after Temporal accepted the signal; when Temporal
cannot be reached the answer is 503, so the provider keeps retrying and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Literal
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.requests import ClientDisconnect
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from book import Book
from book.migrate import reading_book
from providers.base import ProviderAdapter, ProviderObservation
from providers.registry import build_adapters
from tempay import search_attributes as sa
from tempay.domain import (
    PaymentObservation,
    ProviderPaymentState,
    RefundObservation,
    TransactionStatus,
    TransferObservation,
    parse_order_id,
    payment_workflow_id,
    refund_workflow_id,
    withdrawal_workflow_id,
)
from tempay.errors import BookUnavailable, InvalidInput, NotificationError, TemporalUnavailable
from tempay.logs import configure_logging
from tempay.settings import Settings, get_settings
from tempay.temporal import connect, connect_config
from tempay.tracing import fastapi_telemetry, start_tracing
from webhook import server
from webhook.api import create_api_router
from webhook.codec import create_codec_app
from webhook.metrics import ACK_LATENCY, NOTIFICATIONS
from webhook.server import BufferedBody, Listener, ListenError

log = logging.getLogger("tempay.webhook")

# Largest body of any route but /notify (notification_max_bytes) and /codec (CODEC_MAX_BYTES):
# the /api requests are a few hundred bytes.
REQUEST_MAX_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


async def read_body(request: Request, limit: int, within: float | None = None) -> bytes:
    """The raw body, refusing anything over `limit` bytes without reading it all, and any
    body that has not fully arrived `within` seconds (a stalled or trickling sender
    would otherwise hold its connection and request forever)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)


class TemporalConnection:
    """Connects lazily and again after failures, so the service starts before Temporal.

    Each attempt has TEMPAY_SIGNAL_TIMEOUT to finish, and every caller meanwhile (on any
    listener) awaits that one attempt rather than queueing for its own: a Temporal address
    that accepts and never answers costs each request at most that long, then
    TemporalUnavailable (503: the provider retries). A failed attempt is dropped, so the
    next caller tries again."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self._attempt: asyncio.Task[Client] | None = None

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        if self._attempt is None:
            self._attempt = asyncio.create_task(self._connect())
            self._attempt.add_done_callback(self._attempt_done)
        # Shielded: a caller that gives up (its client left) does not cancel the others'.
        return await asyncio.shield(self._attempt)

    async def _connect(self) -> Client:
        within = self._settings.signal_timeout.total_seconds()
        try:
            async with asyncio.timeout(within):
                return await connect(self._settings)
        except TimeoutError:
            raise TemporalUnavailable(
                f"cannot reach Temporal at {connect_config(self._settings)['target_host']}: "
                "no answer "
                f"within {within:g} s (TEMPAY_SIGNAL_TIMEOUT)"
            ) from None

    def _attempt_done(self, attempt: asyncio.Task[Client]) -> None:
        # Here, not in get(): the outcome is kept even when every caller has given up.
        self._attempt = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._client = attempt.result()


CLOSED_UNPAID = (TransactionStatus.FAILED, TransactionStatus.EXPIRED)


def _acknowledge(adapter: ProviderAdapter) -> Response:
    ack = adapter.acknowledgement()
    return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)


def _refuse(adapter: ProviderAdapter, status: int, message: str) -> Response:
    answer = adapter.refusal(status, message)
    return Response(answer.body, status_code=answer.status_code, media_type=answer.media_type)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_public_app(
    settings: Settings, adapters: dict[str, ProviderAdapter], temporal: TemporalConnection
) -> FastAPI:
    """What providers call: `POST /notify/{provider}` and `GET /healthz`, nothing else (no
    /api, /codec, /metrics, nor an OpenAPI document). The caller closes the adapters."""
    return _create(settings, adapters, temporal, public=True, internal=False)


def create_internal_app(
    settings: Settings, adapters: dict[str, ProviderAdapter], temporal: TemporalConnection
) -> FastAPI:
    """For the merchant's systems and operators: /api, /codec, /metrics, /healthz and /readyz.
    The caller closes the adapters."""
    return _create(settings, adapters, temporal, public=False, internal=True)


def _create(
    settings: Settings,
    adapters: dict[str, ProviderAdapter],
    temporal: TemporalConnection,
    *,
    public: bool,
    internal: bool,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """An app with the public routes, the internal ones, or both (one listener)."""
    app = FastAPI(
        title="tempay webhook" if public else "tempay webhook (internal)",
        lifespan=lifespan,
        # The OpenAPI document describes /api: served only where /api is (FastAPI's paths).
        openapi_url="/openapi.json" if internal else None,
        docs_url="/docs" if internal else None,
        redoc_url="/redoc" if internal else None,
        # Spans once tracing is on (tempay/tracing.py); none of probes or scrapes.
        telemetry=fastapi_telemetry(),
    )
    if internal:
        _add_internal(app, settings, adapters, temporal)
    _add_healthz(app)
    if public:
        _add_notify(app, settings, adapters, temporal)
    _buffer_bodies(app, settings)
    return app


def create_app(
    settings: Settings | None = None, adapters: dict[str, ProviderAdapter] | None = None
) -> FastAPI:
    """Every route in one app (TEMPAY_INTERNAL_ON_WEBHOOK_PORT, as under `tempay dev`); it
    closes the adapters when it stops."""
    settings = settings or get_settings()
    providers = adapters if adapters is not None else build_adapters(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await close_adapters(providers)

    temporal = TemporalConnection(settings)
    return _create(settings, providers, temporal, public=True, internal=True, lifespan=lifespan)


async def close_adapters(adapters: dict[str, ProviderAdapter]) -> None:
    for adapter in adapters.values():
        await adapter.aclose()


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _add_healthz(app: FastAPI) -> None:
    app.add_api_route("/healthz", healthz, methods=["GET"])


def _add_internal(
    app: FastAPI,
    settings: Settings,
    adapters: dict[str, ProviderAdapter],
    temporal: TemporalConnection,
) -> None:
    # Reads of closed transactions after Temporal's retention come from the book.
    book, not_open = _reading_book(settings)
    app.include_router(create_api_router(settings, temporal, adapters, book))  # /api
    app.mount("/codec", create_codec_app(settings))  # Temporal UI/CLI codec (webhook/codec.py)
    app.add_api_route("/metrics", metrics, methods=["GET"])
    _add_readyz(app, settings, temporal, BookCheck(book, not_open))


# Readiness: GET /readyz

# Each check's time (they run side by side): within a probe's usual timeout of a few seconds.
READY_TIMEOUT = 2.0


class Readiness(BaseModel):
    """`GET /readyz`: "ready" when every check is "ok", else each failing check's reason."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str]


def _reading_book(settings: Settings) -> tuple[Book | None, str]:
    """The book /api reads (None: it answers from Temporal alone) and, for /readyz when it is
    None, why. /api keeps what it got at start, so readiness says so until a restart."""
    warnings: list[str] = []

    def warn(message: str) -> None:
        log.warning(message)
        warnings.append(message)

    book = reading_book(settings, warn)
    why = warnings[0] if warnings else "the book has no database yet: run `tempay db upgrade`"
    return book, f"not opened at start ({why}); restart the webhook once the book answers"


class BookCheck:
    """The book's half of /readyz: a `SELECT 1` (Book.ping) in a daemon thread of its own, one
    at a time. A database that never answers (a black-holed address: a connect can hang for
    minutes) then holds one thread however often the probe asks, never a thread /api's reads
    need, nor the process's exit; each probe waits at most READY_TIMEOUT for it."""

    def __init__(self, book: Book | None, not_open: str) -> None:
        self._book = book
        self._not_open = not_open
        self._ping: asyncio.Future[None] | None = None

    async def check(self) -> None:
        if self._book is None:
            raise BookUnavailable(self._not_open)
        if self._ping is None:
            self._ping = self._start(self._book)
        # Shielded: a probe that times out leaves the ping to the next one.
        await asyncio.shield(self._ping)

    def _start(self, book: Book) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        ping: asyncio.Future[None] = loop.create_future()

        def settle(error: Exception | None) -> None:
            self._ping = None
            if ping.done():
                return
            if error is None:
                ping.set_result(None)
            else:
                ping.set_exception(error)

        def run() -> None:
            error: Exception | None = None
            try:
                book.ping()
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=run, name="tempay-readyz-book", daemon=True).start()
        return ping


async def _temporal_check(temporal: TemporalConnection) -> None:
    """Temporal answers for tempay's namespace: DescribeNamespace, one cheap read (it also
    fails on a wrong namespace or credentials, which a bare gRPC health check would not)."""
    client = await temporal.get()
    await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace),
        timeout=timedelta(seconds=READY_TIMEOUT),
    )


class Redactor:
    """A failure as /readyz tells it: one line, without any secret in the settings (the
    database URL, its password, API and codec keys) nor any URL (a connection string)."""

    URL = re.compile(r"\(?\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s)]*\)?")
    PASSWORD = re.compile(r"(password\s*[=:]\s*)\S+", re.IGNORECASE)
    MAX_CHARS = 300

    def __init__(self, settings: Settings) -> None:
        secrets = set()
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                secrets.add(value.get_secret_value())
        if settings.database_url is not None:
            with contextlib.suppress(ValueError):
                password = urlsplit(settings.database_url.get_secret_value()).password
                if password:
                    secrets |= {password, unquote(password)}
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, exc: BaseException) -> str:
        lines = str(exc).strip().splitlines()
        line = lines[0] if lines else type(exc).__name__
        for secret in self._secrets:
            line = line.replace(secret, "***")
        line = self.PASSWORD.sub(r"\1***", self.URL.sub("", line))
        line = " ".join(line.split())
        return line if len(line) <= self.MAX_CHARS else line[: self.MAX_CHARS - 3] + "..."


def _add_readyz(
    app: FastAPI, settings: Settings, temporal: TemporalConnection, book: BookCheck
) -> None:
    """`GET /readyz`, on the internal listener only (and the one listener that serves every
    route). It asks Temporal and the book (side by side, each for at most READY_TIMEOUT):
    200 with every check "ok", else 503 with each failing check's one-line reason, never a
    connection string or a secret.

    Not on the public listener, and not what a load balancer in front of it should probe (it
    probes /healthz): notifications need Temporal only, and when Temporal is down every
    instance is (it is one cluster), answering 503 so the provider retries, which taking them
    out of rotation would not improve; a book that is down stops no notification at all.
    And whether tempay's database answers is nobody's business who can reach the
    notification URL. /healthz stays liveness (the process answers), which is what a
    restart can fix; /readyz says whether the merchant's systems and operators are served
    in full (/api falls back to Temporal alone without the book), for their probes,
    monitoring and dashboards."""
    redact = Redactor(settings)

    async def outcome(check: Callable[[], Awaitable[None]], who: str) -> str:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await check()
        except TimeoutError:
            return f"{who} did not answer within {READY_TIMEOUT:g} s"
        except Exception as exc:
            return redact(exc)
        return "ok"

    async def readyz() -> JSONResponse:
        temporal_says, book_says = await asyncio.gather(
            outcome(lambda: _temporal_check(temporal), "Temporal"),
            outcome(book.check, "the book"),
        )
        checks = {"temporal": temporal_says, "book": book_says}
        ready = all(said == "ok" for said in checks.values())
        answer = Readiness(status="ready" if ready else "not ready", checks=checks)
        return JSONResponse(answer.model_dump(), status_code=200 if ready else 503)

    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Temporal or the book not answering"}},
    )


def _buffer_bodies(app: FastAPI, settings: Settings) -> None:
    """Every body is in memory before its route runs (webhook/server.py), except those of
    /notify (read_body: refusals shaped per provider) and /codec (its own cap, inside CORS)."""
    app.add_middleware(
        BufferedBody,
        max_bytes=REQUEST_MAX_BYTES,
        timeout=settings.notification_read_timeout.total_seconds(),
        exempt=("/notify/", "/codec/"),
    )


def _add_notify(
    app: FastAPI,
    settings: Settings,
    providers: dict[str, ProviderAdapter],
    temporal: TemporalConnection,
) -> None:
    @app.post("/notify/{provider}")
    async def notify(provider: str, request: Request) -> Response:
        started = time.perf_counter()
        adapter = providers.get(provider)
        if adapter is None:
            NOTIFICATIONS.labels("unknown", "unknown_provider").inc()
            return _error(404, f"unknown provider {provider!r}")
        response, outcome = await _handle_notification(adapter, request)
        NOTIFICATIONS.labels(provider, outcome).inc()
        if outcome in ("signalled", "already_settled", "late_money"):
            ACK_LATENCY.labels(provider).observe(time.perf_counter() - started)
        return response

    async def _handle_notification(
        adapter: ProviderAdapter, request: Request
    ) -> tuple[Response, str]:
        read_timeout = settings.notification_read_timeout.total_seconds()
        try:
            body = await read_body(request, settings.notification_max_bytes, read_timeout)
        except BodyTooLarge:
            return _refuse(
                adapter, 413, f"body over {settings.notification_max_bytes} bytes"
            ), "too_large"
        except BodyTooSlow:
            return _refuse(adapter, 408, f"body not received within {read_timeout:g} s"), "too_slow"
        except ClientDisconnect:
            # Nobody is left to read an answer; counted, and not an error of ours.
            return _refuse(adapter, 400, "client disconnected mid-body"), "disconnected"
        try:
            # Named by the route whose key verified it, never by what the body claims.
            observation = adapter.parse_any_notification(request.headers, body).reported_by(
                adapter.name
            )
            if isinstance(observation, TransferObservation):
                workflow_id = withdrawal_workflow_id(parse_order_id(observation.withdrawal_id))
            elif isinstance(observation, RefundObservation):
                workflow_id = refund_workflow_id(parse_order_id(observation.refund_id))
            else:
                workflow_id = payment_workflow_id(parse_order_id(observation.order_id))
        except NotificationError as exc:
            if exc.http_status < 300:
                # Verified, but about nothing tempay tracks: acknowledged so it is not resent.
                log.info("%s notification ignored: %s", adapter.name, exc)
                return _refuse(adapter, exc.http_status, str(exc)), "ignored"
            log.warning("%s notification refused: %s", adapter.name, exc)
            outcome = {401: "bad_signature", 503: "unverifiable"}.get(exc.http_status, "malformed")
            return _refuse(adapter, exc.http_status, str(exc)), outcome
        except (ValidationError, InvalidInput) as exc:
            return _refuse(adapter, 400, f"malformed notification: {exc}"), "malformed"
        except RecursionError:
            # JSON nested past the parser's limit (json.loads raises this, not a ValueError).
            return _refuse(adapter, 400, "malformed notification: nested too deeply"), "malformed"
        ids = {"workflow_id": workflow_id, "provider": adapter.name}
        try:
            client = await temporal.get()
            handle = client.get_workflow_handle(workflow_id)
            await handle.signal("notify", observation, rpc_timeout=settings.signal_timeout)
        except TemporalUnavailable as exc:
            log.error("notification for %s not held: %s", workflow_id, exc, extra=ids)
            return _refuse(
                adapter, 503, "Temporal unavailable, retry later"
            ), "temporal_unavailable"
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                log.error("signal to %s failed: %s", workflow_id, exc, extra=ids)
                return _refuse(
                    adapter, 503, "Temporal unavailable, retry later"
                ), "temporal_unavailable"
            return await _closed_or_unknown(adapter, client, workflow_id, observation)
        return _acknowledge(adapter), "signalled"

    async def _closed_or_unknown(
        adapter: ProviderAdapter,
        client: Client,
        workflow_id: str,
        observation: ProviderObservation,
    ) -> tuple[Response, str]:
        """A signal is refused both for finished workflows and for ones that never existed."""
        ids = {"workflow_id": workflow_id, "provider": adapter.name}
        try:
            description = await client.get_workflow_handle(workflow_id).describe(
                rpc_timeout=settings.signal_timeout
            )
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                log.warning(
                    "notification for unknown transaction %s ignored", workflow_id, extra=ids
                )
                return _refuse(adapter, 404, f"unknown order ({workflow_id})"), "unknown_order"
            return _refuse(
                adapter, 503, "Temporal unavailable, retry later"
            ), "temporal_unavailable"
        attributes = description.typed_search_attributes
        made_with = attributes.get(sa.PROVIDER)
        if made_with != adapter.name:
            # Another provider's transaction: this one has nothing to say about it.
            log.warning(
                "%s notification for %s, a %s transaction, refused",
                adapter.name,
                workflow_id,
                made_with,
                extra=ids,
            )
            return _refuse(adapter, 404, f"unknown order ({workflow_id})"), "other_provider"
        status = attributes.get(sa.PAYMENT_STATUS)
        if (
            isinstance(observation, PaymentObservation)
            and observation.state is ProviderPaymentState.PAID
            and status in CLOSED_UNPAID
        ):
            # Past the workflow's late-payment window: acknowledged so the provider stops,
            # and raised loudly (log and metric) because the money needs a person.
            log.error(
                "money arrived for %s transaction %s after its late-payment window: "
                "%s %s (provider trade %s); review and refund by hand",
                status,
                workflow_id,
                observation.amount,
                observation.currency,
                observation.provider_trade_no,
                extra=ids,
            )
            return _acknowledge(adapter), "late_money"
        log.info(
            "notification for settled %s acknowledged; nothing changes", workflow_id, extra=ids
        )
        return _acknowledge(adapter), "already_settled"


def webhook_listeners(settings: Settings, adapters: dict[str, ProviderAdapter]) -> list[Listener]:
    """What `tempay webhook` serves: the public listener (webhook host and port) and the
    internal one, or a single listener with every route when TEMPAY_INTERNAL_ON_WEBHOOK_PORT
    is set. The caller closes the adapters once they stop."""
    temporal = TemporalConnection(settings)
    public = (settings.webhook_host, settings.webhook_port)
    if settings.internal_on_webhook_port:
        every_route = _create(settings, adapters, temporal, public=True, internal=True)
        return [Listener("webhook", every_route, *public)]
    internal = (settings.internal_host, settings.internal_port)
    if internal == public:
        raise ListenError(
            f"TEMPAY_INTERNAL_PORT is the webhook's own address ({internal[0]}:{internal[1]}): "
            "choose another, or set TEMPAY_INTERNAL_ON_WEBHOOK_PORT=true to serve /api, "
            "/codec and /metrics to whoever can reach the notification URL"
        )
    return [
        Listener("public", create_public_app(settings, adapters, temporal), *public),
        Listener("internal", create_internal_app(settings, adapters, temporal), *internal),
    ]


async def serve_webhook(settings: Settings) -> None:
    adapters = build_adapters(settings)
    try:
        await server.serve(webhook_listeners(settings, adapters), settings)
    finally:
        await close_adapters(adapters)


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    start_tracing("webhook")
    try:
        asyncio.run(serve_webhook(settings))
    except ListenError as exc:
        raise SystemExit(f"tempay: error: {exc}") from None


__all__ = [
    "create_app",
    "create_internal_app",
    "create_public_app",
    "main",
    "serve_webhook",
    "webhook_listeners",
]
