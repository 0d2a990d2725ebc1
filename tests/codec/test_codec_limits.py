"""The codec's limits over real HTTP, on the webhook's internal listener as `tempay webhook`
serves it: a body cap the UI can read (413 with CORS), bounded concurrency (a request that
cannot get a turn gets 503, never a hang), and decoding off the event loop, so provider
notifications are answered while a decode runs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload

import webhook.codec
from providers.stripe.adapter import StripeAdapter
from tempay.codec import EncryptionCodec, parse_keys
from tempay.settings import Settings
from tests.support.listeners import serve_listeners
from webhook.app import close_adapters, webhook_listeners
from webhook.codec import CODEC_MAX_BYTES

UI = "http://127.0.0.1:8233"
# Far above any answer here: what "answered, not hung" means.
PROMPT = 10.0


@pytest.fixture
async def listeners(tmp_path: Path, old_entry: str) -> AsyncIterator[dict[str, str]]:
    settings = Settings(
        data_dir=tmp_path,
        sandbox=False,
        temporal_address="127.0.0.1:1",  # never reached: notifications here are refused first
        codec_keys=SecretStr(old_entry),
        notification_read_timeout=timedelta(seconds=2),
    )
    adapters: dict[str, Any] = {
        "stripe": StripeAdapter("sk_test_codec", ["whsec_codec"], api_base="http://127.0.0.1:1")
    }
    try:
        async with serve_listeners(webhook_listeners(settings, adapters), settings) as urls:
            yield urls
    finally:
        await close_adapters(adapters)


def large_decode_body(entry: str, size: int) -> bytes:
    """Encrypted 1 KiB payloads filling just under `size` bytes: many small messages, the
    costliest shape to parse."""
    codec = EncryptionCodec(parse_keys(entry))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 1022 + b'"')
    one = json_format.MessageToDict(codec.encrypt(plain))
    count = (size - 64) // (len(json.dumps(one)) + 2)
    body = json.dumps({"payloads": [one] * count}).encode()
    assert len(body) <= size
    return body


async def notify(http: httpx.AsyncClient) -> float:
    """One badly signed Stripe notification (401, after its signature check): seconds taken."""
    started = time.perf_counter()
    response = await http.post(
        "/notify/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert response.status_code == 401
    return time.perf_counter() - started


async def test_a_body_over_the_cap_is_413_and_the_ui_can_read_it(
    listeners: dict[str, str],
) -> None:
    async with httpx.AsyncClient(base_url=listeners["internal"], timeout=PROMPT) as http:
        response = await http.post(
            "/codec/decode", content=b"x" * (CODEC_MAX_BYTES + 1), headers={"Origin": UI}
        )
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == UI
    assert response.json() == {"error": f"body over {CODEC_MAX_BYTES} bytes"}


async def test_a_decode_just_under_the_cap_is_served_while_notifications_go_on(
    listeners: dict[str, str], old_entry: str
) -> None:
    body = large_decode_body(old_entry, CODEC_MAX_BYTES)
    async with (
        httpx.AsyncClient(base_url=listeners["internal"], timeout=PROMPT) as codec,
        httpx.AsyncClient(base_url=listeners["public"], timeout=PROMPT) as public,
    ):
        decodes = [asyncio.create_task(codec.post("/codec/decode", content=body)) for _ in range(4)]
        latencies = []
        while not all(d.done() for d in decodes):
            latencies.append(await notify(public))
        answers = await asyncio.gather(*decodes)
    assert {a.status_code for a in answers} <= {200, 503}
    served = [a for a in answers if a.status_code == 200]
    assert served, [a.text for a in answers]
    assert len(served[0].json()["payloads"]) == len(json.loads(body)["payloads"])
    assert latencies and max(latencies) < PROMPT
    print(f"notify during 4 decodes: n={len(latencies)} max {max(latencies) * 1000:.1f} ms")


@pytest.fixture
def held_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterable[tuple[threading.Event, threading.Event]]:
    """One turn at a time, 0.5 s to wait for it, and a decode (without keys) that holds its
    turn in its worker thread until `release` is set; `entered` is set once it does."""
    monkeypatch.setattr(webhook.codec, "CODEC_CONCURRENCY", 1)
    monkeypatch.setattr(webhook.codec, "CODEC_SLOT_WAIT", 0.5)
    entered, release = threading.Event(), threading.Event()
    refuse_encrypted = webhook.codec._refuse_encrypted

    def held(payloads: Iterable[Payload]) -> list[Payload]:
        entered.set()
        assert release.wait(30)
        return refuse_encrypted(payloads)

    monkeypatch.setattr(webhook.codec, "_refuse_encrypted", held)
    yield entered, release
    release.set()


async def test_a_busy_codec_answers_503_at_once_and_the_loop_stays_free(
    held_decode: tuple[threading.Event, threading.Event], tmp_path: Path
) -> None:
    entered, release = held_decode
    settings = Settings(
        data_dir=tmp_path, sandbox=False, temporal_address="127.0.0.1:1", codec_keys=None
    )
    adapters: dict[str, Any] = {
        "stripe": StripeAdapter("sk_test_codec", ["whsec_codec"], api_base="http://127.0.0.1:1")
    }
    body: dict[str, list[Any]] = {"payloads": []}
    try:
        async with (
            serve_listeners(webhook_listeners(settings, adapters), settings) as urls,
            httpx.AsyncClient(base_url=urls["internal"], timeout=PROMPT) as codec,
            httpx.AsyncClient(base_url=urls["public"], timeout=PROMPT) as public,
        ):
            first = asyncio.create_task(codec.post("/codec/decode", json=body))
            assert await asyncio.to_thread(entered.wait, PROMPT)
            # The decode holds its worker thread; the event loop answers everyone else.
            assert (await public.get("/healthz")).status_code == 200
            assert await notify(public) < PROMPT
            assert (await codec.get("/metrics")).status_code == 200
            started = time.perf_counter()
            busy = await codec.post("/codec/decode", json=body, headers={"Origin": UI})
            assert busy.status_code == 503
            assert time.perf_counter() - started < PROMPT
            assert busy.headers["retry-after"] == "1"
            assert busy.headers["access-control-allow-origin"] == UI
            assert "codec busy" in busy.json()["error"]
            release.set()
            assert (await first).json() == body
            # The turn is free again.
            assert (await codec.post("/codec/decode", json=body)).status_code == 200
    finally:
        await close_adapters(adapters)
