"""Bad requests to `POST /notify/{provider}` for the fuzz suite: Hypothesis strategies of
arbitrary requests (bodies, headers, content types, unsigned or signed with a wrong key) and of
mutations of a validly signed notification, each with the answers it may get; and the check
that one was refused."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from hypothesis import assume
from hypothesis import strategies as st

from tests.support.fuzz.harness import (
    PROVIDERS,
    AlipayKit,
    FuzzStack,
    Notification,
    WechatKit,
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)
# Header values an HTTP client can send: visible ASCII and Latin-1 bytes, spaces inside.
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=120
).map(lambda text: text.strip().encode("latin-1"))
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=gbk",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "text/xml",
            "application/octet-stream",
            "",
            "*/*",
            "application/json; charset=\u00ff",
        ]
    ).map(lambda text: text.encode("latin-1")),
    HEADER_TEXT,
)
UNKNOWN_PROVIDERS = st.from_regex(r"\A[a-z0-9_.~-]{1,20}\Z").filter(
    lambda p: p not in PROVIDERS and p not in (".", "..")
)


def form(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode()


@st.composite
def notification_like(draw: st.DrawFn, fuzz: FuzzStack, provider: str) -> bytes:
    """A notification for the provider's running payment with fields dropped or replaced,
    encoded as that provider does (JSON, or Alipay's form)."""
    kit = fuzz.kits[provider]
    payload = kit.payload(fuzz.targets[provider].order_id)
    changed: dict[str, Any] = {}
    for key, value in payload.items():
        action = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
        if action == "keep":
            changed[key] = value
        elif action == "replace":
            changed[key] = draw(JSON if provider != "alipay" else st.text(max_size=30))
    changed.update(draw(st.dictionaries(st.text(max_size=12), JSON_SCALARS, max_size=3)))
    if provider == "alipay":
        pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in changed.items()]
        if draw(st.booleans()):
            pairs.append(("sign", draw(st.text(max_size=400))))
        return form(pairs)
    return json.dumps(changed).encode()


def bodies(fuzz: FuzzStack, provider: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2048),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=12).map(form),
        notification_like(fuzz, provider),
    )


@st.composite
def arbitrary_request(draw: st.DrawFn, fuzz: FuzzStack) -> tuple[str, bytes, dict[str, Any], str]:
    provider = draw(st.sampled_from(PROVIDERS) | UNKNOWN_PROVIDERS)
    kit = fuzz.kits.get(provider) or fuzz.kits["sandbox"]
    body = draw(bodies(fuzz, kit.name))
    signing = draw(st.sampled_from(["none", "wrong_key", "garbage", "garbage"]))
    headers: dict[str, Any] = {}
    if signing == "wrong_key":
        headers.update(kit.sign_arbitrary(body, wrong_key=True))
    elif signing == "garbage":
        names = draw(
            st.lists(st.sampled_from(kit.signature_headers or ("X-Signature",)), unique=True)
        )
        headers.update({name: draw(HEADER_TEXT) for name in names})
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return provider, body, headers, signing


# Mutations of a validly signed notification for the provider's running payment


def _flip(draw: st.DrawFn, kit: Any, order_id: str) -> tuple[Notification, set[int]]:
    valid = kit.valid(order_id)
    # Drawn independently of the body's length, which varies (random ids): reproducible.
    index = draw(st.integers(0, 2**16)) % len(valid.body)
    mask = draw(st.integers(1, 255))
    body = bytearray(valid.body)
    body[index] ^= mask
    if isinstance(kit, AlipayKit):
        assume(not same_alipay_notification(bytes(body), valid.body))
    return Notification(valid.headers, bytes(body)), {400, 401}


def same_alipay_notification(a: bytes, b: bytes) -> bool:
    """Alipay signs the decoded parameters, and the signature is base64 in a parameter: a flip
    that decodes to the same parameters ("%3A" -> "%3a") or to the same signature bytes (the
    unused low bits of base64's last character) is the same notification, not a forgery."""

    def meaning(body: bytes) -> list[tuple[str, Any]]:
        pairs: list[tuple[str, Any]] = parse_qsl(body.decode(), strict_parsing=True)
        return [(k, base64.b64decode(v, validate=True) if k == "sign" else v) for k, v in pairs]

    try:
        return meaning(a) == meaning(b)
    except (UnicodeDecodeError, ValueError):
        return False


AMOUNTS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    st.sampled_from(["0.01", "9.99", "10.01", "100.00", "-10.00", "1e3", "NaN", ""]),
    st.text(max_size=10),
).filter(lambda a: a != "10.00")


def _change_amount(draw: st.DrawFn, kit: Any, order_id: str) -> tuple[Notification, set[int]]:
    valid = kit.valid(order_id)
    amount = draw(AMOUNTS)
    if draw(st.booleans()):
        # Resigned, but with a wrong key.
        return kit.encode(kit.payload(order_id, amount), wrong_key=True), {401}
    # The genuine signature of the 10.00 notification, on a body that says otherwise.
    if isinstance(kit, AlipayKit):
        params = dict(parse_qsl(valid.body.decode()))
        params["total_amount"] = params["receipt_amount"] = amount
        return Notification(valid.headers, urlencode(params).encode()), {401}
    if isinstance(kit, WechatKit):
        other = kit.encode(kit.payload(order_id, amount))
        return Notification(valid.headers, other.body), {401}
    return Notification(valid.headers, kit.encode(kit.payload(order_id, amount)).body), {401}


def _drop(draw: st.DrawFn, kit: Any, order_id: str) -> tuple[Notification, set[int]]:
    valid = kit.valid(order_id)
    if kit.required_headers and draw(st.booleans()):
        dropped = draw(st.lists(st.sampled_from(kit.required_headers), min_size=1, unique=True))
        headers = {k: v for k, v in valid.headers.items() if k not in dropped}
        return Notification(headers, valid.body), {401}
    if isinstance(kit, AlipayKit):
        pairs = parse_qsl(valid.body.decode())
        # sign_type is outside the signed content and defaults to RSA2: dropping it leaves
        # the same, genuine notification.
        keys = [k for k, _ in pairs if k != "sign_type"]
        key = draw(st.sampled_from(keys))
        return Notification(valid.headers, form([p for p in pairs if p[0] != key])), {400, 401}
    data = json.loads(valid.body)
    key = draw(st.sampled_from(sorted(data)))
    del data[key]
    return Notification(valid.headers, json.dumps(data).encode()), {400, 401}


def _duplicate(draw: st.DrawFn, kit: Any, order_id: str) -> tuple[Notification, set[int]]:
    valid = kit.valid(order_id)
    if isinstance(kit, AlipayKit):
        pairs = parse_qsl(valid.body.decode())
        key, value = draw(st.sampled_from(pairs))
        extra = draw(st.just(value) | st.text(max_size=20))
        position = draw(st.integers(0, len(pairs)))
        pairs.insert(position, (key, extra))
        return Notification(valid.headers, form(pairs)), {400}
    # A second out_trade_no (or any key) in the raw JSON text: JSON parsers keep the last.
    key = draw(st.sampled_from(sorted(json.loads(valid.body))))
    assert valid.body.startswith(b"{")
    duplicate = json.dumps(key).encode() + b":" + json.dumps(draw(JSON)).encode()
    body = b"{" + duplicate + b"," + valid.body[1:]
    if draw(st.booleans()) and "Stripe-Signature" in valid.headers:
        # Stripe: a second t= in the header.
        headers = {**valid.headers, "Stripe-Signature": valid.headers["Stripe-Signature"] + ",t=1"}
        return Notification(headers, valid.body), {401}
    return Notification(valid.headers, body), {401}


def _stale(draw: st.DrawFn, kit: Any, order_id: str) -> tuple[Notification, set[int]]:
    """Genuinely signed, but too old (or, except for Alipay, too far in the future)."""
    age = draw(st.floats(kit.stale_after + 60, 5 * 365 * 86400))
    if not isinstance(kit, AlipayKit) and draw(st.booleans()):
        age = -age
    return kit.valid(order_id, age=age), {401}


def _wrong_key(draw: st.DrawFn, kit: Any, order_id: str) -> tuple[Notification, set[int]]:
    return kit.encode(kit.payload(order_id), wrong_key=True), {401}


MUTATIONS = {
    "flip": _flip,
    "amount": _change_amount,
    "drop": _drop,
    "duplicate": _duplicate,
    "stale": _stale,
    "wrong_key": _wrong_key,
}


@st.composite
def mutated(draw: st.DrawFn, fuzz: FuzzStack) -> tuple[str, str, Notification, set[int]]:
    provider = draw(st.sampled_from(PROVIDERS))
    name = draw(st.sampled_from(sorted(MUTATIONS)))
    kit = fuzz.kits[provider]
    notification, allowed = MUTATIONS[name](draw, kit, fuzz.targets[provider].order_id)
    return provider, name, notification, allowed


def assert_refused(response: httpx.Response, allowed: set[int]) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.status_code in allowed, (response.status_code, response.text)
