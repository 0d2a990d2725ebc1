"""The Alipay adapter against the fake gateway over real HTTP: signed payment URLs, status
queries, close, refunds and refund queries, refusals, lost answers and a gateway that is down."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.alipay import signature
from providers.alipay.adapter import AlipayAdapter
from tempay.channels import RedirectAction
from tempay.domain import (
    CreatedPayment,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundRequest,
)
from tempay.errors import (
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRefused,
    ProviderRejected,
    SignatureError,
)
from tests.support.fakes.alipay_gateway import FakeAlipayGateway
from tests.support.providers.alipay import MerchantKeys, make_adapter, new_merchant_keys
from tests.support.stack import bound_socket, url_of


def order(order_id: str, amount: str = "10.00", **kwargs: object) -> PaymentOrder:
    return PaymentOrder(
        order_id=order_id,
        amount=Decimal(amount),
        currency="CNY",
        provider="alipay",
        subject="咖啡 Coffee & cake",
        notify_url="http://127.0.0.1:8000/notify/alipay",
        return_url="https://shop.example/orders/" + order_id,
        **kwargs,  # type: ignore[arg-type]
    )


def refund(order_id: str, refund_id: str, amount: str) -> RefundRequest:
    return RefundRequest(
        order_id=order_id, refund_id=refund_id, amount=Decimal(amount), currency="CNY"
    )


def redirect_url(created: CreatedPayment) -> str:
    """A page/wap payment's URL: its payer action is a redirect, and payment_url says the same."""
    assert isinstance(created.payer_action, RedirectAction), created.payer_action
    assert created.payment_url == created.payer_action.url
    return created.payer_action.url


async def open_url(url: str) -> httpx.Response:
    """The payer's browser opens the payment URL."""
    async with httpx.AsyncClient(timeout=10) as browser:
        return await browser.get(url)


async def opened(adapter: AlipayAdapter, the_order: PaymentOrder) -> None:
    created = await adapter.create_payment(the_order)
    page = await open_url(redirect_url(created))
    assert page.status_code == 200 and "支付宝收银台" in page.text, page.text


async def paid(adapter: AlipayAdapter, fake: FakeAlipayGateway, the_order: PaymentOrder) -> None:
    await opened(adapter, the_order)
    fake.pay(the_order.order_id)


# Creating a payment: a signed URL, no call


async def test_payment_url_is_signed_as_alipay_checks_it(
    adapter: AlipayAdapter, fake: FakeAlipayGateway, merchant_keys: MerchantKeys, gateway_url: str
) -> None:
    created = await adapter.create_payment(order("A1"))
    assert created.provider_trade_no == ""
    url = redirect_url(created)
    assert url.startswith(gateway_url + "?")
    params = dict(parse_qsl(urlsplit(url).query, strict_parsing=True))
    # Checked with Alipay's SDK: every non-empty parameter but sign, sorted.
    content = get_sign_content({k: v for k, v in params.items() if k != "sign"})
    assert verify_with_rsa(merchant_keys.public_pem, content.encode(), params["sign"])
    assert params["method"] == "alipay.trade.wap.pay"
    assert (params["format"], params["charset"], params["sign_type"], params["version"]) == (
        "JSON",
        "utf-8",
        "RSA2",
        "1.0",
    )
    assert params["notify_url"] == "http://127.0.0.1:8000/notify/alipay"
    biz = json.loads(params["biz_content"])
    assert biz["out_trade_no"] == "A1" and biz["total_amount"] == "10.00"
    assert biz["product_code"] == "QUICK_WAP_WAY"
    assert fake.trades == {}  # nothing happens at Alipay until the payer opens it

    page = await open_url(url)
    assert "10.00 CNY" in page.text
    assert fake.trades["A1"].total_amount == Decimal("10.00")
    assert fake.trades["A1"].notify_url == "http://127.0.0.1:8000/notify/alipay"


async def test_tampered_payment_url_is_refused_by_alipay(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    url = redirect_url(await adapter.create_payment(order("A2")))
    params = dict(parse_qsl(urlsplit(url).query))
    biz = json.loads(params["biz_content"])
    params["biz_content"] = json.dumps({**biz, "total_amount": "0.01"})
    tampered = url.split("?")[0] + "?" + urlencode(params)
    page = await open_url(tampered)
    assert "isv.invalid-signature" in page.text
    assert fake.trades == {} and fake.rejected == ["isv.invalid-signature"]


async def test_an_order_without_a_channel_is_wap(adapter: AlipayAdapter) -> None:
    # Alipay's declared default (providers/alipay): a mobile browser's checkout page.
    unnamed = order("A4")
    assert unnamed.channel is None
    created = await adapter.create_payment(unnamed)
    params = dict(parse_qsl(urlsplit(redirect_url(created)).query))
    assert params["method"] == "alipay.trade.wap.pay"
    assert json.loads(params["biz_content"])["product_code"] == "QUICK_WAP_WAY"


async def test_page_channel(adapter: AlipayAdapter, fake: FakeAlipayGateway) -> None:
    url = redirect_url(await adapter.create_payment(order("A3", channel="alipay_page")))
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["method"] == "alipay.trade.page.pay"
    assert json.loads(params["biz_content"])["product_code"] == "FAST_INSTANT_TRADE_PAY"
    await open_url(url)
    assert "A3" in fake.trades


async def test_unknown_channel_and_other_currencies_are_rejected(adapter: AlipayAdapter) -> None:
    with pytest.raises(ProviderRejected, match="channel"):
        await adapter.create_payment(order("A4", channel="wechat_h5"))
    usd = PaymentOrder(order_id="A5", amount=Decimal("1.00"), currency="USD", provider="alipay")
    with pytest.raises(ProviderRejected, match="CNY"):
        await adapter.create_payment(usd)


# Status query


async def test_query_before_the_payer_opens_is_pending(adapter: AlipayAdapter) -> None:
    observation = await adapter.query_payment(order("Q1"))
    assert observation.state is ProviderPaymentState.PENDING
    assert observation.source == "status_query" and observation.amount is None


async def test_query_each_status(adapter: AlipayAdapter, fake: FakeAlipayGateway) -> None:
    the_order = order("Q2", "12.34")
    await opened(adapter, the_order)
    waiting = await adapter.query_payment(the_order)
    assert waiting.state is ProviderPaymentState.PENDING
    assert waiting.provider_trade_no == fake.trades["Q2"].trade_no

    fake.pay("Q2")
    paid_obs = await adapter.query_payment(the_order)
    assert paid_obs.state is ProviderPaymentState.PAID
    assert (paid_obs.amount, paid_obs.currency) == (Decimal("12.34"), "CNY")
    assert paid_obs.occurred_at is not None and paid_obs.source == "status_query"

    fake.trades["Q2"].status = "TRADE_FINISHED"
    assert (await adapter.query_payment(the_order)).state is ProviderPaymentState.PAID

    fake.trades["Q2"].status = "TRADE_CLOSED"
    closed = await adapter.query_payment(the_order)
    assert closed.state is ProviderPaymentState.CLOSED and closed.amount is None
    # Every call reached Alipay signed and verified.
    assert [p["method"] for p in fake.requests] == ["alipay.trade.query"] * 4


# Close


async def test_close_an_opened_trade(adapter: AlipayAdapter, fake: FakeAlipayGateway) -> None:
    the_order = order("C1")
    await opened(adapter, the_order)
    outcome = await adapter.close_payment(the_order)
    assert outcome.closed
    assert outcome.observation is not None
    assert outcome.observation.state is ProviderPaymentState.CLOSED
    assert fake.trades["C1"].status == "TRADE_CLOSED"
    assert (await adapter.query_payment(the_order)).state is ProviderPaymentState.CLOSED


async def test_close_a_trade_never_opened(adapter: AlipayAdapter) -> None:
    outcome = await adapter.close_payment(order("C2"))
    assert outcome.closed and outcome.observation is None


async def test_close_a_paid_trade_is_not_closed(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    the_order = order("C3")
    await paid(adapter, fake, the_order)
    outcome = await adapter.close_payment(the_order)
    assert not outcome.closed
    assert fake.trades["C3"].status == "TRADE_SUCCESS"


# Refunds


async def test_refund_and_refund_query(adapter: AlipayAdapter, fake: FakeAlipayGateway) -> None:
    the_order = order("R1", "10.00")
    await paid(adapter, fake, the_order)
    request = refund("R1", "R1-a", "4.00")
    assert await adapter.query_refund(request) is None  # not asked for yet

    created = await adapter.create_refund(request)
    assert created.state is ProviderRefundState.SUCCEEDED and created.source == "create"
    assert created.refund_id == "R1-a" and created.order_id == "R1"

    # Idempotent by refund_id: nothing moves again.
    again = await adapter.create_refund(request)
    assert again.state is ProviderRefundState.PENDING
    assert len(fake.refunds) == 1 and fake.trades["R1"].refunded == Decimal("4.00")

    queried = await adapter.query_refund(request)
    assert queried is not None
    assert queried.state is ProviderRefundState.SUCCEEDED
    assert (queried.amount, queried.currency) == (Decimal("4.00"), "CNY")
    assert queried.occurred_at is not None and queried.source == "status_query"

    # The refund's notification, as Alipay sends it in the trade's notifications.
    notification = fake.refund_notification("R1", "R1-a")
    observed = adapter.parse_any_notification({}, urlencode(notification).encode())
    assert observed.state is ProviderRefundState.SUCCEEDED  # type: ignore[union-attr]


async def test_refund_refusals(adapter: AlipayAdapter, fake: FakeAlipayGateway) -> None:
    with pytest.raises(ProviderRefused) as no_trade:
        await adapter.create_refund(refund("R2", "R2-a", "1.00"))
    assert no_trade.value.code == "TRADE_NOT_EXIST"
    assert no_trade.value.details["sub_code"] == "ACQ.TRADE_NOT_EXIST"

    unpaid = order("R2")
    await opened(adapter, unpaid)
    with pytest.raises(ProviderRefused) as not_paid:
        await adapter.create_refund(refund("R2", "R2-a", "1.00"))
    assert not_paid.value.code == "TRADE_STATUS_ERROR"

    fake.pay("R2")
    with pytest.raises(ProviderRefused) as too_much:
        await adapter.create_refund(refund("R2", "R2-a", "10.01"))
    assert too_much.value.code == "REFUND_AMOUNT_EXCEEDED"

    await adapter.create_refund(refund("R2", "R2-a", "6.00"))
    with pytest.raises(ProviderRefused) as conflict:
        await adapter.create_refund(refund("R2", "R2-a", "5.00"))
    assert conflict.value.code == "REFUND_CONFLICT"
    assert fake.trades["R2"].refunded == Decimal("6.00")


async def test_refund_query_of_an_unknown_trade_is_none(adapter: AlipayAdapter) -> None:
    assert await adapter.query_refund(refund("R3", "R3-a", "1.00")) is None


async def test_refund_whose_answer_is_lost_is_an_unknown_outcome(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    the_order = order("R4")
    await paid(adapter, fake, the_order)
    request = refund("R4", "R4-a", "10.00")
    fake.faults.append("process_then_502")
    with pytest.raises(ProviderOutcomeUnknown):
        await adapter.create_refund(request)
    # It did happen; the query says so, and asking again moves nothing.
    queried = await adapter.query_refund(request)
    assert queried is not None and queried.state is ProviderRefundState.SUCCEEDED
    assert (await adapter.create_refund(request)).state is ProviderRefundState.PENDING
    assert fake.trades["R4"].refunded == Decimal("10.00")


async def test_refund_answered_system_busy_is_an_unknown_outcome(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    await paid(adapter, fake, order("R5"))
    fake.faults.append("system_error")
    with pytest.raises(ProviderOutcomeUnknown):
        await adapter.create_refund(refund("R5", "R5-a", "1.00"))


# Failures: retryable, never a refusal


async def test_system_busy_and_bad_gateway_are_provider_errors(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    for fault in ("system_error", "http_502"):
        fake.faults.append(fault)
        with pytest.raises(ProviderError) as caught:
            await adapter.query_payment(order("F1"))
        assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
    assert (await adapter.query_payment(order("F1"))).state is ProviderPaymentState.PENDING


async def test_answer_signed_by_another_key_is_not_believed(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    await paid(adapter, fake, order("F2"))
    fake.faults.append("bad_sign")
    with pytest.raises(ProviderError, match="signature"):
        await adapter.query_payment(order("F2"))
    assert not fake.faults


async def test_request_signed_with_another_key_is_rejected(
    fake: FakeAlipayGateway, gateway_url: str
) -> None:
    stranger = make_adapter(fake, new_merchant_keys(), gateway_url)
    try:
        with pytest.raises(ProviderRejected, match="isv.invalid-signature"):
            await stranger.query_payment(order("F3"))
    finally:
        await stranger.aclose()
    assert fake.requests == [] and fake.rejected == ["isv.invalid-signature"]


async def test_gateway_down_is_a_provider_error(
    fake: FakeAlipayGateway, merchant_keys: MerchantKeys
) -> None:
    with bound_socket() as sock:  # bound, never listening: connections are refused
        down = make_adapter(fake, merchant_keys, url_of(sock) + "/gateway.do")
        try:
            for call in (
                down.query_payment(order("D1")),
                down.close_payment(order("D1")),
                down.create_refund(refund("D1", "D1-a", "1.00")),
                down.query_refund(refund("D1", "D1-a", "1.00")),
            ):
                with pytest.raises(ProviderError) as caught:
                    await call
                # Never sent: not even a refund's outcome is in doubt.
                assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
        finally:
            await down.aclose()


# The raw answer text is what is verified


def test_response_is_verified_over_its_raw_text(fake: FakeAlipayGateway) -> None:
    raw = '{ "code" : "10000", "msg":"Success", "total_amount":"10.00", "subject":"咖啡\\u0026" }'
    text = f'{{"alipay_trade_query_response" :\n {raw} ,"sign":"{fake.sign(raw)}"}}'
    answer = signature.split_response(text, "alipay_trade_query_response")
    assert answer.raw == raw
    assert answer.payload["subject"] == "咖啡&"
    key = serialization.load_pem_public_key(fake.public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    signature.verify(key, answer.raw.encode(), answer.sign)
    # Re-serialized, the same content no longer verifies: only the raw text does.
    reserialized = json.dumps(answer.payload, ensure_ascii=False, separators=(",", ":"))
    with pytest.raises(SignatureError, match="does not verify"):
        signature.verify(key, reserialized.encode(), answer.sign)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"other_response":{}}',
        '{"alipay_trade_query_response":"x","sign":"s"}',
        '{"alipay_trade_query_response":{},"alipay_trade_query_response":{}}',
        '{"alipay_trade_query_response":{}} trailing',
    ],
)
def test_unreadable_answers(text: str) -> None:
    with pytest.raises(signature.ResponseShapeError):
        signature.split_response(text, "alipay_trade_query_response")
