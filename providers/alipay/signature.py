"""Alipay open platform RSA2 signatures: request signing, response and notification checks.

- A request is signed over the sorted `k=v&...` of every non-empty parameter but `sign`
  (so `sign_type` is included), raw values (not URL-encoded). A page/wap pay URL's query and
  an app order string (alipay.trade.app.pay, for the app SDK) are such a signed request with
  each value URL-encoded.
- A response is verified over the exact raw JSON text of its `*_response` value, as it
  appears in the body, never a re-serialization.
- A notification is verified over the sorted, URL-decoded `k=v&...` of every parameter
  but `sign` and `sign_type`.

The signature is base64(SHA256withRSA, PKCS#1 v1.5), UTF-8 throughout.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tempay.errors import SignatureError


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the setting, never the key."""


def request_sign_content(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k])


def notification_sign_content(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in ("sign", "sign_type"))


def sign(private_key: rsa.RSAPrivateKey, content: str) -> str:
    signature = private_key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(public_key: rsa.RSAPublicKey, content: bytes, signature: str | None) -> None:
    """Check `signature` over `content` (a request's, answer's or notification's sign
    content, as above); SignatureError says which check failed."""
    if not signature:
        raise SignatureError("missing sign")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("sign is not base64") from None
    try:
        # RSA verification does not leak where a signature differs: no timing side channel.
        public_key.verify(raw, content, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("sign does not verify with Alipay's public key") from None


class ResponseShapeError(ValueError):
    pass


@dataclass(frozen=True)
class RawResponse:
    key: str  # e.g. "alipay_trade_query_response" or "error_response"
    raw: str  # the exact JSON text of its value, as it appears in the body
    payload: dict[str, object]
    sign: str | None


def split_response(text: str, expected_key: str) -> RawResponse:
    """The top-level `expected_key` (or `error_response`) member of a gateway answer, with its
    exact text, found by walking the top-level object with the JSON decoder itself."""
    decoder = json.JSONDecoder()
    members: dict[str, tuple[str, object]] = {}

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\n\r":
            i += 1
        return i

    try:
        i = skip(0)
        if text[i : i + 1] != "{":
            raise ResponseShapeError("answer is not a JSON object")
        i = skip(i + 1)
        while text[i : i + 1] != "}":
            key, i = decoder.raw_decode(text, i)
            if not isinstance(key, str):
                raise ResponseShapeError("answer has a non-string key")
            i = skip(i)
            if text[i : i + 1] != ":":
                raise ResponseShapeError("answer is not a JSON object")
            start = skip(i + 1)
            value, end = decoder.raw_decode(text, start)
            if key in members:
                raise ResponseShapeError(f"answer repeats {key!r}")
            members[key] = (text[start:end], value)
            i = skip(end)
            if text[i : i + 1] == ",":
                i = skip(i + 1)
            elif text[i : i + 1] != "}":
                raise ResponseShapeError("answer is not a JSON object")
        if skip(i + 1) != len(text):
            raise ResponseShapeError("answer has trailing data")
    except (json.JSONDecodeError, IndexError) as exc:
        raise ResponseShapeError(f"answer is not JSON: {exc}") from None
    for key in (expected_key, "error_response"):
        if key in members:
            raw, value = members[key]
            if not isinstance(value, dict):
                raise ResponseShapeError(f"{key} is not an object")
            signature = members.get("sign", (None, None))[1]
            return RawResponse(key, raw, value, signature if isinstance(signature, str) else None)
    raise ResponseShapeError(f"answer has no {expected_key}")


def _pem_or_der(data: bytes, kind: str) -> tuple[bytes, bool]:
    """Alipay's key tool writes bare base64; PEM files are used as they are."""
    if b"-----BEGIN" in data:
        return data, True
    try:
        return base64.b64decode(b"".join(data.split()), validate=True), False
    except (binascii.Error, ValueError):
        raise ValueError(f"not a PEM or base64 {kind}") from None


def load_private_key(path: Path, setting: str) -> rsa.RSAPrivateKey:
    data = _read(path, setting)
    try:
        blob, pem = _pem_or_der(data, "private key")
        key = (
            serialization.load_pem_private_key(blob, password=None)
            if pem
            else serialization.load_der_private_key(blob, password=None)
        )
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{setting} ({path}) does not hold an unencrypted RSA private key")
    return key


def load_public_key(path: Path, setting: str) -> rsa.RSAPublicKey:
    data = _read(path, setting)
    try:
        blob, pem = _pem_or_der(data, "public key")
        key = (
            serialization.load_pem_public_key(blob)
            if pem
            else serialization.load_der_public_key(blob)
        )
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"{setting} ({path}) does not hold an RSA public key")
    return key


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
