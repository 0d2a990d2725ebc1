"""The webhook's two listeners over real HTTP, served as `tempay webhook` serves them: which
routes each one has, and how every route treats slow, stalled and oversized senders (header
timeout, body deadline, size caps, connection limit). No Temporal is needed: nothing here
gets as far as a signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from providers.base import ProviderAdapter
from providers.stripe.adapter import StripeAdapter
from tempay.settings import Settings
from tests.support.listeners import HANG, RawRequest, head, serve_listeners
from webhook import server
from webhook.app import REQUEST_MAX_BYTES, close_adapters, webhook_listeners
from webhook.codec import CODEC_MAX_BYTES
from webhook.server import ListenError

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
API_KEY = "listeners-test-key-0123456789"
# Well past any timeout above: what "answered within seconds, not hung" means here.
PROMPT = 10.0

INTERNAL_ROUTES = [
    ("GET", "/metrics"),
    ("POST", "/api/payments"),
    ("GET", "/api/payments/A1"),
    ("POST", "/codec/encode"),
    ("POST", "/codec/decode"),
]


def listener_settings(data_dir: Path, **changes: Any) -> Settings:
    return Settings(
        **{
            "data_dir": data_dir,
            "sandbox": False,
            "temporal_address": "127.0.0.1:1",  # never reached by these requests
            "api_key": SecretStr(API_KEY),
            "http_header_timeout": timedelta(seconds=HEADER_TIMEOUT),
            "notification_read_timeout": timedelta(seconds=BODY_TIMEOUT),
            **changes,
        }
    )


def stripe_adapter() -> StripeAdapter:
    # Verifies signatures locally; its API (never called here) is a closed port.
    return StripeAdapter("sk_test_listeners", ["whsec_listeners"], api_base="http://127.0.0.1:1")


@pytest.fixture
def adapters() -> Iterator[dict[str, ProviderAdapter]]:
    adapters: dict[str, ProviderAdapter] = {"stripe": stripe_adapter()}
    yield adapters


async def served(
    settings: Settings, adapters: dict[str, ProviderAdapter]
) -> AsyncIterator[dict[str, str]]:
    try:
        async with serve_listeners(webhook_listeners(settings, adapters), settings) as urls:
            yield urls
    finally:
        await close_adapters(adapters)


@pytest.fixture
async def split(
    tmp_path: Path, adapters: dict[str, ProviderAdapter]
) -> AsyncIterator[dict[str, str]]:
    async for urls in served(listener_settings(tmp_path), adapters):
        yield urls


@pytest.fixture
async def combined(
    tmp_path: Path, adapters: dict[str, ProviderAdapter]
) -> AsyncIterator[dict[str, str]]:
    settings = listener_settings(tmp_path, internal_on_webhook_port=True)
    async for urls in served(settings, adapters):
        yield urls


async def call(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=PROMPT) as http:
        return await http.request(method, path, **kwargs)


# Which listener serves what


async def test_the_public_listener_serves_notifications_and_healthz_only(
    split: dict[str, str],
) -> None:
    public = split["public"]
    for method, path in [*INTERNAL_ROUTES, ("GET", "/openapi.json"), ("GET", "/docs")]:
        response = await call(public, method, path, json={"payloads": []})
        assert response.status_code == 404, (method, path)
    assert (await call(public, "GET", "/healthz")).json() == {"status": "ok"}
    unsigned = await call(public, "POST", "/notify/stripe", content=b"{}")
    assert unsigned.status_code == 401  # reached the adapter: no Stripe-Signature header


async def test_the_internal_listener_serves_api_codec_metrics_and_healthz(
    split: dict[str, str],
) -> None:
    internal = split["internal"]
    assert (await call(internal, "GET", "/healthz")).status_code == 200
    metrics = await call(internal, "GET", "/metrics")
    assert metrics.status_code == 200 and "tempay_notifications_total" in metrics.text
    decoded = await call(internal, "POST", "/codec/decode", json={"payloads": []})
    assert decoded.json() == {"payloads": []}
    assert (await call(internal, "GET", "/api/payments/A1")).status_code == 401  # no key
    assert (await call(internal, "GET", "/openapi.json")).status_code == 200
    # Notifications are the public listener's alone.
    assert (await call(internal, "POST", "/notify/stripe", content=b"{}")).status_code == 404


async def test_one_listener_serves_everything_when_asked(combined: dict[str, str]) -> None:
    assert list(combined) == ["webhook"]
    url = combined["webhook"]
    assert (await call(url, "GET", "/healthz")).status_code == 200
    assert (await call(url, "GET", "/metrics")).status_code == 200
    assert (await call(url, "POST", "/codec/decode", json={"payloads": []})).status_code == 200
    assert (await call(url, "GET", "/api/payments/A1")).status_code == 401
    assert (await call(url, "POST", "/notify/stripe", content=b"{}")).status_code == 401


def test_the_internal_listener_cannot_share_the_public_address(tmp_path: Path) -> None:
    settings = listener_settings(tmp_path, internal_port=8000, webhook_port=8000)
    with pytest.raises(ListenError, match="TEMPAY_INTERNAL_ON_WEBHOOK_PORT"):
        webhook_listeners(settings, {})


# Request heads


async def test_a_trickled_head_gets_408_and_is_closed(split: dict[str, str]) -> None:
    def trickle() -> tuple[int, bool, float]:
        started = time.monotonic()
        with RawRequest(split["public"]) as request:
            request.trickle(head("GET", "/healthz"), every=0.2)
            return request.status(), request.closed_within(PROMPT), time.monotonic() - started

    status, closed, seconds = await asyncio.to_thread(trickle)
    assert (status, closed) == (408, True)
    assert seconds < PROMPT


@pytest.mark.parametrize("listener", ["public", "internal"])
async def test_a_silent_connection_gets_408_and_is_closed(
    split: dict[str, str], listener: str
) -> None:
    def silent() -> tuple[int, bool]:
        with RawRequest(split[listener]) as request:
            return request.status(), request.closed_within(PROMPT)

    assert await asyncio.to_thread(silent) == (408, True)


async def test_on_a_kept_alive_connection_the_next_head_has_the_same_deadline(
    split: dict[str, str],
) -> None:
    def next_head_trickled() -> tuple[int, int]:
        with RawRequest(split["public"]) as request:
            request.send(head("GET", "/healthz"))
            first = request.status()
            request.received = b""
            request.trickle(head("GET", "/healthz"), every=0.2)
            return first, request.status()

    def idle_after_an_answer() -> tuple[int, bool, bytes]:
        with RawRequest(split["public"]) as request:
            request.send(head("GET", "/healthz"))
            first = request.status()
            answer = request.received
            closed = request.closed_within(PROMPT)
            return first, closed, request.received.removeprefix(answer)

    assert await asyncio.to_thread(next_head_trickled) == (200, 408)
    # Nothing under way: closed without a word, as any idle keep-alive connection.
    first, closed, after = await asyncio.to_thread(idle_after_an_answer)
    assert (first, closed) == (200, True)
    assert b"408" not in after


async def test_many_trickling_connections_do_not_hold_up_a_normal_request(
    split: dict[str, str],
) -> None:
    tricklers = 60
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def trickle(url: str) -> int:
        with RawRequest(url) as request:
            request.send(b"G")
            loop.call_soon_threadsafe(started.set)
            request.trickle(head("GET", "/healthz")[1:], every=0.1)
            return request.status()

    with ThreadPoolExecutor(max_workers=tricklers) as pool:
        answers = [
            loop.run_in_executor(pool, trickle, split[name])
            for name in ("public", "internal")
            for _ in range(tricklers // 2)
        ]
        await started.wait()
        for name in ("public", "internal"):
            begun = time.monotonic()
            assert (await call(split[name], "GET", "/healthz")).status_code == 200
            assert time.monotonic() - begun < PROMPT
        assert set(await asyncio.gather(*answers)) == {408}


async def test_connections_past_the_limit_get_503_at_once(
    tmp_path: Path, adapters: dict[str, ProviderAdapter]
) -> None:
    limit = 5
    settings = listener_settings(tmp_path, http_max_connections=limit)
    async for urls in served(settings, adapters):
        idle = [RawRequest(urls["public"]) for _ in range(limit)]
        try:
            for request in idle:
                request.send(b"GET /hea")
            refused = await call(urls["public"], "GET", "/healthz")
            assert refused.status_code == 503
            # The header timeout frees the slots.
            assert {await asyncio.to_thread(r.status) for r in idle} == {408}
        finally:
            for request in idle:
                request.sock.close()
        assert (await call(urls["public"], "GET", "/healthz")).status_code == 200


async def test_sockets_past_the_limit_are_turned_away_before_any_head(
    tmp_path: Path, adapters: dict[str, ProviderAdapter]
) -> None:
    limit = 5
    # A header timeout far past the test: only the limit can free anything here.
    settings = listener_settings(
        tmp_path, http_max_connections=limit, http_header_timeout=timedelta(seconds=3 * HANG)
    )

    def turned_away(url: str) -> tuple[bool, int, bool]:
        with RawRequest(url) as request:  # sends nothing: a head that has not begun
            return request.answered(PROMPT), request.status(), request.closed_within(PROMPT)

    async for urls in served(settings, adapters):
        idle = [RawRequest(urls["public"]) for _ in range(limit)]
        try:
            # Each one past the limit: 503 and hung up on, without waiting for a head.
            for _ in range(3):
                answer = await asyncio.to_thread(turned_away, urls["public"])
                assert answer == (True, 503, True)
            # Each listener counts its own connections.
            assert (await call(urls["internal"], "GET", "/healthz")).status_code == 200
        finally:
            for request in idle:
                request.sock.close()
        assert await healthz_once_freed(urls["public"]) == 200


async def healthz_once_freed(url: str) -> int:
    """GET /healthz, again while it is 503 (the server frees a slot once it has seen the
    client's close), for up to PROMPT seconds."""
    deadline = time.monotonic() + PROMPT
    while True:
        status = (await call(url, "GET", "/healthz")).status_code
        if status != 503 or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


# Request bodies


def stalled_body(url: str, method: str, path: str, fields: dict[str, str]) -> tuple[int, bool]:
    """Announce a 1000-byte body, send a little of it, stall: the answer, and whether the
    server hung up after it."""
    with RawRequest(url) as request:
        request.send(head(method, path, {"Content-Length": "1000", **fields}) + b'{"pay')
        return request.status(), request.closed_within(PROMPT)


@pytest.mark.parametrize(("method", "path"), [*INTERNAL_ROUTES, ("GET", "/healthz")])
async def test_a_stalled_body_on_an_internal_route_gets_408_and_is_closed(
    split: dict[str, str], method: str, path: str
) -> None:
    fields = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    answer = await asyncio.to_thread(stalled_body, split["internal"], method, path, fields)
    assert answer == (408, True)


async def test_a_stalled_body_on_public_routes_gets_408(split: dict[str, str]) -> None:
    for method, path in [("GET", "/healthz"), ("POST", "/notify/stripe"), ("POST", "/nowhere")]:
        status, _ = await asyncio.to_thread(stalled_body, split["public"], method, path, {})
        assert status == 408, path


async def test_a_body_trickled_within_the_deadline_is_served(split: dict[str, str]) -> None:
    body = b'{"payloads":[]}'

    def trickle() -> tuple[int, bytes]:
        with RawRequest(split["internal"]) as request:
            request.send(head("POST", "/codec/decode", {"Content-Length": str(len(body))}))
            assert request.trickle(body, every=BODY_TIMEOUT / (3 * len(body)))
            status = request.status()
            request.closed_within(0.5)
            return status, request.received

    status, received = await asyncio.to_thread(trickle)
    assert status == 200 and received.endswith(body)


@pytest.mark.parametrize(
    ("path", "limit"), [("/codec/decode", CODEC_MAX_BYTES), ("/api/payments", REQUEST_MAX_BYTES)]
)
async def test_oversized_bodies_are_413_however_they_come(
    split: dict[str, str], path: str, limit: int
) -> None:
    body = b"x" * (limit + 1)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    declared = await call(split["internal"], "POST", path, content=body, headers=headers)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    streamed = await call(split["internal"], "POST", path, content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert "body over" in streamed.json()["error"]

    def announced_only() -> int:
        with RawRequest(split["internal"]) as request:
            request.send(head("POST", path, {"Content-Length": str(limit + 1)}))
            return request.status()

    assert await asyncio.to_thread(announced_only) == 413


# `tempay webhook` itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_process(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEMPAY_")}
    environment.update(TEMPAY_DATA_DIR=str(tmp_path), TEMPAY_SANDBOX="false", **env)
    return subprocess.Popen(
        [sys.executable, "-m", "tempay", "webhook"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_tempay_webhook_serves_two_listeners_and_stops_both_on_a_signal(
    tmp_path: Path, stop: signal.Signals
) -> None:
    public, internal = free_port(), free_port()
    process = webhook_process(
        tmp_path, TEMPAY_WEBHOOK_PORT=str(public), TEMPAY_INTERNAL_PORT=str(internal)
    )
    try:
        public_url, internal_url = f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal}"
        wait_ready(public_url, process)
        wait_ready(internal_url, process)
        assert httpx.get(f"{public_url}/metrics").status_code == 404
        assert httpx.get(f"{internal_url}/metrics").status_code == 200
        process.send_signal(stop)
        assert process.wait(PROMPT) == 0
        assert refused(public_url) and refused(internal_url)
    finally:
        process.kill()
        process.wait()


def test_tempay_webhook_on_one_port_when_asked(tmp_path: Path) -> None:
    port = free_port()
    process = webhook_process(
        tmp_path, TEMPAY_WEBHOOK_PORT=str(port), TEMPAY_INTERNAL_ON_WEBHOOK_PORT="true"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        assert httpx.get(f"{url}/metrics").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(PROMPT) == 0
    finally:
        process.kill()
        process.wait()


def test_tempay_webhook_with_a_port_taken_says_so_in_a_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = webhook_process(
            tmp_path, TEMPAY_WEBHOOK_PORT=str(free_port()), TEMPAY_INTERNAL_PORT=str(port)
        )
        output = process.communicate(timeout=HANG)[0].decode()
    assert process.returncode == 1
    assert output == (
        f"tempay: error: cannot listen on 127.0.0.1:{port} for the internal listener: "
        "Address already in use\n"
    )


def test_the_listening_socket_lets_asyncio_turn_nagle_off(tmp_path: Path) -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket says
    IPPROTO_TCP by name; without it, Nagle and delayed ACKs cost ~40 ms an answer."""
    settings = listener_settings(tmp_path, webhook_port=free_port(), internal_port=free_port())
    for listener in webhook_listeners(settings, {}):
        sock = server._listen(listener, server.uvicorn_config(listener, settings))
        with sock:
            assert sock.proto == socket.IPPROTO_TCP
