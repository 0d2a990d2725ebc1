"""Standard Webhooks signatures for the events tempay sends to the merchant's application.

The scheme (https://www.standardwebhooks.com/): three headers on every delivery,

- `webhook-id`: the event id, the same on every retry, so the receiver can deduplicate;
- `webhook-timestamp`: unix seconds of this attempt, so the receiver can refuse replays;
- `webhook-signature`: `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, several
  space-separated signatures allowed (for key rotation); one matching is enough.

The secret is `whsec_<base64 key>`; the HMAC key is the decoded part. Shaped like
stripe-python's webhook module: `sign` on the sending side, `verify` on the receiving side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
MIN_KEY_BYTES = 24  # the scheme's recommended range is 24 to 64 bytes
DEFAULT_TOLERANCE = timedelta(minutes=5)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

REDACTED = "***"
# A URL inside a message (an httpx error, a merchant's error page), up to whitespace or quotes.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")

# Unix seconds in ASCII digits only: str.isdigit() also says yes to "²" and "١", and int()
# raises ValueError past 4,300 digits; twelve digits reach the year 33658.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class InvalidSecret(ValueError):
    """The secret is not `whsec_` followed by a base64 key of at least 24 bytes."""


class WebhookVerificationError(Exception):
    """A delivery did not verify; the message says which check failed."""


def redact_url(url: str) -> str:
    """`url` as it may be shown (logs, errors, workflow history, the Temporal UI):
    scheme://host:port/path, with a user:password and a query, where tokens travel, as ***.
    `https://shop:pw@merchant.example/hooks?token=t` -> `https://***@merchant.example/hooks?***`
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparseable: nothing of it is safe to show
    userinfo, at, host = parts.netloc.rpartition("@")
    return urlunsplit(
        (
            parts.scheme,
            f"{REDACTED}@{host}" if at else host,
            parts.path,
            REDACTED if parts.query else "",
            REDACTED if parts.fragment else "",
        )
    )


def redact_urls(text: str) -> str:
    """`text` with every URL in it passed through redact_url."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def generate_secret() -> str:
    """A fresh random secret in `whsec_<base64>` form (32-byte key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def parse_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; raw bytes are taken as the key itself.

    Error messages never include the secret."""
    if isinstance(secret, bytes):
        key = secret
    else:
        secret = secret.strip()
        if not secret.startswith(SECRET_PREFIX):
            raise InvalidSecret(f"webhook secret must start with {SECRET_PREFIX!r}")
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecret(
                f"webhook secret must be {SECRET_PREFIX!r} followed by base64"
            ) from None
    if len(key) < MIN_KEY_BYTES:
        raise InvalidSecret(
            f"webhook secret key is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
            "(generate one with tempay.merchant_webhooks.generate_secret())"
        )
    return key


def _unix(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        return int(timestamp.timestamp())
    return int(timestamp)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def parse_timestamp(value: str) -> int:
    """A `webhook-timestamp` value as unix seconds; anything but 1-12 ASCII digits fails."""
    value = value.strip()
    if not _TIMESTAMP.fullmatch(value):
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} {shown!r} is not unix seconds")
    return int(value)


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str | bytes, msg_id: str, timestamp: int | datetime, body: bytes | str) -> str:
    """The `webhook-signature` header value for one delivery attempt."""
    digest = _signature(parse_secret(secret), msg_id, _unix(timestamp), _as_bytes(body))
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(
    secret: str | bytes, msg_id: str, timestamp: int | datetime, body: bytes | str
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt."""
    unix = _unix(timestamp)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(unix),
        SIGNATURE_HEADER: sign(secret, msg_id, unix, body),
    }


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> None:
    """Raise WebhookVerificationError unless `body` was signed with `secret` recently.

    `headers` is any mapping (header names compare case-insensitively); `body` must be the
    raw bytes as received, before any JSON parsing."""
    key = parse_secret(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        if not lowered.get(name):
            raise WebhookVerificationError(f"missing {name} header")
    msg_id = lowered[ID_HEADER]
    timestamp = parse_timestamp(lowered[TIMESTAMP_HEADER])
    current = (now or datetime.now(UTC)).timestamp()
    limit = tolerance.total_seconds()
    if timestamp < current - limit:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {current - timestamp:.0f} s old, over the {limit:.0f} s "
            "tolerance (a replay, or a clock that is off)"
        )
    if timestamp > current + limit:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {timestamp - current:.0f} s in the future, over the "
            f"{limit:.0f} s tolerance (a clock that is off)"
        )

    # Text with a lone surrogate has no UTF-8 form (UnicodeEncodeError): nothing signed it.
    if not _utf8_encodable(msg_id):
        raise WebhookVerificationError(f"{ID_HEADER} is not UTF-8 text")
    if isinstance(body, str) and not _utf8_encodable(body):
        raise WebhookVerificationError("body is not UTF-8 text (pass the raw bytes received)")
    expected = _signature(key, msg_id, timestamp, _as_bytes(body))
    matched = False
    for entry in lowered[SIGNATURE_HEADER].split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Check every entry, in constant time each, rather than stopping at the first match.
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError(
            f"no {SIGNATURE_VERSION} signature in {SIGNATURE_HEADER} matches the body "
            "(wrong secret, or the body was changed)"
        )
