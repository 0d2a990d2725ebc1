"""Alipay's channels against the fake gateway over real HTTP: every declared channel answers
its kind of payer action; the app order string is signed as Alipay documents it (checked here
with `cryptography` over the documented string-to-sign and with Alipay's reference SDK) and
opens a trade in the (fake) Alipay app, a tampered one does not; the QR code comes from a
signed, verified alipay.trade.precreate whose answer is believed only for its own order. A
trade on either channel then queries, closes, pays, refunds and shows in the bill like any
other."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

import pytest
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.alipay import ALIPAY_CHANNELS
from providers.alipay.adapter import CHANNELS, CHINA, AlipayAdapter, AlipayBusinessError
from providers.bills import CHINA as BILL_DAY_ZONE
from tempay.channels import AppAction, PayerActionKind, QrCodeAction
from tempay.domain import (
    CreatedPayment,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundRequest,
    SettlementTiming,
)
from tempay.errors import ProviderError, ProviderOutcomeUnknown, ProviderRefused, ProviderRejected
from tempay.statements import StatementLineKind
from tests.support.fakes.alipay_gateway import AlipayError, FakeAlipayGateway
from tests.support.providers.alipay import MerchantKeys, make_adapter, new_merchant_keys

NOTIFY_URL = "http://127.0.0.1:8000/notify/alipay"
SUBJECT = "咖啡 Coffee & cake=1+1 100%"
COMMON = {"app_id", "method", "format", "charset", "sign_type", "timestamp", "version"}


def order(order_id: str, channel: str, amount: str = "10.00", **kwargs: Any) -> PaymentOrder:
    return PaymentOrder(
        order_id=order_id,
        amount=Decimal(amount),
        currency="CNY",
        provider="alipay",
        channel=channel,
        subject=SUBJECT,
        notify_url=NOTIFY_URL,
        return_url="https://shop.example/orders/" + order_id,
        **kwargs,
    )


def order_string(created: CreatedPayment) -> str:
    assert isinstance(created.payer_action, AppAction), created.payer_action
    assert created.payer_action.parameters is None and created.payment_url is None
    assert created.payer_action.order_string is not None
    return created.payer_action.order_string


def qr_code(created: CreatedPayment) -> str:
    assert isinstance(created.payer_action, QrCodeAction), created.payer_action
    assert created.payment_url == created.payer_action.content
    return created.payer_action.content


def string_to_sign(params: dict[str, str]) -> str:
    """Alipay's documented string-to-sign of a request, written out here: every non-empty
    parameter but sign, sorted by name, as raw (decoded) `name=value` joined by '&'."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k])


def verified_with_cryptography(public_pem: str, params: dict[str, str]) -> bool:
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(
            base64.b64decode(params["sign"], validate=True),
            string_to_sign(params).encode("utf-8"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


def reencoded(order_str: str, **changes: Any) -> str:
    """The order string with some parameters (or biz_content fields, under `biz`) changed
    and its old signature kept: what an attacker between the merchant and the app could send."""
    params = dict(parse_qsl(order_str, strict_parsing=True))
    biz_changes = changes.pop("biz", None)
    if biz_changes:
        biz = json.loads(params["biz_content"])
        params["biz_content"] = json.dumps({**biz, **biz_changes}, separators=(",", ":"))
    params.update(changes)
    return urlencode(params)


# Every channel the provider declares answers the kind it declares


async def test_every_declared_channel_answers_its_declared_kind(adapter: AlipayAdapter) -> None:
    assert {spec.name for spec in ALIPAY_CHANNELS} == set(CHANNELS)
    for number, spec in enumerate(ALIPAY_CHANNELS):
        created = await adapter.create_payment(order(f"K{number}", spec.name))
        assert created.payer_action is not None
        assert created.payer_action.kind == spec.action, spec.name
        assert not spec.needs  # no Alipay channel asks for payer details
        has_url = spec.action in (PayerActionKind.REDIRECT, PayerActionKind.QR_CODE)
        assert (created.payment_url is not None) == has_url, spec.name


# alipay_app: a signed order string, no call


async def test_app_order_string_is_signed_as_alipay_documents(
    adapter: AlipayAdapter, fake: FakeAlipayGateway, merchant_keys: MerchantKeys
) -> None:
    the_order = order("APP1", "alipay_app", "88.80")
    before = datetime.now(UTC)
    created = await adapter.create_payment(the_order)
    text = order_string(created)
    assert created.provider_trade_no == ""
    assert fake.requests == [] and fake.trades == {}  # no call: the app makes the trade

    params = dict(parse_qsl(text, strict_parsing=True))
    assert set(params) == COMMON | {"notify_url", "biz_content", "sign"}  # no return_url
    assert params["method"] == "alipay.trade.app.pay"
    assert (params["format"], params["charset"], params["sign_type"], params["version"]) == (
        "JSON",
        "utf-8",
        "RSA2",
        "1.0",
    )
    assert params["notify_url"] == NOTIFY_URL
    biz = json.loads(params["biz_content"])
    assert biz["out_trade_no"] == "APP1" and biz["subject"] == SUBJECT
    assert biz["total_amount"] == "88.80"  # a decimal string, never a float
    assert biz["product_code"] == "QUICK_MSECURITY_PAY"
    expire = datetime.strptime(biz["time_expire"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    expires_after = the_order.timing.expires_after
    assert before + expires_after - timedelta(seconds=1) <= expire
    assert expire <= datetime.now(UTC) + expires_after

    # Signed by the merchant's key over the documented string, checked two independent ways.
    assert verified_with_cryptography(merchant_keys.public_pem, params)
    content = get_sign_content({k: v for k, v in params.items() if k != "sign"})
    assert verify_with_rsa(merchant_keys.public_pem, content.encode(), params["sign"])
    assert not verified_with_cryptography(new_merchant_keys().public_pem, params)

    # URL-encoded value by value (quote_plus, as Alipay's SDKs do): '&', '=', '+' and spaces
    # in the subject cannot split or change a parameter.
    assert text.count("&") == len(params) - 1
    assert f"timestamp={quote_plus(params['timestamp'])}" in text.split("&")
    assert f"biz_content={quote_plus(params['biz_content'])}" in text.split("&")


async def test_app_order_string_opens_a_trade_that_pays_and_refunds(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    the_order = order("APP2", "alipay_app", "20.00")
    text = order_string(await adapter.create_payment(the_order))
    # Not yet opened in the app: Alipay has no trade, and that is pending, as for WAP.
    unopened = await adapter.query_payment(the_order)
    assert unopened.state is ProviderPaymentState.PENDING and unopened.provider_trade_no is None

    trade = fake.open_app(text)
    assert (trade.out_trade_no, trade.total_amount, trade.subject) == (
        "APP2",
        Decimal("20.00"),
        SUBJECT,
    )
    assert trade.notify_url == NOTIFY_URL
    assert fake.open_app(text) is trade  # opened again: the same trade
    waiting = await adapter.query_payment(the_order)
    assert waiting.state is ProviderPaymentState.PENDING
    assert waiting.provider_trade_no == trade.trade_no

    notification = fake.pay("APP2")
    observed = adapter.parse_notification({}, urlencode(notification).encode())
    assert observed.state is ProviderPaymentState.PAID
    assert (observed.amount, observed.provider_trade_no) == (Decimal("20.00"), trade.trade_no)
    paid = await adapter.query_payment(the_order)
    assert (paid.state, paid.amount) == (ProviderPaymentState.PAID, Decimal("20.00"))

    request = RefundRequest(
        order_id="APP2", refund_id="APP2-R1", amount=Decimal("5.00"), currency="CNY"
    )
    assert (await adapter.create_refund(request)).state is ProviderRefundState.SUCCEEDED
    queried = await adapter.query_refund(request)
    assert queried is not None and queried.amount == Decimal("5.00")


@pytest.mark.parametrize(
    ("tamper", "sub_code"),
    [
        (lambda s: reencoded(s, biz={"total_amount": "0.01"}), "isv.invalid-signature"),
        (lambda s: reencoded(s, biz={"out_trade_no": "OTHER"}), "isv.invalid-signature"),
        (lambda s: reencoded(s, notify_url="https://evil.example/n"), "isv.invalid-signature"),
        (lambda s: reencoded(s, sign_type="RSA"), "isv.invalid-signature-type"),
        (lambda s: reencoded(s, app_id="2021000999999999"), "isv.invalid-app-id"),
        (lambda s: reencoded(s, sign=""), "isv.missing-signature"),
        (lambda s: s + "&total_amount=0.01", "isv.invalid-signature"),
        (lambda s: s + "&app_id=2021000999999999", "isv.invalid-parameter"),
        (lambda s: s.replace("sign=", "sign=A", 1), "isv.invalid-signature"),
    ],
)
async def test_a_tampered_order_string_is_refused_by_the_app(
    adapter: AlipayAdapter,
    fake: FakeAlipayGateway,
    tamper: Callable[[str], str],
    sub_code: str,
) -> None:
    text = order_string(await adapter.create_payment(order("APP3", "alipay_app")))
    with pytest.raises(AlipayError) as refused:
        fake.open_app(tamper(text))
    assert refused.value.body["sub_code"] == sub_code
    assert fake.trades == {} and fake.rejected == [sub_code]
    fake.open_app(text)  # the untouched one still opens
    assert "APP3" in fake.trades


async def test_an_order_string_signed_by_another_merchant_is_refused(
    fake: FakeAlipayGateway, gateway_url: str
) -> None:
    stranger = make_adapter(fake, new_merchant_keys(), gateway_url)
    try:
        text = order_string(await stranger.create_payment(order("APP4", "alipay_app")))
    finally:
        await stranger.aclose()
    with pytest.raises(AlipayError) as refused:
        fake.open_app(text)
    assert refused.value.body["sub_code"] == "isv.invalid-signature"
    assert fake.trades == {}


async def test_an_expired_order_string_opens_nothing_and_the_order_closes(
    fake: FakeAlipayGateway, merchant_keys: MerchantKeys, gateway_url: str
) -> None:
    # Made an hour ago for an order that expired after 30 minutes.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    late = make_adapter(fake, merchant_keys, gateway_url, clock=lambda: an_hour_ago)
    try:
        the_order = order("APP5", "alipay_app")
        text = order_string(await late.create_payment(the_order))
        with pytest.raises(AlipayError) as refused:
            fake.open_app(text)
        assert refused.value.body["sub_code"] == "ACQ.TRADE_HAS_CLOSE"
        assert fake.trades == {}
        # Never opened: the close finds no trade, which is closed for tempay.
        outcome = await late.close_payment(the_order)
        assert outcome.closed and outcome.observation is None
    finally:
        await late.aclose()


@pytest.mark.parametrize("channel", ["alipay_app", "alipay_qr", "alipay_wap"])
async def test_time_expire_is_the_orders_own_expiry(
    adapter: AlipayAdapter, fake: FakeAlipayGateway, channel: str
) -> None:
    timing = SettlementTiming(expires_after=timedelta(minutes=7))
    before = datetime.now(UTC).replace(microsecond=0)
    created = await adapter.create_payment(order("EXP1", channel, timing=timing))
    if channel == "alipay_qr":
        params = fake.requests[-1]
    else:
        text = order_string(created) if channel == "alipay_app" else created.payment_url or ""
        params = dict(parse_qsl(text.split("?")[-1], strict_parsing=True))
    biz = json.loads(params["biz_content"])
    expire = datetime.strptime(biz["time_expire"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    assert before + timedelta(minutes=7) <= expire <= datetime.now(UTC) + timedelta(minutes=7)


async def test_amounts_outside_alipays_range_are_refused_before_anything_is_sent(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    for channel in CHANNELS:
        with pytest.raises(ProviderRejected, match="amounts from 0.01 to 100000000"):
            await adapter.create_payment(order("BIG1", channel, "100000000.01"))
    assert fake.requests == [] and fake.precreated == {}
    top = await adapter.create_payment(order("BIG2", "alipay_qr", "100000000.00"))
    assert isinstance(top.payer_action, QrCodeAction)


# alipay_qr: alipay.trade.precreate


async def test_precreate_request_and_its_qr_code(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    the_order = order("QR1", "alipay_qr", "12.34")
    before = datetime.now(UTC)
    created = await adapter.create_payment(the_order)
    content = qr_code(created)
    assert created.provider_trade_no == ""

    # The fake checked the request's signature, app id and biz_content as Alipay does.
    (sent,) = fake.requests
    assert sent["method"] == "alipay.trade.precreate" and sent["notify_url"] == NOTIFY_URL
    assert "return_url" not in sent
    biz = json.loads(sent["biz_content"])
    assert (biz["out_trade_no"], biz["total_amount"], biz["subject"]) == (
        "QR1",
        "12.34",
        SUBJECT,
    )
    assert biz["product_code"] == "FACE_TO_FACE_PAYMENT"
    expire = datetime.strptime(biz["time_expire"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    assert expire >= before + the_order.timing.expires_after - timedelta(seconds=1)
    assert content == fake.precreated["QR1"].qr_code and content.startswith("https://")

    # Idempotent by out_trade_no: asked again (a retried activity), the same code.
    assert qr_code(await adapter.create_payment(the_order)) == content
    assert len(fake.precreated) == 1


async def test_a_qr_order_is_pending_until_scanned_then_pays_refunds_and_closes(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    the_order = order("QR2", "alipay_qr", "30.00")
    content = qr_code(await adapter.create_payment(the_order))
    # Precreated, not scanned: Alipay has no trade yet (ACQ.TRADE_NOT_EXIST), so pending.
    unscanned = await adapter.query_payment(the_order)
    assert unscanned.state is ProviderPaymentState.PENDING and unscanned.provider_trade_no is None

    trade = fake.scan(content)
    assert trade.notify_url == NOTIFY_URL and trade.total_amount == Decimal("30.00")
    assert (await adapter.query_payment(the_order)).provider_trade_no == trade.trade_no

    notification = fake.pay("QR2")
    observed = adapter.parse_notification({}, urlencode(notification).encode())
    assert (observed.state, observed.amount) == (ProviderPaymentState.PAID, Decimal("30.00"))
    request = RefundRequest(
        order_id="QR2", refund_id="QR2-R1", amount=Decimal("30.00"), currency="CNY"
    )
    assert (await adapter.create_refund(request)).state is ProviderRefundState.SUCCEEDED
    assert fake.trades["QR2"].refunded == Decimal("30.00")

    # A second QR order, scanned and never paid, closes like any other trade.
    other = order("QR3", "alipay_qr")
    fake.scan(qr_code(await adapter.create_payment(other)))
    closed = await adapter.close_payment(other)
    assert closed.closed and closed.observation is not None
    assert fake.trades["QR3"].status == "TRADE_CLOSED"


async def test_a_never_scanned_qr_order_closes(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    the_order = order("QR4", "alipay_qr")
    await adapter.create_payment(the_order)
    outcome = await adapter.close_payment(the_order)
    assert outcome.closed and outcome.observation is None


def answering(fake: FakeAlipayGateway, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The fake's precreate answers `change(its answer)`, signed with Alipay's key as ever."""
    real = fake._alipay_trade_precreate

    def changed(biz: dict[str, Any], notify_url: str) -> dict[str, Any]:
        return change(real(biz, notify_url))

    fake._alipay_trade_precreate = changed  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # Alipay's signature on an answer about another order: its code would take that
        # order's money, so it is never shown.
        (lambda a: {**a, "out_trade_no": "SOMEONE-ELSE"}, "SOMEONE-ELSE"),
        (lambda a: {k: v for k, v in a.items() if k != "out_trade_no"}, "out_trade_no"),
        (lambda a: {k: v for k, v in a.items() if k != "qr_code"}, "no usable qr_code"),
        (lambda a: {**a, "qr_code": ""}, "no usable qr_code"),
        (lambda a: {**a, "qr_code": "javascript:alert(1)"}, "no usable qr_code"),
        (lambda a: {**a, "qr_code": "https://qr.alipay.com/x y"}, "no usable qr_code"),
        (lambda a: {**a, "qr_code": "https://qr.alipay.com/" + "x" * 2000}, "no usable"),
        (lambda a: {**a, "qr_code": ["https://qr.alipay.com/x"]}, "no usable qr_code"),
    ],
)
async def test_a_precreate_answer_is_believed_only_for_its_order_with_a_usable_code(
    adapter: AlipayAdapter,
    fake: FakeAlipayGateway,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    message: str,
) -> None:
    answering(fake, change)
    with pytest.raises(ProviderError, match=message) as caught:
        await adapter.create_payment(order("QR5", "alipay_qr"))
    # Retryable (precreate is idempotent), never a refusal that would fail the order.
    assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
    assert fake.precreated["QR5"].qr_code not in str(caught.value)


async def test_a_precreate_answer_that_does_not_verify_is_not_believed(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    fake.faults.append("bad_sign")
    with pytest.raises(ProviderError, match="signature") as caught:
        await adapter.create_payment(order("QR6", "alipay_qr"))
    assert not isinstance(caught.value, ProviderRejected)
    for fault in ("system_error", "http_502"):
        fake.faults.append(fault)
        with pytest.raises(ProviderError) as busy:
            await adapter.create_payment(order("QR6", "alipay_qr"))
        assert not isinstance(busy.value, ProviderRejected | ProviderOutcomeUnknown)
    assert isinstance(
        (await adapter.create_payment(order("QR6", "alipay_qr"))).payer_action, QrCodeAction
    )


async def test_precreate_refusals_carry_alipays_code(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    paid = order("QR7", "alipay_qr")
    fake.scan(qr_code(await adapter.create_payment(paid)))
    fake.pay("QR7")
    with pytest.raises(ProviderRefused) as already_paid:
        await adapter.create_payment(paid)
    assert already_paid.value.details["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"

    await adapter.create_payment(order("QR8", "alipay_qr", "10.00"))
    with pytest.raises(ProviderRefused) as changed:
        await adapter.create_payment(order("QR8", "alipay_qr", "9.99"))
    assert changed.value.details["sub_code"] == "ACQ.CONTEXT_INCONSISTENT"
    assert fake.precreated["QR8"].total_amount == Decimal("10.00")


async def test_a_precreate_signed_by_another_merchant_is_rejected(
    fake: FakeAlipayGateway, gateway_url: str
) -> None:
    stranger = make_adapter(fake, new_merchant_keys(), gateway_url)
    try:
        with pytest.raises(ProviderRejected, match="isv.invalid-signature"):
            await stranger.create_payment(order("QR9", "alipay_qr"))
    finally:
        await stranger.aclose()
    assert fake.precreated == {} and fake.rejected == ["isv.invalid-signature"]


async def test_the_fake_refuses_what_alipay_refuses_in_a_precreate(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    """The fake's own checks, through requests the adapter signs: a bad amount format, a
    missing subject, another product code."""
    for biz, sub_code in (
        ({"total_amount": "10"}, None),
        ({"total_amount": "10.001"}, "ACQ.INVALID_PARAMETER"),
        ({"total_amount": 10.0}, "ACQ.INVALID_PARAMETER"),
        ({"total_amount": "1e3"}, "ACQ.INVALID_PARAMETER"),
        ({"total_amount": "0.00"}, "ACQ.TOTAL_FEE_EXCEED"),
        ({"subject": ""}, "ACQ.INVALID_PARAMETER"),
        ({"product_code": "QUICK_WAP_WAY"}, "ACQ.INVALID_PARAMETER"),
    ):
        content = {
            "out_trade_no": f"QRF{len(fake.requests)}",
            "total_amount": "10.00",
            "subject": "s",
            **biz,
        }
        if sub_code is None:
            answer = await adapter._call("alipay.trade.precreate", content)
            assert answer["qr_code"].startswith("https://")
            continue
        with pytest.raises(AlipayBusinessError) as refused:
            await adapter._call("alipay.trade.precreate", content)
        assert refused.value.sub_code == sub_code, biz
    assert list(fake.precreated) == ["QRF0"]


# Both channels' trades in the day's bill


async def test_app_and_qr_trades_are_in_the_bill(
    adapter: AlipayAdapter, fake: FakeAlipayGateway
) -> None:
    yesterday = datetime.now(BILL_DAY_ZONE).date() - timedelta(days=1)
    fake.open_app(order_string(await adapter.create_payment(order("BILL1", "alipay_app"))))
    fake.scan(qr_code(await adapter.create_payment(order("BILL2", "alipay_qr", "6.60"))))
    for order_id in ("BILL1", "BILL2"):
        fake.pay(order_id)
        fake.paid_on(order_id, yesterday)
    await adapter.create_refund(
        RefundRequest(order_id="BILL2", refund_id="BILL2-R", amount=Decimal("1.60"), currency="CNY")
    )
    fake.refunded_on("BILL2", "BILL2-R", yesterday)
    lines = [line async for line in adapter.statement(yesterday)]
    assert [(line.kind, line.order_id, line.amount) for line in lines] == [
        (StatementLineKind.PAYMENT, "BILL1", Decimal("10.00")),
        (StatementLineKind.PAYMENT, "BILL2", Decimal("6.60")),
        (StatementLineKind.REFUND, "BILL2", Decimal("1.60")),
    ]
    assert lines[1].provider_trade_no == fake.trades["BILL2"].trade_no
