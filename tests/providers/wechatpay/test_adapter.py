"""The adapter against the fake WeChat Pay API over real HTTP on 127.0.0.1: every request
signed (the fake checks each one), every answer verified."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import build_config
from tempay.channels import PayerDetails, QrCodeAction, RedirectAction
from tempay.domain import (
    CreatedPayment,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundRequest,
)
from tempay.errors import ProviderError, ProviderOutcomeUnknown, ProviderRefused, ProviderRejected
from tests.support.fakes.wechatpay_api import FakeWechatPay
from tests.support.providers.wechatpay import payment_order, settings_for, write_keys
from tests.support.stack import bound_socket, url_of


def order(
    order_id: str = "ord-000001",
    channel: str | None = "wechat_native",
    amount: str = "12.34",
    payer: PayerDetails | None = None,
    **kw: str,
) -> PaymentOrder:
    return payment_order(order_id, channel, amount, payer, **kw)


def qr_content(created: CreatedPayment) -> str:
    """A Native answer: the QR code's content, which is also the payment_url."""
    assert isinstance(created.payer_action, QrCodeAction)
    assert created.payment_url == created.payer_action.content
    return created.payer_action.content


def refund_of(order_id: str, refund_id: str = "rf-000001", amount: str = "3.00") -> RefundRequest:
    return RefundRequest(
        order_id=order_id,
        refund_id=refund_id,
        amount=Decimal(amount),
        currency="CNY",
        reason="买家不要了",
        notify_url="https://tempay.example/notify/wechatpay",
    )


def all_signed(fake: FakeWechatPay) -> bool:
    return bool(fake.requests) and all(ok for _, _, ok in fake.requests)


# Create


async def test_native_create(adapter: WechatPayAdapter, fake: FakeWechatPay) -> None:
    created = await adapter.create_payment(order())
    assert qr_content(created).startswith("weixin://wxpay/bizpayurl?pr=")
    stored = fake.orders["ord-000001"]
    assert stored["trade_type"] == "NATIVE"
    assert stored["amount"] == {"total": 1234, "currency": "CNY"}
    assert stored["description"] == "测试商品"
    assert stored["notify_url"] == "https://tempay.example/notify/wechatpay"
    assert all_signed(fake)
    # Idempotent by out_trade_no: the same order gets the same code_url.
    assert (await adapter.create_payment(order())).payment_url == created.payment_url


async def test_an_order_without_a_channel_is_native(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    # WeChat Pay's declared default (providers/wechatpay): a QR code, which needs nothing of
    # the payer, where H5 must name the payer's IP.
    created = await adapter.create_payment(order("ord-default-1", channel=None))
    assert qr_content(created).startswith("weixin://wxpay/bizpayurl?pr=")
    assert fake.orders["ord-default-1"]["trade_type"] == "NATIVE"
    assert all_signed(fake)


async def test_h5_create(adapter: WechatPayAdapter, fake: FakeWechatPay) -> None:
    payer = PayerDetails(client_ip="203.0.113.7")
    created = await adapter.create_payment(order("ord-h5-0001", "wechat_h5", "0.01", payer))
    assert isinstance(created.payer_action, RedirectAction)
    assert created.payment_url == created.payer_action.url
    assert created.payer_action.url.startswith(
        "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?"
    )
    assert fake.orders["ord-h5-0001"]["trade_type"] == "MWEB"
    assert fake.orders["ord-h5-0001"]["amount"]["total"] == 1
    assert all_signed(fake)


@pytest.mark.parametrize(
    ("made", "match"),
    [
        (lambda: order(channel="alipay_wap"), "channel"),
        (lambda: order(currency="USD"), "only CNY"),
        (lambda: order(currency="JPY", amount="100"), "only CNY"),
        (lambda: order(order_id="ord.with.dots"), "out_trade_no"),
        (lambda: order(order_id="o1"), "out_trade_no"),
        (lambda: order(order_id="x" * 33), "out_trade_no"),
    ],
)
async def test_create_refused_before_sending(
    adapter: WechatPayAdapter, fake: FakeWechatPay, made: object, match: str
) -> None:
    with pytest.raises(ProviderRejected, match=match):
        await adapter.create_payment(made())  # type: ignore[operator]
    assert fake.requests == [] and fake.orders == {}


async def test_create_conflict_is_refused(adapter: WechatPayAdapter) -> None:
    await adapter.create_payment(order())
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_payment(order(amount="99.00"))
    assert caught.value.code == "INVALID_REQUEST"


# Query


async def test_query_of_an_order_never_created_is_pending(adapter: WechatPayAdapter) -> None:
    observation = await adapter.query_payment(order())
    assert observation.state is ProviderPaymentState.PENDING
    assert observation.source == "status_query"


@pytest.mark.parametrize(
    ("trade_state", "state"),
    [
        ("NOTPAY", ProviderPaymentState.PENDING),
        ("USERPAYING", ProviderPaymentState.PENDING),
        ("CLOSED", ProviderPaymentState.CLOSED),
        ("REVOKED", ProviderPaymentState.CLOSED),
        ("PAYERROR", ProviderPaymentState.FAILED),
    ],
)
async def test_query_unpaid_states(
    adapter: WechatPayAdapter, fake: FakeWechatPay, trade_state: str, state: ProviderPaymentState
) -> None:
    await adapter.create_payment(order())
    fake.set_state("ord-000001", trade_state)
    observation = await adapter.query_payment(order())
    assert observation.state is state
    assert observation.amount is None and observation.provider_trade_no is None


@pytest.mark.parametrize("trade_state", ["SUCCESS", "REFUND"])
async def test_query_paid(adapter: WechatPayAdapter, fake: FakeWechatPay, trade_state: str) -> None:
    await adapter.create_payment(order())
    paid = fake.pay("ord-000001")
    fake.set_state("ord-000001", trade_state)
    observation = await adapter.query_payment(order())
    assert observation.state is ProviderPaymentState.PAID
    assert observation.amount == Decimal("12.34") and observation.currency == "CNY"
    assert observation.provider_trade_no == paid["transaction_id"]
    assert observation.occurred_at is not None
    assert all_signed(fake)
    [(_, url, _)] = [r for r in fake.requests if r[0] == "GET"]
    assert url == "/v3/pay/transactions/out-trade-no/ord-000001?mchid=1900000109"


# Close


async def test_close_unpaid(adapter: WechatPayAdapter, fake: FakeWechatPay) -> None:
    await adapter.create_payment(order())
    outcome = await adapter.close_payment(order())
    assert outcome.closed and fake.orders["ord-000001"]["trade_state"] == "CLOSED"
    assert (await adapter.query_payment(order())).state is ProviderPaymentState.CLOSED


async def test_close_of_a_paid_order_reports_it_paid(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    await adapter.create_payment(order())
    fake.pay("ord-000001")
    outcome = await adapter.close_payment(order())
    assert not outcome.closed
    assert outcome.observation is not None
    assert outcome.observation.state is ProviderPaymentState.PAID
    assert outcome.observation.amount == Decimal("12.34")
    assert fake.orders["ord-000001"]["trade_state"] == "SUCCESS"


async def test_close_of_an_order_never_created(adapter: WechatPayAdapter) -> None:
    assert (await adapter.close_payment(order())).closed


# Refunds


async def paid(adapter: WechatPayAdapter, fake: FakeWechatPay, order_id: str) -> None:
    await adapter.create_payment(order(order_id))
    fake.pay(order_id)


async def test_refund_and_its_query(adapter: WechatPayAdapter, fake: FakeWechatPay) -> None:
    await paid(adapter, fake, "ord-000001")
    created = await adapter.create_refund(refund_of("ord-000001"))
    assert created.state is ProviderRefundState.PENDING and created.source == "create"
    assert created.amount == Decimal("3.00") and created.currency == "CNY"
    assert created.provider_refund_no == fake.refunds["rf-000001"]["refund_id"]
    assert fake.refunds["rf-000001"]["amount"]["refund"] == 300
    assert fake.refunds["rf-000001"]["amount"]["total"] == 1234

    queried = await adapter.query_refund(refund_of("ord-000001"))
    assert queried is not None and queried.state is ProviderRefundState.PENDING
    assert queried.source == "status_query"
    for status, state in [
        ("ABNORMAL", ProviderRefundState.PENDING),
        ("SUCCESS", ProviderRefundState.SUCCEEDED),
        ("CLOSED", ProviderRefundState.FAILED),
    ]:
        fake.finish_refund("rf-000001", status)
        queried = await adapter.query_refund(refund_of("ord-000001"))
        assert queried is not None and queried.state is state, status
    # Idempotent by out_refund_no: asking again returns the same refund, no second one.
    again = await adapter.create_refund(refund_of("ord-000001"))
    assert again.provider_refund_no == created.provider_refund_no and len(fake.refunds) == 1
    assert all_signed(fake)


async def test_query_of_an_unknown_refund_is_none(adapter: WechatPayAdapter) -> None:
    assert await adapter.query_refund(refund_of("ord-000001", "rf-unknown")) is None


async def test_refund_over_the_refundable_amount_is_refused(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    await paid(adapter, fake, "ord-000001")
    await adapter.create_refund(refund_of("ord-000001", "rf-1", "10.00"))
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(refund_of("ord-000001", "rf-2", "2.35"))
    assert caught.value.code == "INVALID_REQUEST"
    assert "rf-2" not in fake.refunds


async def test_refund_of_an_unpaid_or_unknown_order_is_refused(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(refund_of("ord-nowhere"))
    assert caught.value.code == "RESOURCE_NOT_EXISTS"
    await adapter.create_payment(order())
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(refund_of("ord-000001"))
    assert caught.value.code == "TRADE_STATUS_ERROR"
    assert fake.refunds == {}


async def test_refund_whose_answer_is_lost_is_an_unknown_outcome(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    await paid(adapter, fake, "ord-000001")
    fake.refund_then_fail = True
    with pytest.raises(ProviderOutcomeUnknown):
        await adapter.create_refund(refund_of("ord-000001"))
    # The query says what happened: the refund exists.
    found = await adapter.query_refund(refund_of("ord-000001"))
    assert found is not None and found.state is ProviderRefundState.PENDING


async def test_refund_with_an_unverifiable_answer_is_an_unknown_outcome(
    adapter: WechatPayAdapter, fake: FakeWechatPay, other_key: rsa.RSAPrivateKey
) -> None:
    await paid(adapter, fake, "ord-000001")
    fake.refund_answer_key = other_key
    with pytest.raises(ProviderOutcomeUnknown, match="not believed"):
        await adapter.create_refund(refund_of("ord-000001"))


# Failures


async def test_unverifiable_answers_are_not_believed(
    adapter: WechatPayAdapter, fake: FakeWechatPay, other_key: rsa.RSAPrivateKey
) -> None:
    await adapter.create_payment(order())
    fake.pay("ord-000001")
    fake.answer_key = other_key
    with pytest.raises(ProviderError, match="not believed") as caught:
        await adapter.query_payment(order())
    assert not isinstance(caught.value, ProviderRejected)


@pytest.mark.parametrize("offset", [-600, 600])
async def test_stale_answers_are_not_believed(
    adapter: WechatPayAdapter, fake: FakeWechatPay, offset: int
) -> None:
    # Correctly signed, but from ten minutes away: possibly a replay.
    fake.answer_clock_offset = offset
    with pytest.raises(ProviderError, match="tolerance"):
        await adapter.create_payment(order())


async def test_a_signed_answer_with_a_400_digit_timestamp_is_not_believed(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    # Signed correctly; its age used to overflow float (OverflowError, not a ProviderError).
    fake.answer_clock_offset = 10**400
    with pytest.raises(ProviderError, match="Wechatpay-Timestamp"):
        await adapter.create_payment(order())


async def test_server_errors_are_retryable(adapter: WechatPayAdapter, fake: FakeWechatPay) -> None:
    fake.fail_status, fake.fail_times = 500, 1
    with pytest.raises(ProviderError) as caught:
        await adapter.query_payment(order())
    assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
    # ... and the next call goes through.
    assert (await adapter.query_payment(order())).state is ProviderPaymentState.PENDING


async def test_rate_limited_is_retryable(adapter: WechatPayAdapter, fake: FakeWechatPay) -> None:
    fake.fail_status, fake.fail_times = 429, 1
    with pytest.raises(ProviderError) as caught:
        await adapter.create_payment(order())
    assert not isinstance(caught.value, ProviderRejected)


async def test_a_request_not_signed_by_our_key_is_refused(
    tmp_path: Path,
    fake: FakeWechatPay,
    api: str,
    other_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
) -> None:
    write_keys(tmp_path, other_key, platform_key)
    impostor = WechatPayAdapter(build_config(settings_for(tmp_path, fake, api)))
    try:
        with pytest.raises(ProviderRefused) as caught:
            await impostor.create_payment(order())
    finally:
        await impostor.aclose()
    assert caught.value.code == "SIGN_ERROR"
    assert fake.orders == {} and fake.requests == [("POST", "/v3/pay/transactions/native", False)]


async def test_api_down_is_a_provider_error(
    tmp_path: Path,
    fake: FakeWechatPay,
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
) -> None:
    with bound_socket() as sock:  # bound, never listening: connections are refused
        write_keys(tmp_path, merchant_key, platform_key)
        down = WechatPayAdapter(build_config(settings_for(tmp_path, fake, url_of(sock))))
        try:
            for call in (
                down.create_payment(order()),
                down.query_payment(order()),
                down.close_payment(order()),
                down.query_refund(refund_of("ord-000001")),
                down.create_refund(refund_of("ord-000001")),
            ):
                with pytest.raises(ProviderError) as caught:
                    await call
                # Nothing left: not refused, not an unknown outcome.
                assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
        finally:
            await down.aclose()


async def test_request_bodies_are_exactly_what_was_signed(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    # Non-ASCII subjects go out as UTF-8 JSON, signed as sent (the fake re-checks each).
    await adapter.create_payment(order("ord-unicode-1"))
    assert fake.orders["ord-unicode-1"]["description"] == "测试商品"
    assert all_signed(fake)
