"""How the webhook service's listeners are served: uvicorn with time and size limits on
every connection and request, so a slow or hostile client gets a 4xx within seconds and
never holds the process.

- `HeadTimeoutProtocol`: uvicorn's h11 protocol plus a header timeout. A connection that has
  not delivered a complete request head within TEMPAY_HTTP_HEADER_TIMEOUT (from connect, and
  again from each response's completion) gets `408 Request Timeout` and is closed.
  A connection made while the listener already holds TEMPAY_HTTP_MAX_CONNECTIONS gets
  `503 Service Unavailable` and is closed at once, before any head: open sockets stay capped
  however slowly their heads come.
- `uvicorn_config`: that protocol, at most TEMPAY_HTTP_MAX_CONNECTIONS connections (uvicorn
  also answers a request 503 when that many connections or requests are open), a short
  keep-alive and a bounded request head.
- `BufferedBody`: ASGI middleware that reads a request's whole body before the app runs,
  within a deadline (408) and a size cap (413), all bodies in the process within one byte
  budget (503), then replays it to the app.
- `serve`: several listeners in one event loop, all stopping on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tempay.settings import Settings
from webhook.metrics import HTTP_RESPONSES, STATUS_CLASSES

log = logging.getLogger("tempay.webhook")
access = logging.getLogger("tempay.access")

# Idle kept-alive connections close this soon after their last response (uvicorn's default).
KEEP_ALIVE_SECONDS = 5
# Largest request head (request line and headers); h11 answers 400 past it.
MAX_HEAD_BYTES = 16 * 1024
# Requests still running at shutdown get this long before they are cancelled.
GRACEFUL_SHUTDOWN_SECONDS = 10
# Request bodies held in memory at once, across every listener in the process.
BODY_BUDGET_BYTES = 64 * 1024 * 1024


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head.

    The timer runs while the connection waits for a head: from connect, and again from each
    response's completion. h11 emits `h11.Request` only once the whole head has arrived,
    which is when uvicorn starts a new request cycle: that cancels the timer. On expiry a
    connection with a head under way (or none yet on a fresh connection) gets 408; an idle
    kept-alive connection, or one still sending the body of a request already answered, is
    just closed. A connection made while the listener already holds its limit
    (`limit_concurrency`) gets 503 and is closed before any head. Subclasses set
    `header_timeout` (see `head_timeout_protocol`)."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # counts this one in self.connections
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) > limit:
            # uvicorn checks the limit only once a head arrives: sockets trickling one had no cap.
            self._send_refusal(503, b"Service Unavailable", "too many connections; retry shortly")
            self.transport.close()
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._stop_head_timer()  # h11 delivered a complete head: a request is running

    def on_response_complete(self) -> None:
        # Armed first: a pipelined head already buffered starts its cycle (and disarms it)
        # inside the call below.
        self._await_head()
        super().on_response_complete()
        if self.transport.is_closing():
            self._stop_head_timer()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        waiting = self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE
        head_under_way = bool(self.conn.trailing_data[0])
        if waiting and (self.cycle is None or head_under_way):
            self._send_408()
        self.transport.close()

    def _send_408(self) -> None:
        text = f"request head not received within {self.header_timeout:g} s"
        self._send_refusal(408, b"Request Timeout", text)

    def _send_refusal(self, status: int, reason: bytes, text: str) -> None:
        """A short text answer with `Connection: close`; the caller closes the transport."""
        body = f"{text}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        try:
            for event in (
                h11.Response(status_code=status, headers=headers, reason=reason),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # the connection is closed below either way


def head_timeout_protocol(header_timeout: float) -> type[HeadTimeoutProtocol]:
    """The protocol class for uvicorn's `http=`, with this header timeout (seconds)."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"header_timeout": header_timeout})


@dataclass(frozen=True)
class Listener:
    """One address the webhook service listens on, and the app served there."""

    name: str
    app: ASGIApp
    host: str
    port: int


def printable(text: str) -> str:
    """`text` with every control or non-printable character as an escape (\\x0a, \\u2028):
    a client's path can never end a log line, start another, or rewrite a terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class AccessLog:
    """Pure ASGI middleware: one INFO line per request on `tempay.access`, with the
    listener, method, path (never the query string), status and duration; never a header or
    a body. A request that ends without a response is logged with status 0."""

    def __init__(self, app: ASGIApp, listener: str) -> None:
        self.app, self.listener = app, listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            duration = round((time.perf_counter() - started) * 1000, 1)
            HTTP_RESPONSES.labels(self.listener, STATUS_CLASSES[min(status // 100, 5)]).inc()
            # Decoded by the server: %0A would start a forged line. Shown escaped instead.
            path = printable(str(scope.get("path", ""))[:256])
            access.info(
                "%s %s %s %d %.1f ms",
                self.listener, scope.get("method"), path, status, duration,
                extra={
                    "listener": self.listener, "method": scope.get("method"), "path": path,
                    "status": status, "duration_ms": duration,
                },
            )  # fmt: skip


def uvicorn_config(listener: Listener, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        AccessLog(listener.app, listener.name),
        host=listener.host,
        port=listener.port,
        http=head_timeout_protocol(settings.http_header_timeout.total_seconds()),
        ws="none",
        lifespan="on",
        log_level="warning",
        # Our AccessLog (no query strings), and the process's own logging setup (tempay/logs.py).
        access_log=False,
        log_config=None,
        limit_concurrency=settings.http_max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )


class ListenerServer(uvicorn.Server):
    """A uvicorn server that leaves signals to `serve` (uvicorn's own handler would serve
    only the last server installed)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    listeners: Sequence[Listener],
    settings: Settings,
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve every listener until SIGTERM or SIGINT (a second SIGINT stops at once), or
    until one of them stops. `sockets`, one per listener, are already bound; without them
    every address is bound before any is served (ListenError if one cannot be)."""
    configs = [uvicorn_config(listener, settings) for listener in listeners]
    bound = list(sockets) if sockets is not None else _listen_all(listeners, configs)
    for listener, sock in zip(listeners, bound, strict=True):
        host, port = sock.getsockname()[:2]
        log.info("%s listener on http://%s:%d", listener.name, host, port)
    servers = [ListenerServer(config) for config in configs]
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        for server in servers:
            if server.should_exit and sig is signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, stop, sig)
    tasks = [
        asyncio.create_task(server.serve([sock]))
        for server, sock in zip(servers, bound, strict=True)
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
        for sig in handled:
            loop.remove_signal_handler(sig)


class ListenError(Exception):
    """An address the service cannot listen on; the message names it and says why."""


def _listen_all(
    listeners: Sequence[Listener], configs: Sequence[uvicorn.Config]
) -> list[socket.socket]:
    bound: list[socket.socket] = []
    try:
        for listener, config in zip(listeners, configs, strict=True):
            bound.append(_listen(listener, config))
    except ListenError:
        for sock in bound:
            sock.close()
        raise
    return bound


def _listen(listener: Listener, config: uvicorn.Config) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    # IPPROTO_TCP by name: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening one says so, and Nagle with delayed ACKs costs ~40 ms an answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listener.host, listener.port))
        # Listening now, not when served: two listeners on one port fail here, by name.
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {listener.host}:{listener.port} for the {listener.name} "
            f"listener: {exc.strerror or exc}"
        ) from None
    return sock


# Request bodies


class BodyBudget:
    """Bytes of request bodies held at once; the event loop is single-threaded, so a plain
    counter is exact."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


PROCESS_BODY_BUDGET = BodyBudget(BODY_BUDGET_BYTES)


class BufferedBody:
    """Pure ASGI middleware: the whole request body is read before the app runs, or the
    request is refused: 413 over `max_bytes` (declared or sent), 408 when it has not arrived
    within `timeout` seconds, 503 when the process already holds `budget` bytes of bodies.
    The app then reads the body from memory at once, so no handler ever waits on a slow
    sender. Paths starting with one of `exempt` pass through untouched (they read their own
    bodies, with refusals of their own shape)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout: float,
        exempt: tuple[str, ...] = (),
        budget: BodyBudget = PROCESS_BODY_BUDGET,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.exempt = exempt
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, f"body over {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        held = 0
        refusal: tuple[int, str] | None = None
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return  # the sender left: nobody to answer
                        chunk = message.get("body", b"")
                        if held + len(chunk) > self.max_bytes:
                            refusal = (413, f"body over {self.max_bytes} bytes")
                            break
                        if not self.budget.take(len(chunk)):
                            refusal = (503, "too many request bodies in progress; retry shortly")
                            break
                        held += len(chunk)
                        chunks.append(chunk)
                        if not message.get("more_body", False):
                            break
            except TimeoutError:
                refusal = (408, f"body not received within {self.timeout:g} s")
            if refusal is not None:
                status, text = refusal
                # A slow sender's connection is not kept: the rest of its body would hold it.
                await _refuse(send, status, text, close=status == 408)
                return
            body = b"".join(chunks)
            chunks.clear()
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.budget.give_back(held)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # waits for the disconnect, as after any body

    return replayed


async def _refuse(send: Send, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "BufferedBody",
    "HeadTimeoutProtocol",
    "ListenError",
    "Listener",
    "serve",
    "uvicorn_config",
]
