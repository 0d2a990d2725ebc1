"""Stripe-Signature verification, checked against the `stripe` SDK (the reference)."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from providers.stripe.signature import (
    compute_signature,
    parse_header,
    signature_header,
    verify,
)
from tempay.errors import SignatureError
from tests.support.fakes.stripe_api import FakeStripe

SECRET = "whsec_test_0123456789abcdef"
OLD_SECRET = "whsec_test_old_fedcba9876543210"
BODY = json.dumps({"id": "evt_1", "type": "checkout.session.completed"}).encode()


def test_the_name_stripe_is_the_sdk() -> None:
    # providers/stripe is providers.stripe: it does not shadow the SDK.
    assert hasattr(stripe, "WebhookSignature") and hasattr(stripe.Webhook, "construct_event")


def sdk_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)


def test_accepts_the_sdks_signature() -> None:
    assert verify(BODY, sdk_header(BODY, SECRET), [SecretStr(SECRET)]) > 0


def test_our_signature_is_the_sdks() -> None:
    t = int(time.time())
    assert compute_signature(BODY, t, SECRET) == stripe.WebhookSignature._compute_signature(
        f"{t}.{BODY.decode()}", SECRET
    )
    header = signature_header(BODY, [SecretStr(SECRET)], t)
    assert stripe.WebhookSignature.verify_header(BODY, header, SECRET, 300)


def test_the_sdk_accepts_the_fakes_events() -> None:
    fake = FakeStripe(api_key="sk_test_x", webhook_secrets=[OLD_SECRET, SECRET])
    event = fake.event("checkout.session.expired", {"id": "cs_1", "object": "checkout.session"})
    body, header = fake.signed(event)
    for secret in (SECRET, OLD_SECRET):
        parsed = stripe.Webhook.construct_event(body, header, secret)
        assert parsed["id"] == event["id"] and parsed["type"] == "checkout.session.expired"
    assert verify(body, header, [SECRET]) and verify(body, header, [OLD_SECRET])


def test_tampered_body_is_refused() -> None:
    header = sdk_header(BODY, SECRET)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(BODY.replace(b"completed", b"expired"), header, [SECRET])


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(BODY, sdk_header(BODY, "whsec_someone_else"), [SECRET])


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_stale_or_future_timestamp_is_refused(age: int) -> None:
    header = sdk_header(BODY, SECRET, int(time.time()) - age)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, header, [SECRET])


def test_timestamp_inside_tolerance_is_accepted() -> None:
    now = time.time()
    header = sdk_header(BODY, SECRET, int(now) - 299)
    assert verify(BODY, header, [SECRET], now=now) == int(now) - 299


def test_signed_timestamp_is_what_counts() -> None:
    # Moving t (to pass the tolerance) breaks the signature.
    t = int(time.time()) - 1000
    sig = compute_signature(BODY, t, SECRET)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(BODY, f"t={int(time.time())},v1={sig}", [SECRET])


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "garbage", "t=,v1=abc", "v1=abc", "t=12x,v1=abc", "t=1,t=2,v1=ab", "t=1"],
)
def test_missing_or_garbled_header_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header, [SECRET])


def test_rotated_secrets_old_and_new_both_accepted() -> None:
    secrets = [SecretStr(SECRET), SecretStr(OLD_SECRET)]
    assert verify(BODY, sdk_header(BODY, SECRET), secrets)
    assert verify(BODY, sdk_header(BODY, OLD_SECRET), secrets)
    # Once the old one is dropped, its signatures stop counting.
    with pytest.raises(SignatureError):
        verify(BODY, sdk_header(BODY, OLD_SECRET), [SecretStr(SECRET)])


def test_any_of_several_v1_entries_may_match() -> None:
    t = int(time.time())
    good = compute_signature(BODY, t, SECRET)
    header = f"t={t},v1={'0' * 64},v0=ignored,v1={good}"
    assert parse_header(header) == (t, ["0" * 64, good])
    assert verify(BODY, header, [SECRET]) == t
    assert stripe.WebhookSignature.verify_header(BODY, header, SECRET, 300)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(SignatureError, match="no Stripe webhook secret"):
        verify(BODY, sdk_header(BODY, SECRET), [])


def test_errors_never_show_the_secret() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, sdk_header(BODY, "whsec_other"), [SECRET])
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "t",
    [
        "9" * 5000,  # int() refuses over 4,300 digits with a ValueError
        "9" * 13,  # beyond any sane unix time
        "١٧٠٠٠٠٠٠٠٠",  # Arabic-Indic digits: str.isdigit() and int() accept them
        "+1700000000",
        "-1",
        " 1700000000",
        "1_700_000_000",
        "²",
    ],
)
def test_a_timestamp_that_is_not_plain_ascii_digits_is_a_signature_error(t: str) -> None:
    header = f"t={t},v1={compute_signature(BODY, int(time.time()), SECRET)}"
    with pytest.raises(SignatureError, match="numeric t=") as caught:
        verify(BODY, header, [SECRET])
    assert len(str(caught.value)) < 100  # the hostile value is not echoed


# Numbers, signs, spaces and digits of every script, in the shape of a header.
_HEADER_PIECES = st.one_of(
    st.text(st.characters(categories=["Nd", "No", "Zs"]) | st.sampled_from("0+-_,= v1t")),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.integers(4290, 4400).map(lambda n: "9" * n),
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    header=st.one_of(
        st.text(),
        st.tuples(_HEADER_PIECES, _HEADER_PIECES).map(lambda p: f"t={p[0]},v1={p[1]}"),
    ),
    body=st.binary(max_size=64),
)
def test_any_header_is_a_signature_error_or_verifies(header: str, body: bytes) -> None:
    try:
        verify(body, header, [SECRET])
    except SignatureError:
        pass
