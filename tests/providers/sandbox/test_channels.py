"""The sandbox's channels over real HTTP: POST /payments takes only the channels the sandbox
declares, with the payer details each needs; tempay's adapter maps each answer to its payer
action (signing where the merchant signs); the QR, H5 and wallet pages let a payer pay only
what verifies, and a refused attempt changes nothing."""

from __future__ import annotations

import base64
import html
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.sandbox import PROVIDER
from providers.sandbox.adapter import SandboxAdapter
from providers.sandbox.channels import SANDBOX_CHANNELS
from providers.sandbox.keys import (
    MERCHANT_PUBLIC_KEY_NAME,
    PUBLIC_KEY_NAME,
    ensure_merchant_keypair,
    load_private_key,
    load_public_key,
)
from providers.sandbox.settings import DEFAULT_ACCOUNT, DEFAULT_APP_ID
from providers.sandbox.store import SandboxStore
from tempay.channels import (
    AppAction,
    ClientSecretAction,
    JsapiAction,
    PayerActionKind,
    PayerDetails,
    QrCodeAction,
    RedirectAction,
)
from tempay.domain import PaymentOrder, ProviderPaymentState, ProviderRefundState, RefundRequest
from tempay.errors import ProviderRejected
from tempay.statements import StatementLineKind
from tests.support.providers.sandbox import (
    Receiver,
    Sandbox,
    eventually,
    order_request,
    running_receiver,
    running_sandbox,
    sign_lines,
    verify_lines,
)

CHINA = ZoneInfo("Asia/Shanghai")
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
PAYER_IP = "127.0.0.1"  # where the tests' browser connects from
KINDS = {spec.name: spec.action for spec in SANDBOX_CHANNELS}
THREE_HOURS = 3 * 3600


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("channels")


@pytest.fixture(scope="module")
async def sandbox(data_dir: Path, receiver: Receiver) -> AsyncIterator[Sandbox]:
    async with running_sandbox(data_dir, receiver, refund_delay_seconds=0) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
async def adapter(sandbox: Sandbox, data_dir: Path) -> AsyncIterator[SandboxAdapter]:
    """Built as `tempay worker` builds it: its merchant key in the data dir's sandbox folder."""
    adapter = SandboxAdapter(
        sandbox.url,
        timeout=5,
        public_key_file=data_dir / "sandbox" / PUBLIC_KEY_NAME,
        merchant_key_directory=data_dir / "sandbox",
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture(scope="module")
def merchant_key(adapter: SandboxAdapter) -> rsa.RSAPrivateKey:
    return adapter.merchant_key()


def order_on(channel: str, receiver: Receiver, **payer: str) -> PaymentOrder:
    return PaymentOrder(
        order_id=f"ch-{uuid.uuid4().hex[:12]}",
        amount=Decimal("10.00"),
        currency="CNY",
        provider="sandbox",
        channel=channel,
        subject="Green tea",
        notify_url=receiver.notify_url,
        payer=PayerDetails(**payer) if payer else None,
    )


def payer_for(channel: str) -> dict[str, str]:
    needs = {f.value for spec in SANDBOX_CHANNELS if spec.name == channel for f in spec.needs}
    return {
        **({"openid": OPENID} if "payer_openid" in needs else {}),
        **({"client_ip": PAYER_IP} if "payer_client_ip" in needs else {}),
    }


def page_text(response: httpx.Response) -> str:
    """A page's text as the payer reads it (entities unescaped)."""
    return html.unescape(response.text)


async def unchanged(sandbox: Sandbox, out_trade_no: str) -> bool:
    """Still waiting for the payer, and nothing was notified."""
    trade = await sandbox.status(out_trade_no)
    return trade["status"] == "WAIT_BUYER_PAY" and await sandbox.deliveries(out_trade_no) == []


async def settled_by_notification(sandbox: Sandbox, out_trade_no: str, status: str) -> None:
    assert (await sandbox.status(out_trade_no))["status"] == status

    async def notified() -> bool:
        return [n["trade_status"] for n in sandbox.receiver.for_trade(out_trade_no)] == [status]

    await eventually(notified)


# POST /payments: the channels the sandbox declares, and what each needs


async def test_a_channel_the_sandbox_does_not_declare_is_refused_and_nothing_is_kept(
    sandbox: Sandbox,
) -> None:
    for channel in ("qr", "", "WECHAT_JSAPI", "alipay_wap "):
        request = order_request(sandbox.receiver, channel=channel)
        response = await sandbox.client.post("/payments", json=request)
        assert response.status_code == 400, channel
        assert response.json()["code"] == "CHANNEL_NOT_SUPPORTED"
        assert "one of alipay_wap, alipay_page, alipay_qr" in response.json()["message"]
        missing = await sandbox.client.get(f"/payments/{request['out_trade_no']}")
        assert missing.status_code == 404


@pytest.mark.parametrize(
    ("channel", "field"),
    [
        ("wechat_h5", "payer_client_ip"),
        ("wechat_jsapi", "payer_openid"),
        ("wechat_miniprogram", "payer_openid"),
    ],
)
async def test_a_channel_needing_a_payer_detail_refuses_an_order_without_it(
    sandbox: Sandbox, channel: str, field: str
) -> None:
    # The other detail does not stand in for the one the channel needs.
    other = {"payer_openid": OPENID, "payer_client_ip": "203.0.113.7"}
    del other[field]
    request = order_request(sandbox.receiver, channel=channel, **other)
    response = await sandbox.client.post("/payments", json=request)
    assert response.status_code == 400
    assert response.json() == {
        "code": "PAYER_REQUIRED",
        "message": f"channel {channel} needs {field}",
    }
    assert (await sandbox.client.get(f"/payments/{request['out_trade_no']}")).status_code == 404


@pytest.mark.parametrize(
    ("channel", "details"),
    [
        ("wechat_jsapi", {"payer_openid": "has spaces and ; semicolons"}),
        ("wechat_jsapi", {"payer_openid": "x" * 129}),
        ("wechat_h5", {"payer_client_ip": "203.0.113.999"}),
        ("wechat_h5", {"payer_client_ip": "0.0.0.0"}),
        ("wechat_h5", {"payer_client_ip": 2130706433}),  # a number, not an address string
    ],
)
async def test_malformed_payer_details_are_refused_without_echoing_them(
    sandbox: Sandbox, channel: str, details: dict[str, Any]
) -> None:
    request = order_request(sandbox.receiver, channel=channel, **details)
    response = await sandbox.client.post("/payments", json=request)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMETER"
    for value in details.values():
        if value != "0.0.0.0":  # unspecified: no one's address, named to say why
            assert str(value) not in response.text
    assert (await sandbox.client.get(f"/payments/{request['out_trade_no']}")).status_code == 404


async def test_another_merchants_app_id_is_refused(sandbox: Sandbox) -> None:
    request = order_request(sandbox.receiver, channel="wechat_app", app_id="wxsomeoneelse0001")
    response = await sandbox.client.post("/payments", json=request)
    assert (response.status_code, response.json()["code"]) == (400, "APPID_NOT_MATCH")


async def test_each_kind_answers_its_data_and_payment_url_only_where_it_has_one(
    sandbox: Sandbox,
) -> None:
    answers = {}
    for spec in SANDBOX_CHANNELS:
        details = {f"payer_{k}": v for k, v in payer_for(spec.name).items()}
        answers[spec.name] = await sandbox.create(channel=spec.name, **details)
    for name, answer in answers.items():
        assert answer["channel"] == name
        assert answer["action"] == KINDS[name]
        trade_no = answer["trade_no"]
        has_url = KINDS[name] in (PayerActionKind.REDIRECT, PayerActionKind.QR_CODE)
        assert ("payment_url" in answer) == has_url, name
        if has_url:
            assert answer["payment_url"] == f"{sandbox.url}/checkout/{trade_no}"
        assert ("qr_code" in answer) == (KINDS[name] is PayerActionKind.QR_CODE), name
        if "qr_code" in answer:
            assert answer["qr_code"].startswith(f"{sandbox.url}/qr/")
        has_prepay = KINDS[name] is PayerActionKind.JSAPI or name == "wechat_app"
        assert ("prepay_id" in answer) == has_prepay, name
        assert ("client_secret" in answer) == (name == "stripe_payment_intent"), name
        if "client_secret" in answer:
            assert answer["client_secret"].startswith(f"pi_{trade_no}_secret_")
    prepay_ids = [a["prepay_id"] for a in answers.values() if "prepay_id" in a]
    assert len(set(prepay_ids)) == len(prepay_ids) == 3


async def test_the_same_order_on_another_channel_or_for_another_payer_is_a_conflict(
    sandbox: Sandbox,
) -> None:
    request = order_request(sandbox.receiver, channel="wechat_jsapi", payer_openid=OPENID)
    first = await sandbox.client.post("/payments", json=request)
    again = await sandbox.client.post("/payments", json=request)
    assert first.status_code == again.status_code == 200
    assert again.json()["prepay_id"] == first.json()["prepay_id"]
    for change in ({"channel": "wechat_miniprogram"}, {"payer_openid": OPENID + "x"}):
        conflict = await sandbox.client.post("/payments", json={**request, **change})
        assert (conflict.status_code, conflict.json()["code"]) == (409, "ORDER_CONFLICT")


# The adapter: each answer as its payer action


@pytest.mark.parametrize("channel", [spec.name for spec in SANDBOX_CHANNELS])
async def test_the_adapter_maps_each_channel_to_its_payer_action(
    sandbox: Sandbox,
    adapter: SandboxAdapter,
    channel: str,
    data_dir: Path,
    merchant_key: rsa.RSAPrivateKey,
) -> None:
    order = order_on(channel, sandbox.receiver, **payer_for(channel))
    created = await adapter.create_payment(order)
    assert created.payer_action is not None
    assert created.payer_action.kind == KINDS[channel]
    trade = await sandbox.status(order.order_id)
    assert created.provider_trade_no == trade["trade_no"]
    action = created.payer_action
    # The public half the sandbox reads, not the adapter's key object.
    public = load_public_key(data_dir / "sandbox" / MERCHANT_PUBLIC_KEY_NAME)
    now = time.time()
    match action:
        case RedirectAction():
            assert created.payment_url == action.url
            assert action.url == f"{sandbox.url}/checkout/{trade['trade_no']}"
        case QrCodeAction():
            assert created.payment_url == action.content
            assert action.content.startswith(f"{sandbox.url}/qr/")
        case JsapiAction(parameters=p):
            assert created.payment_url is None
            assert (p.appId, p.signType) == (DEFAULT_APP_ID, "RSA")
            assert p.package.startswith("prepay_id=wx") and len(p.nonceStr) <= 32
            assert abs(int(p.timeStamp) - now) < 60
            # WeChat's four lines, checked with the merchant's public key as WeChat does.
            verify_lines(public, p.paySign, p.appId, p.timeStamp, p.nonceStr, p.package)
        case AppAction(parameters=p) if p is not None:
            assert created.payment_url is None
            assert (p.appid, p.partnerid, p.package) == (
                DEFAULT_APP_ID,
                DEFAULT_ACCOUNT,
                "Sign=WXPay",
            )
            verify_lines(public, p.sign, p.appid, p.timestamp, p.noncestr, p.prepayid)
        case AppAction(order_string=text) if text is not None:
            assert created.payment_url is None
            params = dict(parse_qsl(text, strict_parsing=True))
            assert params["method"] == "alipay.trade.app.pay"
            assert (params["app_id"], params["sign_type"]) == (DEFAULT_APP_ID, "RSA2")
            biz = json.loads(params["biz_content"])
            assert (biz["out_trade_no"], biz["total_amount"]) == (order.order_id, "10.00")
            # Alipay's rule, written out here: sorted key=value, sign left out, raw values.
            content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign")
            public.verify(
                base64.b64decode(params["sign"]),
                content.encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        case ClientSecretAction():
            assert created.payment_url is None
            assert action.client_secret.startswith(f"pi_{trade['trade_no']}_secret_")
        case _:
            pytest.fail(f"unexpected action {action!r}")


async def test_the_adapter_sends_only_the_payer_details_the_order_holds(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order = order_on("wechat_jsapi", sandbox.receiver)  # built elsewhere than build_order
    with pytest.raises(ProviderRejected, match="channel wechat_jsapi needs payer_openid"):
        await adapter.create_payment(order)
    missing = await sandbox.client.get(f"/payments/{order.order_id}")
    assert missing.status_code == 404


def test_the_spec_builds_an_adapter_whose_merchant_key_is_in_the_data_dir(tmp_path: Path) -> None:
    from tempay.settings import Settings

    adapter = PROVIDER.build(Settings(data_dir=tmp_path), PROVIDER.settings())
    assert isinstance(adapter, SandboxAdapter)
    assert not (tmp_path / "sandbox" / MERCHANT_PUBLIC_KEY_NAME).exists()  # made on first use
    key = adapter.merchant_key()
    public = load_public_key(tmp_path / "sandbox" / MERCHANT_PUBLIC_KEY_NAME)
    assert public.public_numbers() == key.public_key().public_numbers()


def test_processes_racing_to_make_the_merchant_key_leave_one_pair(tmp_path: Path) -> None:
    results: list[tuple[Path, Path]] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_merchant_keypair(tmp_path)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    private, public = results[0]
    numbers = load_private_key(private).public_key().public_numbers()
    assert load_public_key(public).public_numbers() == numbers
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "merchant_private.pem",
        "merchant_public.pem",
    ]


# QR codes: the page at payment_url shows it, scanning it opens Pay and Decline


async def test_a_qr_payment_is_shown_as_a_code_and_paid_by_scanning_it(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order = order_on("wechat_native", sandbox.receiver)
    created = await adapter.create_payment(order)
    assert isinstance(created.payer_action, QrCodeAction)
    content = created.payer_action.content
    trade_no = created.provider_trade_no

    page = await sandbox.client.get(f"/checkout/{trade_no}")
    assert page.status_code == 200
    assert "<svg" in page.text and 'class="segno"' in page.text
    assert f'href="{content}"' in page.text
    assert "<form" not in page.text  # no Pay without scanning
    refused = await sandbox.client.post(f"/checkout/{trade_no}/pay")
    assert refused.status_code == 409 and "scanning its QR code" in refused.text
    assert await unchanged(sandbox, order.order_id)

    scanned = await sandbox.client.get(content)
    assert scanned.status_code == 200
    code = content.rsplit("/", 1)[1]
    assert f'<form method="post" action="/qr/{code}/pay">' in scanned.text
    paid = await sandbox.client.post(f"/qr/{code}/pay")
    assert paid.status_code == 200 and "Payment succeeded" in paid.text
    await settled_by_notification(sandbox, order.order_id, "TRADE_SUCCESS")
    again = await sandbox.client.post(f"/qr/{code}/pay")
    assert again.status_code == 409


async def test_an_unknown_qr_code_is_404(sandbox: Sandbox) -> None:
    for method in ("GET", "POST"):
        path = "/qr/0123456789abcdef01234567" + ("/pay" if method == "POST" else "")
        response = await sandbox.client.request(method, path)
        assert response.status_code == 404 and "no payment" in response.text


async def test_the_qr_code_encodes_its_content(sandbox: Sandbox, adapter: SandboxAdapter) -> None:
    """The SVG is segno's drawing of exactly the content (compared with segno's own)."""
    import segno

    created = await adapter.create_payment(order_on("alipay_qr", sandbox.receiver))
    assert isinstance(created.payer_action, QrCodeAction)
    page = await sandbox.client.get(f"/checkout/{created.provider_trade_no}")
    expected = segno.make(created.payer_action.content, error="m").svg_inline(scale=5)
    assert expected in page.text


# WeChat H5: the page opens only from the payer's network


async def test_an_h5_payment_is_paid_only_from_the_ip_the_merchant_named(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order = order_on("wechat_h5", sandbox.receiver, client_ip=PAYER_IP)
    created = await adapter.create_payment(order)
    assert isinstance(created.payer_action, RedirectAction)
    # Another network (the sandbox, like uvicorn, believes X-Forwarded-For from loopback).
    elsewhere = {"X-Forwarded-For": "198.51.100.23"}
    page = await sandbox.client.get(created.payer_action.url, headers=elsewhere)
    assert page.status_code == 403
    assert "198.51.100.23" in page.text and PAYER_IP not in page.text
    pay = await sandbox.client.post(f"{created.payer_action.url}/pay", headers=elsewhere)
    assert pay.status_code == 403
    assert await unchanged(sandbox, order.order_id)

    page = await sandbox.client.get(created.payer_action.url)
    assert page.status_code == 200 and ">Pay<" in page.text
    paid = await sandbox.client.post(f"{created.payer_action.url}/pay")
    assert paid.status_code == 200
    await settled_by_notification(sandbox, order.order_id, "TRADE_SUCCESS")


# The wallet page


async def wallet(sandbox: Sandbox, action: dict[str, Any]) -> httpx.Response:
    return await sandbox.client.post("/wallet", json=action)


async def wallet_act(sandbox: Sandbox, act: str, action: dict[str, Any]) -> httpx.Response:
    """What the wallet page's form sends: the parameter set again, form-encoded."""
    return await sandbox.client.post(f"/wallet/{act}", data={"payer_action": json.dumps(action)})


async def created_action(adapter: SandboxAdapter, order: PaymentOrder) -> dict[str, Any]:
    created = await adapter.create_payment(order)
    assert created.payer_action is not None
    return created.payer_action.model_dump()


@pytest.mark.parametrize(
    "channel",
    ["wechat_jsapi", "wechat_miniprogram", "wechat_app", "alipay_app", "stripe_payment_intent"],
)
async def test_the_genuine_parameters_open_the_wallet_and_pay_once(
    sandbox: Sandbox, adapter: SandboxAdapter, channel: str
) -> None:
    order = order_on(channel, sandbox.receiver, **payer_for(channel))
    action = await created_action(adapter, order)
    page = await wallet(sandbox, action)
    assert page.status_code == 200, page.text
    assert "10.00 CNY" in page.text and order.order_id in page.text
    assert 'action="/wallet/pay"' in page.text and "verified" in page.text
    assert await unchanged(sandbox, order.order_id)  # opening the wallet pays nothing

    paid = await wallet_act(sandbox, "pay", action)
    assert paid.status_code == 200 and "Payment succeeded" in paid.text
    await settled_by_notification(sandbox, order.order_id, "TRADE_SUCCESS")

    # Replayed once paid: refused, and nothing more is notified.
    for replay in (wallet(sandbox, action), wallet_act(sandbox, "pay", action)):
        response = await replay
        assert response.status_code == 409 and "TRADE_SUCCESS" in response.text
    assert len(await sandbox.deliveries(order.order_id)) == 1


async def test_the_wallet_declines_a_verified_payment(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order = order_on("wechat_jsapi", sandbox.receiver, openid=OPENID)
    action = await created_action(adapter, order)
    declined = await wallet_act(sandbox, "decline", action)
    assert declined.status_code == 200 and "declined" in declined.text
    await settled_by_notification(sandbox, order.order_id, "TRADE_FAILED")


def jsapi(action: dict[str, Any], **changes: str) -> dict[str, Any]:
    return {**action, "parameters": {**action["parameters"], **changes}}


def resigned_jsapi(
    key: rsa.RSAPrivateKey, action: dict[str, Any], **changes: str
) -> dict[str, Any]:
    """Changed, then signed with the merchant's real key: a set the merchant itself got wrong."""
    p = {**action["parameters"], **changes}
    p["paySign"] = sign_lines(key, p["appId"], p["timeStamp"], p["nonceStr"], p["package"])
    return {**action, "parameters": p}


async def test_a_tampered_jsapi_parameter_set_is_refused_and_changes_nothing(
    sandbox: Sandbox, adapter: SandboxAdapter, merchant_key: rsa.RSAPrivateKey
) -> None:
    order = order_on("wechat_jsapi", sandbox.receiver, openid=OPENID)
    action = await created_action(adapter, order)
    other = await created_action(adapter, order_on("wechat_jsapi", sandbox.receiver, openid=OPENID))
    app_order = await created_action(adapter, order_on("wechat_app", sandbox.receiver))
    genuine = action["parameters"]
    stale = str(int(time.time()) - THREE_HOURS)
    ahead = str(int(time.time()) + 3600)
    cases: list[tuple[dict[str, Any], int, str]] = [
        # Changed after the merchant signed: the signature no longer verifies.
        (jsapi(action, package=other["parameters"]["package"]), 401, "paySign does not verify"),
        (jsapi(action, appId="wxattacker0000001"), 401, "paySign does not verify"),
        (jsapi(action, timeStamp=str(int(genuine["timeStamp"]) + 1)), 401, "does not verify"),
        (jsapi(action, paySign=other["parameters"]["paySign"]), 401, "does not verify"),
        (jsapi(action, paySign="not base64!"), 401, "paySign is not base64"),
        (jsapi(action, paySign=""), 401, "paySign is missing"),
        (jsapi(action, paySign="A" * 600), 401, "longer than any signature"),
        # Signed with the merchant's key, but not what the wallet may accept.
        (resigned_jsapi(merchant_key, action, appId="wxanotherapp00001"), 400, "appId is not"),
        (resigned_jsapi(merchant_key, action, timeStamp=stale), 401, "timeStamp is older"),
        (resigned_jsapi(merchant_key, action, timeStamp=ahead), 401, "in the future"),
        (resigned_jsapi(merchant_key, action, timeStamp="1e9"), 400, "seconds since 1970"),
        (resigned_jsapi(merchant_key, action, package="prepay_id=wx00"), 404, "no payment has"),
        (resigned_jsapi(merchant_key, action, package="prepay=1"), 400, "package must be"),
        (jsapi(action, signType="MD5"), 400, "signType must be RSA"),
        (
            resigned_jsapi(
                merchant_key, action, package=f"prepay_id={app_order['parameters']['prepayid']}"
            ),
            400,
            "wechat_app payment's, not jsapi",
        ),
        # Not a parameter set at all.
        ({"kind": "jsapi", "parameters": {"appId": DEFAULT_APP_ID}}, 400, "not a payer action"),
        ({"kind": "redirect", "url": "http://x"}, 400, "opened in a browser"),
        ({"kind": "cash"}, 400, "not a payer action"),
    ]
    for tampered, status, message in cases:
        for response in (
            await wallet(sandbox, tampered),
            await wallet_act(sandbox, "pay", tampered),
        ):
            assert response.status_code == status, (tampered, response.text)
            assert message in page_text(response), (message, response.text)
            assert genuine["paySign"] not in response.text
    assert await unchanged(sandbox, order.order_id)
    # The genuine set still pays: nothing above used it up.
    assert (await wallet_act(sandbox, "pay", action)).status_code == 200


async def test_a_tampered_app_parameter_set_is_refused_and_changes_nothing(
    sandbox: Sandbox, adapter: SandboxAdapter, merchant_key: rsa.RSAPrivateKey
) -> None:
    order = order_on("wechat_app", sandbox.receiver)
    action = await created_action(adapter, order)
    jsapi_order = await created_action(
        adapter, order_on("wechat_jsapi", sandbox.receiver, openid=OPENID)
    )

    def changed(**changes: str) -> dict[str, Any]:
        return {**action, "parameters": {**action["parameters"], **changes}}

    def resigned(**changes: str) -> dict[str, Any]:
        p = {**action["parameters"], **changes}
        p["sign"] = sign_lines(
            merchant_key, p["appid"], p["timestamp"], p["noncestr"], p["prepayid"]
        )
        return {**action, "parameters": p}

    jsapi_prepay = jsapi_order["parameters"]["package"].removeprefix("prepay_id=")
    cases = [
        (changed(prepayid=jsapi_prepay), 401, "sign does not verify"),
        (changed(appid="wxattacker0000001"), 401, "sign does not verify"),
        (resigned(appid="wxanotherapp00001"), 400, "appid is not"),
        (resigned(partnerid="1900000109"), 400, "partnerid is not"),
        (resigned(package="prepay_id=x"), 400, "package must be Sign=WXPay"),
        (resigned(prepayid=jsapi_prepay), 400, "wechat_jsapi payment's, not app"),
        (resigned(timestamp=str(int(time.time()) - THREE_HOURS)), 401, "timestamp is older"),
    ]
    for tampered, status, message in cases:
        response = await wallet_act(sandbox, "pay", tampered)
        assert (response.status_code, message in page_text(response)) == (status, True), (
            response.text
        )
    assert await unchanged(sandbox, order.order_id)


async def test_a_tampered_alipay_order_string_is_refused_and_changes_nothing(
    sandbox: Sandbox, adapter: SandboxAdapter, merchant_key: rsa.RSAPrivateKey
) -> None:
    order = order_on("alipay_app", sandbox.receiver)
    action = await created_action(adapter, order)
    params = dict(parse_qsl(action["order_string"], strict_parsing=True))
    biz = json.loads(params["biz_content"])

    def with_params(**changes: str) -> dict[str, Any]:
        return {"kind": "app", "order_string": urlencode({**params, **changes})}

    def resigned(**changes: str) -> dict[str, Any]:
        changed = {k: v for k, v in {**params, **changes}.items() if k != "sign"}
        content = "&".join(f"{k}={v}" for k, v in sorted(changed.items()) if v != "")
        signature = merchant_key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
        changed["sign"] = base64.b64encode(signature).decode()
        return {"kind": "app", "order_string": urlencode(changed)}

    cheaper = json.dumps({**biz, "total_amount": "0.01"})
    another = json.dumps({**biz, "out_trade_no": "somebody-elses-order"})
    old = (datetime.now(CHINA) - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
    cases = [
        (with_params(biz_content=cheaper), 401, "sign does not verify"),
        (with_params(app_id="2021000000000009"), 401, "sign does not verify"),
        (with_params(sign=""), 401, "sign is missing"),
        ({"kind": "app", "order_string": action["order_string"] + "&app_id=x"}, 401, "twice"),
        (resigned(biz_content=cheaper), 400, "total_amount is not the payment's amount"),
        (resigned(biz_content=another), 404, "no alipay_app payment"),
        (resigned(biz_content="not json"), 400, "biz_content must be"),
        (resigned(app_id="2021000000000009"), 400, "app_id is not"),
        (resigned(method="alipay.trade.page.pay"), 400, "method must be"),
        (resigned(timestamp=old), 401, "timestamp is older"),
        (resigned(timestamp="yesterday"), 400, "yyyy-MM-dd HH:mm:ss"),
    ]
    for tampered, status, message in cases:
        response = await wallet_act(sandbox, "pay", tampered)
        assert (response.status_code, message in page_text(response)) == (status, True), (
            response.text
        )
    assert await unchanged(sandbox, order.order_id)


async def test_a_wrong_client_secret_is_refused_and_changes_nothing(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order = order_on("stripe_payment_intent", sandbox.receiver)
    action = await created_action(adapter, order)
    secret = action["client_secret"]
    intent, _ = secret.split("_secret_")
    for wrong in (intent + "_secret_" + "0" * 32, secret[:-1], "pi_x_secret_y", ""):
        response = await wallet_act(
            sandbox, "pay", {"kind": "client_secret", "client_secret": wrong}
        )
        assert response.status_code == 401 and "not one of this platform's" in page_text(response)
        assert secret not in response.text
    assert await unchanged(sandbox, order.order_id)


async def test_the_wallet_refuses_bodies_that_are_not_a_payer_action(sandbox: Sandbox) -> None:
    huge = await sandbox.client.post("/wallet", content=b"x" * 70_000)
    assert huge.status_code == 413
    for body, content_type in (
        (b"{not json", "application/json"),
        (b"payer_action=%7Bnot", "application/x-www-form-urlencoded"),
        (b"other=1", "application/x-www-form-urlencoded"),
        (b"", "application/x-www-form-urlencoded"),
        # Nested past the JSON parser's depth: RecursionError, not a ValueError.
        (b"[" * 15_000, "application/json"),
        (b"payer_action=" + b"%5B" * 3_000, "application/x-www-form-urlencoded"),
    ):
        response = await sandbox.client.post(
            "/wallet/pay", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 400, body
    entry = await sandbox.client.get("/wallet")
    assert entry.status_code == 200 and 'name="payer_action"' in entry.text


async def test_the_checkout_page_of_a_wallet_payment_has_no_pay_button(
    sandbox: Sandbox, adapter: SandboxAdapter
) -> None:
    order = order_on("stripe_payment_intent", sandbox.receiver)
    created = await adapter.create_payment(order)
    page = await sandbox.client.get(f"/checkout/{created.provider_trade_no}")
    assert page.status_code == 200 and "<form" not in page.text and "/wallet" in page.text
    pay = await sandbox.client.post(f"/checkout/{created.provider_trade_no}/pay")
    assert pay.status_code == 409 and "in the wallet" in pay.text
    assert await unchanged(sandbox, order.order_id)


async def test_the_wallet_without_the_merchants_key_is_503_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A sandbox whose data dir has no merchant key yet cannot verify: 503, not a payment."""
    # Its own receiver: a sandbox makes its receiver trust its key, and no other's.
    async with running_receiver() as receiver, running_sandbox(tmp_path, receiver) as bare:
        created = await bare.create(channel="wechat_app")
        elsewhere = tmp_path / "elsewhere"
        key = load_private_key(ensure_merchant_keypair(elsewhere)[0])
        stamp = str(int(time.time()))
        params = {
            "appid": DEFAULT_APP_ID,
            "partnerid": DEFAULT_ACCOUNT,
            "prepayid": created["prepay_id"],
            "package": "Sign=WXPay",
            "noncestr": "n1",
            "timestamp": stamp,
            "sign": sign_lines(key, DEFAULT_APP_ID, stamp, "n1", created["prepay_id"]),
        }
        response = await bare.client.post("/wallet", json={"kind": "app", "parameters": params})
        assert response.status_code == 503 and "merchant_public.pem" in response.text
        assert await unchanged(bare, created["out_trade_no"])


# After the payer: the same paths as every channel


@pytest.mark.parametrize(
    "channel", ["wechat_native", "wechat_jsapi", "alipay_app", "stripe_payment_intent"]
)
async def test_a_payment_on_a_new_channel_is_notified_queried_refunded_and_in_the_statement(
    sandbox: Sandbox, adapter: SandboxAdapter, channel: str
) -> None:
    order = order_on(channel, sandbox.receiver, **payer_for(channel))
    created = await adapter.create_payment(order)
    action = created.payer_action
    if isinstance(action, QrCodeAction):
        paid = await sandbox.client.post(action.content + "/pay")  # scanned, then Pay
    else:
        assert action is not None
        paid = await wallet_act(sandbox, "pay", action.model_dump())
    assert paid.status_code == 200, paid.text
    await settled_by_notification(sandbox, order.order_id, "TRADE_SUCCESS")

    # The signed notification, as tempay's webhook reads it.
    [(headers, body)] = [
        (h, b)
        for h, b in sandbox.receiver.raw
        if json.loads(b).get("out_trade_no") == order.order_id
    ]
    observed = adapter.parse_notification(headers, body)
    assert (observed.state, observed.amount, observed.currency) == (
        ProviderPaymentState.PAID,
        Decimal("10.00"),
        "CNY",
    )
    queried = await adapter.query_payment(order)
    assert (queried.state, queried.amount) == (ProviderPaymentState.PAID, Decimal("10.00"))

    refund = RefundRequest(
        order_id=order.order_id,
        refund_id=f"rf-{uuid.uuid4().hex[:12]}",
        amount=Decimal("4.00"),
        currency="CNY",
        reason="one item back",
        notify_url=sandbox.receiver.notify_url,
    )
    await adapter.create_refund(refund)

    async def refunded() -> bool:
        found = await adapter.query_refund(refund)
        return found is not None and found.state is ProviderRefundState.SUCCEEDED

    await eventually(refunded)
    trade = await sandbox.status(order.order_id)
    day = datetime.fromisoformat(trade["paid_at"]).astimezone(CHINA).date()
    lines = [line async for line in adapter.statement(day) if line.order_id == order.order_id]
    assert sorted((line.kind, line.amount) for line in lines) == [
        (StatementLineKind.PAYMENT, Decimal("10.00")),
        (StatementLineKind.REFUND, Decimal("4.00")),
    ]


# Stored trades


def test_a_database_from_before_channels_gains_their_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "sandbox.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE trades (
            trade_no TEXT PRIMARY KEY, out_trade_no TEXT NOT NULL UNIQUE,
            amount TEXT NOT NULL, currency TEXT NOT NULL, subject TEXT NOT NULL,
            body TEXT NOT NULL, channel TEXT NOT NULL, return_url TEXT NOT NULL,
            notify_url TEXT NOT NULL, status TEXT NOT NULL, paid_amount TEXT,
            paid_currency TEXT, paid_at TEXT, closed_at TEXT, created_at TEXT NOT NULL);
        INSERT INTO trades VALUES ('SBX1', 'old-1', '10.00', 'CNY', '', '', 'qr', '',
            'http://127.0.0.1:9/notify', 'WAIT_BUYER_PAY', NULL, NULL, NULL, NULL,
            '2026-01-01T00:00:00Z');
        """
    )
    old.close()
    store = SandboxStore(path)
    try:
        trade = store.get_trade("old-1")
        assert trade is not None and trade.channel == "qr"
        assert (trade.prepay_id, trade.qr_code, trade.client_secret, trade.payer_openid) == (
            None,
            None,
            None,
            None,
        )
    finally:
        store.close()
    # Opening it again changes nothing more.
    SandboxStore(path).close()


def test_a_trade_never_shows_payer_data_or_its_secret_in_a_repr() -> None:
    from providers.sandbox.store import Trade

    trade = Trade(
        trade_no="SBX1", out_trade_no="o1", amount="1.00", currency="CNY", subject="",
        body="", channel="wechat_jsapi", return_url="", notify_url="", status="WAIT_BUYER_PAY",
        paid_amount=None, paid_currency=None, paid_at=None, closed_at=None, created_at="",
        payer_openid=OPENID, payer_client_ip="203.0.113.7", client_secret="pi_secret",
    )  # fmt: skip
    assert OPENID not in repr(trade) and "203.0.113.7" not in repr(trade)
    assert "pi_secret" not in repr(trade)
