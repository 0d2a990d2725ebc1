"""The webhook service's /codec endpoints (Temporal's remote codec protocol) over real HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload

from tempay.codec import EncryptionCodec, data_converter, parse_keys
from tempay.settings import Settings
from tests.support.stack import serve
from webhook.app import create_app

UI = "http://127.0.0.1:8233"
TOKEN = "codec-test-token-1234"
ORDER = {"order_id": "ord-http-99", "amount": "77.70"}


def wire(payloads: list[Payload]) -> dict[str, Any]:
    """The protocol's JSON body: proto JSON payloads (metadata values and data base64)."""
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def unwire(body: dict[str, Any]) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


async def webhook(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(create_app(settings, adapters={})) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        yield http


@pytest.fixture
def keys(old_entry: str, new_entry: str) -> str:
    return f"{new_entry},{old_entry}"


@pytest.fixture
async def http(tmp_path: Path, keys: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in webhook(Settings(data_dir=tmp_path, codec_keys=SecretStr(keys))):
        yield client


@pytest.fixture
async def http_with_auth(tmp_path: Path, keys: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path, codec_keys=SecretStr(keys), codec_auth_token=SecretStr(TOKEN)
    )
    async for client in webhook(settings):
        yield client


async def plain() -> list[Payload]:
    return await data_converter(None).encode([ORDER])


async def test_decode_returns_the_plaintext_payloads(
    http: httpx.AsyncClient, old_entry: str
) -> None:
    written_with_old_key = await EncryptionCodec(parse_keys(old_entry)).encode(await plain())
    response = await http.post(
        "/codec/decode", json=wire(written_with_old_key), headers={"X-Namespace": "default"}
    )
    assert response.status_code == 200, response.text
    assert unwire(response.json()) == await plain()


async def test_encode_encrypts_with_the_first_key_and_decode_reverses_it(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/codec/encode", json=wire(await plain()))
    assert response.status_code == 200, response.text
    (encrypted,) = unwire(response.json())
    assert encrypted.metadata["encoding"] == b"binary/encrypted"
    assert encrypted.metadata["encryption-key-id"] == b"k-new"
    assert b"ord-http-99" not in encrypted.SerializeToString()
    # On the wire, metadata values are base64 (proto JSON), not raw strings.
    assert (
        response.json()["payloads"][0]["metadata"]["encoding"]
        == base64.b64encode(b"binary/encrypted").decode()
    )

    back = await http.post("/codec/decode", json=response.json())
    assert unwire(back.json()) == await plain()


async def test_decode_of_an_unknown_key_is_a_clear_400(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    other = EncryptionCodec(parse_keys(f"k-gone:{base64.b64encode(bytes(32)).decode()}"))
    response = await http.post("/codec/decode", json=wire(await other.encode(await plain())))
    assert response.status_code == 400
    assert "unknown key id 'k-gone'" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"payloads": "nope"}', b'{"payloads": [{"data": 5}]}', b"\xff\xfe"],
)
async def test_malformed_bodies_are_refused(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(
        "/codec/decode", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "payloads" in response.json()["error"]


async def test_another_namespace_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/codec/decode", json=wire(await plain()), headers={"X-Namespace": "other"}
    )
    assert response.status_code == 403


async def test_cors_preflight_from_the_ui_allows_the_codec_headers(
    http: httpx.AsyncClient,
) -> None:
    response = await http.options(
        "/codec/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == UI
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"content-type", "x-namespace", "authorization"} <= allowed

    actual = await http.post(
        "/codec/decode", json=wire(await plain()), headers={"Origin": UI, "X-Namespace": "default"}
    )
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == UI


async def test_cors_refuses_other_origins(http: httpx.AsyncClient) -> None:
    preflight = await http.options(
        "/codec/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    actual = await http.post(
        "/codec/decode", json=wire(await plain()), headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in actual.headers


async def test_cors_origins_follow_the_setting(tmp_path: Path, keys: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        codec_keys=SecretStr(keys),
        codec_cors_origins="https://ui.example.com/, http://localhost:9999",
    )
    async for http in webhook(settings):
        for origin, allowed in [
            ("https://ui.example.com", True),
            ("http://localhost:9999", True),
            (UI, False),
        ]:
            response = await http.options(
                "/codec/encode",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            assert (response.status_code == 200) is allowed, origin


async def test_provider_notification_routes_get_no_cors(http: httpx.AsyncClient) -> None:
    response = await http.post("/notify/sandbox", content=b"x=1", headers={"Origin": UI})
    assert response.status_code == 404  # no providers in this app; the route is still its own
    assert "access-control-allow-origin" not in response.headers
    assert (await http.get("/healthz", headers={"Origin": UI})).headers.get(
        "access-control-allow-origin"
    ) is None


async def test_auth_token_is_required_when_set(http_with_auth: httpx.AsyncClient) -> None:
    body = wire(await plain())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await http_with_auth.post("/codec/decode", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert TOKEN not in response.text
    for path in ("/codec/encode", "/codec/decode"):
        refused = await http_with_auth.post(path, json=body, headers={"Origin": UI})
        assert refused.status_code == 401
        # The UI can read the refusal.
        assert refused.headers["access-control-allow-origin"] == UI

    ok = await http_with_auth.post(
        "/codec/decode", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200
    # Preflights carry no credentials: they are answered without the token.
    preflight = await http_with_auth.options(
        "/codec/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200


async def test_without_keys_decode_passes_plain_payloads_and_refuses_encrypted(
    tmp_path: Path, old_entry: str
) -> None:
    async for http in webhook(Settings(data_dir=tmp_path)):
        body = wire(await plain())
        assert unwire((await http.post("/codec/decode", json=body)).json()) == await plain()
        assert unwire((await http.post("/codec/encode", json=body)).json()) == await plain()
        encrypted = await EncryptionCodec(parse_keys(old_entry)).encode(await plain())
        response = await http.post("/codec/decode", json=wire(encrypted))
        assert response.status_code == 400
        assert "no codec keys" in response.json()["error"]
