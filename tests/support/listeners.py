"""Serving the webhook's listeners in tests exactly as `tempay webhook` does (webhook/server.py:
the header timeout protocol, connection limit, keep-alive and head size), and talking to them
over raw sockets, for senders that trickle, stall or never finish.

- `serve_listeners(listeners, settings)` serves each `webhook.server.Listener` on a fresh
  127.0.0.1 port in this event loop and yields their URLs by name.
- `RawRequest` is one hand-driven HTTP/1.1 connection: send bytes slowly, read the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence

from tempay.settings import Settings
from tests.support.stack import bound_socket, url_of
from webhook.server import Listener, ListenerServer, uvicorn_config

# A hang guard for raw sockets, far above any answer the tests wait for.
HANG = 30.0


@contextlib.asynccontextmanager
async def serve_listeners(
    listeners: Sequence[Listener], settings: Settings
) -> AsyncIterator[dict[str, str]]:
    """Serve every listener until the block ends; yields {listener name: base URL}."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for listener in listeners:
            urls[listener.name] = await stack.enter_async_context(_serve(listener, settings))
        yield urls


@contextlib.asynccontextmanager
async def _serve(listener: Listener, settings: Settings) -> AsyncIterator[str]:
    sock = bound_socket()
    server = ListenerServer(uvicorn_config(listener, settings))
    try:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError(f"{listener.name} listener exited during startup")
                await asyncio.sleep(0.005)
            yield url_of(sock)
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def head(method: str, path: str, fields: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (fields or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawRequest:
    """One HTTP/1.1 connection driven by hand (blocking: run it in a thread from async code)."""

    def __init__(self, url: str) -> None:
        self.sock = socket.create_connection(address(url), timeout=HANG)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.received = b""

    def __enter__(self) -> RawRequest:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def trickle(self, data: bytes, every: float, until: float = HANG) -> bool:
        """Send `data` a byte at a time, `every` seconds apart, stopping as soon as the server
        answers or hangs up (or after `until` seconds); True if all of it was sent."""
        deadline = time.monotonic() + until
        for byte in data:
            if self.answered(every) or time.monotonic() > deadline:
                return False
            if not self.send(bytes([byte])):
                return False
        return True

    def answered(self, within: float) -> bool:
        """Wait up to `within` seconds for anything from the server (an answer or a close)."""
        self.sock.settimeout(within)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            return True
        finally:
            self.sock.settimeout(HANG)
        self.received += chunk
        return True if not chunk else b"\r\n" in self.received

    def status(self) -> int:
        """The status code of the answer (0 if the server closed without one)."""
        while b"\r\n" not in self.received:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            self.received += chunk
        if not self.received:
            return 0
        return int(self.received.split(b" ", 2)[1])

    def closed_within(self, seconds: float) -> bool:
        """True if the server closes the connection within `seconds` (the rest of any answer
        is read and kept in `received`)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            self.received += chunk
        return False
