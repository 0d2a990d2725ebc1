"""The sandbox provider over real HTTP: the app runs in-process under uvicorn, and a tiny
merchant receiver records its notifications and verifies their signatures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.sandbox.store import SandboxStore
from tests.support.providers.sandbox import (
    DEFAULT_FAULTS,
    Receiver,
    Sandbox,
    eventually,
    order_request,
    running_receiver,
    running_sandbox,
)
from tests.support.stack import bound_socket, url_of

# Statement faults (tests/providers/sandbox/test_statements.py) are off unless a test says.
STATEMENT_FAULTS_OFF = {
    "statement_drop_order": "",
    "statement_amount_delta_order": "",
    "statement_amount_delta": "1.00",
    "statement_extra_trade": "",
}

# Fixtures


@pytest.fixture(scope="module")
async def sandbox(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path_factory.mktemp("tempay"), receiver) as sandbox:
        yield sandbox


@pytest.fixture
async def faults(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox client, with faults reset to none afterwards."""
    yield sandbox.client
    response = await sandbox.client.put("/sandbox/faults", json=DEFAULT_FAULTS)
    assert response.status_code == 200


# Creating and querying


async def test_create_is_idempotent_by_out_trade_no(sandbox: Sandbox) -> None:
    request = order_request(sandbox.receiver, amount="10", currency="cny")
    first = await sandbox.client.post("/payments", json=request)
    again = await sandbox.client.post("/payments", json=request)
    assert first.status_code == again.status_code == 200
    trade = first.json()
    assert again.json() == trade
    assert trade["trade_no"].startswith("SBX")
    assert trade["status"] == "WAIT_BUYER_PAY"
    assert (trade["amount"], trade["currency"]) == ("10.00", "CNY")
    assert trade["payment_url"] == f"{sandbox.url}/checkout/{trade['trade_no']}"

    conflict = await sandbox.client.post("/payments", json={**request, "amount": "11.00"})
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "ORDER_CONFLICT"


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": "ten"},
        {"amount": "1.001"},
        {"amount": "-1.00"},
        {"amount": 10},  # a JSON number: money travels as strings only
        {"currency": "XYZ"},
        {"notify_url": "ftp://shop.example/notify"},
        {"notify_url": None},
        {"out_trade_no": "no spaces allowed"},
    ],
)
async def test_create_rejects_invalid_parameters(
    sandbox: Sandbox, overrides: dict[str, Any]
) -> None:
    response = await sandbox.client.post(
        "/payments", json=order_request(sandbox.receiver, **overrides)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMETER"
    assert response.json()["message"]


async def test_status_query(sandbox: Sandbox) -> None:
    trade = await sandbox.create(amount="3", currency="JPY")
    assert await sandbox.status(trade["out_trade_no"]) == {
        "out_trade_no": trade["out_trade_no"],
        "trade_no": trade["trade_no"],
        "status": "WAIT_BUYER_PAY",
        "amount": "3",
        "currency": "JPY",
        "paid_amount": None,
        "paid_currency": None,
        "paid_at": None,
        "closed_at": None,
    }
    missing = await sandbox.client.get("/payments/no-such-order")
    assert missing.status_code == 404
    assert missing.json()["code"] == "TRADE_NOT_EXIST"


# Closing


async def test_close_is_idempotent_and_only_force_pays_a_closed_trade(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    closed = await sandbox.client.post(f"/payments/{out_trade_no}/close")
    assert closed.status_code == 200
    assert closed.json()["status"] == "TRADE_CLOSED"
    assert closed.json()["closed_at"]
    again = await sandbox.client.post(f"/payments/{out_trade_no}/close")
    assert again.status_code == 200
    assert again.json() == closed.json()
    assert await sandbox.deliveries(out_trade_no) == []  # closing notifies nobody

    refused = await sandbox.pay(out_trade_no)
    assert refused.status_code == 409
    assert refused.json()["code"] == "TRADE_STATUS_ERROR"

    # Money landing after the merchant closed the order.
    late = await sandbox.pay(out_trade_no, force=True)
    assert late.status_code == 200
    assert late.json()["status"] == "TRADE_SUCCESS"
    await eventually(lambda: _delivered(sandbox, out_trade_no))


async def test_close_after_pay_reports_the_payment(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    assert (await sandbox.pay(out_trade_no)).status_code == 200
    response = await sandbox.client.post(f"/payments/{out_trade_no}/close")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "TRADE_ALREADY_PAID"
    assert (body["status"], body["paid_amount"], body["paid_currency"]) == (
        "TRADE_SUCCESS",
        "10.00",
        "CNY",
    )
    missing = await sandbox.client.post("/payments/no-such-order/close")
    assert missing.status_code == 404
    assert missing.json()["code"] == "TRADE_NOT_EXIST"


# The checkout page


async def test_checkout_pay_form_pays_and_notifies(sandbox: Sandbox) -> None:
    trade = await sandbox.create()
    out_trade_no, trade_no = trade["out_trade_no"], trade["trade_no"]
    page = await sandbox.client.get(trade["payment_url"])
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert f'<form method="post" action="/checkout/{trade_no}/pay">' in page.text
    assert f'<form method="post" action="/checkout/{trade_no}/decline">' in page.text
    assert out_trade_no in page.text and "10.00 CNY" in page.text and "Green tea" in page.text

    result = await submit_form(sandbox, f"/checkout/{trade_no}/pay")
    assert result.status_code == 200
    assert "Payment succeeded" in result.text
    assert 'href="https://shop.example/orders/done"' in result.text

    status = await sandbox.status(out_trade_no)
    assert status["status"] == "TRADE_SUCCESS"
    assert status["paid_amount"] == "10.00" and status["paid_at"]
    await eventually(lambda: _delivered(sandbox, out_trade_no))
    [notification] = sandbox.receiver.for_trade(out_trade_no)
    assert notification["notify_type"] == "trade_status_sync"
    assert notification["trade_no"] == trade_no
    assert notification["trade_status"] == "TRADE_SUCCESS"
    assert (notification["total_amount"], notification["receipt_amount"]) == ("10.00", "10.00")
    assert notification["currency"] == "CNY"
    assert notification["gmt_payment"] == status["paid_at"]
    [delivery] = await sandbox.deliveries(out_trade_no)
    assert delivery["notify_id"] == notification["notify_id"]
    assert (delivery["attempts"], delivery["last_response_status"]) == (1, 200)

    # No longer payable: the page shows the status, and paying again is refused.
    page = await sandbox.client.get(trade["payment_url"])
    assert "<form" not in page.text and "TRADE_SUCCESS" in page.text
    again = await submit_form(sandbox, f"/checkout/{trade_no}/pay")
    assert again.status_code == 409


async def test_checkout_decline_form(sandbox: Sandbox) -> None:
    trade = await sandbox.create()
    result = await submit_form(sandbox, f"/checkout/{trade['trade_no']}/decline")
    assert result.status_code == 200
    assert "Payment declined" in result.text
    assert (await sandbox.status(trade["out_trade_no"]))["status"] == "TRADE_FAILED"
    await eventually(lambda: _delivered(sandbox, trade["out_trade_no"]))
    [notification] = sandbox.receiver.for_trade(trade["out_trade_no"])
    assert notification["trade_status"] == "TRADE_FAILED"
    assert notification["receipt_amount"] is None and notification["gmt_payment"] is None


async def test_checkout_of_unknown_trade_is_404(sandbox: Sandbox) -> None:
    page = await sandbox.client.get("/checkout/SBX0000")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]


async def submit_form(sandbox: Sandbox, path: str) -> httpx.Response:
    """What a browser sends for a form without fields."""
    return await sandbox.client.post(
        path, content=b"", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


# Scripted payments and notifications


async def test_scripted_decline(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    declined = await sandbox.client.post(f"/sandbox/payments/{out_trade_no}/decline")
    assert declined.status_code == 200
    assert declined.json()["status"] == "TRADE_FAILED"
    again = await sandbox.client.post(f"/sandbox/payments/{out_trade_no}/decline")
    assert again.status_code == 409
    assert again.json()["code"] == "TRADE_STATUS_ERROR"
    await eventually(lambda: _delivered(sandbox, out_trade_no))


async def test_scripted_pay_with_a_different_amount(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    paid = await sandbox.pay(out_trade_no, amount="9", currency="usd")
    assert paid.status_code == 200
    assert (paid.json()["paid_amount"], paid.json()["paid_currency"]) == ("9.00", "USD")
    await eventually(lambda: _delivered(sandbox, out_trade_no))
    [notification] = sandbox.receiver.for_trade(out_trade_no)
    assert notification["total_amount"] == "10.00"
    assert (notification["receipt_amount"], notification["currency"]) == ("9.00", "USD")


async def test_dropped_notification_is_never_sent(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    assert (await sandbox.pay(out_trade_no, notification="drop")).status_code == 200
    await asyncio.sleep(0.2)
    assert sandbox.receiver.for_trade(out_trade_no) == []
    [delivery] = await sandbox.deliveries(out_trade_no)
    assert delivery["dropped"] and delivery["attempts"] == 0 and not delivery["delivered"]
    # The status query still tells the truth.
    assert (await sandbox.status(out_trade_no))["status"] == "TRADE_SUCCESS"


async def test_duplicated_notification_is_sent_twice_with_one_notify_id(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    assert (await sandbox.pay(out_trade_no, notification="duplicate")).status_code == 200
    await eventually(lambda: _delivered(sandbox, out_trade_no, count=2))
    received = sandbox.receiver.for_trade(out_trade_no)
    assert len(received) == 2
    assert received[0]["notify_id"] == received[1]["notify_id"]


async def test_retries_until_acknowledged(sandbox: Sandbox) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    sandbox.receiver.failures[out_trade_no] = 3
    await sandbox.pay(out_trade_no)
    await eventually(lambda: _delivered(sandbox, out_trade_no))
    [delivery] = await sandbox.deliveries(out_trade_no)
    assert delivery["attempts"] == 4
    assert delivery["next_attempt_at"] is None and not delivery["given_up"]
    received = sandbox.receiver.for_trade(out_trade_no)
    assert len(received) == 4
    assert {n["notify_id"] for n in received} == {delivery["notify_id"]}
    # Each attempt is re-stamped (and so re-signed).
    stamps = [n["notify_time"] for n in received]
    assert stamps == sorted(stamps)


async def test_unreachable_merchant_is_given_up_and_the_loop_survives(sandbox: Sandbox) -> None:
    closed_port = bound_socket()  # bound, never listening: connections are refused
    try:
        unreachable = f"{url_of(closed_port)}/notify"
        lost = (await sandbox.create(notify_url=unreachable))["out_trade_no"]
        await sandbox.pay(lost)

        async def given_up() -> bool:
            [delivery] = await sandbox.deliveries(lost)
            return delivery["given_up"]

        await eventually(given_up)
    finally:
        closed_port.close()
    [delivery] = await sandbox.deliveries(lost)
    assert delivery["attempts"] == 8 and delivery["last_response_status"] is None
    assert not delivery["delivered"] and delivery["last_error"]

    out_trade_no = (await sandbox.create())["out_trade_no"]
    await sandbox.pay(out_trade_no)
    await eventually(lambda: _delivered(sandbox, out_trade_no))


async def test_injected_notification_faults(sandbox: Sandbox, faults: httpx.AsyncClient) -> None:
    await faults.put("/sandbox/faults", json={"drop_rate": 1})
    dropped = (await sandbox.create())["out_trade_no"]
    await sandbox.pay(dropped)
    assert [d["dropped"] for d in await sandbox.deliveries(dropped)] == [True]

    await faults.put("/sandbox/faults", json={"drop_rate": 0, "duplicate_rate": 1})
    duplicated = (await sandbox.create())["out_trade_no"]
    await sandbox.pay(duplicated)
    await eventually(lambda: _delivered(sandbox, duplicated, count=2))

    await faults.put("/sandbox/faults", json={"duplicate_rate": 0, "delay_seconds": 0.3})
    delayed = (await sandbox.create())["out_trade_no"]
    await sandbox.pay(delayed)
    [delivery] = await sandbox.deliveries(delayed)
    assert delivery["attempts"] == 0 and delivery["next_attempt_at"]
    await eventually(lambda: _delivered(sandbox, delayed))

    await faults.put("/sandbox/faults", json={"delay_seconds": 0, "reorder_window": 0.1})
    held = [(await sandbox.create())["out_trade_no"] for _ in range(5)]
    for out_trade_no in held:
        await sandbox.pay(out_trade_no)
    for out_trade_no in held:
        await eventually(partial(_delivered, sandbox, out_trade_no))


async def test_status_query_faults(sandbox: Sandbox, faults: httpx.AsyncClient) -> None:
    out_trade_no = (await sandbox.create())["out_trade_no"]
    updated = await faults.put("/sandbox/faults", json={"status_fail_rate": 1})
    assert updated.status_code == 200
    assert updated.json() == {**DEFAULT_FAULTS, **STATEMENT_FAULTS_OFF, "status_fail_rate": 1}
    assert (await faults.get("/sandbox/faults")).json() == updated.json()

    failing = await faults.get(f"/payments/{out_trade_no}")
    assert failing.status_code == 503
    assert failing.json()["code"] == "SYSTEM_ERROR"

    invalid = await faults.put("/sandbox/faults", json={"status_fail_rate": 0, "drop_rate": 1.5})
    assert invalid.status_code == 400
    assert (await faults.get("/sandbox/faults")).json()["status_fail_rate"] == 1

    await faults.put("/sandbox/faults", json={"status_fail_rate": 0, "status_delay_seconds": 0.1})
    started = asyncio.get_running_loop().time()
    assert (await sandbox.status(out_trade_no))["status"] == "WAIT_BUYER_PAY"
    assert asyncio.get_running_loop().time() - started >= 0.1


async def test_public_key_and_health(sandbox: Sandbox) -> None:
    pem = await sandbox.client.get("/keys/notify.pem")
    assert pem.text.startswith("-----BEGIN PUBLIC KEY-----")
    assert (await sandbox.client.get("/healthz")).json() == {"status": "ok"}
    assert sandbox.receiver.rejected == 0  # every notification so far verified


# Persistence


async def test_restart_keeps_trades_and_resumes_deliveries(tmp_path: Path) -> None:
    # A slower schedule here: the first retry (4m) must still be pending across the restart.
    slow = {"time_scale": 0.003}
    async with running_receiver() as receiver:
        async with running_sandbox(tmp_path, receiver, **slow) as sandbox:
            key = (await sandbox.client.get("/keys/notify.pem")).text
            trade = await sandbox.create()
            out_trade_no = trade["out_trade_no"]
            receiver.failures[out_trade_no] = 1
            await sandbox.pay(out_trade_no)
            await eventually(lambda: _attempted(sandbox, out_trade_no))

        store = SandboxStore(tmp_path / "sandbox" / "sandbox.db")
        [pending] = store.deliveries_for(out_trade_no)
        store.close()
        assert (pending.attempts, pending.delivered) == (1, False)

        async with running_sandbox(tmp_path, receiver, **slow) as sandbox:
            assert (await sandbox.client.get("/keys/notify.pem")).text == key
            status = await sandbox.status(out_trade_no)
            assert (status["trade_no"], status["status"]) == (trade["trade_no"], "TRADE_SUCCESS")
            await eventually(lambda: _delivered(sandbox, out_trade_no))
            [delivery] = await sandbox.deliveries(out_trade_no)
            assert delivery["attempts"] == 2
            assert receiver.rejected == 0


async def _delivered(sandbox: Sandbox, out_trade_no: str, count: int = 1) -> bool:
    deliveries = await sandbox.deliveries(out_trade_no)
    return len(deliveries) == count and all(d["delivered"] for d in deliveries)


async def _attempted(sandbox: Sandbox, out_trade_no: str) -> bool:
    return any(d["attempts"] for d in await sandbox.deliveries(out_trade_no))
