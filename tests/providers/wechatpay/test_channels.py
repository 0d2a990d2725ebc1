"""WeChat Pay's channels against the fake WeChat Pay API over real HTTP: the request each one
sends (checked by the fake as WeChat Pay checks it), the answer as the payer's action, and the
JSAPI paySign and APP sign checked by the reference SDK `wechatpayv3` and paid through the
fake's WeChat client. A payment on any channel is then queried, notified, refunded and billed
like any other."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from wechatpayv3 import WeChatPay, WeChatPayType

from providers.wechatpay import PROVIDER
from providers.wechatpay.adapter import PRODUCTS, WechatPayAdapter
from providers.wechatpay.settings import build_config
from tempay.channels import (
    AppAction,
    AppParameters,
    JsapiAction,
    JsapiParameters,
    PayerDetails,
    PayerField,
)
from tempay.domain import (
    CreatedPayment,
    ProviderPaymentState,
    ProviderRefundState,
    RefundRequest,
)
from tempay.errors import ProviderError, ProviderRefused, ProviderRejected, StatementError
from tempay.statements import StatementLineKind
from tests.support.fakes.wechatpay_api import FakeWechatPay, PayerRefused
from tests.support.providers.wechatpay import (
    APIV3_KEY,
    APP_APPID,
    APPID,
    CERT_SERIAL,
    MCHID,
    MINIPROGRAM_APPID,
    payment_order,
    private_pem,
    public_pem,
    settings_for,
    write_keys,
)

IP = "203.0.113.7"
# Each WechatPayConfig app id field as the test merchant sets it.
APPID_OF = {"appid": APPID, "miniprogram_appid": MINIPROGRAM_APPID, "app_appid": APP_APPID}
CHINA = timezone(timedelta(hours=8))


def jsapi(created: CreatedPayment) -> JsapiParameters:
    assert isinstance(created.payer_action, JsapiAction)
    assert created.payment_url is None  # nothing to open: the page calls the JS bridge
    return created.payer_action.parameters


def app(created: CreatedPayment) -> AppParameters:
    assert isinstance(created.payer_action, AppAction)
    assert created.payer_action.order_string is None and created.payer_action.parameters
    assert created.payment_url is None
    return created.payer_action.parameters


def reference_sdk(merchant_key: rsa.RSAPrivateKey, fake: FakeWechatPay, appid: str) -> WeChatPay:
    """wechatpayv3's client for our merchant: with the WeChat Pay public key given, it makes
    no request when built."""
    return WeChatPay(
        wechatpay_type=WeChatPayType.JSAPI,
        mchid=MCHID,
        private_key=private_pem(merchant_key).decode(),
        cert_serial_no=CERT_SERIAL,
        appid=appid,
        apiv3_key=APIV3_KEY,
        public_key=public_pem(fake.platform_key).decode(),
        public_key_id=fake.public_key_id,
    )


def verifies(public_key: rsa.RSAPublicKey, signature: str, *lines: str) -> bool:
    message = "".join(f"{line}\n" for line in lines).encode()
    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256()
        )
    except Exception:
        return False
    return True


@pytest.fixture
def adapter_with(
    tmp_path: Path,
    fake: FakeWechatPay,
    api: str,
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
) -> Callable[..., WechatPayAdapter]:
    """An adapter at the fake with some settings changed (closed by the test)."""
    write_keys(tmp_path, merchant_key, platform_key)

    def make(**overrides: object) -> WechatPayAdapter:
        return WechatPayAdapter(build_config(settings_for(tmp_path, fake, api, **overrides)))

    return make


# The channels the spec declares are the adapter's products


async def test_every_declared_channel_answers_its_declared_action(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    assert PROVIDER.channels == tuple(p.spec for p in PRODUCTS.values())
    assert {c.name for c in PROVIDER.channels} == {
        "wechat_native",
        "wechat_h5",
        "wechat_jsapi",
        "wechat_miniprogram",
        "wechat_app",
    }
    for n, spec in enumerate(PROVIDER.channels):
        appid = APPID_OF[PRODUCTS[spec.name].appid_field]
        payer = PayerDetails(
            openid=fake.new_payer(appid) if PayerField.OPENID in spec.needs else None,
            client_ip=IP if PayerField.CLIENT_IP in spec.needs else None,
        )
        created = await adapter.create_payment(
            payment_order(f"ord-kind-{n:04d}", spec.name, payer=payer if spec.needs else None)
        )
        assert created.payer_action is not None
        assert created.payer_action.kind == spec.action.value, spec.name
    assert all(ok for _, _, ok in fake.requests)


# JSAPI: official account and mini-program


@pytest.mark.parametrize(
    ("channel", "appid"),
    [("wechat_jsapi", APPID), ("wechat_miniprogram", MINIPROGRAM_APPID)],
)
async def test_jsapi_answers_parameters_signed_as_wechat_documents(
    adapter: WechatPayAdapter,
    fake: FakeWechatPay,
    merchant_key: rsa.RSAPrivateKey,
    channel: str,
    appid: str,
) -> None:
    openid = fake.new_payer(appid)
    before = int(time.time())
    created = await adapter.create_payment(
        payment_order("ord-jsapi-001", channel, payer=PayerDetails(openid=openid))
    )
    # The request WeChat Pay received: this app's id, the payer under it, a JSAPI order.
    [(method, path, signed)] = fake.requests
    assert (method, path, signed) == ("POST", "/v3/pay/transactions/jsapi", True)
    stored = fake.orders["ord-jsapi-001"]
    assert (stored["appid"], stored["payer_openid"], stored["trade_type"]) == (
        appid,
        openid,
        "JSAPI",
    )
    params = jsapi(created)
    assert params.appId == appid
    assert params.package == f"prepay_id={stored['prepay_id']}"
    assert params.signType == "RSA"
    assert params.timeStamp.isdigit() and before <= int(params.timeStamp) <= int(time.time())
    assert 1 <= len(params.nonceStr) <= 32 and params.nonceStr.isalnum()
    # The reference SDK signs the documented four lines byte for byte as we did (PKCS#1 v1.5
    # is deterministic), and the signature verifies with the merchant's public key.
    sdk = reference_sdk(merchant_key, fake, appid)
    assert params.paySign == sdk.sign(
        [params.appId, params.timeStamp, params.nonceStr, params.package]
    )
    assert verifies(
        merchant_key.public_key(),
        params.paySign,
        params.appId,
        params.timeStamp,
        params.nonceStr,
        params.package,
    )
    # WeChat's client takes them: the payer pays.
    fake.pay_jsapi(params.model_dump(), openid)
    assert fake.orders["ord-jsapi-001"]["trade_state"] == "SUCCESS"


async def test_wechats_client_refuses_tampered_or_foreign_jsapi_parameters(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    openid = fake.new_payer(APPID)
    order = payment_order("ord-jsapi-002", "wechat_jsapi", payer=PayerDetails(openid=openid))
    params = jsapi(await adapter.create_payment(order)).model_dump()
    for changed in (
        {"timeStamp": str(int(params["timeStamp"]) + 1)},
        {"nonceStr": params["nonceStr"][::-1]},
        {"appId": MINIPROGRAM_APPID},
        {"paySign": "not base64!"},
    ):
        with pytest.raises(PayerRefused):
            fake.pay_jsapi({**params, **changed}, openid)
    with pytest.raises(PayerRefused, match="another payer"):
        fake.pay_jsapi(params, fake.new_payer(APPID))
    assert fake.orders["ord-jsapi-002"]["trade_state"] == "NOTPAY"
    fake.pay_jsapi(params, openid)


async def test_each_answer_is_signed_afresh_for_the_same_prepay_order(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    # A retried create: WeChat Pay answers the same prepay_id; the nonce is new each time
    # and both parameter sets verify.
    order = payment_order(
        "ord-jsapi-003", "wechat_jsapi", payer=PayerDetails(openid=fake.new_payer(APPID))
    )
    first, second = (
        jsapi(await adapter.create_payment(order)),
        jsapi(await adapter.create_payment(order)),
    )
    assert first.package == second.package and first.nonceStr != second.nonceStr
    assert len(fake.orders) == 1


async def test_a_mini_program_order_is_made_for_the_mini_programs_app_id(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    # An openid is per app: the official account's openid of a payer is not the
    # mini-program's. WeChat Pay refuses it, so sending the wrong appid cannot go unnoticed.
    official = fake.new_payer(APPID)
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_payment(
            payment_order(
                "ord-mini-0001", "wechat_miniprogram", payer=PayerDetails(openid=official)
            )
        )
    assert caught.value.code == "PARAM_ERROR" and "appid和openid不匹配" in str(caught.value)
    assert official not in str(caught.value) and fake.orders == {}


@pytest.mark.parametrize(
    ("channel", "unset", "variable"),
    [
        ("wechat_miniprogram", "miniprogram_appid", "TEMPAY_WECHATPAY_MINIPROGRAM_APPID"),
        ("wechat_app", "app_appid", "TEMPAY_WECHATPAY_APP_APPID"),
    ],
)
async def test_a_channel_whose_app_id_is_not_configured_is_refused_before_sending(
    adapter_with: Callable[..., WechatPayAdapter],
    fake: FakeWechatPay,
    channel: str,
    unset: str,
    variable: str,
) -> None:
    adapter = adapter_with(**{unset: None})
    try:
        payer = PayerDetails(openid=fake.new_payer(APPID)) if channel != "wechat_app" else None
        with pytest.raises(ProviderRejected, match=f"{channel} needs {variable}"):
            await adapter.create_payment(payment_order("ord-noapp-001", channel, payer=payer))
        # The other channels are still offered.
        await adapter.create_payment(payment_order("ord-noapp-002", "wechat_native"))
    finally:
        await adapter.aclose()
    assert [path for _, path, _ in fake.requests] == ["/v3/pay/transactions/native"]


# APP


async def test_app_answers_the_sdks_payreq_signed_as_wechat_documents(
    adapter: WechatPayAdapter, fake: FakeWechatPay, merchant_key: rsa.RSAPrivateKey
) -> None:
    created = await adapter.create_payment(payment_order("ord-app-00001", "wechat_app"))
    [(method, path, signed)] = fake.requests
    assert (method, path, signed) == ("POST", "/v3/pay/transactions/app", True)
    stored = fake.orders["ord-app-00001"]
    assert (stored["appid"], stored["trade_type"], stored["payer_openid"]) == (
        APP_APPID,
        "APP",
        None,
    )
    params = app(created)
    assert (params.appid, params.partnerid, params.prepayid, params.package) == (
        APP_APPID,
        MCHID,
        stored["prepay_id"],
        "Sign=WXPay",
    )
    assert params.timestamp.isdigit() and 1 <= len(params.noncestr) <= 32
    sdk = reference_sdk(merchant_key, fake, APP_APPID)
    assert params.sign == sdk.sign(
        [params.appid, params.timestamp, params.noncestr, params.prepayid]
    )
    assert verifies(
        merchant_key.public_key(),
        params.sign,
        params.appid,
        params.timestamp,
        params.noncestr,
        params.prepayid,
    )
    with pytest.raises(PayerRefused):
        fake.pay_app({**params.model_dump(), "prepayid": "wx" + "0" * 34})
    with pytest.raises(PayerRefused):
        fake.pay_app({**params.model_dump(), "noncestr": "X" + params.noncestr[1:]})
    fake.pay_app(params.model_dump())
    assert fake.orders["ord-app-00001"]["trade_state"] == "SUCCESS"


# H5: the payer's own IP


@pytest.mark.parametrize("ip", ["203.0.113.7", "2001:db8::1"])
async def test_h5_declares_the_payers_own_ip(
    adapter: WechatPayAdapter, fake: FakeWechatPay, ip: str
) -> None:
    await adapter.create_payment(
        payment_order("ord-h5-00001", "wechat_h5", payer=PayerDetails(client_ip=ip))
    )
    assert fake.orders["ord-h5-00001"]["scene_info"] == {
        "payer_client_ip": ip,
        "h5_info": {"type": "Wap"},
    }


# Payer details: the adapter's own check (build_order makes the first)


def unchecked(openid: str | None = None, client_ip: str | None = None) -> PayerDetails:
    """Payer details that skipped validation, as a hand-made or corrupted order could hold."""
    return PayerDetails.model_construct(openid=openid, client_ip=client_ip)


@pytest.mark.parametrize(
    ("channel", "payer", "match"),
    [
        ("wechat_jsapi", None, "wechat_jsapi needs payer_openid; the order has none"),
        ("wechat_miniprogram", None, "needs payer_openid"),
        ("wechat_jsapi", PayerDetails(client_ip=IP), "needs payer_openid"),
        ("wechat_h5", None, "wechat_h5 needs payer_client_ip; the order has none"),
        ("wechat_h5", PayerDetails(openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"), "needs payer_client_ip"),
        ("wechat_jsapi", unchecked(openid=""), "payer_openid is malformed"),
        ("wechat_jsapi", unchecked(openid="o-secret\nappId"), "payer_openid is malformed"),
        ("wechat_jsapi", unchecked(openid='o"},"amount":{"total":1}'), "payer_openid is malformed"),
        ("wechat_miniprogram", unchecked(openid="o" * 129), "payer_openid is malformed"),
        ("wechat_h5", unchecked(client_ip="999.0.0.7"), "payer_client_ip is malformed"),
        ("wechat_h5", unchecked(client_ip="0.0.0.0"), "payer_client_ip is malformed"),
        ("wechat_h5", unchecked(client_ip="10.0.0.1, 203.0.113.9"), "payer_client_ip is malformed"),
    ],
)
async def test_a_missing_or_malformed_payer_detail_is_refused_before_sending(
    adapter: WechatPayAdapter,
    fake: FakeWechatPay,
    channel: str,
    payer: PayerDetails | None,
    match: str,
) -> None:
    with pytest.raises(ProviderRejected, match=match) as caught:
        await adapter.create_payment(payment_order("ord-payer-001", channel, payer=payer))
    assert fake.requests == [] and fake.orders == {}
    # The refusal never quotes the detail.
    for value in (payer.openid, payer.client_ip) if payer is not None else ():
        if value:
            assert value not in str(caught.value)


async def test_a_refusal_that_quotes_a_payer_detail_is_redacted(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    openid = fake.new_payer(APPID)
    fake.create_refusal = (400, "PARAM_ERROR", "用户 {openid} 不合法")
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_payment(
            payment_order("ord-redact-01", "wechat_jsapi", payer=PayerDetails(openid=openid))
        )
    assert openid not in str(caught.value) and openid not in repr(caught.value.details)
    assert "[payer detail]" in str(caught.value)
    fake.create_refusal = (400, "PARAM_ERROR", "IP {ip} 不合法")
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_payment(
            payment_order("ord-redact-02", "wechat_h5", payer=PayerDetails(client_ip=IP))
        )
    assert IP not in str(caught.value) and IP not in repr(caught.value.details)


# Answers the adapter will not hand to a payer (signed, yet not what WeChat Pay documents)


@pytest.mark.parametrize(
    ("channel", "answer", "match"),
    [
        ("wechat_jsapi", {"prepay_id": "wx1\nwx8888888888888888"}, "prepay_id is malformed"),
        ("wechat_app", {"prepay_id": ""}, "lacks prepay_id"),
        ("wechat_app", {"prepay_id": ["wx1"]}, "lacks prepay_id"),
        ("wechat_h5", {"h5_url": "javascript:alert(document.cookie)"}, "not an https URL"),
        ("wechat_native", {"code_url": "https://phish.example/pay"}, "not a weixin:// URL"),
        ("wechat_native", {"h5_url": "https://wx.tenpay.com/"}, "lacks code_url"),
    ],
)
async def test_an_answer_that_is_not_wechat_pays_is_not_handed_to_the_payer(
    adapter: WechatPayAdapter,
    fake: FakeWechatPay,
    channel: str,
    answer: dict[str, Any],
    match: str,
) -> None:
    fake.create_answer = answer
    payer = PayerDetails(openid=fake.new_payer(APPID), client_ip=IP).only(
        PRODUCTS[channel].spec.needs
    )
    with pytest.raises(ProviderError, match=match) as caught:
        await adapter.create_payment(payment_order("ord-answer-01", channel, payer=payer))
    assert not isinstance(caught.value, ProviderRejected)  # retried, not final


# After the create: the same paths as every channel


async def paid_on_each_channel(adapter: WechatPayAdapter, fake: FakeWechatPay) -> dict[str, str]:
    """One order paid on each of jsapi, miniprogram and app, as its payer pays; order ids
    by channel."""
    ids = {}
    for n, (channel, appid) in enumerate(
        [
            ("wechat_jsapi", APPID),
            ("wechat_miniprogram", MINIPROGRAM_APPID),
            ("wechat_app", APP_APPID),
        ]
    ):
        order_id = f"ord-paid-{n:04d}"
        openid = fake.new_payer(appid) if channel != "wechat_app" else None
        payer = PayerDetails(openid=openid) if openid else None
        created = await adapter.create_payment(payment_order(order_id, channel, payer=payer))
        if openid:
            fake.pay_jsapi(jsapi(created).model_dump(), openid)
        else:
            fake.pay_app(app(created).model_dump())
        ids[channel] = order_id
    return ids


async def test_new_channels_settle_refund_and_bill_like_any_other(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    ids = await paid_on_each_channel(adapter, fake)
    for channel, order_id in ids.items():
        order = payment_order(order_id, channel)
        # The notification and the status query say the same.
        headers, body = fake.payment_notification(order_id)
        notified = adapter.parse_notification(headers, body)
        queried = await adapter.query_payment(order)
        for seen in (notified, queried):
            assert (seen.order_id, seen.state, seen.amount) == (
                order_id,
                ProviderPaymentState.PAID,
                Decimal("12.34"),
            )
            assert seen.provider_trade_no == fake.orders[order_id]["transaction_id"]
    refund = RefundRequest(
        order_id=ids["wechat_miniprogram"],
        refund_id="rf-mini-0001",
        amount=Decimal("2.00"),
        currency="CNY",
    )
    assert (await adapter.create_refund(refund)).state is ProviderRefundState.PENDING
    fake.finish_refund("rf-mini-0001", "SUCCESS")
    headers, body = fake.refund_notification("rf-mini-0001")
    refunded = adapter.parse_any_notification(headers, body)
    assert refunded.state is ProviderRefundState.SUCCEEDED  # type: ignore[union-attr]

    # The day's bill holds lines of all three app ids: all ours.
    day = datetime.now(CHINA).date()
    lines = [line async for line in adapter.statement(day)]
    payments = {line.order_id for line in lines if line.kind is StatementLineKind.PAYMENT}
    assert payments == set(ids.values())
    assert [line.refund_id for line in lines if line.kind is StatementLineKind.REFUND] == [
        "rf-mini-0001"
    ]
    assert {o["appid"] for o in fake.orders.values()} == {APPID, MINIPROGRAM_APPID, APP_APPID}


async def test_a_bill_with_a_line_of_an_unconfigured_app_id_is_refused(
    adapter_with: Callable[..., WechatPayAdapter], fake: FakeWechatPay
) -> None:
    # The mini-program's app id is bound to the merchant but this deployment does not
    # configure it: its lines are not tempay's to reconcile.
    full = adapter_with()
    without = adapter_with(miniprogram_appid=None)
    try:
        await paid_on_each_channel(full, fake)
        day: date = datetime.now(CHINA).date()
        with pytest.raises(StatementError, match=f"for another app id .*'{MINIPROGRAM_APPID}'"):
            [line async for line in without.statement(day)]
    finally:
        await full.aclose()
        await without.aclose()


async def test_a_notification_names_the_app_id_it_was_paid_under_and_is_not_refused_by_it(
    adapter_with: Callable[..., WechatPayAdapter], fake: FakeWechatPay
) -> None:
    # The decision (docs/providers/wechatpay.md): the notification's mchid is checked, its
    # appid is not. A mini-program order whose app id was since unset still settles.
    full = adapter_with()
    without = adapter_with(miniprogram_appid=None)
    try:
        ids = await paid_on_each_channel(full, fake)
        headers, body = fake.payment_notification(ids["wechat_miniprogram"])
        seen = without.parse_notification(headers, body)
        assert seen.state is ProviderPaymentState.PAID
    finally:
        await full.aclose()
        await without.aclose()


# The fake speaks WeChat Pay's protocol as the reference SDK does


async def test_the_reference_sdks_jsapi_order_is_taken_by_the_fake(
    fake: FakeWechatPay, api: str, merchant_key: rsa.RSAPrivateKey
) -> None:
    sdk = reference_sdk(merchant_key, fake, MINIPROGRAM_APPID)
    sdk._core._gate_way = api  # the fake, not api.mch.weixin.qq.com
    openid = fake.new_payer(MINIPROGRAM_APPID)

    def create(out_trade_no: str, payer: dict[str, str] | None) -> tuple[int, str]:
        code, message = sdk.pay(
            description="测试",
            out_trade_no=out_trade_no,
            amount={"total": 1},
            payer=payer,
            notify_url="https://tempay.example/notify/wechatpay",
            pay_type=WeChatPayType.MINIPROG,
        )
        return code, message

    # The SDK signs its request and verifies the fake's answer with the WeChat Pay key.
    code, message = await asyncio.to_thread(create, "ord-sdk-00001", {"openid": openid})
    assert code == 200 and "prepay_id" in message
    assert fake.requests[-1] == ("POST", "/v3/pay/transactions/jsapi", True)
    code, message = await asyncio.to_thread(
        create, "ord-sdk-00002", {"openid": fake.new_payer(APPID)}
    )
    assert code == 400 and "appid和openid不匹配" in message
