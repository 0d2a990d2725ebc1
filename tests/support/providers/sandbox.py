"""The sandbox provider served for tests: the real sandbox app under uvicorn on 127.0.0.1, and
a tiny merchant receiver that records its notifications and verifies their signatures.

- `running_receiver()` serves a `Receiver`; `running_sandbox(data_dir, receiver, **faults)`
  serves the sandbox with its retry schedule shrunk, and yields a `Sandbox` client.
- `eventually(check)` waits (a few seconds at most) until the sandbox got somewhere.
- `sign_lines(key, *fields)` signs as WeChat Pay's JSAPI and APP parameter sets are signed,
  written here from WeChat's documentation rather than taken from the adapter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, Response

from providers.sandbox.app import create_app
from providers.sandbox.settings import SandboxSettings
from providers.sandbox.signature import SIGNATURE_HEADER, verify_body
from tempay.errors import SignatureError
from tests.support.stack import bound_socket, serve, url_of

# Alipay's 25-hour retry schedule shrinks to under a second.
TIME_SCALE = 0.000002
# How long `eventually` waits for the sandbox to get somewhere.
WAIT_SECONDS = 3.0
DEFAULT_FAULTS = {
    "drop_rate": 0,
    "duplicate_rate": 0,
    "reorder_window": 0,
    "delay_seconds": 0,
    "status_fail_rate": 0,
    "status_delay_seconds": 0,
    "refund_delay_seconds": 2,
    "transfer_delay_seconds": 2,
    "transfer_timeout_rate": 0,
    "transfer_timeout_seconds": 30,
    "transfer_error_rate": 0,
}


@dataclass
class Receiver:
    """The merchant's notify endpoint: verifies, records, and answers `fail` on request."""

    public_key: rsa.RSAPublicKey | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    # Each verified notification as sent: its headers (case-insensitive) and raw body.
    raw: list[tuple[Mapping[str, str], bytes]] = field(default_factory=list)
    rejected: int = 0
    # out_trade_no, out_request_no or out_biz_no -> how many more attempts to answer "fail"
    failures: dict[str, int] = field(default_factory=dict)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/notify")
        async def notify(request: Request) -> Response:
            body = await request.body()
            assert self.public_key is not None
            try:
                verify_body(self.public_key, body, request.headers.get(SIGNATURE_HEADER))
            except SignatureError:
                self.rejected += 1
                return Response("bad signature", status_code=400)
            notification = json.loads(body)
            self.received.append(notification)
            self.raw.append((request.headers, body))
            about = notification_subject(notification)
            if self.failures.get(about, 0) > 0:
                self.failures[about] -= 1
                return Response("fail")
            return Response("success\n", media_type="text/plain")

        return app

    @property
    def notify_url(self) -> str:
        return f"{self.url}/notify"

    def for_trade(self, out_trade_no: str) -> list[dict[str, Any]]:
        return [
            n
            for n in self.received
            if n["notify_type"] == "trade_status_sync" and n["out_trade_no"] == out_trade_no
        ]

    def about(self, subject: str) -> list[dict[str, Any]]:
        """Notifications about one trade, refund or transfer, by its merchant-side number."""
        return [n for n in self.received if notification_subject(n) == subject]


def notification_subject(notification: dict[str, Any]) -> str:
    """The merchant-side number a notification is about."""
    for key in ("out_request_no", "out_biz_no", "out_trade_no"):
        if key in notification:
            return str(notification[key])
    raise KeyError("notification names no out_*_no")


@dataclass
class Sandbox:
    url: str
    client: httpx.AsyncClient
    receiver: Receiver

    async def create(self, **overrides: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/payments", json=order_request(self.receiver, **overrides)
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def status(self, out_trade_no: str) -> dict[str, Any]:
        response = await self.client.get(f"/payments/{out_trade_no}")
        assert response.status_code == 200, response.text
        return response.json()

    async def deliveries(self, out_trade_no: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            "/sandbox/notifications", params={"out_trade_no": out_trade_no}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def pay(self, out_trade_no: str, **instruction: Any) -> httpx.Response:
        return await self.client.post(f"/sandbox/payments/{out_trade_no}/pay", json=instruction)


def order_request(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    return {
        "out_trade_no": f"order-{uuid.uuid4().hex[:12]}",
        "amount": "10.00",
        "currency": "cny",
        "subject": "Green tea",
        "body": "Two boxes of green tea",
        "channel": "alipay_wap",
        "return_url": "https://shop.example/orders/done",
        "notify_url": receiver.notify_url,
        **overrides,
    }


def sign_lines(key: rsa.RSAPrivateKey, *fields: str) -> str:
    """WeChat Pay's paySign / sign: SHA256 with RSA over the fields, one per line, each line
    ended by "\\n" (the last too), base64-encoded ("JSAPI调起支付", "APP调起支付")."""
    message = "".join(field + "\n" for field in fields).encode()
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify_lines(key: rsa.RSAPublicKey, signature: str, *fields: str) -> None:
    """Raises InvalidSignature unless `signature` is sign_lines(private half, *fields)."""
    message = "".join(field + "\n" for field in fields).encode()
    key.verify(base64.b64decode(signature), message, padding.PKCS1v15(), hashes.SHA256())


def sandbox_settings(data_dir: Path, sock: socket.socket, **overrides: Any) -> SandboxSettings:
    values = {"time_scale": TIME_SCALE, **overrides}
    return SandboxSettings(data_dir=data_dir, public_url=url_of(sock), **values)


async def fetch_public_key(client: httpx.AsyncClient) -> rsa.RSAPublicKey:
    response = await client.get("/keys/notify.pem")
    assert response.status_code == 200
    key = serialization.load_pem_public_key(response.content)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serve(receiver.app(), bound_socket()) as url:
        receiver.url = url
        yield receiver


@contextlib.asynccontextmanager
async def running_sandbox(
    data_dir: Path, receiver: Receiver, **overrides: Any
) -> AsyncIterator[Sandbox]:
    sock = bound_socket()
    app = create_app(sandbox_settings(data_dir, sock, **overrides))
    async with serve(app, sock) as url, httpx.AsyncClient(base_url=url) as client:
        receiver.public_key = await fetch_public_key(client)
        yield Sandbox(url, client, receiver)
