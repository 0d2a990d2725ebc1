"""Temporal's remote codec protocol, so the Temporal UI and CLI show decrypted payloads.

Mounted by the webhook service at /codec: `POST /codec/encode` and `POST /codec/decode`
take and return JSON `{"payloads": [...]}` whose payloads are proto JSON (metadata values and
data base64). The UI calls them from the browser, so CORS allows the UI's origins
(TEMPAY_CODEC_CORS_ORIGINS) with the `Content-Type`, `X-Namespace` and `Authorization`
headers; the CLI calls them with `temporal ... --codec-endpoint http://host:8002/codec` (the
internal listener; under `tempay dev`, port 8000).

Bodies are read whole before a route runs (at most CODEC_MAX_BYTES, within
TEMPAY_NOTIFICATION_READ_TIMEOUT: else 413 or 408), and at most CODEC_CONCURRENCY requests
are encoded or decoded at once, in worker threads, so a large decode never holds the event
loop (and with it provider notifications); a request that waits CODEC_SLOT_WAIT for a turn
gets 503.

With TEMPAY_CODEC_AUTH_TOKEN set, every request needs `Authorization: Bearer <token>`
(CLI: `--codec-auth "Bearer <token>"`). CORS preflights carry no credentials and are
answered without it. The CORS middleware lives on this sub-application only, so provider
notification routes are untouched.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable, Iterable

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from tempay.codec import ENCODING, KEY_ID_METADATA, EncryptionCodec, codec_for
from tempay.errors import PayloadDecryptionError
from tempay.settings import Settings
from tempay.temporal import connect_config
from webhook.server import BufferedBody

log = logging.getLogger("tempay.codec")

# Temporal refuses payloads over 2 MiB, so a request from the UI or CLI is well under this.
CODEC_MAX_BYTES = 4 * 1024 * 1024
# Requests encoded or decoded at once (each in a worker thread, off the event loop); the
# rest wait up to CODEC_SLOT_WAIT seconds for a turn, then get 503.
CODEC_CONCURRENCY = 2
CODEC_SLOT_WAIT = 5.0
ALLOWED_HEADERS = ["Content-Type", "X-Namespace", "Authorization"]

Transform = Callable[[list[Payload]], list[Payload]]


class CodecRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_codec_app(settings: Settings) -> FastAPI:
    """The codec endpoints as an app to mount at /codec (`app.mount("/codec", ...)`)."""
    codec = codec_for(settings)
    token = settings.codec_auth_token
    expected = f"Bearer {token.get_secret_value()}".encode() if token is not None else None
    slots = asyncio.Semaphore(CODEC_CONCURRENCY)

    app = FastAPI(title="tempay codec", openapi_url=None, docs_url=None, redoc_url=None)
    # Added first, so it runs inside CORS: the UI can read a 408, 413 or 503 too.
    app.add_middleware(
        BufferedBody,
        max_bytes=CODEC_MAX_BYTES,
        timeout=settings.notification_read_timeout.total_seconds(),
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.codec_cors_origin_list,
        allow_methods=["POST"],
        allow_headers=ALLOWED_HEADERS,
        max_age=600,
    )

    # The namespace the processes connect to: tempay's setting, or a Temporal CLI profile's.
    served = str(connect_config(settings)["namespace"])

    def check(request: Request) -> None:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise CodecRequestError(401, "missing or wrong bearer token")
        namespace = request.headers.get("x-namespace")
        if namespace and namespace != served:
            raise CodecRequestError(403, f"this codec serves namespace {served!r} only")

    async def apply(request: Request, transform: Transform) -> Response:
        try:
            check(request)
        except CodecRequestError as exc:
            return _error(exc.status, str(exc))
        body = await request.body()  # already in memory (BufferedBody)
        try:
            async with asyncio.timeout(CODEC_SLOT_WAIT):
                await slots.acquire()
        except TimeoutError:
            return _error(
                503,
                f"codec busy: {CODEC_CONCURRENCY} requests in progress for over "
                f"{CODEC_SLOT_WAIT:g} s; retry shortly",
                headers={"Retry-After": "1"},
            )
        try:
            # Parsing, crypto and serialising megabytes take the event loop's time otherwise,
            # and with it every notification's.
            answer = await asyncio.to_thread(_apply, body, transform)
        except CodecRequestError as exc:
            return _error(exc.status, str(exc))
        except PayloadDecryptionError as exc:
            log.warning("codec decode refused: %s", exc)
            return _error(400, str(exc))
        finally:
            slots.release()
        return Response(answer, media_type="application/json")

    @app.post("/encode")
    async def encode_route(request: Request) -> Response:
        return await apply(request, _encoder(codec))

    @app.post("/decode")
    async def decode_route(request: Request) -> Response:
        return await apply(request, _decoder(codec))

    return app


def _apply(body: bytes, transform: Transform) -> bytes:
    """JSON `{"payloads": [...]}` in, the transformed payloads out, as JSON bytes."""
    try:
        payloads = list(json_format.Parse(body.decode("utf-8"), Payloads()).payloads)
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise CodecRequestError(
            400, f'expected JSON {{"payloads": [...]}} of Temporal payloads: {exc}'
        ) from None
    except RecursionError:
        raise CodecRequestError(
            400, "expected JSON of Temporal payloads: nested too deeply"
        ) from None
    result = transform(payloads)
    # As JSONResponse renders it, but here, off the event loop.
    return json.dumps(
        {"payloads": [json_format.MessageToDict(p) for p in result]},
        ensure_ascii=False,
        allow_nan=False,
        indent=None,
        separators=(",", ":"),
    ).encode("utf-8")


def _encoder(codec: EncryptionCodec | None) -> Transform:
    if codec is None:
        return list  # no keys: the stack does not encrypt, so the UI's input goes in as it is
    return lambda payloads: [codec.encrypt(p) for p in payloads]


def _decoder(codec: EncryptionCodec | None) -> Transform:
    if codec is None:
        return _refuse_encrypted
    return lambda payloads: [codec.decrypt(p) for p in payloads]


def _refuse_encrypted(payloads: Iterable[Payload]) -> list[Payload]:
    """Without keys, plain payloads pass and an encrypted one is refused by its key id."""
    payloads = list(payloads)
    for p in payloads:
        if p.metadata.get("encoding") == ENCODING:
            key_id = p.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", errors="replace")
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r}, but this service has no codec "
                "keys (set TEMPAY_CODEC_KEYS)"
            )
    return payloads
