"""An in-process tempay stack for tests: real HTTP servers, a real worker, a real Temporal.

- `serve(app)` runs an ASGI app under uvicorn on 127.0.0.1 and yields its base URL.
- `running_stack(client, data_dir, task_queue)` runs the sandbox provider, the webhook
  service and a worker against `client`'s Temporal, wired the way `tempay dev` wires them.
- `start_payment(...)` starts a payment the way the CLI does (update-with-start), which the
  time-skipping test server does not support: use the dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client, WorkflowHandle

from providers.registry import build_adapters
from providers.sandbox.app import create_app as create_sandbox_app
from providers.sandbox.keys import ensure_keypair, load_private_key
from providers.sandbox.settings import SandboxSettings
from tempay import transactions
from tempay.domain import CheckoutInfo, PaymentView, SettlementTiming
from tempay.settings import Settings
from tempay.transactions import build_order
from tempay.worker import build_worker
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


# The stack


@dataclass(frozen=True)
class Stack:
    client: Client
    settings: Settings
    sandbox_settings: SandboxSettings
    sandbox_url: str
    webhook_url: str

    @property
    def notify_url(self) -> str:
        return f"{self.webhook_url}/notify/sandbox"

    def sandbox_private_key(self) -> rsa.RSAPrivateKey:
        private_path, _ = ensure_keypair(self.sandbox_settings.directory)
        return load_private_key(private_path)


def stack_settings(
    client: Client, data_dir: Path, task_queue: str, webhook_url: str, sandbox_url: str
) -> Settings:
    return Settings(
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        task_queue=task_queue,
        data_dir=data_dir,
        webhook_url=webhook_url,
        sandbox_url=sandbox_url,
        notification_max_bytes=64 * 1024,
        notification_tolerance=timedelta(minutes=5),
        signal_timeout=timedelta(seconds=5),
        **TEST_TIMINGS,
    )


@contextlib.asynccontextmanager
async def running_stack(
    client: Client, data_dir: Path, task_queue: str, **sandbox_overrides: Any
) -> AsyncIterator[Stack]:
    """Sandbox provider, webhook service and worker; everything stops when the block ends."""
    async with contextlib.AsyncExitStack() as stack:
        # Bind both sockets first: the settings (and the sandbox's payment_url links) need
        # the URLs. They close on the way out even if something below fails.
        sandbox_sock = stack.enter_context(bound_socket())
        webhook_sock = stack.enter_context(bound_socket())
        sandbox_url, webhook_url = url_of(sandbox_sock), url_of(webhook_sock)
        sandbox_settings = SandboxSettings(
            data_dir=data_dir,
            public_url=sandbox_url,
            **{"time_scale": SANDBOX_TIME_SCALE, **sandbox_overrides},
        )
        ensure_keypair(sandbox_settings.directory)
        settings = stack_settings(client, data_dir, task_queue, webhook_url, sandbox_url)
        await stack.enter_async_context(serve(create_sandbox_app(sandbox_settings), sandbox_sock))
        await stack.enter_async_context(serve(create_webhook_app(settings), webhook_sock))
        adapters = build_adapters(settings)
        for adapter in adapters.values():
            stack.push_async_callback(adapter.aclose)
        # The worker stops first (on exit, in reverse order), while the sandbox still answers.
        await stack.enter_async_context(build_worker(client, settings, adapters))
        yield Stack(
            client=client,
            settings=settings,
            sandbox_settings=sandbox_settings,
            sandbox_url=sandbox_url,
            webhook_url=webhook_url,
        )


# Starting payments the way the CLI does


async def start_payment(
    client: Client,
    settings: Settings,
    order_id: str,
    amount: str | Decimal = "10.00",
    currency: str = "CNY",
    timing: SettlementTiming | None = None,
) -> tuple[WorkflowHandle[PaymentWorkflow, PaymentView], CheckoutInfo]:
    """Start (or find) the order's workflow as `tempay pay` does; returns its handle too."""
    order = build_order(
        settings,
        order_id=order_id,
        amount=amount,
        currency=currency,
        subject=f"Test order {order_id}",
        return_url=f"https://shop.example/orders/{order_id}",
        timing=timing,
    )
    checkout = await transactions.start_payment(client, settings, order)
    handle = client.get_workflow_handle_for(PaymentWorkflow.run, order.workflow_id)
    return handle, checkout
