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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from tempay.errors import InvalidSecret, WebhookVerificationError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
MIN_KEY_BYTES = 24  # the scheme's recommended range is 24 to 64 bytes
DEFAULT_TOLERANCE = timedelta(minutes=5)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

REDACTED = "***"
# What redact_url shows in place of a URL's path, params, query and fragment.
HIDDEN_PATH = "/…"
# A URL inside a message (an httpx error, a merchant's error page), up to whitespace or quotes.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# Punctuation that ends a sentence around a URL rather than the URL itself.
_TRAILING_PUNCTUATION = ".,;:!?)]}"
# Parts of a URL shorter than this (`v=1`, `/v2`) are no secret, and scrubbing them from a
# message would blot out every such digit or word; the user name and password always count.
MIN_SECRET_LENGTH = 4

# Unix seconds in ASCII digits only: str.isdigit() also says yes to "²" and "١", and int()
# raises ValueError past 4,300 digits; twelve digits reach the year 33658.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def webhook_url_problem(url: str) -> str | None:
    """Why httpx cannot POST to `url` (http or https, with a host), in words that quote
    nothing of it, for an error that may be logged; None: it can."""
    if any(char.isspace() or not char.isprintable() for char in url):
        return "has a space or a control character (percent-encode it, e.g. %20)"
    try:
        parsed = httpx.URL(url)
    except Exception:  # noqa: BLE001 - httpx's own message quotes the URL: never shown
        parsed = None
    if parsed is None:
        return (
            "is not a URL httpx can parse: check the port, and percent-encode `/`, `?`, `#`, "
            "`@` and `:` in the user name and password (e.g. %2F for `/`)"
        )
    if parsed.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parsed.host:
        return "has no host"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return "has a port outside 1-65535"
    return None


def redact_url(url: str) -> str:
    """`url` as it may be shown (logs, errors, workflow history, the Temporal UI): only where
    it goes, `scheme://host[:port]`, as httpx reads the URL (so, what it sends to). What is
    hidden is replaced by a fixed marker, never shown in part:

    - `***@` after the scheme: the URL has a user name and/or password;
    - `/…` (slash, ellipsis) at the end: it has a path beyond `/`, params (`;k=v`), a query
      or a fragment, where tokens travel (`/services/T0/B0/SECRET`, `?token=`);
    - `***` alone: a URL httpx cannot parse, or one without a host: none of it is shown.

    `https://shop:pw@merchant.example:8443/hooks?token=t` -> `https://***@merchant.example:8443/…`
    `https://merchant.example/` -> `https://merchant.example`
    """
    try:
        parsed = httpx.URL(url)
        host = parsed.netloc.decode("ascii")  # host[:port], IPv6 in brackets, IDNA encoded
    except Exception:  # noqa: BLE001 - whatever fails to parse: nothing of it is safe to show
        return REDACTED
    if not parsed.scheme or not host:
        return REDACTED
    userinfo = f"{REDACTED}@" if parsed.userinfo else ""
    rest = HIDDEN_PATH if parsed.raw_path not in (b"", b"/") or parsed.fragment else ""
    return f"{parsed.scheme}://{userinfo}{host}{rest}"


def _redact_url_in_text(match: re.Match[str]) -> str:
    url = match.group()
    stripped = url.rstrip(_TRAILING_PUNCTUATION)
    return redact_url(stripped) + url[len(stripped) :]


def redact_urls(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL in it passed through redact_url, then each of `secrets` (see
    url_secrets) replaced by `***`, longest first: a request line (`POST /hooks/SECRET`) or an
    error page echoes parts of a URL with no `scheme://` before them."""
    text = _URL_IN_TEXT.sub(_redact_url_in_text, text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def url_secrets(url: str) -> list[str]:
    """What of `url` a message must never show, for redact_urls, longest first:

    - the user name and the password, whatever their length, and the `Basic` authorization
      httpx makes of them;
    - of MIN_SECRET_LENGTH characters or more: the path and every segment of it, every param
      (`;token=t`) and its value, the query, each `k=v` of it and each value, the fragment.

    Each as written, as httpx normalises it and percent-decoded."""
    credentials: list[str] = []
    parts: list[str] = []
    forms = [url]
    try:
        parsed = httpx.URL(url)
        forms.append(str(parsed))  # httpx's spelling: `%20` for a space, and so on
        if parsed.username or parsed.password:
            # What httpx sends them as, `Authorization: Basic <this>`, which pages echo too.
            basic = f"{parsed.username}:{parsed.password}".encode()
            credentials.append(base64.b64encode(basic).decode("ascii"))
    except Exception:  # noqa: BLE001 - httpx cannot read it (and Settings refuse it)
        # `https://shop:p/w@host`: urlsplit sees host `shop`, port `p`; httpx's error shows
        # `p`. Whatever comes before the last `@` is taken for credentials, in pieces too.
        userinfo, at, _ = url.partition("://")[2].rpartition("@")
        if at:
            credentials += [userinfo, *re.split(r"[:/?#]+", userinfo)]
    for form in forms:
        try:
            split = urlsplit(form)
        except ValueError:
            # Not even urlsplit reads it: every piece between delimiters counts.
            parts += re.split(r"[/:@?#;&=]+", form.partition("://")[2])
            continue
        userinfo, at, _ = split.netloc.rpartition("@")
        if at:
            user, _, password = userinfo.partition(":")
            credentials += [userinfo, user, password]
        parts += [split.path, split.query, split.fragment]
        for segment in split.path.split("/"):
            parts.append(segment)
            for param in segment.split(";")[1:]:
                parts += [param, param.partition("=")[2]]
        for pair in split.query.split("&"):
            parts += [pair, pair.partition("=")[2]]
        parts += [value for _, value in parse_qsl(split.query, keep_blank_values=True)]
    found = {text for item in credentials for text in (item, unquote(item)) if text}
    found |= {
        text
        for item in parts
        for text in (item, unquote(item), unquote(item.replace("+", " ")))
        if len(text) >= MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


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
