"""Temporal's remote codec protocol, so the Temporal UI and CLI show decrypted payloads.

Mounted by the webhook service at /codec: `POST /codec/encode` and `POST /codec/decode`
take and return JSON `{"payloads": [...]}` whose payloads are proto JSON (metadata values and
data base64). The UI calls them from the browser, so CORS allows the UI's origins
(TEMPAY_CODEC_CORS_ORIGINS) with the `Content-Type`, `X-Namespace` and `Authorization`
headers; the CLI calls them with `temporal ... --codec-endpoint http://host:8000/codec`.

With TEMPAY_CODEC_AUTH_TOKEN set, every request needs `Authorization: Bearer <token>`
(CLI: `--codec-auth "Bearer <token>"`). CORS preflights carry no credentials and are
answered without it. The CORS middleware lives on this sub-application only, so provider
notification routes are untouched.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from tempay.codec import ENCODING, KEY_ID_METADATA, PayloadDecryptionError, codec_for
from tempay.settings import Settings

log = logging.getLogger("tempay.codec")

CODEC_MAX_BYTES = 16 * 1024 * 1024
ALLOWED_HEADERS = ["Content-Type", "X-Namespace", "Authorization"]


class CodecRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_codec_app(settings: Settings) -> FastAPI:
    """The codec endpoints as an app to mount at /codec (`app.mount("/codec", ...)`)."""
    codec = codec_for(settings)
    token = settings.codec_auth_token
    expected = f"Bearer {token.get_secret_value()}".encode() if token is not None else None

    app = FastAPI(title="tempay codec", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.codec_cors_origin_list,
        allow_methods=["POST"],
        allow_headers=ALLOWED_HEADERS,
        max_age=600,
    )

    def check(request: Request) -> None:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise CodecRequestError(401, "missing or wrong bearer token")
        namespace = request.headers.get("x-namespace")
        if namespace and namespace != settings.temporal_namespace:
            raise CodecRequestError(
                403, f"this codec serves namespace {settings.temporal_namespace!r} only"
            )

    async def read_payloads(request: Request) -> list[Payload]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > CODEC_MAX_BYTES:
            raise CodecRequestError(413, f"body over {CODEC_MAX_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > CODEC_MAX_BYTES:
                raise CodecRequestError(413, f"body over {CODEC_MAX_BYTES} bytes")
        try:
            return list(json_format.Parse(body.decode("utf-8"), Payloads()).payloads)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise CodecRequestError(
                400, f'expected JSON {{"payloads": [...]}} of Temporal payloads: {exc}'
            ) from None

    async def apply(
        request: Request, fn: Callable[[list[Payload]], Awaitable[list[Payload]]]
    ) -> JSONResponse:
        try:
            check(request)
            payloads = await fn(await read_payloads(request))
        except CodecRequestError as exc:
            return _error(exc.status, str(exc))
        except PayloadDecryptionError as exc:
            log.warning("codec decode refused: %s", exc)
            return _error(400, str(exc))
        return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in payloads]})

    async def encode(payloads: list[Payload]) -> list[Payload]:
        # No keys: the stack does not encrypt, so the UI's input goes in as it is.
        return payloads if codec is None else await codec.encode(payloads)

    async def decode(payloads: list[Payload]) -> list[Payload]:
        if codec is None:
            _refuse_encrypted(payloads)
            return payloads
        return await codec.decode(payloads)

    @app.post("/encode")
    async def encode_route(request: Request) -> JSONResponse:
        return await apply(request, encode)

    @app.post("/decode")
    async def decode_route(request: Request) -> JSONResponse:
        return await apply(request, decode)

    return app


def _refuse_encrypted(payloads: Iterable[Payload]) -> None:
    for p in payloads:
        if p.metadata.get("encoding") == ENCODING:
            key_id = p.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", errors="replace")
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r}, but this service has no codec "
                "keys (set TEMPAY_CODEC_KEYS)"
            )
