"""The Alipay adapter's daily statement against the fake gateway over real HTTP: a signed
alipay.data.dataservice.bill.downloadurl.query, the zipped trade bill downloaded and read;
a day without a bill, another merchant's bill, an answer that does not verify, a dead link
and a gateway that is down each fail with a clear error."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from providers.alipay.adapter import BILL_METHOD, AlipayAdapter
from providers.bills import CHINA
from tempay.domain import PaymentOrder, RefundRequest
from tempay.errors import ProviderError, ProviderRefused, ProviderRejected, StatementError
from tempay.statements import StatementLine, StatementLineKind
from tests.support.fakes.alipay_gateway import FakeAlipayGateway
from tests.support.providers.alipay import MerchantKeys, make_adapter

TODAY = datetime.now(CHINA).date()
YESTERDAY = TODAY - timedelta(days=1)


def order(order_id: str, amount: str) -> PaymentOrder:
    return PaymentOrder(
        order_id=order_id,
        amount=Decimal(amount),
        currency="CNY",
        provider="alipay",
        subject="绿茶 Green tea",
        notify_url="http://127.0.0.1:8000/notify/alipay",
        return_url="https://shop.example/orders/" + order_id,
    )


async def paid(
    adapter: AlipayAdapter, fake: FakeAlipayGateway, order_id: str, amount: str, day: date
) -> str:
    """The payer opens the payment URL and pays; the payment is dated `day`. Its trade_no."""
    created = await adapter.create_payment(order(order_id, amount))
    assert created.payment_url is not None  # a wap payment: the payer's browser opens it
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(created.payment_url)).status_code == 200
    fake.pay(order_id)
    fake.paid_on(order_id, day)
    return fake.trades[order_id].trade_no


async def statement(adapter: AlipayAdapter, day: date) -> list[StatementLine]:
    return [line async for line in adapter.statement(day)]


async def test_the_days_trade_bill_is_read(adapter: AlipayAdapter, fake: FakeAlipayGateway) -> None:
    first = await paid(adapter, fake, "S1", "10.00", YESTERDAY)
    second = await paid(adapter, fake, "S2", "88.80", YESTERDAY)
    await paid(adapter, fake, "S3", "5.00", TODAY)  # today's bill does not exist yet
    await adapter.create_refund(
        RefundRequest(order_id="S1", refund_id="S1-R1", amount=Decimal("4.00"), currency="CNY")
    )
    fake.refunded_on("S1", "S1-R1", YESTERDAY)

    lines = await statement(adapter, YESTERDAY)

    assert [(line.kind, line.order_id, line.amount) for line in lines] == [
        (StatementLineKind.PAYMENT, "S1", Decimal("10.00")),
        (StatementLineKind.PAYMENT, "S2", Decimal("88.80")),
        (StatementLineKind.REFUND, "S1", Decimal("4.00")),
    ]
    payment, other, given_back = lines
    assert (payment.provider_trade_no, other.provider_trade_no) == (first, second)
    assert payment.at == datetime.combine(YESTERDAY, datetime.min.time(), CHINA) + timedelta(
        hours=12
    )
    assert payment.currency == "CNY"
    assert payment.merchant == fake.seller_id + "0156"
    assert (given_back.refund_id, given_back.provider_trade_no) == ("S1-R1", first)
    # As the adapter's refund answers name it: Alipay refunds have no id of their own.
    assert given_back.provider_refund_no == first
    # The request was signed and verified by the fake as Alipay does, and asked for the day.
    request = fake.requests[-1]
    assert request["method"] == BILL_METHOD
    assert json.loads(request["biz_content"]) == {
        "bill_type": "trade",
        "bill_date": YESTERDAY.isoformat(),
    }


async def test_a_day_without_a_bill_is_refused_clearly(adapter: AlipayAdapter) -> None:
    with pytest.raises(ProviderRefused, match=f"no trade bill for {TODAY}") as caught:
        await statement(adapter, TODAY)
    assert caught.value.code == "BILL_NOT_EXIST"
    assert "isp.bill_not_exist" in str(caught.value)


async def test_an_empty_day_has_an_empty_bill(adapter: AlipayAdapter) -> None:
    assert await statement(adapter, date(2020, 1, 1)) == []


async def test_another_merchants_bill_is_refused(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    await paid(adapter, fake, "S4", "1.00", YESTERDAY)
    fake.bill_account = "20889999999999990156"
    with pytest.raises(StatementError, match="account '20889999999999990156', not this merchant"):
        await statement(adapter, YESTERDAY)


async def test_an_answer_that_does_not_verify_is_not_believed(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    fake.faults.append("bad_sign")
    with pytest.raises(ProviderError, match="answer signature not believed") as caught:
        await statement(adapter, YESTERDAY)
    assert not isinstance(caught.value, ProviderRejected)


async def test_a_dead_download_link_is_reported(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    fake.faults.append("bill_expired")
    with pytest.raises(ProviderRejected, match=f"trade bill download for {YESTERDAY}: HTTP 404"):
        await statement(adapter, YESTERDAY)


async def test_a_gateway_that_is_down(fake: FakeAlipayGateway, merchant_keys: MerchantKeys) -> None:
    adapter = make_adapter(fake, merchant_keys, "http://127.0.0.1:9/gateway.do")
    try:
        with pytest.raises(ProviderError, match="unreachable") as caught:
            await statement(adapter, YESTERDAY)
        assert not isinstance(caught.value, ProviderRejected)
    finally:
        await adapter.aclose()
