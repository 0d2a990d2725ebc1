"""`GET /readyz` over real HTTP, served as `tempay webhook` serves it (issue 20): ready when
Temporal (the dev server) and the book (SQLite, or a real PostgreSQL) answer; 503 naming the
one that does not, in one line that never shows the database URL or its password; only on
the internal listener; answered within seconds even when the database never answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from book import Book
from book.migrate import upgrade
from tempay.errors import BookUnavailable
from tempay.settings import Settings
from tests.support.listeners import serve_listeners
from tests.support.postgres import Cluster
from webhook.app import READY_TIMEOUT, BookCheck, webhook_listeners

PASSWORD = f"pw-{uuid.uuid4().hex}"  # PostgreSQL here trusts every local login: never asked
API_KEY = "readiness-test-key-0123456789"
# An answer later than this is a hang: each check has READY_TIMEOUT, side by side.
PROMPT = READY_TIMEOUT + 3
READY = {"status": "ready", "checks": {"temporal": "ok", "book": "ok"}}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(env: WorkflowEnvironment, data_dir: Path, **changes: Any) -> Settings:
    return Settings(
        **{
            "data_dir": data_dir,
            "sandbox": False,
            "temporal_address": env.client.service_client.config.target_host,
            "temporal_namespace": env.client.namespace,
            "api_key": SecretStr(API_KEY),
            **changes,
        }
    )


def with_password(url: str) -> str:
    """`postgresql://user@host/db` with a password, as a deployment's URL would carry."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def created_book(settings: Settings) -> None:
    book = Book.from_settings(settings)
    try:
        upgrade(book)
    finally:
        book.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # {data_dir}/tempay.db
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return with_password(cluster.create_database(f"ready_{uuid.uuid4().hex[:12]}"))


async def listening(settings: Settings) -> AsyncIterator[dict[str, str]]:
    async with serve_listeners(webhook_listeners(settings, {}), settings) as urls:
        yield urls


async def probe(url: str, path: str = "/readyz") -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get(path)
    return response, time.monotonic() - started


def assert_no_secret(response: httpx.Response) -> None:
    assert PASSWORD not in response.text
    assert "://" not in response.text  # no connection string at all


async def test_ready_when_temporal_and_the_book_answer(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str | None
) -> None:
    settings = settings_for(dev_env, tmp_path, database_url=database_url)
    created_book(settings)
    async for urls in listening(settings):
        response, seconds = await probe(urls["internal"])
        assert (response.status_code, response.json()) == (200, READY)
        assert seconds < PROMPT
        # Not where providers (and whoever reaches the notification URL) are: liveness only.
        assert (await probe(urls["public"]))[0].status_code == 404
        assert (await probe(urls["public"], "/healthz"))[0].status_code == 200
        document = (await probe(urls["internal"], "/openapi.json"))[0].json()
        assert "/readyz" in document["paths"]


async def test_one_listener_with_every_route_has_readyz(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = settings_for(dev_env, tmp_path, internal_on_webhook_port=True)
    created_book(settings)
    async for urls in listening(settings):
        response, _ = await probe(urls["webhook"])
        assert (response.status_code, response.json()) == (200, READY)


async def test_a_database_gone_while_serving_is_named_without_its_password(
    dev_env: WorkflowEnvironment, tmp_path: Path, pg_cluster: Cluster
) -> None:
    name = f"ready_{uuid.uuid4().hex[:12]}"
    settings = settings_for(
        dev_env, tmp_path, database_url=with_password(pg_cluster.create_database(name))
    )
    created_book(settings)
    async for urls in listening(settings):
        assert (await probe(urls["internal"]))[0].status_code == 200
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # the webhook's sessions too
        response, seconds = await probe(urls["internal"])
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "not ready" and body["checks"]["temporal"] == "ok"
        said = body["checks"]["book"]
        assert said.startswith("the book could not answer") and name in said, said
        assert "\n" not in said and seconds < PROMPT
        assert_no_secret(response)
        # Liveness is not readiness: the process is up.
        assert (await probe(urls["internal"], "/healthz"))[0].status_code == 200


async def test_a_book_unreachable_at_start_is_named_until_a_restart(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """No PostgreSQL listens there: /api answers from Temporal alone, and /readyz says so."""
    url = f"postgresql://tempay:{PASSWORD}@127.0.0.1:{closed_port()}/book"
    settings = settings_for(dev_env, tmp_path, database_url=url)
    async for urls in listening(settings):
        response, seconds = await probe(urls["internal"])
        assert response.status_code == 503, response.text
        checks = response.json()["checks"]
        assert checks["temporal"] == "ok"
        assert checks["book"].startswith("not opened at start (the book could not")
        assert "restart the webhook" in checks["book"] and seconds < PROMPT
        assert_no_secret(response)


async def test_a_sqlite_book_whose_file_is_gone_is_named(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = settings_for(dev_env, tmp_path)
    created_book(settings)
    async for urls in listening(settings):
        assert (await probe(urls["internal"]))[0].status_code == 200
        (tmp_path / "tempay.db").unlink()  # a volume unmounted, a file removed by mistake
        response, _ = await probe(urls["internal"])
        assert response.status_code == 503, response.text
        assert response.json()["checks"] == {
            "temporal": "ok",
            "book": "the book could not answer: its file is gone",
        }
        assert not (tmp_path / "tempay.db").exists()  # not created again, empty


async def test_temporal_unreachable_is_named(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    settings = settings_for(dev_env, tmp_path, temporal_address=address)
    created_book(settings)
    async for urls in listening(settings):
        response, seconds = await probe(urls["internal"])
        assert response.status_code == 503, response.text
        checks = response.json()["checks"]
        assert checks["book"] == "ok"
        assert checks["temporal"].startswith(f"cannot reach Temporal at {address}"), checks
        assert seconds < PROMPT


class SilentServer:
    """A 127.0.0.1 listener that accepts connections and never says a word (a wedged
    database, a black-holed address): a PostgreSQL connect to it waits, without a timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()  # the accepted-but-unanswered connections are reset


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def ping_threads() -> int:
    return sum(t.name == "tempay-readyz-book" for t in threading.enumerate())


async def test_a_database_that_never_answers_costs_a_probe_its_timeout_and_one_thread(
    silent: SilentServer,
) -> None:
    book = Book(f"postgresql+psycopg://tempay:{PASSWORD}@127.0.0.1:{silent.port}/book")
    check = BookCheck(book, "unused")
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await check.check()
            assert time.monotonic() - started < 0.3 + 1
        assert ping_threads() == 1  # the probes share the one ping still waiting
        silent.close()
        with pytest.raises(BookUnavailable, match="could not answer"):
            async with asyncio.timeout(PROMPT):
                await check.check()
        for _ in range(100):
            if ping_threads() == 0:
                break
            await asyncio.sleep(0.05)
        assert ping_threads() == 0
    finally:
        book.close()
