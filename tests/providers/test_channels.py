"""Channels and payer details (tempay/channels.py, providers/registry.py checked_channel): an
order is checked against its provider's channels before anything starts, carries exactly the
payer details its channel needs, and never shows them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from providers.registry import PROVIDERS, checked_channel
from tempay.channels import (
    AppAction,
    AppParameters,
    ClientSecretAction,
    JsapiAction,
    JsapiParameters,
    PayerAction,
    PayerActionKind,
    PayerDetails,
    PayerField,
    QrCodeAction,
    RedirectAction,
)
from tempay.domain import CheckoutInfo, CreatedPayment, PaymentView, TransactionStatus
from tempay.errors import InvalidInput
from tempay.settings import Settings
from transactions import build_order

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
JSAPI = JsapiParameters(
    appId="wx8888888888888888",
    timeStamp="1700000000",
    nonceStr="5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    package="prepay_id=wx201410272009395522657a690389285100",
    signType="RSA",
    paySign="c2lnbmF0dXJl",
)


def order(tmp_path: Path, **terms: str | None) -> object:
    settings = Settings(data_dir=tmp_path, sandbox=True)
    base: dict[str, str | None] = {"order_id": "ch-1", "amount": "1.00", "currency": "CNY"}
    return build_order(settings, **(base | terms))  # type: ignore[arg-type]


def test_every_channel_answers_a_known_kind_and_each_default_is_offered() -> None:
    for spec in PROVIDERS:
        names = [c.name for c in spec.channels]
        assert len(names) == len(set(names)), spec.name
        for channel in spec.channels:
            assert channel.action in PayerActionKind, (spec.name, channel.name)
            assert channel.description, (spec.name, channel.name)
        if spec.channels:
            assert spec.default_channel in names, spec.name


@pytest.mark.parametrize(
    ("provider", "channel", "message"),
    [
        ("wechatpay", "wechat_jsapi", "channel wechat_jsapi needs payer_openid"),
        ("wechatpay", "wechat_miniprogram", "needs payer_openid"),
        ("wechatpay", "wechat_h5", "channel wechat_h5 needs payer_client_ip"),
        ("sandbox", "wechat_jsapi", "needs payer_openid"),
        ("alipay", "alipay_nope", "alipay has no channel 'alipay_nope': one of alipay_wap"),
        ("stripe", "wechat_h5", "stripe has no channel 'wechat_h5'"),
    ],
)
def test_a_channel_refuses_an_order_without_what_it_needs(
    provider: str, channel: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        checked_channel(provider, channel, None)


def test_details_the_channel_does_not_use_are_not_kept() -> None:
    payer = PayerDetails(openid=OPENID, client_ip="8.8.4.4")
    assert checked_channel("wechatpay", "wechat_native", payer) == ("wechat_native", None)
    name, kept = checked_channel("wechatpay", "wechat_h5", payer)
    assert (name, kept) == ("wechat_h5", PayerDetails(client_ip="8.8.4.4"))
    name, kept = checked_channel("wechatpay", "wechat_jsapi", payer)
    assert kept == PayerDetails(openid=OPENID)
    assert checked_channel("stripe", None, None) == ("stripe_checkout", None)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"payer_openid": "has space"}, "payer_openid must be 1-128 of letters"),
        ({"payer_openid": "x" * 129}, "payer_openid must be 1-128"),
        ({"payer_openid": ""}, "payer_openid must be"),
        ({"payer_client_ip": "300.1.1.1"}, "payer_client_ip must be the payer's IPv4 or IPv6"),
        ({"payer_client_ip": "example.com"}, "payer_client_ip must be"),
        ({"payer_client_ip": "0.0.0.0"}, "payer_client_ip must be the payer's own address"),
    ],
)
def test_malformed_payer_details_are_refused_with_a_clear_message(
    tmp_path: Path, terms: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        order(tmp_path, channel="wechat_jsapi", **terms)


def test_an_order_keeps_the_payer_details_and_never_shows_them(tmp_path: Path) -> None:
    built = order(
        tmp_path, channel="wechat_jsapi", payer_openid=OPENID, payer_client_ip="203.0.113.7"
    )
    assert built.payer == PayerDetails(openid=OPENID)  # type: ignore[attr-defined]
    assert OPENID not in repr(built) and OPENID not in str(built)
    h5 = order(tmp_path, channel="wechat_h5", payer_client_ip=" 2001:db8:0:0::1 ")
    assert h5.payer.client_ip == "2001:db8::1"  # type: ignore[attr-defined]
    assert "2001:db8" not in repr(h5)
    assert order(tmp_path).payer is None  # type: ignore[attr-defined]


ACTIONS: list[tuple[object, str | None]] = [
    (RedirectAction(url="https://pay.example/c/1"), "https://pay.example/c/1"),
    (QrCodeAction(content="weixin://wxpay/bizpayurl?pr=abc"), "weixin://wxpay/bizpayurl?pr=abc"),
    (JsapiAction(parameters=JSAPI), None),
    (AppAction(order_string="app_id=2021&biz_content=...&sign=abc"), None),
    (ClientSecretAction(client_secret="pi_1_secret_2"), None),
]


@pytest.mark.parametrize(("action", "url"), ACTIONS)
def test_the_checkout_answer_carries_the_action_and_payment_url_for_url_kinds(
    action: PayerAction, url: str | None
) -> None:
    created = CreatedPayment(provider_trade_no="T1", payer_action=action)
    assert created.payment_url == url
    # Through JSON (the API, Temporal's converter) and back, by its kind.
    wire = created.model_dump(mode="json")
    assert wire["payer_action"]["kind"] == action.kind  # type: ignore[attr-defined]
    assert CreatedPayment.model_validate(wire) == created
    assert TypeAdapter(PayerAction).validate_python(wire["payer_action"]) == action


def test_no_credential_shows_in_a_repr() -> None:
    for action in (
        JsapiAction(parameters=JSAPI),
        AppAction(order_string="app_id=1&sign=SIGNATURE-VALUE"),
        ClientSecretAction(client_secret="pi_1_secret_SECRET-VALUE"),
    ):
        shown = repr(CreatedPayment(provider_trade_no="T", payer_action=action))
        for secret in ("c2lnbmF0dXJl", "SIGNATURE-VALUE", "SECRET-VALUE"):
            assert secret not in shown, shown


def test_jsapi_parameters_keep_wechats_field_names() -> None:
    dumped = JsapiAction(parameters=JSAPI).model_dump(mode="json")["parameters"]
    assert list(dumped) == ["appId", "timeStamp", "nonceStr", "package", "signType", "paySign"]


def test_an_app_action_carries_exactly_one_of_order_string_and_parameters() -> None:
    params = AppParameters(
        appid="wx1",
        partnerid="1900000109",
        prepayid="wx2",
        package="Sign=WXPay",
        noncestr="n",
        timestamp="1",
        sign="s",
    )
    with pytest.raises(ValidationError, match="one"):
        AppAction(order_string="x", parameters=params)
    with pytest.raises(ValidationError, match="one"):
        AppAction()


def test_an_answer_recorded_before_payer_actions_is_a_redirect() -> None:
    # A history written before this change holds {"provider_trade_no", "payment_url"}.
    old = CreatedPayment.model_validate({"provider_trade_no": "", "payment_url": "http://x/c"})
    assert old.payer_action == RedirectAction(url="http://x/c")
    native = CreatedPayment.model_validate(
        {"provider_trade_no": "", "payment_url": "weixin://wxpay/bizpayurl?pr=abc"}
    )
    assert native.payer_action == QrCodeAction(content="weixin://wxpay/bizpayurl?pr=abc")
    with pytest.raises(ValidationError, match="needs a payer_action"):
        CreatedPayment.model_validate({"provider_trade_no": ""})


def test_the_view_and_checkout_answer_carry_the_action() -> None:
    view = PaymentView(
        workflow_id="payment-1",
        order_id="1",
        kind="payment",  # type: ignore[arg-type]
        provider="sandbox",
        status=TransactionStatus.PENDING,
        amount=Decimal("1.00"),
        currency="CNY",
        payer_action=JsapiAction(parameters=JSAPI),
    )
    checkout = CheckoutInfo.of(view)
    assert checkout.payer_action == view.payer_action and checkout.payment_url is None


def test_payer_fields_are_the_api_names() -> None:
    assert {f.value for f in PayerField} == {"payer_openid", "payer_client_ip"}


def test_wechat_pay_h5_needs_the_payers_public_address_the_sandbox_any() -> None:
    for private in ("10.1.2.3", "127.0.0.1", "192.168.1.9", "172.17.0.1", "fd00::1"):
        with pytest.raises(InvalidInput, match="needs the payer's public IP address") as raised:
            checked_channel("wechatpay", "wechat_h5", PayerDetails(client_ip=private))
        assert private not in str(raised.value)
    public = PayerDetails(client_ip="8.8.8.8")
    assert checked_channel("wechatpay", "wechat_h5", public) == ("wechat_h5", public)
    local = PayerDetails(client_ip="127.0.0.1")
    assert checked_channel("sandbox", "wechat_h5", local) == ("wechat_h5", local)
