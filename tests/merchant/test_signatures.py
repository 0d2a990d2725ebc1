"""Standard Webhooks signing and verification (tempay.merchant_webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from tempay.errors import InvalidSecret, WebhookVerificationError
from tempay.merchant_webhooks import generate_secret, parse_secret, sign, signed_headers, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
MSG_ID = "evt_payment-ord-1_succeeded"
BODY = b'{"id":"evt_payment-ord-1_succeeded","data":{"amount":"10.00"}}'
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TS = int(NOW.timestamp())


def headers(secret: str = SECRET, timestamp: int = TS, body: bytes = BODY) -> dict[str, str]:
    return signed_headers(secret, MSG_ID, timestamp, body)


def test_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    expected = hmac.new(b"k" * 32, f"{MSG_ID}.{TS}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SECRET, MSG_ID, TS, BODY) == "v1," + base64.b64encode(expected).decode()
    assert sign(SECRET, MSG_ID, NOW, BODY.decode()) == sign(SECRET, MSG_ID, TS, BODY)


def test_round_trip() -> None:
    sent = headers()
    assert sent["webhook-id"] == MSG_ID and sent["webhook-timestamp"] == str(TS)
    verify(SECRET, sent, BODY, now=NOW)
    # Header names compare case-insensitively; the body may be text.
    verify(SECRET, {k.upper(): v for k, v in sent.items()}, BODY.decode(), now=NOW)


def test_tampered_body_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="no v1 signature .* matches"):
        verify(SECRET, headers(), BODY.replace(b"10.00", b"99.00"), now=NOW)


def test_changed_id_or_timestamp_fails() -> None:
    sent = headers()
    with pytest.raises(WebhookVerificationError, match="matches"):
        verify(SECRET, {**sent, "webhook-id": "evt_other"}, BODY, now=NOW)
    with pytest.raises(WebhookVerificationError, match="matches"):
        verify(SECRET, {**sent, "webhook-timestamp": str(TS + 1)}, BODY, now=NOW)


def test_wrong_secret_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="wrong secret"):
        verify(OTHER_SECRET, headers(), BODY, now=NOW)


@pytest.mark.parametrize(
    ("age", "message"),
    [(timedelta(minutes=5, seconds=1), "301 s old"), (-timedelta(minutes=6), "in the future")],
)
def test_timestamp_outside_tolerance_fails(age: timedelta, message: str) -> None:
    with pytest.raises(WebhookVerificationError, match=message):
        verify(SECRET, headers(), BODY, now=NOW + age)


def test_timestamp_inside_tolerance_passes() -> None:
    verify(SECRET, headers(), BODY, now=NOW + timedelta(minutes=5))
    verify(SECRET, headers(), BODY, now=NOW - timedelta(minutes=5))
    verify(SECRET, headers(), BODY, now=NOW + timedelta(hours=1), tolerance=timedelta(hours=2))


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing: str) -> None:
    sent = headers()
    del sent[missing]
    with pytest.raises(WebhookVerificationError, match=f"missing {missing} header"):
        verify(SECRET, sent, BODY, now=NOW)


def test_malformed_timestamp_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="not unix seconds"):
        verify(SECRET, {**headers(), "webhook-timestamp": "2026-01-02T03:04:05Z"}, BODY, now=NOW)


@pytest.mark.parametrize(
    "timestamp",
    [
        "²",  # str.isdigit() says yes, int() says no
        "9" * 4301,  # past int()'s 4,300-digit limit
        "9" * 13,  # no unix time for thousands of years
        str(TS).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),  # Arabic-Indic digits
        f"+{TS}",
        f"{TS}.0",
        f"{str(TS)[0]}_{str(TS)[1:]}",
    ],
)
def test_a_timestamp_that_is_not_plain_ascii_digits_fails(timestamp: str) -> None:
    with pytest.raises(WebhookVerificationError, match="not unix seconds") as caught:
        verify(SECRET, {**headers(), "webhook-timestamp": timestamp}, BODY, now=NOW)
    assert len(str(caught.value)) < 200  # a huge header is not echoed back whole


def test_text_that_is_not_utf8_encodable_fails() -> None:
    # A lone surrogate cannot be encoded; in the id or a str body it used to raise
    # UnicodeEncodeError (a ValueError).
    with pytest.raises(WebhookVerificationError, match="webhook-id"):
        verify(SECRET, {**headers(), "webhook-id": "evt_\ud800"}, BODY, now=NOW)
    with pytest.raises(WebhookVerificationError, match="body"):
        verify(SECRET, headers(), "{\ud800}", now=NOW)


# Header values as a hostile sender could make them: any text (surrogates too), digits of
# every script, numbers of any size, and base64-looking signatures.
_ANY_TEXT = st.text(st.characters(exclude_categories=[]), max_size=40)
_NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(4290, 4400).map(lambda n: "9" * n),
    st.text(st.characters(categories=["Nd", "No", "Zs"]) | st.sampled_from("+-_."), max_size=20),
    st.just(str(TS)),
)
_SIGNATURES = st.one_of(
    _ANY_TEXT,
    st.lists(
        st.tuples(st.sampled_from(["v1", "v2", "", "v1a"]), st.binary(max_size=40)).map(
            lambda entry: f"{entry[0]},{base64.b64encode(entry[1]).decode()}"
        ),
        max_size=3,
    ).map(" ".join),
    st.text("v1,=+/ abcABC019\u00e9\u00b2", max_size=60),
)


@settings(max_examples=500, deadline=None, database=None)
@given(
    sent=st.fixed_dictionaries(
        {},
        optional={
            "webhook-id": st.one_of(_ANY_TEXT, st.just(MSG_ID)),
            "Webhook-Timestamp": st.one_of(_ANY_TEXT, _NUMBERS),
            "webhook-signature": _SIGNATURES,
            "x-other": _ANY_TEXT,
        },
    ),
    body=st.one_of(st.binary(max_size=80), _ANY_TEXT, st.just(BODY)),
)
def test_verify_on_any_input_raises_only_its_own_error(
    sent: dict[str, str], body: bytes | str
) -> None:
    try:
        verify(SECRET, sent, body, now=NOW)
    except WebhookVerificationError:
        pass


def test_several_signatures_one_matching_passes_during_rotation() -> None:
    """The sender signs with the old and the new secret; either receiver accepts."""
    both = f"{sign(OTHER_SECRET, MSG_ID, TS, BODY)} {sign(SECRET, MSG_ID, TS, BODY)}"
    rotating = {**headers(), "webhook-signature": both}
    verify(SECRET, rotating, BODY, now=NOW)
    verify(OTHER_SECRET, rotating, BODY, now=NOW)
    third = "whsec_" + base64.b64encode(b"t" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        verify(third, rotating, BODY, now=NOW)


def test_unknown_versions_and_garbage_entries_are_skipped() -> None:
    good = sign(SECRET, MSG_ID, TS, BODY)
    noisy = f"v1a,{good[3:]} v2,abc v1,not*base64 nonsense {good}"
    verify(SECRET, {**headers(), "webhook-signature": noisy}, BODY, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, {**headers(), "webhook-signature": f"v2,{good[3:]}"}, BODY, now=NOW)


def test_generated_secrets_are_fresh_and_valid() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second and first.startswith("whsec_")
    assert len(parse_secret(first)) == 32
    verify(first, signed_headers(first, MSG_ID, TS, BODY), BODY, now=NOW)


def test_parse_secret_accepts_unpadded_base64_and_raw_keys() -> None:
    assert parse_secret(SECRET.rstrip("=")) == b"k" * 32
    assert parse_secret(b"r" * 24) == b"r" * 24


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (base64.b64encode(b"k" * 32).decode(), "must start with 'whsec_'"),
        ("whsec_not base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5 bytes; use at least 24"),
        ("whsec_", "0 bytes"),
    ],
)
def test_bad_secret_format_is_refused_without_echoing_it(secret: str, message: str) -> None:
    with pytest.raises(InvalidSecret, match=message) as refused:
        parse_secret(secret)
    if len(secret) > len("whsec_"):
        assert secret.removeprefix("whsec_") not in str(refused.value)
    with pytest.raises(InvalidSecret):
        sign(secret, MSG_ID, TS, BODY)


def test_reference_implementation_accepts_our_signatures() -> None:
    """The Standard Webhooks reference library verifies what we sign, and signs the same."""
    secret = generate_secret()
    now = int(datetime.now(UTC).timestamp())
    body = BODY.decode()
    sent = signed_headers(secret, MSG_ID, now, body)
    assert standardwebhooks.Webhook(secret).verify(body, sent) == {
        "id": MSG_ID,
        "data": {"amount": "10.00"},
    }
    theirs = standardwebhooks.Webhook(secret).sign(MSG_ID, datetime.fromtimestamp(now, UTC), body)
    assert theirs == sent["webhook-signature"]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret()).verify(body, sent)
