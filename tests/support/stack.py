"""An in-process tempay stack for tests: real HTTP servers, a real worker, a real Temporal.

- `serve(app)` runs an ASGI app under uvicorn on 127.0.0.1 and yields its base URL.
- `running_stack(client, data_dir, task_queue)` runs the sandbox provider, the webhook
  service and a worker against `client`'s Temporal, wired the way `tempay dev` wires them,
  plus a merchant application (`MerchantReceiver`) that the worker sends settled events to.
- `start_payment(...)` starts a payment the way the CLI does (update-with-start), which the
  time-skipping test server does not support: use the dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response
from temporalio.client import Client, WorkflowHandle

import transactions
from book import Book
from book.migrate import upgrade
from commands.worker import build_worker
from providers.base import ProviderAdapter
from providers.registry import build_adapters
from providers.sandbox.app import create_app as create_sandbox_app
from providers.sandbox.keys import ensure_keypair, load_private_key
from providers.sandbox.settings import SandboxClientSettings, SandboxSettings
from tempay.domain import CheckoutInfo, MerchantEvent, PaymentView, SettlementTiming
from tempay.errors import WebhookVerificationError
from tempay.merchant_webhooks import generate_secret, verify
from tempay.settings import Settings
from transactions import build_order
from webhook.app import create_app as create_webhook_app
from workflows.payment import PaymentWorkflow

# Alipay's ~25-hour notification retry schedule shrinks to about 9 seconds.
SANDBOX_TIME_SCALE = 0.0001

# Settlement timing for tests: a status query after about a second, no expiry during a
# test, and a short late-payment window so declined payments finish quickly.
TEST_TIMINGS: dict[str, Any] = {
    "first_status_query_delay": timedelta(seconds=1),
    "status_query_backoff_cap": timedelta(seconds=2),
    "payment_expiry": timedelta(minutes=5),
    "late_payment_window": timedelta(seconds=2),
    # Payments end at settlement unless a test opens a refund window of its own.
    "refund_window": timedelta(0),
    "review_window": timedelta(0),
}


# Serving ASGI apps


class InProcessServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # pytest keeps its own Ctrl-C handling.
        yield


def bound_socket() -> socket.socket:
    """A listening address known before the app is built (the sandbox needs its URL).

    Bound but not yet listening: until served, connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this; without it Nagle + delayed ACK cost ~40 ms a request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serve(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve `app` on `sock` (a fresh 127.0.0.1 port if None) until the block ends."""
    sock = sock or bound_socket()
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = InProcessServer(config)
    try:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()  # startup failed: raise its error
                    raise RuntimeError("server exited during startup")
                await asyncio.sleep(0.005)
            yield url_of(sock)
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()


# The merchant's application


@dataclass
class MerchantDelivery:
    """One POST the merchant's application received."""

    webhook_id: str
    answered: int
    headers: dict[str, str]
    body: dict[str, Any] | None  # the parsed JSON, when the signature verified
    error: str | None = None  # why verification failed


def _order_of(body: dict[str, Any]) -> str:
    """A transaction's event names its order; a reconciliation event its discrepancy's."""
    data = body["data"]
    return str(data.get("order_id") or (data.get("discrepancy") or {}).get("order_id"))


@dataclass
class MerchantReceiver:
    """The merchant's webhook endpoint: verifies each Standard Webhooks signature with
    `tempay.merchant_webhooks.verify`, records every delivery, and answers 500 to an order's
    first deliveries when told to (`refuse`)."""

    secret: str = field(default_factory=generate_secret)
    deliveries: list[MerchantDelivery] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)  # order id -> 500s still to give

    PATH = "/tempay/events"

    def refuse(self, order_id: str, times: int) -> None:
        self.refusals[order_id] = times

    def deliveries_for(self, order_id: str) -> list[MerchantDelivery]:
        return [d for d in self.deliveries if d.body is not None and _order_of(d.body) == order_id]

    def events_for(self, order_id: str) -> list[MerchantEvent]:
        """The events acknowledged (2xx) for an order, in order of arrival."""
        return [
            MerchantEvent.model_validate(d.body)
            for d in self.deliveries_for(order_id)
            if d.body is not None and 200 <= d.answered < 300
        ]

    def app(self) -> FastAPI:
        app = FastAPI(title="merchant")

        @app.post(self.PATH)
        async def receive(request: Request) -> Response:
            raw = await request.body()
            headers = dict(request.headers)
            webhook_id = headers.get("webhook-id", "")
            try:
                verify(self.secret, request.headers, raw)
            except WebhookVerificationError as exc:
                self.deliveries.append(MerchantDelivery(webhook_id, 401, headers, None, str(exc)))
                return Response(str(exc), status_code=401)
            body = json.loads(raw)
            order_id = _order_of(body)
            answered = 204
            if self.refusals.get(order_id, 0) > 0:
                self.refusals[order_id] -= 1
                answered = 500
            self.deliveries.append(MerchantDelivery(webhook_id, answered, headers, body))
            return Response("down for maintenance" if answered == 500 else None, answered)

        return app


# The stack


@dataclass(frozen=True)
class Stack:
    client: Client
    settings: Settings
    sandbox_settings: SandboxSettings
    sandbox_url: str
    webhook_url: str
    merchant: MerchantReceiver
    book: Book  # the system of record the worker writes and /api reads

    @property
    def notify_url(self) -> str:
        return f"{self.webhook_url}/notify/sandbox"

    def sandbox_private_key(self) -> rsa.RSAPrivateKey:
        private_path, _ = ensure_keypair(self.sandbox_settings.directory)
        return load_private_key(private_path)


def stack_settings(
    client: Client,
    data_dir: Path,
    task_queue: str,
    webhook_url: str,
    merchant_webhook_url: str | None = None,
    merchant_webhook_secret: str | None = None,
    **overrides: Any,
) -> Settings:
    return Settings(
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        task_queue=task_queue,
        data_dir=data_dir,
        webhook_url=webhook_url,
        notification_max_bytes=64 * 1024,
        notification_tolerance=timedelta(minutes=5),
        signal_timeout=timedelta(seconds=5),
        merchant_webhook_url=merchant_webhook_url,
        merchant_webhook_secret=merchant_webhook_secret,
        # Wired the way `tempay dev` wires it: the sandbox on, every route on one listener.
        **{"sandbox": True, "internal_on_webhook_port": True, **TEST_TIMINGS, **overrides},
    )


@contextlib.asynccontextmanager
async def running_stack(
    client: Client,
    data_dir: Path,
    task_queue: str,
    settings_overrides: dict[str, Any] | None = None,
    extra_adapters: dict[str, ProviderAdapter] | None = None,
    worker: bool = True,
    worker_extras: tuple[Sequence[type], Sequence[Callable[..., Any]]] = ((), ()),
    **sandbox_overrides: Any,
) -> AsyncIterator[Stack]:
    """Sandbox provider, webhook service, merchant and worker; all stop when the block ends.
    `settings_overrides` change tempay's settings (e.g. provider_timeout), `extra_adapters`
    add providers (e.g. an adapter pointed at a test's fake provider API) to the webhook and
    the worker, `worker=False` leaves the worker to the test (e.g. a `tempay worker` process),
    `worker_extras` are (workflows, activities) the worker also runs (e.g. the benchmarks'
    baselines: proof/worker.py), the other keyword arguments change the sandbox's settings."""
    async with contextlib.AsyncExitStack() as stack:
        # Bind the sockets first: the settings (and the sandbox's payment_url links) need
        # the URLs. They close on the way out even if something below fails.
        sandbox_sock = stack.enter_context(bound_socket())
        webhook_sock = stack.enter_context(bound_socket())
        merchant_sock = stack.enter_context(bound_socket())
        sandbox_url, webhook_url = url_of(sandbox_sock), url_of(webhook_sock)
        merchant = MerchantReceiver()
        sandbox_settings = SandboxSettings(
            data_dir=data_dir,
            public_url=sandbox_url,
            **{"time_scale": SANDBOX_TIME_SCALE, **sandbox_overrides},
        )
        ensure_keypair(sandbox_settings.directory)
        settings = stack_settings(
            client,
            data_dir,
            task_queue,
            webhook_url,
            merchant_webhook_url=url_of(merchant_sock) + MerchantReceiver.PATH,
            merchant_webhook_secret=merchant.secret,
            **(settings_overrides or {}),
        )
        # The book, as `tempay dev` makes it: created in the data dir before anything runs.
        book = Book.from_settings(settings)
        upgrade(book)
        stack.callback(book.close)
        sandbox_client = SandboxClientSettings(url=sandbox_url)
        adapters = {
            **build_adapters(settings, {"sandbox": sandbox_client}),
            **(extra_adapters or {}),
        }
        for adapter in adapters.values():
            stack.push_async_callback(adapter.aclose)
        await stack.enter_async_context(serve(create_sandbox_app(sandbox_settings), sandbox_sock))
        await stack.enter_async_context(serve(create_webhook_app(settings, adapters), webhook_sock))
        await stack.enter_async_context(serve(merchant.app(), merchant_sock))
        # The worker stops first (on exit, in reverse order), while the sandbox still answers.
        if worker:
            await stack.enter_async_context(
                build_worker(client, settings, adapters, *worker_extras, book=book)
            )
        yield Stack(
            client=client,
            settings=settings,
            sandbox_settings=sandbox_settings,
            sandbox_url=sandbox_url,
            webhook_url=webhook_url,
            merchant=merchant,
            book=book,
        )


# Starting payments the way the CLI does


async def start_payment(
    client: Client,
    settings: Settings,
    order_id: str,
    amount: str | Decimal = "10.00",
    currency: str = "CNY",
    timing: SettlementTiming | None = None,
    provider: str = "sandbox",
    channel: str | None = None,
    payer_openid: str | None = None,
    payer_client_ip: str | None = None,
) -> tuple[WorkflowHandle[PaymentWorkflow, PaymentView], CheckoutInfo]:
    """Start (or find) the order's workflow as `tempay pay` does; returns its handle too."""
    order = build_order(
        settings,
        order_id=order_id,
        amount=amount,
        currency=currency,
        provider=provider,
        channel=channel,
        subject=f"Test order {order_id}",
        return_url=f"https://shop.example/orders/{order_id}",
        timing=timing,
        payer_openid=payer_openid,
        payer_client_ip=payer_client_ip,
    )
    checkout = await transactions.start_payment(client, settings, order)
    handle: WorkflowHandle[PaymentWorkflow, PaymentView] = client.get_workflow_handle(
        order.workflow_id, result_type=PaymentView
    )
    return handle, checkout
