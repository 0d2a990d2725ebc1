"""Stripe's webhook signature scheme.

`Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each v1 is
HMAC-SHA256(secret, f"{t}.{raw body}") in hex and the secret is the whole `whsec_...` string.
While an endpoint's secret is rolled Stripe signs with both, so a header may carry several
v1 entries; a verifier may hold several secrets too. Any v1 matching any secret is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from pydantic import SecretStr

from tempay.errors import SignatureError

SIGNATURE_HEADER = "Stripe-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300.0
# Unix seconds in ASCII digits only: int() alone also takes "+1", " 1", "1_0", "١" and
# raises ValueError past 4,300 digits; twelve digits reach the year 33658.
TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _secret(value: SecretStr | str) -> bytes:
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return raw.encode("utf-8")


def compute_signature(body: bytes, timestamp: int, secret: SecretStr | str) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(_secret(secret), signed, hashlib.sha256).hexdigest()


def signature_header(
    body: bytes, secrets: Sequence[SecretStr | str], timestamp: int | None = None
) -> str:
    """The header Stripe would send, with one v1 entry per secret."""
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}"] + [f"{SCHEME}={compute_signature(body, t, s)}" for s in secrets])


def parse_header(header: str | None) -> tuple[int, list[str]]:
    """The timestamp and the v1 signatures; other schemes (v0, ...) are ignored."""
    if not header or not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key or not value:
            raise SignatureError(f"garbled {SIGNATURE_HEADER} header")
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not TIMESTAMP.fullmatch(timestamps[0]):
        raise SignatureError(
            f"{SIGNATURE_HEADER} header needs exactly one numeric t= (unix seconds)"
        )
    if not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no {SCHEME} signature")
    return int(timestamps[0]), signatures


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[SecretStr | str],
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check the raw body against the header; returns the signed timestamp."""
    if not secrets:
        raise SignatureError("no Stripe webhook secret configured")
    timestamp, signatures = parse_header(header)
    matched = False
    for secret in secrets:
        expected = compute_signature(body, timestamp, secret).encode("ascii")
        for candidate in signatures:
            # Every comparison runs (no early exit) and each is constant-time.
            matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("no v1 signature matches a configured webhook secret")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"signature timestamp {timestamp} is outside the {tolerance:g} s tolerance"
        )
    return timestamp
