"""Bad transport to `POST /notify/{provider}`: oversized bodies (declared, streamed in chunks,
or only announced), slow senders that trickle a body, senders that stall or hang up mid-body.
Each gets a 4xx or nothing (a sender that left), never a 5xx; nothing changes; and the event
loop is never held: `/healthz` answers while a slow sender is still sending."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz.harness import (
    PROVIDERS,
    FuzzStack,
    assert_nothing_changed,
    increments,
    parse_counts,
)
from tests.support.fuzz.tally import TALLY

# A hang guard for raw sockets, far above any answer the tests wait for.
HANG = 30.0


@pytest.fixture
def unchanged(fuzz: FuzzStack) -> Iterator[None]:
    before = fuzz.snapshot()
    yield
    assert_nothing_changed(before, fuzz.snapshot())


def address(fuzz: FuzzStack) -> tuple[str, int]:
    host, port = fuzz.url.removeprefix("http://").split(":")
    return host, int(port)


def head(provider: str, fields: dict[str, str]) -> bytes:
    lines = [f"POST /notify/{provider} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket) -> int:
    """The status code of the answer on `sock` (0 if the server closed without one)."""
    sock.settimeout(HANG)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        return 0
    return int(data.split(b" ", 2)[1])


def counts(http: httpx.Client) -> dict[tuple[str, str], float]:
    return parse_counts(http.get("/metrics").text)


# Oversized bodies: 413, however they come


def test_oversized_bodies_are_413(fuzz: FuzzStack, http: httpx.Client, unchanged: None) -> None:
    limit = fuzz.stack.settings.notification_max_bytes

    @given(
        provider=st.sampled_from(PROVIDERS),
        over=st.integers(1, limit),
        mode=st.sampled_from(["content-length", "chunked", "announced-only"]),
        fill=st.binary(min_size=1, max_size=64),
    )
    def check(provider: str, over: int, mode: str, fill: bytes) -> None:
        size = limit + over
        body = (fill * (size // len(fill) + 1))[:size]
        if mode == "content-length":
            response = http.post(f"/notify/{provider}", content=body)
            assert response.request.headers["content-length"] == str(size)
            status = response.status_code
        elif mode == "chunked":

            def chunks() -> Iterator[bytes]:
                for start in range(0, size, 8192):
                    yield body[start : start + 8192]

            response = http.post(f"/notify/{provider}", content=chunks())
            assert response.request.headers["transfer-encoding"] == "chunked"
            status = response.status_code
        else:
            # Only the header announces it; the body never comes.
            with socket.create_connection(address(fuzz)) as sock:
                sock.sendall(head(provider, {"Content-Length": str(size)}))
                status = status_of(sock)
        TALLY.add(f"POST /notify/{provider} (oversized)", status)
        assert status == 413

    check()


# Slow senders


def test_a_trickled_body_is_answered_and_healthz_stays_responsive(
    fuzz: FuzzStack, http: httpx.Client, unchanged: None
) -> None:
    """A sender that trickles its body byte by byte, inside the read timeout, gets the normal
    answer (401: it is unsigned); /healthz answers meanwhile, while it is still sending."""
    body = b'{"notify_id":"x","out_trade_no":"' + fuzz.targets["sandbox"].order_id.encode() + b'"}'
    sending = threading.Event()
    answer: list[int] = []

    def trickle() -> None:
        with socket.create_connection(address(fuzz)) as sock:
            sock.sendall(head("sandbox", {"Content-Length": str(len(body))}))
            for i, byte in enumerate(body):
                sock.sendall(bytes([byte]))
                if i == 0:
                    sending.set()
                time.sleep(0.01)
            answer.append(status_of(sock))

    sender = threading.Thread(target=trickle)
    sender.start()
    assert sending.wait(HANG)
    latencies = []
    for _ in range(10):
        started = time.perf_counter()
        assert http.get("/healthz").status_code == 200
        latencies.append(time.perf_counter() - started)
    still_sending = sender.is_alive()
    sender.join(HANG)
    assert still_sending, "healthz did not get its answers while the body was trickling"
    assert answer == [401]
    TALLY.add("POST /notify/sandbox (trickled)", answer[0])
    print(f"healthz during a trickled body: max {max(latencies) * 1000:.1f} ms")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stalled_body_times_out_with_408(
    fuzz: FuzzStack,
    http: httpx.Client,
    unchanged: None,
    provider: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sender that stops mid-body does not hold its request forever: after
    TEMPAY_NOTIFICATION_READ_TIMEOUT it gets 408, and /healthz answers all the while."""
    before = counts(http)
    with socket.create_connection(address(fuzz)) as sock:
        sock.sendall(head(provider, {"Content-Length": "1000"}) + b'{"notify_id":')
        # The connection is stalled; the service is not.
        for _ in range(10):
            assert http.get("/healthz").status_code == 200
        status = status_of(sock)
    TALLY.add(f"POST /notify/{provider} (stalled)", status)
    assert status == 408
    assert increments(before, counts(http)) == {(provider, "too_slow"): 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_sender_that_hangs_up_mid_body_is_no_server_error(
    fuzz: FuzzStack,
    http: httpx.Client,
    unchanged: None,
    provider: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Counted as `disconnected`; no 'Exception in ASGI application'."""
    before = counts(http)
    with socket.create_connection(address(fuzz)) as sock:
        sock.sendall(head(provider, {"Content-Length": "1000"}) + b'{"notify_id":')
        assert http.get("/healthz").status_code == 200
    deadline = time.monotonic() + HANG
    seen: dict[Any, float] = {}
    while time.monotonic() < deadline:
        seen = increments(before, counts(http))
        if seen:
            break
        time.sleep(0.05)
    TALLY.add(f"POST /notify/{provider} (hung up)", 0)
    assert seen == {(provider, "disconnected"): 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
