"""The HTTP plumbing every adapter shares (providers/http.py), against a real server: what a
failed request means for money (sent or not, answered or not), and one pool per adapter,
opened on first use and closed with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Response

from providers.http import ProviderHTTP
from tempay.errors import ProviderError, ProviderOutcomeUnknown
from tests.support.stack import bound_socket, serve, url_of

SECRET = "sk_test_never_in_a_message"


@pytest.fixture
async def provider() -> AsyncIterator[str]:
    app = FastAPI()

    @app.post("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/refused")
    async def refused() -> Response:
        return Response('{"code": "NOPE"}', 400, media_type="application/json")

    @app.post("/down")
    async def down() -> Response:
        return Response("down", 503)

    @app.post("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(2)
        return {"ok": True}

    async with serve(app) as url:
        yield url


async def call(http: ProviderHTTP, path: str, moves_money: bool) -> int:
    headers = {"Authorization": f"Bearer {SECRET}"}
    response = await http.request(
        "POST", path, f"test POST {path}", moves_money=moves_money, headers=headers
    )
    return response.status_code


async def test_answers_below_500_are_the_callers_to_read(provider: str) -> None:
    http = ProviderHTTP(base_url=provider, timeout=1)
    try:
        assert await call(http, "/ok", moves_money=True) == 200
        assert await call(http, "/refused", moves_money=True) == 400
    finally:
        await http.aclose()


@pytest.mark.parametrize("moves_money", [False, True])
async def test_a_request_that_never_left_is_a_plain_error(moves_money: bool) -> None:
    closed = bound_socket()  # bound, never listening: the connection is refused
    http = ProviderHTTP(base_url=url_of(closed), timeout=1)
    try:
        with pytest.raises(ProviderError, match="test POST /ok: unreachable") as raised:
            await call(http, "/ok", moves_money)
        # Nothing reached the provider: even a payout may be sent again.
        assert not isinstance(raised.value, ProviderOutcomeUnknown)
    finally:
        await http.aclose()
        closed.close()


@pytest.mark.parametrize(("path", "what"), [("/down", "HTTP 503"), ("/slow", "no answer")])
async def test_a_lost_answer_is_unknown_only_where_money_moves(
    provider: str, path: str, what: str
) -> None:
    http = ProviderHTTP(base_url=provider, timeout=0.3)
    try:
        with pytest.raises(ProviderOutcomeUnknown, match="may have been processed") as lost:
            await call(http, path, moves_money=True)
        assert what in str(lost.value) and SECRET not in str(lost.value)
        with pytest.raises(ProviderError) as failed:
            await call(http, path, moves_money=False)
        assert not isinstance(failed.value, ProviderOutcomeUnknown)
        assert what in str(failed.value) and SECRET not in str(failed.value)
    finally:
        await http.aclose()


async def test_the_pool_opens_on_first_use_and_closes_with_the_adapter(provider: str) -> None:
    http = ProviderHTTP(base_url=provider, timeout=1)
    await http.aclose()  # nothing opened yet: nothing to close
    first = http.client
    assert http.client is first  # one pool, reused
    assert await call(http, "/ok", moves_money=False) == 200
    await http.aclose()
    assert first.is_closed
    # Used again after closing (a worker that restarts its adapters): a fresh pool.
    assert await call(http, "/ok", moves_money=False) == 200
    assert http.client is not first
    await http.aclose()
