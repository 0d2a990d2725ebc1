"""The worker's health endpoint (TEMPAY_WORKER_HEALTH_PORT; 0, the default, is off), for an
orchestrator's probes and compose's healthcheck:

- `GET /healthz`: 200 while the process's event loop answers (liveness);
- `GET /readyz`: 200 `{"status": "ready", "checks": {...}}` once the workers poll, Temporal
  answers (DescribeNamespace) and the book answers (SELECT 1), each within 2 s; else 503 with
  one line per failed check, never a secret. From the stop signal on it is 503 `stopping`
  while the workers finish what they hold (TEMPAY_WORKER_SHUTDOWN_GRACE).

A few lines of HTTP/1.1 on asyncio: one request per connection, a head of at most 8 KiB
within 5 s, no body read; anything else is 400 or 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from book import Book
from tempay.errors import MetricsUnavailable
from tempay.settings import Settings

log = logging.getLogger("tempay.worker")

CHECK_TIMEOUT = 2.0
HEAD_TIMEOUT = 5.0
HEAD_LIMIT = 8 * 1024
# Connections served at once; more are closed at once (probes come one at a time).
MAX_CONNECTIONS = 16
# How long a readiness answer is reused: probes do not each cost Temporal and the book a call.
READY_CACHE_SECONDS = 1.0


@dataclass
class WorkerHealth:
    client: Client
    namespace: str
    book: Book | None
    polling: bool = False
    stopping: bool = False
    _book_check: asyncio.Future[None] | None = field(default=None, repr=False)
    _checking: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _last: tuple[float, tuple[int, dict[str, object]]] | None = field(default=None, repr=False)
    _open: int = field(default=0, repr=False)

    @property
    def answer(self) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        return self._answer

    async def _temporal(self) -> str:
        try:
            await self.client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=self.namespace),
                timeout=timedelta(seconds=CHECK_TIMEOUT),
            )
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready", said in one line
            text = str(exc).strip()
            why = text.splitlines()[0][:200] if text else type(exc).__name__
            return f"cannot reach Temporal: {why}"
        return "ok"

    async def _book(self) -> str:
        if self.book is None:
            return "ok"
        # One probe thread at a time: a database that never answers holds one thread, not
        # one per probe.
        if self._book_check is None or self._book_check.done():
            self._book_check = asyncio.ensure_future(asyncio.to_thread(self.book.ping))
        try:
            await asyncio.wait_for(asyncio.shield(self._book_check), CHECK_TIMEOUT)
        except TimeoutError:
            return f"the book did not answer within {CHECK_TIMEOUT:g} s"
        except Exception as exc:  # noqa: BLE001
            return f"the book does not answer: {type(exc).__name__}"
        return "ok"

    async def readiness(self) -> tuple[int, dict[str, object]]:
        """The answer; one check at a time, and reused for a second, however many probes
        ask (each check is a call to Temporal and one to the database)."""
        if self.stopping:
            return 503, {"status": "stopping", "checks": {"worker": "stopping"}}
        async with self._checking:
            now = asyncio.get_running_loop().time()
            if self._last is not None and now - self._last[0] < READY_CACHE_SECONDS:
                return self._last[1]
            answer = await self._check()
            self._last = (asyncio.get_running_loop().time(), answer)
            return answer

    async def _check(self) -> tuple[int, dict[str, object]]:
        temporal, book = await asyncio.gather(self._temporal(), self._book())
        checks = {
            "worker": "ok" if self.polling else "not polling yet",
            "temporal": temporal,
            "book": book,
        }
        ready = all(v == "ok" for v in checks.values())
        return (200 if ready else 503), {
            "status": "ready" if ready else "not ready",
            "checks": checks,
        }

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:  # a flood holds no more than this many sockets
            writer.close()
            return
        self._open += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._open -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        body: dict[str, object]
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            status, body = 400, {"error": "GET /healthz or /readyz"}
        elif parts[1] == b"/healthz":
            status, body = 200, {"status": "ok"}
        elif parts[1] == b"/readyz":
            status, body = await self.readiness()
        else:
            status, body = 404, {"error": "GET /healthz or /readyz"}
        payload = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
        writer.write(
            f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + (payload if parts[0] != b"HEAD" else b"")
        )
        await writer.drain()


@contextlib.asynccontextmanager
async def serving_health(health: WorkerHealth, settings: Settings) -> AsyncIterator[str | None]:
    """Serve `health` on TEMPAY_WORKER_HEALTH_HOST:PORT while the block runs; yields the
    address, or None when the port is 0 (off)."""
    if settings.worker_health_port == 0:
        yield None
        return
    try:
        server = await asyncio.start_server(
            health.answer,
            settings.worker_health_host,
            settings.worker_health_port,
            limit=HEAD_LIMIT,
        )
    except OSError as exc:
        raise MetricsUnavailable(
            f"cannot serve the worker's health on {settings.worker_health_host}:"
            f"{settings.worker_health_port}: {exc.strerror or exc} (set "
            "TEMPAY_WORKER_HEALTH_PORT to a free port, or 0 to turn it off)"
        ) from None
    address = f"{settings.worker_health_host}:{settings.worker_health_port}"
    try:
        yield address
    finally:
        server.close()
        await server.wait_closed()
