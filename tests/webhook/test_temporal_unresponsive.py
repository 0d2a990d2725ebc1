"""A Temporal address that accepts connections and never answers (a wedged server, a black-hole
proxy), with the webhook served as `tempay webhook` serves it: every route that needs Temporal
answers within seconds, a validly signed notification gets 503 (so the provider retries), and
once Temporal answers again the next request connects."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from providers.registry import build_adapters
from providers.sandbox.keys import ensure_keypair, load_private_key, public_key_file
from providers.sandbox.notifier import utc_iso
from providers.sandbox.settings import SandboxClientSettings
from providers.sandbox.signature import SIGNATURE_HEADER, sign_body
from tempay.settings import Settings
from tests.support.listeners import serve_listeners
from webhook.app import close_adapters, webhook_listeners

API_KEY = "unresponsive-test-key-0123456789"
SIGNAL_TIMEOUT = timedelta(seconds=1)
# Far above SIGNAL_TIMEOUT: an answer later than this is a hang (before the fix the first of
# three notifications failed after 30 s, the third after 90 s).
HANG = 15.0
CONCURRENT = 4


class TemporalBehindAProxy:
    """A 127.0.0.1 listener in front of Temporal: while `holding`, it accepts each connection
    and never answers; otherwise it forwards the connection to `target` (host:port)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.holding = True
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def __aenter__(self) -> TemporalBehindAProxy:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            if self.holding:
                await reader.read()  # whatever the client sends, never a byte back
                return
            host, port = self.target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            pass  # either side went away: the connection ends
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture
async def proxy(dev_env: WorkflowEnvironment) -> AsyncIterator[TemporalBehindAProxy]:
    async with TemporalBehindAProxy(dev_env.client.service_client.config.target_host) as proxy:
        yield proxy


@pytest.fixture
async def webhook(
    tmp_path: Path, dev_env: WorkflowEnvironment, proxy: TemporalBehindAProxy
) -> AsyncIterator[dict[str, str]]:
    """The public and internal listeners of a webhook whose Temporal is behind `proxy`."""
    ensure_keypair(tmp_path / "sandbox")
    settings = Settings(
        data_dir=tmp_path,
        sandbox=True,
        temporal_address=proxy.address,
        temporal_namespace=dev_env.client.namespace,
        signal_timeout=SIGNAL_TIMEOUT,
        api_key=SecretStr(API_KEY),
    )
    assert public_key_file(tmp_path).is_file()
    # The sandbox is never called: notifications are verified locally.
    adapters = build_adapters(
        settings, {"sandbox": SandboxClientSettings(url="http://127.0.0.1:1")}
    )
    try:
        async with serve_listeners(webhook_listeners(settings, adapters), settings) as urls:
            yield urls
    finally:
        await close_adapters(adapters)


def signed_notification(data_dir: Path, order_id: str) -> tuple[bytes, dict[str, str]]:
    """A paid notification for `order_id`, signed with the sandbox's key as the sandbox would."""
    key = load_private_key(data_dir / "sandbox" / "notify_private.pem")
    body = json.dumps(
        {
            "notify_id": uuid.uuid4().hex,
            "notify_time": utc_iso(datetime.now(UTC)),
            "notify_type": "trade_status_sync",
            "out_trade_no": order_id,
            "trade_no": f"SBX{uuid.uuid4().hex[:20].upper()}",
            "trade_status": "TRADE_SUCCESS",
            "total_amount": "10.00",
            "receipt_amount": "10.00",
            "currency": "CNY",
            "gmt_payment": utc_iso(datetime.now(UTC)),
        },
        separators=(",", ":"),
    ).encode()
    return body, {SIGNATURE_HEADER: sign_body(key, body), "Content-Type": "application/json"}


async def notify(url: str, data_dir: Path, order_id: str) -> httpx.Response:
    body, headers = signed_notification(data_dir, order_id)
    async with httpx.AsyncClient(base_url=url, timeout=HANG) as http:
        return await http.post("/notify/sandbox", content=body, headers=headers)


async def get_payment(url: str, order_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=HANG) as http:
        return await http.get(f"/api/payments/{order_id}", headers=headers)


async def answered(request: Awaitable[httpx.Response]) -> httpx.Response:
    """The answer, or a failure naming the hang (httpx's read timeout is HANG)."""
    try:
        return await request
    except httpx.TimeoutException:
        raise AssertionError(f"no answer within {HANG:g} s: the request hung") from None


async def test_an_unresponsive_temporal_gets_503_at_once_on_every_route(
    webhook: dict[str, str], proxy: TemporalBehindAProxy, tmp_path: Path
) -> None:
    public, internal = webhook["public"], webhook["internal"]
    orders = [f"held-{uuid.uuid4().hex[:8]}" for _ in range(CONCURRENT)]
    # Concurrent callers on both listeners, all needing the one connection to Temporal.
    answers = await asyncio.gather(
        *(answered(notify(public, tmp_path, order)) for order in orders),
        answered(get_payment(internal, orders[0])),
    )
    for response in answers[:-1]:
        assert response.status_code == 503, response.text
        assert "Temporal unavailable" in response.json()["error"]
    api = answers[-1]
    assert api.status_code == 503, api.text
    assert "cannot reach Temporal" in api.json()["error"]
    assert proxy.accepted >= 1  # the webhook did reach the address, which never answered

    # A failed attempt is not kept: the next notification tries again, and fails in time too.
    again = await answered(notify(public, tmp_path, orders[0]))
    assert again.status_code == 503, again.text


async def test_once_temporal_answers_the_next_request_connects(
    webhook: dict[str, str], proxy: TemporalBehindAProxy, tmp_path: Path
) -> None:
    order = f"held-{uuid.uuid4().hex[:8]}"
    held = await answered(notify(webhook["public"], tmp_path, order))
    assert held.status_code == 503, held.text

    proxy.holding = False
    # Temporal now answers: no workflow has this order, which only Temporal can say.
    unknown = await answered(notify(webhook["public"], tmp_path, order))
    assert unknown.status_code == 404, unknown.text
    assert "unknown order" in unknown.json()["error"]
    missing = await answered(get_payment(webhook["internal"], order))
    assert missing.status_code == 404, missing.text
