"""The backend API (/api, webhook/api.py) over real HTTP on the real dev server: the stack's
webhook service serves it, the sandbox settles the payments, a real worker runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from providers.registry import build_adapters
from tempay.settings import Settings
from tests.support.stack import Stack, bound_socket, running_stack, serve, stack_settings, url_of
from webhook.app import create_app as create_webhook_app

pytestmark = pytest.mark.e2e

API_KEY = f"test-api-key-{uuid.uuid4().hex}"
CODEC_TOKEN = f"codec-token-{uuid.uuid4().hex}"
SETTLE_SECONDS = 20
PHP_CLIENT = Path(__file__).parent / "php" / "client.php"

# Every route of the API, with a body that would be valid: the auth tests call them all.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/payments", {"order_id": "auth-1", "amount": "1.00", "currency": "CNY"}),
    ("GET", "/api/payments/auth-1", None),
    ("POST", "/api/payments/auth-1/refunds", {"refund_id": "auth-r1", "amount": "1.00"}),
    ("GET", "/api/refunds/auth-r1", None),
    (
        "POST",
        "/api/recharges",
        {"order_id": "auth-2", "amount": "1.00", "currency": "CNY", "account_id": "a1"},
    ),
    (
        "POST",
        "/api/withdrawals",
        {"withdrawal_id": "auth-w1", "amount": "1.00", "currency": "CNY", "payee_account": "p"},
    ),
    ("GET", "/api/withdrawals/auth-w1", None),
]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env.client,
        tmp_path_factory.mktemp("api"),
        f"tq-api-{uuid.uuid4().hex[:8]}",
        settings_overrides={
            "api_key": API_KEY,
            # Paid payments take refunds for a while (the stack's default ends them at once).
            "refund_window": timedelta(minutes=10),
            "codec_auth_token": CODEC_TOKEN,
        },
        refund_delay_seconds=0.2,
        transfer_delay_seconds=0.2,
    ) as s:
        yield s


@pytest.fixture(scope="module")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.webhook_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
async def sandbox(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as client:
        yield client


async def create(api: httpx.AsyncClient, order_id: str, amount: str = "10.00") -> httpx.Response:
    return await api.post(
        "/api/payments",
        json={"order_id": order_id, "amount": amount, "currency": "CNY", "subject": "Coffee"},
    )


async def until(
    api: httpx.AsyncClient, path: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(SETTLE_SECONDS):
        while True:
            response = await api.get(path)
            assert response.status_code == 200, response.text
            if check(response.json()):
                return response.json()
            await asyncio.sleep(0.1)


async def paid(api: httpx.AsyncClient, sandbox: httpx.AsyncClient, amount: str = "10.00") -> str:
    order_id = new_id("api-paid")
    assert (await create(api, order_id, amount)).status_code == 200
    response = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})
    assert response.status_code == 200, response.text
    await until(api, f"/api/payments/{order_id}", lambda v: v["status"] == "SUCCEEDED")
    return order_id


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return str(body["error"])


# Payments


async def test_payment_is_idempotent_by_order_id(api: httpx.AsyncClient) -> None:
    order_id = new_id("api-pay")
    first = await create(api, order_id)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["order_id"] == order_id
    assert body["workflow_id"] == f"payment-{order_id}"
    assert body["status"] == "PENDING"
    assert body["payment_url"].startswith("http://127.0.0.1:")

    again = await create(api, order_id)
    assert again.status_code == 200, again.text
    assert again.json()["payment_url"] == body["payment_url"]
    assert again.json()["workflow_id"] == body["workflow_id"]

    conflict = await create(api, order_id, amount="11.00")
    assert conflict.status_code == 409, conflict.text
    assert "different terms" in error_of(conflict)

    view = (await api.get(f"/api/payments/{order_id}")).json()
    assert (view["amount"], view["currency"], view["kind"]) == ("10.00", "CNY", "payment")


async def test_get_payment(api: httpx.AsyncClient) -> None:
    order_id = new_id("api-get")
    await create(api, order_id, amount="12.50")
    response = await api.get(f"/api/payments/{order_id}")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["order_id"] == order_id
    assert view["amount"] == "12.50"  # money is a string, exactly as ordered
    assert view["status"] == "PENDING"
    assert view["provider_trade_no"]

    missing = await api.get(f"/api/payments/{new_id('nobody')}")
    assert missing.status_code == 404
    assert "no transaction" in error_of(missing)
    assert (await api.get("/api/payments/bad!id")).status_code == 422


async def test_recharge(api: httpx.AsyncClient, sandbox: httpx.AsyncClient) -> None:
    order_id = new_id("api-rc")
    body = {"order_id": order_id, "amount": "50.00", "currency": "CNY", "account_id": "acct-42"}
    response = await api.post("/api/recharges", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["payment_url"]
    assert (await api.post("/api/recharges", json=body)).json() == response.json()

    paying = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})
    assert paying.status_code == 200, paying.text
    view = await until(api, f"/api/payments/{order_id}", lambda v: v["status"] == "SUCCEEDED")
    assert (view["kind"], view["account_id"], view["paid_amount"]) == (
        "recharge",
        "acct-42",
        "50.00",
    )

    no_account = await api.post("/api/recharges", json={**body, "account_id": ""})
    assert no_account.status_code == 422
    assert "account_id" in error_of(no_account)


# Refunds


async def test_refunds(api: httpx.AsyncClient, sandbox: httpx.AsyncClient) -> None:
    order_id = await paid(api, sandbox)
    refunds = f"/api/payments/{order_id}/refunds"
    refund_id = new_id("api-rf")

    partial = await api.post(refunds, json={"refund_id": refund_id, "amount": "4.00"})
    assert partial.status_code == 201, partial.text
    accepted = partial.json()
    assert accepted["status"] in ("PENDING", "SUCCEEDED")
    assert (accepted["amount"], accepted["currency"]) == ("4.00", "CNY")
    assert accepted["refundable_amount"] == "6.00"

    # The same refund id and amount again: the same refund, nothing more reserved.
    again = await api.post(
        refunds, json={"refund_id": refund_id, "amount": "4.00", "currency": "CNY"}
    )
    assert again.status_code == 201, again.text
    assert again.json()["workflow_id"] == accepted["workflow_id"]
    assert again.json()["refundable_amount"] == "6.00"

    other_amount = await api.post(refunds, json={"refund_id": refund_id, "amount": "5.00"})
    assert other_amount.status_code == 409, other_amount.text

    over = await api.post(refunds, json={"refund_id": new_id("api-rf"), "amount": "6.01"})
    assert over.status_code == 409, over.text

    usd = await api.post(
        refunds, json={"refund_id": new_id("api-rf"), "amount": "1.00", "currency": "USD"}
    )
    assert usd.status_code == 422, usd.text
    assert "USD" in error_of(usd)

    too_precise = await api.post(refunds, json={"refund_id": new_id("api-rf"), "amount": "1.001"})
    assert too_precise.status_code == 422, too_precise.text

    refund = await until(api, f"/api/refunds/{refund_id}", lambda v: v["status"] == "SUCCEEDED")
    assert (refund["order_id"], refund["amount"], refund["kind"]) == (order_id, "4.00", "refund")
    view = await until(
        api, f"/api/payments/{order_id}", lambda v: v["status"] == "PARTIALLY_REFUNDED"
    )
    # The refused requests left nothing behind: one refund, 6.00 still refundable.
    assert [r["refund_id"] for r in view["refunds"]] == [refund_id]
    assert (view["refunded_amount"], view["refundable_amount"]) == ("4.00", "6.00")

    rest = await api.post(refunds, json={"refund_id": new_id("api-rf"), "amount": "6.00"})
    assert rest.status_code == 201, rest.text
    await until(api, f"/api/payments/{order_id}", lambda v: v["status"] == "REFUNDED")


async def test_refund_of_unpaid_or_unknown_payment(api: httpx.AsyncClient) -> None:
    order_id = new_id("api-unpaid")
    await create(api, order_id)
    unpaid = await api.post(
        f"/api/payments/{order_id}/refunds", json={"refund_id": new_id("rf"), "amount": "1.00"}
    )
    assert unpaid.status_code == 409, unpaid.text
    assert (await api.get(f"/api/payments/{order_id}")).json()["refunds"] == []

    unknown = await api.post(
        f"/api/payments/{new_id('nobody')}/refunds",
        json={"refund_id": new_id("rf"), "amount": "1.00"},
    )
    assert unknown.status_code == 404, unknown.text
    assert (await api.get(f"/api/refunds/{new_id('nobody')}")).status_code == 404


async def test_refund_the_provider_refuses_is_422_with_the_refund(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, stack: Stack
) -> None:
    """Refunded outside tempay at the provider first, so the provider has less left than
    tempay's ledger: the refund is FAILED with the provider's reason."""
    order_id = await paid(api, sandbox)
    outside = await sandbox.post(
        f"/payments/{order_id}/refunds",
        json={
            "out_request_no": f"{order_id}-outside",
            "refund_amount": "9.00",
            "currency": "CNY",
            "notify_url": stack.notify_url,
        },
    )
    assert outside.status_code == 200, outside.text
    refund_id = new_id("api-rf")
    refused = await api.post(
        f"/api/payments/{order_id}/refunds", json={"refund_id": refund_id, "amount": "5.00"}
    )
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["status"] == "FAILED"
    assert body["refund_id"] == refund_id
    assert "REFUND_AMOUNT_EXCEEDED" in body["fail_reason"]
    assert "REFUND_AMOUNT_EXCEEDED" in error_of(refused)


# Withdrawals


async def test_withdrawal(api: httpx.AsyncClient) -> None:
    withdrawal_id = new_id("api-wd")
    body = {
        "withdrawal_id": withdrawal_id,
        "amount": "25.00",
        "currency": "CNY",
        "payee_account": "payee@example.com",
        "payee_name": "Ann Payee",
    }
    response = await api.post("/api/withdrawals", json=body)
    assert response.status_code == 200, response.text
    submitted = response.json()
    assert submitted["workflow_id"] == f"withdrawal-{withdrawal_id}"
    assert submitted["provider_transfer_no"]

    again = await api.post("/api/withdrawals", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["provider_transfer_no"] == submitted["provider_transfer_no"]

    conflict = await api.post("/api/withdrawals", json={**body, "amount": "26.00"})
    assert conflict.status_code == 409, conflict.text

    view = await until(
        api, f"/api/withdrawals/{withdrawal_id}", lambda v: v["status"] == "SUCCEEDED"
    )
    assert (view["amount"], view["payee_account"]) == ("25.00", "payee@example.com")
    assert (await api.get(f"/api/withdrawals/{new_id('nobody')}")).status_code == 404


# Authentication


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key-of-some-length", f"Basic {API_KEY}", f"Bearer {API_KEY}x", "Bearer"],
)
async def test_every_route_needs_the_key(stack: Stack, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=stack.webhook_url, headers=headers) as client:
        for method, path, body in ROUTES:
            response = await client.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "API key" in error_of(response)
            assert API_KEY not in response.text
        # Checked before the body is even read: a malformed body is still 401.
        garbage = await client.post(
            "/api/payments", content=b"{no", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 401
    async with httpx.AsyncClient(
        base_url=stack.webhook_url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        assert (await client.get("/api/payments/auth-1")).status_code == 404  # the key works


async def test_the_key_is_no_substitute_for_a_provider_signature_or_the_codec_token(
    stack: Stack,
) -> None:
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.webhook_url) as client:
        unsigned = await client.post(
            "/notify/sandbox",
            content=b"out_trade_no=x&trade_status=TRADE_SUCCESS&total_amount=1.00",
            headers={**bearer, "content-type": "application/x-www-form-urlencoded"},
        )
        assert unsigned.status_code == 401, unsigned.text
        codec = await client.post("/codec/decode", json={"payloads": []}, headers=bearer)
        assert codec.status_code == 401, codec.text
        codec_ok = await client.post(
            "/codec/decode",
            json={"payloads": []},
            headers={"Authorization": f"Bearer {CODEC_TOKEN}"},
        )
        assert codec_ok.status_code == 200, codec_ok.text
        # ...and the codec's token opens no API route.
        api = await client.get(
            "/api/payments/x", headers={"Authorization": f"Bearer {CODEC_TOKEN}"}
        )
        assert api.status_code == 401


# Bad input: a clear error, and nothing is started


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"amount": 10.5}, 422, "JSON strings"),
        ({"amount": 10}, 422, "JSON strings"),
        ({"amount": "10.001"}, 422, "decimal places"),
        ({"amount": "-1.00"}, 422, "positive"),
        ({"amount": "ten"}, 422, "not a decimal"),
        ({"amount": "NaN"}, 422, "positive"),
        ({"currency": "XXX"}, 422, "unknown currency"),
        ({"order_id": "bad id!"}, 422, "order id"),
        ({"provider": "nope"}, 422, "unknown provider"),
        ({"surprise": 1}, 422, "surprise"),
        ({"currency": None}, 422, "currency"),
    ],
)
async def test_bad_payment_is_refused_and_starts_nothing(
    api: httpx.AsyncClient, change: dict[str, Any], status: int, says: str
) -> None:
    order_id = new_id("api-bad")
    body = {"order_id": order_id, "amount": "10.00", "currency": "CNY", **change}
    response = await api.post("/api/payments", json=body)
    assert response.status_code == status, response.text
    assert says in error_of(response)
    assert (await api.get(f"/api/payments/{order_id}")).status_code == 404


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"channel": "wechat_jsapi"}, "channel wechat_jsapi needs payer_openid"),
        ({"channel": "wechat_miniprogram"}, "needs payer_openid"),
        ({"channel": "wechat_h5"}, "channel wechat_h5 needs payer_client_ip"),
        # Another detail does not stand in for the one the channel needs.
        ({"channel": "wechat_h5", "payer_openid": "oAbc"}, "needs payer_client_ip"),
        ({"channel": "wechat_jsapi", "payer_openid": "o pen id"}, "payer_openid must be"),
        ({"channel": "wechat_jsapi", "payer_openid": "x" * 129}, "payer_openid"),
        ({"channel": "wechat_jsapi", "payer_openid": 12345}, "payer_openid"),
        ({"channel": "wechat_h5", "payer_client_ip": "10.0.0.300"}, "payer_client_ip must be"),
        ({"channel": "wechat_h5", "payer_client_ip": "::"}, "payer_client_ip must be"),
        ({"channel": "wechat_h5", "payer_client_ip": ["1.2.3.4"]}, "payer_client_ip"),
        ({"channel": "no_such_channel"}, "sandbox has no channel 'no_such_channel'"),
        ({"channel": ""}, "sandbox has no channel ''"),
    ],
)
async def test_payer_details_a_channel_needs_are_checked_before_anything_starts(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, change: dict[str, Any], says: str
) -> None:
    order_id = new_id("api-payer")
    body = {"order_id": order_id, "amount": "10.00", "currency": "CNY", **change}
    response = await api.post("/api/payments", json=body)
    assert response.status_code == 422, response.text
    assert says in error_of(response)
    assert (await api.get(f"/api/payments/{order_id}")).status_code == 404
    # Nothing reached the provider either.
    assert (await sandbox.get(f"/payments/{order_id}")).status_code == 404


async def test_the_checkout_answer_names_what_the_payer_does(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    """Each kind of payer action through /api, and payment_url only for the URL kinds."""
    cases: list[tuple[dict[str, Any], str, bool]] = [
        ({}, "redirect", True),
        ({"channel": "wechat_h5", "payer_client_ip": "203.0.113.9"}, "redirect", True),
        ({"channel": "wechat_native"}, "qr_code", True),
        (
            {"channel": "wechat_jsapi", "payer_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "jsapi",
            False,
        ),
        ({"channel": "alipay_app"}, "app", False),
        ({"channel": "stripe_payment_intent"}, "client_secret", False),
    ]
    for change, kind, has_url in cases:
        order_id = new_id("api-kind")
        body = {"order_id": order_id, "amount": "3.00", "currency": "CNY", **change}
        response = await api.post("/api/payments", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["status"] == "PENDING", answer
        action = answer["payer_action"]
        assert action["kind"] == kind, answer
        if has_url:
            assert answer["payment_url"] == action.get("url", action.get("content"))
        else:
            assert answer["payment_url"] is None, answer
        # The same order again: the same action (idempotent by order id).
        again = await api.post("/api/payments", json=body)
        assert again.status_code == 200 and again.json()["payer_action"] == action
        # The view shows it too, while the payment is open.
        view = (await api.get(f"/api/payments/{order_id}")).json()
        assert view["payer_action"] == action
    # Another channel, or another payer, for an order id taken: 409, nothing changes.
    order_id = new_id("api-kind")
    jsapi = {"channel": "wechat_jsapi", "payer_openid": "oFirstPayer"}
    body = {"order_id": order_id, "amount": "3.00", "currency": "CNY", **jsapi}
    assert (await api.post("/api/payments", json=body)).status_code == 200
    for other, says in (
        ({"channel": "wechat_native", "payer_openid": None}, "already exists for channel"),
        ({"payer_openid": "oSecondPayer"}, "already exists for another payer"),
    ):
        conflict = await api.post("/api/payments", json=body | other)
        assert conflict.status_code == 409, conflict.text
        assert says in error_of(conflict)
        assert "oFirstPayer" not in conflict.text
    # Settled: the action pays nothing more, and is shown no more.
    assert (await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})).is_success
    view = await until(api, f"/api/payments/{order_id}", lambda v: v["status"] == "SUCCEEDED")
    assert view["payer_action"] is None
    again = await api.post("/api/payments", json=body)
    assert again.status_code == 200 and again.json()["payer_action"] is None


@pytest.mark.parametrize(
    ("content", "content_type", "status", "says"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 422, "Field required"),
        (b"[]", "application/json", 422, "JSON object"),
        (b'"10.00"', "application/json", 422, "JSON object"),
        (b"{}", "application/json", 422, "order_id: Field required"),
        (b'{"order_id": "x", "amount": "1.00", "currency": "CNY"}', "text/plain", 422, "JSON"),
        (b"order_id=x&amount=1.00&currency=CNY", "application/x-www-form-urlencoded", 422, "JSON"),
    ],
)
async def test_malformed_body(
    api: httpx.AsyncClient, content: bytes, content_type: str, status: int, says: str
) -> None:
    response = await api.post(
        "/api/payments", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert says in error_of(response)


async def test_money_as_json_number_is_refused_for_refunds_and_withdrawals(
    api: httpx.AsyncClient,
) -> None:
    refund = await api.post(
        "/api/payments/x/refunds", json={"refund_id": "r", "amount": 1.0, "currency": "CNY"}
    )
    assert refund.status_code == 422 and "JSON strings" in error_of(refund)
    withdrawal_id = new_id("api-wd")
    withdrawal = await api.post(
        "/api/withdrawals",
        json={
            "withdrawal_id": withdrawal_id,
            "amount": 25,
            "currency": "CNY",
            "payee_account": "p@example.com",
        },
    )
    assert withdrawal.status_code == 422 and "JSON strings" in error_of(withdrawal)
    assert (await api.get(f"/api/withdrawals/{withdrawal_id}")).status_code == 404


# OpenAPI


async def test_openapi_lists_every_api_route_with_bearer_security(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.webhook_url) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    schemes = spec["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if (s["type"], s["scheme"]) == ("http", "bearer")]
    assert len(bearer) == 1
    documented = {
        (method.upper(), path): operation
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    expected = {
        ("POST", "/api/payments"),
        ("GET", "/api/payments/{order_id}"),
        ("POST", "/api/payments/{order_id}/refunds"),
        ("GET", "/api/refunds/{refund_id}"),
        ("POST", "/api/recharges"),
        ("POST", "/api/withdrawals"),
        ("GET", "/api/withdrawals/{withdrawal_id}"),
        ("GET", "/api/reconciliations/{provider}/{day}"),
    }
    assert {k for k in documented if k[1].startswith("/api/")} == expected
    for key in expected:
        assert documented[key]["security"] == [{bearer[0]: []}], key
        assert "401" in documented[key]["responses"], key
    # Provider callbacks check their own signatures: never documented as taking the key.
    for (_, path), operation in documented.items():
        if not path.startswith("/api/"):
            assert "security" not in operation, path
    # Money is a string in requests and responses alike.
    schemas = spec["components"]["schemas"]
    for name in ("PaymentIn", "RefundIn", "WithdrawalIn"):
        assert schemas[name]["properties"]["amount"]["type"] == "string", name
    assert schemas["PaymentView"]["properties"]["amount"]["type"] == "string"
    # The checkout answer's payer_action: one schema per kind, told apart by `kind`.
    action = schemas["CheckoutInfo"]["properties"]["payer_action"]["anyOf"][0]
    assert action["discriminator"]["propertyName"] == "kind"
    assert set(action["discriminator"]["mapping"]) == {
        "redirect", "qr_code", "jsapi", "app", "client_secret"
    }  # fmt: skip
    jsapi = schemas["JsapiParameters"]["properties"]
    assert list(jsapi) == ["appId", "timeStamp", "nonceStr", "package", "signType", "paySign"]
    payment = schemas["PaymentIn"]["properties"]
    assert {"payer_openid", "payer_client_ip"} <= set(payment)
    assert "wechat_jsapi (jsapi)" in payment["channel"]["description"]


# Without a key, without Temporal, without a worker


@contextlib.asynccontextmanager
async def webhook_only(settings: Settings) -> AsyncIterator[str]:
    adapters = build_adapters(settings)
    try:
        async with serve(create_webhook_app(settings, adapters)) as url:
            yield url
    finally:
        for adapter in adapters.values():
            await adapter.aclose()


def bare_settings(dev_env: WorkflowEnvironment, tmp_path: Path, **overrides: Any) -> Settings:
    with bound_socket() as sock:  # a port nothing answers on
        dead = url_of(sock)
    return stack_settings(
        dev_env.client, tmp_path, f"tq-none-{uuid.uuid4().hex[:8]}", dead, **overrides
    )


async def test_without_a_key_the_api_is_disabled(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with webhook_only(bare_settings(dev_env, tmp_path)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer x"}) as c:
            for method, path, body in ROUTES:
                response = await c.request(method, path, json=body)
                assert response.status_code == 503, (method, path, response.text)
                assert response.json() == {"error": "the API is disabled: set TEMPAY_API_KEY"}
            assert (await c.get("/healthz")).status_code == 200


def test_the_key_setting() -> None:
    assert Settings(api_key="  ").api_key is None
    with pytest.raises(ValueError, match="at least 16") as caught:
        Settings(api_key="short-secret")
    assert "short-secret" not in str(caught.value)
    settings = Settings(api_key=API_KEY)
    assert API_KEY not in repr(settings) and API_KEY not in str(settings.model_dump())


async def test_no_worker_is_504_and_the_payment_goes_on_later(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = bare_settings(dev_env, tmp_path, api_key=API_KEY, api_timeout=timedelta(seconds=1))
    order_id = new_id("api-noworker")
    async with webhook_only(settings) as url:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        ) as c:
            response = await c.post(
                "/api/payments", json={"order_id": order_id, "amount": "1.00", "currency": "CNY"}
            )
            assert response.status_code == 504, response.text
            assert f"GET /api/payments/{order_id}" in error_of(response)
    handle = dev_env.client.get_workflow_handle(f"payment-{order_id}")
    await handle.terminate("test over")  # recorded: no worker will ever run it


async def test_temporal_unreachable_is_503(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    with bound_socket() as sock:
        dead = sock.getsockname()
    settings = bare_settings(dev_env, tmp_path, api_key=API_KEY).model_copy(
        update={"temporal_address": f"{dead[0]}:{dead[1]}"}
    )
    async with webhook_only(settings) as url:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        ) as c:
            response = await c.get("/api/payments/anything")
            assert response.status_code == 503, response.text
            assert "cannot reach Temporal" in error_of(response)


# A PHP backend, like the article's curl_post


async def run_php(args: list[str], key: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TEMPAY_API_KEY": key},
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize("transport", ["curl", "stream"])
async def test_php_client_creates_a_payment(
    stack: Stack, api: httpx.AsyncClient, transport: str
) -> None:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php is not on PATH (apt-get install php-cli php-curl to run this test)")
    if transport == "curl":
        check = await asyncio.create_subprocess_exec(
            php, "-r", "exit(function_exists('curl_init') ? 0 : 1);"
        )
        if await check.wait() != 0:
            pytest.skip("PHP's curl extension is not installed (apt-get install php-curl)")
        command = [php, str(PHP_CLIENT)]
    else:
        command = [php, "-n", str(PHP_CLIENT)]  # no php.ini: no curl, the stream context
    order_id = new_id("api-php")
    args = [*command, stack.webhook_url, order_id, "9.90", "CNY"]

    first = await run_php(args, API_KEY)
    assert first["status"] == 200, first
    assert first["body"]["order_id"] == order_id and first["body"]["payment_url"]
    again = await run_php(args, API_KEY)
    assert again == first

    view = (await api.get(f"/api/payments/{order_id}")).json()
    assert (view["amount"], view["currency"]) == ("9.90", "CNY")
    assert Decimal(view["amount"]) == Decimal("9.90")

    wrong_key = await run_php(args, "not-the-key")
    assert wrong_key["status"] == 401 and wrong_key["body"]["error"]
