"""Bad input to the webhook service's other routes: the codec (`POST /codec/encode`,
`POST /codec/decode`), `/healthz` and `/metrics`, over real HTTP. Arbitrary bodies, payloads
that look encrypted but are not, nested JSON, wrong content types, namespaces and bearer
tokens, and other methods: each gets a 2xx or a 4xx, never a 5xx.

The codec runs twice: as the suite's stack has it (no keys: payloads pass through), and in a
second webhook with encryption keys and a bearer token, where decode really decrypts."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from tempay.codec import ENCODING, KEY_ID_METADATA, new_key_entry
from tests.support.fuzz.bad_requests import CONTENT_TYPES, HEADER_TEXT, JSON
from tests.support.fuzz.harness import FuzzStack
from tests.support.fuzz.tally import TALLY

TOKEN = "fuzz-codec-token"
KEY_ID = "kfuzz"


@pytest.fixture(scope="module")
def keyed(fuzz: FuzzStack) -> Iterator[httpx.Client]:
    """A webhook whose codec holds keys and wants a bearer token."""
    with (
        fuzz.other_webhook(
            codec_keys=SecretStr(new_key_entry(KEY_ID)), codec_auth_token=SecretStr(TOKEN)
        ) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


METADATA_VALUES = st.one_of(
    st.binary(max_size=40).map(b64),
    st.sampled_from([ENCODING, b"json/plain", b"binary/null", KEY_ID.encode(), b"nope"]).map(b64),
    st.text(max_size=20),  # not base64
)
PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.dictionaries(
            st.sampled_from(["encoding", KEY_ID_METADATA]) | st.text(max_size=10),
            METADATA_VALUES,
            max_size=3,
        ),
        "data": st.binary(max_size=200).map(b64) | st.text(max_size=30) | JSON,
    },
)
# Payloads that claim to be ours: encrypted, under our key id or another one.
ENCRYPTED = st.builds(
    lambda key_id, data: {
        "metadata": {"encoding": b64(ENCODING), KEY_ID_METADATA: b64(key_id.encode())},
        "data": b64(data),
    },
    st.sampled_from([KEY_ID, "other"]) | st.text(max_size=10),
    st.binary(max_size=200),
)
CODEC_BODIES = st.one_of(
    st.binary(max_size=1024),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.lists(PAYLOAD | ENCRYPTED, max_size=5).map(lambda p: json.dumps({"payloads": p}).encode()),
    # Deeply nested JSON: a parser's recursion limit is not a server error.
    st.integers(1, 200_000).map(lambda depth: b'{"payloads":' + b"[" * depth),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@st.composite
def codec_request(draw: st.DrawFn) -> tuple[str, bytes, dict[str, Any]]:
    path = draw(st.sampled_from(["/codec/encode", "/codec/decode"]))
    headers: dict[str, Any] = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["Content-Type"] = content_type
    namespace = draw(st.none() | st.just(b"default") | HEADER_TEXT)
    if namespace is not None:
        headers["X-Namespace"] = namespace
    authorization = draw(st.none() | st.just(f"Bearer {TOKEN}".encode()) | HEADER_TEXT)
    if authorization is not None:
        headers["Authorization"] = authorization
    return path, draw(CODEC_BODIES), headers


def check_codec(
    client: httpx.Client, label: str, request: tuple[str, bytes, dict[str, Any]]
) -> None:
    path, body, headers = request
    response = client.post(path, content=body, headers=headers)
    TALLY.add(f"POST {path} ({label})", response.status_code)
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.status_code in (200, 400, 401, 403, 413), response.text
    if response.status_code == 200:
        assert isinstance(response.json()["payloads"], list)


def test_codec_without_keys(http: httpx.Client) -> None:
    @given(codec_request())
    def check(request: tuple[str, bytes, dict[str, Any]]) -> None:
        check_codec(http, "no keys", request)

    check()


def test_codec_with_keys_and_token(keyed: httpx.Client) -> None:
    @given(codec_request())
    def check(request: tuple[str, bytes, dict[str, Any]]) -> None:
        check_codec(keyed, "keys+token", request)

    check()


def test_codec_round_trip_survives_fuzzed_payloads(keyed: httpx.Client) -> None:
    """Whatever well-formed payloads go in, decode(encode(x)) gives them back."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    well_formed = st.fixed_dictionaries(
        {
            "metadata": st.dictionaries(
                st.text(
                    st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8
                ),
                st.binary(max_size=20).map(b64),
                max_size=3,
            ),
            "data": st.binary(max_size=300).map(b64),
        }
    )

    @given(st.lists(well_formed, max_size=4))
    def check(payloads: list[dict[str, Any]]) -> None:
        encoded = keyed.post("/codec/encode", json={"payloads": payloads}, headers=auth)
        TALLY.add("POST /codec/encode (round trip)", encoded.status_code)
        assert encoded.status_code == 200, encoded.text
        decoded = keyed.post("/codec/decode", json=encoded.json(), headers=auth)
        TALLY.add("POST /codec/decode (round trip)", decoded.status_code)
        assert decoded.status_code == 200, decoded.text

        def normal(p: dict[str, Any]) -> dict[str, Any]:
            # Proto JSON leaves out empty fields.
            return {k: v for k, v in p.items() if v}

        assert [normal(p) for p in decoded.json()["payloads"]] == [normal(p) for p in payloads]

    check()


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def test_healthz_and_metrics_never_fail(http: httpx.Client) -> None:
    @given(
        st.sampled_from(["/healthz", "/metrics"]),
        st.sampled_from(METHODS),
        st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
        st.binary(max_size=256),
        CONTENT_TYPES,
    )
    def check(
        path: str, method: str, query: dict[str, str], body: bytes, content_type: Any
    ) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = http.request(method, path, params=query, content=body, headers=headers)
        TALLY.add(f"{method} {path}", response.status_code)
        # FastAPI routes answer their own method only (HEAD too is 405).
        assert response.status_code == (200 if method == "GET" else 405), response.text

    check()
