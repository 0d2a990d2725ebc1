"""WeChat Pay notifications: signed with the reference SDK's `wechatpayv3.utils.rsa_sign`,
encrypted with AEAD_AES_256_GCM; checked against the SDK's own verifier and decrypter, then
against the adapter, with every way a notification can be wrong."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wechatpayv3.core import Core
from wechatpayv3.utils import build_authorization, rsa_sign

from providers.wechatpay import crypto
from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import WechatPayConfig
from tempay.domain import (
    PaymentObservation,
    ProviderPaymentState,
    ProviderRefundState,
    RefundObservation,
)
from tempay.errors import MalformedNotification, UnverifiedNotification
from tests.support.fakes.wechatpay_api import encrypt, signed_notification
from tests.support.providers.wechatpay import (
    APIV3_KEY,
    APPID,
    CERT_SERIAL,
    MCHID,
    private_pem,
    public_pem,
)

PUB_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000000000"


def transaction(**overrides: Any) -> dict[str, Any]:
    return {
        "appid": APPID,
        "mchid": MCHID,
        "out_trade_no": "ord-1217752501",
        "transaction_id": "4200000985202103031441826014",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "attach": "",
        "success_time": "2026-11-28T11:23:45+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 1234, "payer_total": 1234, "currency": "CNY", "payer_currency": "CNY"},
        **overrides,
    }


def refund(status: str, **overrides: Any) -> dict[str, Any]:
    return {
        "mchid": MCHID,
        "out_trade_no": "ord-1217752501",
        "transaction_id": "4200000985202103031441826014",
        "out_refund_no": "rf-1217752501",
        "refund_id": "50000000382019052709732678859",
        "refund_status": status,
        "success_time": "2026-11-28T12:00:00+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 1234, "refund": 300, "payer_total": 1234, "payer_refund": 300},
        **overrides,
    }


@pytest.fixture
def wechat(config: WechatPayConfig) -> WechatPayAdapter:
    return WechatPayAdapter(config)


def notify(
    key: rsa.RSAPrivateKey,
    event_type: str = "TRANSACTION.SUCCESS",
    resource: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[dict[str, str], bytes]:
    original = "refund" if event_type.startswith("REFUND") else "transaction"
    return signed_notification(
        key,
        kwargs.pop("public_key_id", PUB_KEY_ID),
        kwargs.pop("apiv3_key", APIV3_KEY.encode()),
        event_type,
        resource if resource is not None else transaction(),
        original,
        **kwargs,
    )


def resign(key: rsa.RSAPrivateKey, headers: dict[str, str], body: bytes) -> dict[str, str]:
    """Headers for `body`, freshly signed with the reference SDK."""
    stamp, nonce = headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"]
    return {**headers, "Wechatpay-Signature": rsa_sign(key, f"{stamp}\n{nonce}\n{body.decode()}\n")}


# The reference SDK agrees with what we send and what we check


def test_the_reference_sdk_accepts_these_notifications(
    platform_key: rsa.RSAPrivateKey, merchant_key: rsa.RSAPrivateKey
) -> None:
    headers, body = notify(platform_key)
    sdk = Core(
        MCHID,
        CERT_SERIAL,
        private_pem(merchant_key).decode(),
        APIV3_KEY,
        public_key=public_pem(platform_key).decode(),
        public_key_id=PUB_KEY_ID,
    )
    parsed = sdk.callback(headers, body)
    assert parsed is not None and parsed["resource"] == transaction()
    # ... and refuses them once tampered, as we do.
    assert sdk.callback(headers, body.replace(b"TRANSACTION", b"TRANSACTIOM")) is None


def test_request_signatures_match_the_reference_sdk(merchant_key: rsa.RSAPrivateKey) -> None:
    body = json.dumps({"mchid": MCHID, "description": "测试"}, ensure_ascii=False)
    path = "/v3/pay/transactions/out-trade-no/ord-1?mchid=1900000109"
    theirs = build_authorization(path, "POST", MCHID, CERT_SERIAL, merchant_key, data=body)
    parts = crypto.parse_authorization(theirs)
    ours = crypto.authorization(
        merchant_key, MCHID, CERT_SERIAL, "POST", path, body, parts.timestamp, parts.nonce_str
    )
    assert ours == theirs  # PKCS#1 v1.5 is deterministic: byte for byte the same header


# Payments


def test_a_paid_notification_maps_to_a_paid_observation(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey
) -> None:
    headers, body = notify(platform_key, event_id="EV-2018022511223320873")
    observation = wechat.parse_notification(headers, body)
    assert observation == PaymentObservation(
        order_id="ord-1217752501",
        provider="wechatpay",
        state=ProviderPaymentState.PAID,
        provider_trade_no="4200000985202103031441826014",
        amount=Decimal("12.34"),
        currency="CNY",
        occurred_at=observation.occurred_at,
        source="notification",
        notification_id="EV-2018022511223320873",
    )
    assert str(observation.amount) == "12.34"
    assert observation.occurred_at is not None and observation.occurred_at.utcoffset()
    # Lower-case header names (as ASGI servers give them) work the same.
    lower = {k.lower(): v for k, v in headers.items()}
    assert wechat.parse_any_notification(lower, body) == observation


def test_one_fen_is_exact(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    money = {"total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"}
    headers, body = notify(platform_key, resource=transaction(amount=money))
    assert wechat.parse_notification(headers, body).amount == Decimal("0.01")


# Refunds


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("SUCCESS", ProviderRefundState.SUCCEEDED),
        ("ABNORMAL", ProviderRefundState.PENDING),
        ("CLOSED", ProviderRefundState.FAILED),
    ],
)
def test_refund_notifications(
    wechat: WechatPayAdapter,
    platform_key: rsa.RSAPrivateKey,
    status: str,
    state: ProviderRefundState,
) -> None:
    headers, body = notify(platform_key, f"REFUND.{status}", refund(status), event_id="EV-r1")
    observation = wechat.parse_any_notification(headers, body)
    assert isinstance(observation, RefundObservation)
    assert (observation.refund_id, observation.order_id) == ("rf-1217752501", "ord-1217752501")
    assert observation.state is state
    assert observation.amount == Decimal("3.00") and observation.currency == "CNY"
    assert observation.provider_refund_no == "50000000382019052709732678859"
    assert observation.notification_id == "EV-r1"
    # A refund notification never reaches a payment.
    with pytest.raises(MalformedNotification):
        wechat.parse_notification(headers, body)


def test_refund_event_and_status_must_agree(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey
) -> None:
    headers, body = notify(platform_key, "REFUND.SUCCESS", refund("CLOSED"))
    with pytest.raises(MalformedNotification):
        wechat.parse_any_notification(headers, body)


# Refused: 401


def test_tampered_body(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    headers, body = notify(platform_key)
    event = json.loads(body)
    event["id"] = "EV-other"
    with pytest.raises(UnverifiedNotification):
        wechat.parse_notification(headers, json.dumps(event, ensure_ascii=False).encode())


def test_signed_by_another_key(wechat: WechatPayAdapter, other_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(UnverifiedNotification, match="does not verify"):
        wechat.parse_notification(*notify(other_key))


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_stale_or_future_timestamp(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey, offset: int
) -> None:
    headers, body = notify(platform_key, timestamp=int(time.time()) + offset)
    with pytest.raises(UnverifiedNotification, match="tolerance"):
        wechat.parse_notification(headers, body)


def test_timestamp_within_tolerance(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey
) -> None:
    headers, body = notify(platform_key, timestamp=int(time.time()) - 200)
    assert wechat.parse_notification(headers, body).state is ProviderPaymentState.PAID


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.mark.parametrize(
    "stamp",
    [
        lambda now: "9" * 400,  # an int, but too large for the float the age is computed in
        lambda now: "9" * 5000,  # past int()'s 4,300-digit limit
        lambda now: now.translate(ARABIC_INDIC),  # the time now, in digits int() also reads
        lambda now: f"+{now}",
        lambda now: f" {now}",
        lambda now: f"{now[0]}_{now[1:]}",
        lambda now: f"{now}.0",
        lambda now: "²",
    ],
    ids=["400-digits", "5000-digits", "arabic-indic", "plus", "space", "underscore", "dot", "sup"],
)
def test_a_timestamp_that_is_not_plain_ascii_digits_is_refused(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey, stamp: Callable[[str], str]
) -> None:
    headers, body = notify(platform_key)
    headers["Wechatpay-Timestamp"] = stamp(str(int(time.time())))
    # Signed over the odd timestamp with WeChat Pay's own key: only the timestamp is wrong.
    with pytest.raises(UnverifiedNotification, match="Wechatpay-Timestamp") as caught:
        wechat.parse_notification(resign(platform_key, headers, body), body)
    assert len(str(caught.value)) < 120  # the hostile value is not echoed


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    stamp=st.one_of(
        st.text(min_size=1),
        st.text(
            st.characters(categories=["Nd", "No", "Zs"]) | st.sampled_from("+-_.e"), min_size=1
        ),
        st.integers(min_value=-(10**500), max_value=10**500).map(str),
    )
)
def test_any_timestamp_is_refused_or_believed_never_an_error(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey, stamp: str
) -> None:
    headers, body = notify(platform_key)
    headers["Wechatpay-Timestamp"] = stamp
    try:
        wechat.parse_notification(headers, body)
    except UnverifiedNotification:
        pass


@pytest.mark.parametrize(
    "header",
    ["Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial"],
)
def test_missing_header(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey, header: str
) -> None:
    headers, body = notify(platform_key)
    del headers[header]
    with pytest.raises(UnverifiedNotification, match=header):
        wechat.parse_notification(headers, body)


def test_unknown_serial(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    # Correctly signed, but naming a key id we do not hold.
    headers, body = notify(platform_key, public_key_id="PUB_KEY_ID_0000000000000000000000000000")
    with pytest.raises(UnverifiedNotification, match="Wechatpay-Serial"):
        wechat.parse_notification(headers, body)


def test_wrong_signature_type(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    headers, body = notify(platform_key)
    headers["Wechatpay-Signature-Type"] = "WECHATPAY2-SM2-WITH-SM3"
    with pytest.raises(UnverifiedNotification):
        wechat.parse_notification(headers, body)


def test_wrong_apiv3_key(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    # Signed correctly, encrypted with another APIv3 key: the GCM tag fails -> 401.
    headers, body = notify(platform_key, apiv3_key=b"another-32-byte-key-for-testing!")
    with pytest.raises(UnverifiedNotification, match="decrypt") as caught:
        wechat.parse_notification(headers, body)
    assert caught.value.http_status == 401


# Refused: 400 (signed by WeChat Pay, but not what it documents)


def signed(key: rsa.RSAPrivateKey, event: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    headers, _ = notify(key)
    body = json.dumps(event, ensure_ascii=False).encode()
    return resign(key, headers, body), body


def test_body_not_json(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    headers, _ = notify(platform_key)
    body = b"{not json"
    with pytest.raises(MalformedNotification, match="JSON"):
        wechat.parse_notification(resign(platform_key, headers, body), body)


def test_resource_plaintext_not_json(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey
) -> None:
    _, body = notify(platform_key)
    event = json.loads(body)
    event["resource"]["ciphertext"] = encrypt(
        APIV3_KEY.encode(), event["resource"]["nonce"], "transaction", b"<xml/>"
    )
    with pytest.raises(MalformedNotification, match="not JSON"):
        wechat.parse_notification(*signed(platform_key, event))


def test_missing_resource(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    _, body = notify(platform_key)
    event = json.loads(body)
    del event["resource"]
    with pytest.raises(MalformedNotification, match="resource"):
        wechat.parse_notification(*signed(platform_key, event))


def test_another_merchant(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    headers, body = notify(platform_key, resource=transaction(mchid="1230000109"))
    with pytest.raises(MalformedNotification, match="another merchant"):
        wechat.parse_notification(headers, body)


def test_unknown_event_type(wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey) -> None:
    headers, body = notify(platform_key, "TRANSACTION.REFUNDED")
    with pytest.raises(MalformedNotification, match="event_type"):
        wechat.parse_any_notification(headers, body)


@pytest.mark.parametrize(
    "amount",
    [
        {"total": 12.34, "currency": "CNY"},
        {"total": "1234", "currency": "CNY"},
        {"total": 0, "currency": "CNY"},
        {"total": 1234, "currency": "USD"},
        {"total": True, "currency": "CNY"},
    ],
)
def test_bad_amounts(
    wechat: WechatPayAdapter, platform_key: rsa.RSAPrivateKey, amount: dict[str, Any]
) -> None:
    headers, body = notify(platform_key, resource=transaction(amount=amount))
    with pytest.raises(MalformedNotification):
        wechat.parse_notification(headers, body)


# Answers


def test_acknowledgement_and_refusal(wechat: WechatPayAdapter) -> None:
    ack = wechat.acknowledgement()
    assert ack.status_code in (200, 204) and ack.body == ""
    refusal = wechat.refusal(401, "签名错误")
    assert refusal.status_code == 401 and refusal.media_type == "application/json"
    assert json.loads(refusal.body) == {"code": "FAIL", "message": "签名错误"}
