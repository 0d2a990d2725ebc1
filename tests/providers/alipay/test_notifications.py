"""Alipay notifications: signed by Alipay's reference SDK (`alipay-sdk-python`), verified by
the adapter; and every way a notification must be refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import quote, urlencode

import pytest
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2

from providers.alipay.adapter import CHINA, STATUS_MAP, AlipayAdapter
from tempay.domain import (
    PaymentObservation,
    ProviderPaymentState,
    ProviderRefundState,
    RefundObservation,
)
from tempay.errors import MalformedNotification, UnverifiedNotification
from tests.support.fakes.alipay_gateway import (
    SELLER_ID,
    FakeAlipayGateway,
    FakeTrade,
    china_now,
    rsa_pem_pair,
    sign_notification,
)
from tests.support.providers.alipay import APP_ID, MerchantKeys, make_adapter

HEADERS = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


def now_in_china(delta: timedelta = timedelta()) -> str:
    return (datetime.now(CHINA) + delta).strftime("%Y-%m-%d %H:%M:%S")


def paid_params(**overrides: str) -> dict[str, str]:
    params = {
        "notify_time": now_in_china(),
        "notify_type": "trade_status_sync",
        "notify_id": "ac05099524730693a8b330c5ecf72da9786",
        "app_id": APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": "2013112011001004330000121536",
        "out_trade_no": "A1001",
        "seller_id": SELLER_ID,
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "10.00",
        "receipt_amount": "10.00",
        "subject": "咖啡 & 蛋糕 + 税",
        "body": "",
        "gmt_create": "2026-11-28 11:00:00",
        "gmt_payment": "2026-11-28 11:00:05",
    }
    params.update(overrides)
    return params


def sdk_signed(alipay_private_pem: str, params: dict[str, str]) -> dict[str, str]:
    """Exactly what Alipay's SDK signs: get_sign_content of the params but sign, sign_type."""
    content = get_sign_content(params)
    return {
        **params,
        "sign_type": "RSA2",
        "sign": sign_with_rsa2(alipay_private_pem, content, "utf-8"),
    }


def form(params: dict[str, str] | list[tuple[str, str]]) -> bytes:
    return urlencode(params, quote_via=quote).encode()


@pytest.fixture
def notified(fake: FakeAlipayGateway, merchant_keys: MerchantKeys) -> AlipayAdapter:
    return make_adapter(fake, merchant_keys)


def test_sdk_signed_paid_notification_is_a_paid_observation(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params()))
    observation = notified.parse_any_notification(HEADERS, body)
    assert observation == PaymentObservation(
        order_id="A1001",
        provider="alipay",
        state=ProviderPaymentState.PAID,
        provider_trade_no="2013112011001004330000121536",
        amount=Decimal("10.00"),
        currency="CNY",
        occurred_at=datetime(2026, 11, 28, 3, 0, 5, tzinfo=UTC),
        source="notification",
        notification_id="ac05099524730693a8b330c5ecf72da9786",
    )
    assert notified.parse_notification(HEADERS, body) == observation


def test_form_encoding_with_plus_for_spaces_verifies(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    # urlencode's default quote_plus: spaces as '+', a literal '+' as %2B.
    body = urlencode(sdk_signed(fake.private_pem, paid_params())).encode()
    assert b"+" in body
    observation = notified.parse_notification(HEADERS, body)
    assert observation.state is ProviderPaymentState.PAID


@pytest.mark.parametrize("trade_status", sorted(STATUS_MAP))
def test_every_trade_status_maps(
    fake: FakeAlipayGateway, notified: AlipayAdapter, trade_status: str
) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(trade_status=trade_status)))
    observation = notified.parse_notification(HEADERS, body)
    expected = {
        "WAIT_BUYER_PAY": ProviderPaymentState.PENDING,
        "TRADE_SUCCESS": ProviderPaymentState.PAID,
        "TRADE_FINISHED": ProviderPaymentState.PAID,
        "TRADE_CLOSED": ProviderPaymentState.CLOSED,
    }[trade_status]
    assert observation.state is expected
    paid = expected is ProviderPaymentState.PAID
    assert (observation.amount, observation.currency) == (
        (Decimal("10.00"), "CNY") if paid else (None, None)
    )


def test_trans_currency_is_the_currency(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(trans_currency="USD")))
    assert notified.parse_notification(HEADERS, body).currency == "USD"


def test_refund_in_a_trade_notification_is_a_refund_observation(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    params = paid_params(
        notify_id="refund-notify-1",
        out_biz_no="R-1",
        refund_fee="4.00",
        gmt_refund="2026-11-28 12:00:00.320",
    )
    body = form(sdk_signed(fake.private_pem, params))
    observation = notified.parse_any_notification(HEADERS, body)
    assert observation == RefundObservation(
        refund_id="R-1",
        order_id="A1001",
        state=ProviderRefundState.SUCCEEDED,
        amount=None,
        currency="CNY",
        provider_refund_no="2013112011001004330000121536",
        occurred_at=datetime(2026, 11, 28, 4, 0, 0, 320000, tzinfo=UTC),
        source="notification",
        notification_id="refund-notify-1",
    )
    with pytest.raises(MalformedNotification, match="refund"):
        notified.parse_notification(HEADERS, body)
    # A full refund closes the trade: still a refund, not an unpaid close.
    closed = form(sdk_signed(fake.private_pem, {**params, "trade_status": "TRADE_CLOSED"}))
    assert isinstance(notified.parse_any_notification(HEADERS, closed), RefundObservation)


def test_zero_refund_fee_is_a_payment(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(refund_fee="0.00")))
    assert isinstance(notified.parse_any_notification(HEADERS, body), PaymentObservation)


def test_refund_without_out_biz_no_is_malformed(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(refund_fee="4.00")))
    with pytest.raises(MalformedNotification, match="out_biz_no"):
        notified.parse_any_notification(HEADERS, body)


# Refused: 401


def test_tampered_body_is_unverified(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    signed = sdk_signed(fake.private_pem, paid_params())
    with pytest.raises(UnverifiedNotification) as caught:
        notified.parse_notification(HEADERS, form({**signed, "total_amount": "1000.00"}))
    assert caught.value.http_status == 401


def test_signed_by_another_key_is_unverified(notified: AlipayAdapter) -> None:
    other_private, _ = rsa_pem_pair()
    body = form(sdk_signed(other_private, paid_params()))
    with pytest.raises(UnverifiedNotification, match="does not verify"):
        notified.parse_notification(HEADERS, body)


def test_missing_sign_is_unverified(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    signed = sdk_signed(fake.private_pem, paid_params())
    del signed["sign"]
    with pytest.raises(UnverifiedNotification, match="missing sign"):
        notified.parse_notification(HEADERS, form(signed))
    with pytest.raises(UnverifiedNotification, match="missing sign"):
        notified.parse_notification(HEADERS, form({**signed, "sign": ""}))


def test_garbage_sign_is_unverified(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    signed = sdk_signed(fake.private_pem, paid_params())
    with pytest.raises(UnverifiedNotification):
        notified.parse_notification(HEADERS, form({**signed, "sign": "not*base64"}))


def test_sign_over_sign_type_too_is_unverified(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    # A signature that covers sign_type is not Alipay's notification signature.
    params = {**paid_params(), "sign_type": "RSA2"}
    content = get_sign_content(params)
    body = form({**params, "sign": sign_with_rsa2(fake.private_pem, content, "utf-8")})
    with pytest.raises(UnverifiedNotification):
        notified.parse_notification(HEADERS, body)


def test_wrong_app_id_is_refused(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(app_id="2021000999999999")))
    with pytest.raises(UnverifiedNotification, match="app_id"):
        notified.parse_notification(HEADERS, body)


def test_seller_id_must_be_ours(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    # Alipay's advice: check seller_id, so money paid to another merchant never counts here.
    bad = form(sdk_signed(fake.private_pem, paid_params(seller_id="2088000000000000")))
    with pytest.raises(UnverifiedNotification, match="seller_id") as caught:
        notified.parse_notification(HEADERS, bad)
    assert caught.value.http_status == 401
    params = paid_params()
    del params["seller_id"]
    with pytest.raises(UnverifiedNotification, match="seller_id"):
        notified.parse_notification(HEADERS, form(sdk_signed(fake.private_pem, params)))


def test_the_fake_gateway_sends_the_configured_seller_id(
    fake: FakeAlipayGateway, merchant_keys: MerchantKeys
) -> None:
    other = FakeAlipayGateway(APP_ID, merchant_keys.public_pem, seller_id="2088999988887777")
    adapter = make_adapter(other, merchant_keys)
    trade = FakeTrade("A1001", "2026112811001004330000000001", Decimal("10.00"), "s", "")
    params = other.notification(trade, trade_status="TRADE_SUCCESS", gmt_payment=china_now())
    assert params["seller_id"] == "2088999988887777"
    assert adapter.parse_notification(HEADERS, form(params)).state is ProviderPaymentState.PAID


@pytest.mark.parametrize("ahead", [timedelta(minutes=6), timedelta(hours=1), timedelta(days=3)])
def test_notification_dated_ahead_of_the_tolerance_is_refused(
    fake: FakeAlipayGateway, notified: AlipayAdapter, ahead: timedelta
) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(notify_time=now_in_china(ahead))))
    with pytest.raises(UnverifiedNotification, match="ahead") as caught:
        notified.parse_notification(HEADERS, body)
    assert caught.value.http_status == 401


def test_notification_dated_a_little_ahead_is_accepted(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    # Clocks differ by a little: up to TEMPAY_NOTIFICATION_TOLERANCE (5 min by default).
    body = form(
        sdk_signed(fake.private_pem, paid_params(notify_time=now_in_china(timedelta(minutes=4))))
    )
    assert notified.parse_notification(HEADERS, body).state is ProviderPaymentState.PAID


def test_notification_older_than_the_resend_schedule_is_refused(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    # Within Alipay's ~25 h of resends: accepted, whatever its notify_time.
    day_old = form(
        sdk_signed(fake.private_pem, paid_params(notify_time=now_in_china(-timedelta(hours=25))))
    )
    assert notified.parse_notification(HEADERS, day_old).state is ProviderPaymentState.PAID
    stale = form(
        sdk_signed(fake.private_pem, paid_params(notify_time=now_in_china(-timedelta(hours=49))))
    )
    with pytest.raises(UnverifiedNotification, match="older"):
        notified.parse_notification(HEADERS, stale)


# Refused: 400


def test_duplicated_parameter_is_malformed(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    signed = sdk_signed(fake.private_pem, paid_params())
    pairs = list(signed.items()) + [("total_amount", "10.00")]
    with pytest.raises(MalformedNotification, match="more than once") as caught:
        notified.parse_notification(HEADERS, form(pairs))
    assert caught.value.http_status == 400


def test_not_utf8_is_malformed(notified: AlipayAdapter) -> None:
    with pytest.raises(MalformedNotification):
        notified.parse_notification(HEADERS, b"subject=\xff\xfe&sign=x")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"trade_status": "TRADE_PENDING"}, "unknown trade_status"),
        ({"total_amount": "ten"}, "not a decimal"),
        ({"total_amount": "0.00"}, "positive"),
        ({"notify_type": "fund_auth_freeze"}, "notify_type"),
        ({"notify_time": "yesterday"}, "notify_time"),
        ({"trans_currency": "XXX"}, "unknown currency"),
    ],
)
def test_bad_fields_are_malformed(
    fake: FakeAlipayGateway, notified: AlipayAdapter, overrides: dict[str, str], message: str
) -> None:
    body = form(sdk_signed(fake.private_pem, paid_params(**overrides)))
    with pytest.raises(MalformedNotification, match=message):
        notified.parse_any_notification(HEADERS, body)


def test_missing_out_trade_no_is_malformed(
    fake: FakeAlipayGateway, notified: AlipayAdapter
) -> None:
    params = paid_params()
    del params["out_trade_no"]
    with pytest.raises(MalformedNotification, match="out_trade_no"):
        notified.parse_any_notification(HEADERS, form(sdk_signed(fake.private_pem, params)))


def test_acknowledgement_is_plain_success(notified: AlipayAdapter) -> None:
    ack = notified.acknowledgement()
    assert (ack.status_code, ack.body, ack.media_type) == (200, "success", "text/plain")


def test_the_fakes_notifications_verify(fake: FakeAlipayGateway, notified: AlipayAdapter) -> None:
    # The fake signs with the same SDK helper the gateway tests rely on.
    params = sign_notification(fake.private_pem, paid_params())
    assert notified.parse_notification(HEADERS, form(params)).state is ProviderPaymentState.PAID
