"""The worker's health endpoint (commands/worker_health.py) and its shutdown grace: a real
`tempay worker` is ready once it polls and Temporal and the book answer; a dead Temporal or
book is 503 with one line each; hostile requests get 400/404 and never a hang."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from book import Book
from book.migrate import upgrade
from commands.dev import free_port
from commands.worker import build_worker
from commands.worker_health import MAX_CONNECTIONS, WorkerHealth, serving_health
from providers.registry import build_adapters
from tempay.settings import Settings
from tests.support.stack import running_stack
from tests.support.worker_process import WorkerProcess, worker_env


async def ready_within(url: str, seconds: float, worker: WorkerProcess) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(int(seconds * 10)):
            assert worker.process.poll() is None, worker.log.read_text()[-3000:]
            try:
                response = await http.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            if response.status_code == 200:
                return dict(response.json())
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never ready: {worker.log.read_text()[-3000:]}")


@pytest.mark.e2e
async def test_a_worker_is_ready_once_it_polls_and_says_so(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with running_stack(
        dev_env.client, tmp_path, f"tq-health-{uuid.uuid4().hex[:8]}", worker=False
    ) as stack:
        port = free_port()
        env = worker_env(stack, free_port()) | {"TEMPAY_WORKER_HEALTH_PORT": str(port)}
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            base = f"http://127.0.0.1:{port}"
            body = await ready_within(f"{base}/readyz", 30, worker)
            assert body == {
                "status": "ready",
                "checks": {"worker": "ok", "temporal": "ok", "book": "ok"},
            }
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok"}
                assert (await http.get("/nowhere")).status_code == 404
                assert (await http.post("/readyz")).status_code == 400
            # A connection that never sends its head is closed, not kept.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            assert worker.stop() == 0, worker.log.read_text()[-3000:]
    log = worker.log.read_text()
    assert f"worker health at http://127.0.0.1:{port}/readyz" in log
    assert "worker stopping: running activities get up to 10s" in log


async def test_not_ready_names_what_does_not_answer(tmp_path: Path) -> None:
    # A client that has never reached anything (lazy), and a book whose database is gone.
    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    book = Book.from_settings(Settings(data_dir=tmp_path))
    upgrade(book)
    health = WorkerHealth(dead, "default", book)
    status, body = await health.readiness()
    assert status == 503 and body["status"] == "not ready"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["worker"] == "not polling yet"
    assert checks["temporal"].startswith("cannot reach Temporal")
    assert checks["book"] == "ok"
    book.close()
    health.stopping = True
    assert (await health.readiness())[0] == 503


async def test_health_off_by_default_and_a_taken_port_is_one_line(tmp_path: Path) -> None:
    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    health = WorkerHealth(dead, "default", None)
    async with serving_health(health, Settings(data_dir=tmp_path)) as address:
        assert address is None
    port = free_port()
    settings = Settings(data_dir=tmp_path, worker_health_port=port)
    async with serving_health(health, settings) as address:
        assert address == f"127.0.0.1:{port}"
        with pytest.raises(Exception, match="TEMPAY_WORKER_HEALTH_PORT"):
            async with serving_health(health, settings):
                pass


async def test_the_shutdown_grace_reaches_both_workers(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, worker_shutdown_grace=timedelta(seconds=42))
    workers = build_worker(dev_env.client, settings, build_adapters(settings))
    for worker in workers.workers:
        assert worker.config()["graceful_shutdown_timeout"] == timedelta(seconds=42)
    assert Settings(data_dir=tmp_path).worker_shutdown_grace == timedelta(seconds=10)


async def test_a_flood_of_idle_connections_holds_no_more_than_the_cap(tmp_path: Path) -> None:
    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    health = WorkerHealth(dead, "default", None)
    port = free_port()
    settings = Settings(data_dir=tmp_path, worker_health_port=port)
    async with serving_health(health, settings):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5) as http:
            alive = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert alive.json() == {"status": "ok"}
