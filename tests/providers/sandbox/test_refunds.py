"""Refunds at the sandbox provider over real HTTP: idempotency, never more than was paid (even
under concurrent requests), asynchronous completion with a signed notification, the scripted
failure, and a restart in the middle of processing."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
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
    running_receiver,
    running_sandbox,
)

# The module's sandbox finishes refunds at once; tests that need one to stay processing
# set a long delay with `tuned`.
BASELINE = {**DEFAULT_FAULTS, "refund_delay_seconds": 0}
LONG = 60


@pytest.fixture(scope="module")
async def sandbox(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> AsyncIterator[Sandbox]:
    async with running_sandbox(
        tmp_path_factory.mktemp("refunds"), receiver, refund_delay_seconds=0
    ) as sandbox:
        yield sandbox


@pytest.fixture
async def tuned(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox client; faults and delays go back to the module's baseline afterwards."""
    yield sandbox.client
    response = await sandbox.client.put("/sandbox/faults", json=BASELINE)
    assert response.status_code == 200, response.text


async def paid_trade(sandbox: Sandbox, amount: str = "10.00", currency: str = "CNY") -> str:
    out_trade_no = (await sandbox.create(amount=amount, currency=currency))["out_trade_no"]
    assert (await sandbox.pay(out_trade_no)).status_code == 200
    return out_trade_no


def refund_request(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    return {
        "out_request_no": f"refund-{uuid.uuid4().hex[:12]}",
        "refund_amount": "3.00",
        "currency": "CNY",
        "reason": "customer returned one box",
        "notify_url": receiver.notify_url,
        **overrides,
    }


async def post_refund(sandbox: Sandbox, out_trade_no: str, **overrides: Any) -> httpx.Response:
    return await sandbox.client.post(
        f"/payments/{out_trade_no}/refunds", json=refund_request(sandbox.receiver, **overrides)
    )


async def refund_status(sandbox: Sandbox, out_trade_no: str, out_request_no: str) -> Any:
    response = await sandbox.client.get(f"/payments/{out_trade_no}/refunds/{out_request_no}")
    assert response.status_code == 200, response.text
    return response.json()


async def ground_truth(sandbox: Sandbox, out_trade_no: str) -> list[dict[str, Any]]:
    response = await sandbox.client.get("/sandbox/refunds", params={"out_trade_no": out_trade_no})
    assert response.status_code == 200, response.text
    return response.json()


async def refund_deliveries(sandbox: Sandbox, out_request_no: str) -> list[dict[str, Any]]:
    response = await sandbox.client.get(
        "/sandbox/notifications", params={"out_request_no": out_request_no}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _delivered(sandbox: Sandbox, out_request_no: str) -> bool:
    deliveries = await refund_deliveries(sandbox, out_request_no)
    return len(deliveries) == 1 and deliveries[0]["delivered"]


# Accepting refunds


async def test_refund_is_idempotent_by_out_request_no(sandbox: Sandbox, tuned: Any) -> None:
    await tuned.put("/sandbox/faults", json={"refund_delay_seconds": LONG})
    out_trade_no = await paid_trade(sandbox)
    request = refund_request(sandbox.receiver, refund_amount="3")
    first = await sandbox.client.post(f"/payments/{out_trade_no}/refunds", json=request)
    assert first.status_code == 200, first.text
    refund = first.json()
    assert refund["status"] == "REFUND_PROCESSING"
    assert refund["refund_no"].startswith("SBR")
    assert (refund["out_trade_no"], refund["out_request_no"]) == (
        out_trade_no,
        request["out_request_no"],
    )
    assert (refund["refund_amount"], refund["currency"]) == ("3.00", "CNY")
    assert refund["created_at"] and refund["gmt_refund"] is None

    again = await sandbox.client.post(
        f"/payments/{out_trade_no}/refunds", json={**request, "refund_amount": "3.00"}
    )
    assert again.status_code == 200
    assert again.json() == refund

    conflict = await sandbox.client.post(
        f"/payments/{out_trade_no}/refunds", json={**request, "refund_amount": "4.00"}
    )
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "REFUND_CONFLICT"

    [truth] = await ground_truth(sandbox, out_trade_no)
    assert (truth["refund_no"], truth["status"], truth["requests"]) == (
        refund["refund_no"],
        "REFUND_PROCESSING",
        3,
    )


async def test_the_same_refund_id_on_another_trade_conflicts(sandbox: Sandbox) -> None:
    first, second = await paid_trade(sandbox), await paid_trade(sandbox)
    request = refund_request(sandbox.receiver)
    assert (await sandbox.client.post(f"/payments/{first}/refunds", json=request)).is_success
    other = await sandbox.client.post(f"/payments/{second}/refunds", json=request)
    assert other.status_code == 409
    assert other.json()["code"] == "REFUND_CONFLICT"
    assert await ground_truth(sandbox, second) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"refund_amount": "ten"},
        {"refund_amount": "1.001"},
        {"refund_amount": "0"},
        {"refund_amount": 3},  # a JSON number: money travels as strings only
        {"currency": "USD"},  # not the paid currency
        {"currency": "XYZ"},
        {"notify_url": "ftp://shop.example/notify"},
        {"out_request_no": "no spaces"},
        {"out_request_no": None},
    ],
)
async def test_invalid_refund_requests(sandbox: Sandbox, overrides: dict[str, Any]) -> None:
    out_trade_no = await paid_trade(sandbox)
    response = await post_refund(sandbox, out_trade_no, **overrides)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_PARAMETER"
    assert await ground_truth(sandbox, out_trade_no) == []


async def test_refund_of_an_unpaid_trade_is_refused(sandbox: Sandbox) -> None:
    waiting = (await sandbox.create())["out_trade_no"]
    closed = (await sandbox.create())["out_trade_no"]
    await sandbox.client.post(f"/payments/{closed}/close")
    declined = (await sandbox.create())["out_trade_no"]
    await sandbox.client.post(f"/sandbox/payments/{declined}/decline")
    for out_trade_no, status in (
        (waiting, "WAIT_BUYER_PAY"),
        (closed, "TRADE_CLOSED"),
        (declined, "TRADE_FAILED"),
    ):
        response = await post_refund(sandbox, out_trade_no)
        assert response.status_code == 409, response.text
        assert (response.json()["code"], response.json()["status"]) == (
            "TRADE_STATUS_ERROR",
            status,
        )
    missing = await post_refund(sandbox, "no-such-order")
    assert missing.status_code == 404
    assert missing.json()["code"] == "TRADE_NOT_EXIST"


async def test_refunds_never_add_up_to_more_than_was_paid(sandbox: Sandbox) -> None:
    # Paid 9.00 in USD on a 10.00 order: the paid amount is what can be refunded.
    out_trade_no = (await sandbox.create(amount="10.00"))["out_trade_no"]
    await sandbox.pay(out_trade_no, amount="9.00", currency="USD")
    assert (await post_refund(sandbox, out_trade_no, refund_amount="6", currency="usd")).is_success

    exceeded = await post_refund(sandbox, out_trade_no, refund_amount="3.01", currency="USD")
    assert exceeded.status_code == 409
    body = exceeded.json()
    assert (body["code"], body["refundable_amount"], body["currency"]) == (
        "REFUND_AMOUNT_EXCEEDED",
        "3.00",
        "USD",
    )
    assert (await post_refund(sandbox, out_trade_no, refund_amount="3", currency="USD")).is_success
    last = await post_refund(sandbox, out_trade_no, refund_amount="0.01", currency="USD")
    assert (last.status_code, last.json()["refundable_amount"]) == (409, "0.00")
    assert [r["refund_amount"] for r in await ground_truth(sandbox, out_trade_no)] == [
        "6.00",
        "3.00",
    ]


async def test_concurrent_refunds_never_exceed_the_paid_amount(sandbox: Sandbox) -> None:
    out_trade_no = await paid_trade(sandbox, amount="10.00")
    # 25 different refunds of 0.75 race for 10.00: exactly 13 fit (9.75).
    responses = await asyncio.gather(
        *(post_refund(sandbox, out_trade_no, refund_amount="0.75") for _ in range(25))
    )
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(accepted) == 13
    assert {(r.status_code, r.json()["code"]) for r in refused} == {(409, "REFUND_AMOUNT_EXCEEDED")}
    refunds = await ground_truth(sandbox, out_trade_no)
    assert len(refunds) == 13
    assert sum(Decimal(r["refund_amount"]) for r in refunds) == Decimal("9.75")
    assert {r["out_request_no"] for r in refunds} == {r.json()["out_request_no"] for r in accepted}


async def test_concurrent_requests_for_one_refund_record_it_once(sandbox: Sandbox) -> None:
    out_trade_no = await paid_trade(sandbox)
    request = refund_request(sandbox.receiver, refund_amount="10.00")
    responses = await asyncio.gather(
        *(sandbox.client.post(f"/payments/{out_trade_no}/refunds", json=request) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["refund_no"] for r in responses}) == 1
    [refund] = await ground_truth(sandbox, out_trade_no)
    assert refund["requests"] == 10


# Processing and notification


async def test_refund_completes_and_sends_a_signed_notification(sandbox: Sandbox) -> None:
    out_trade_no = await paid_trade(sandbox)
    trade = await sandbox.status(out_trade_no)
    created = (await post_refund(sandbox, out_trade_no, refund_amount="2.50")).json()
    out_request_no = created["out_request_no"]
    await eventually(lambda: _delivered(sandbox, out_request_no))

    refund = await refund_status(sandbox, out_trade_no, out_request_no)
    assert refund["status"] == "REFUND_SUCCESS" and refund["gmt_refund"]
    [notification] = sandbox.receiver.about(out_request_no)
    [delivery] = await refund_deliveries(sandbox, out_request_no)
    assert notification == {
        "notify_id": delivery["notify_id"],
        "notify_time": notification["notify_time"],
        "notify_type": "refund_status_sync",
        "out_trade_no": out_trade_no,
        "trade_no": trade["trade_no"],
        "out_request_no": out_request_no,
        "refund_no": created["refund_no"],
        "refund_status": "REFUND_SUCCESS",
        "refund_amount": "2.50",
        "currency": "CNY",
        "gmt_refund": refund["gmt_refund"],
    }
    assert (delivery["kind"], delivery["refund_status"], delivery["attempts"]) == (
        "refund",
        "REFUND_SUCCESS",
        1,
    )
    assert sandbox.receiver.rejected == 0  # the signature verified
    # The trade itself is unchanged, and asking again returns the finished refund.
    assert (await sandbox.status(out_trade_no))["status"] == "TRADE_SUCCESS"
    again = await post_refund(
        sandbox, out_trade_no, out_request_no=out_request_no, refund_amount="2.5"
    )
    assert again.json() == refund


async def test_refund_notifications_are_retried_until_acknowledged(sandbox: Sandbox) -> None:
    out_trade_no = await paid_trade(sandbox)
    out_request_no = f"refund-{uuid.uuid4().hex[:12]}"
    sandbox.receiver.failures[out_request_no] = 2
    await post_refund(sandbox, out_trade_no, out_request_no=out_request_no)
    await eventually(lambda: _delivered(sandbox, out_request_no))
    [delivery] = await refund_deliveries(sandbox, out_request_no)
    assert delivery["attempts"] == 3
    assert len({n["notify_id"] for n in sandbox.receiver.about(out_request_no)}) == 1


async def test_scripted_refund_failure(sandbox: Sandbox, tuned: Any) -> None:
    await tuned.put("/sandbox/faults", json={"refund_delay_seconds": LONG})
    out_trade_no = await paid_trade(sandbox)
    full = (await post_refund(sandbox, out_trade_no, refund_amount="10.00")).json()
    assert (await post_refund(sandbox, out_trade_no, refund_amount="1.00")).status_code == 409

    failed = await sandbox.client.post(
        f"/sandbox/refunds/{full['out_request_no']}/fail", json={"reason": "payer card closed"}
    )
    assert failed.status_code == 200, failed.text
    assert (failed.json()["status"], failed.json()["fail_reason"]) == (
        "REFUND_FAILED",
        "payer card closed",
    )
    await eventually(lambda: _delivered(sandbox, full["out_request_no"]))
    [notification] = sandbox.receiver.about(full["out_request_no"])
    assert notification["refund_status"] == "REFUND_FAILED"
    assert notification["refund_amount"] == "10.00"

    # The failed amount is refundable again; a failed refund cannot fail twice.
    assert (await post_refund(sandbox, out_trade_no, refund_amount="10.00")).is_success
    again = await sandbox.client.post(f"/sandbox/refunds/{full['out_request_no']}/fail")
    assert (again.status_code, again.json()["code"]) == (409, "REFUND_STATUS_ERROR")
    missing = await sandbox.client.post("/sandbox/refunds/no-such-refund/fail")
    assert (missing.status_code, missing.json()["code"]) == (404, "REFUND_NOT_EXIST")
    statuses = [r["status"] for r in await ground_truth(sandbox, out_trade_no)]
    assert statuses == ["REFUND_FAILED", "REFUND_PROCESSING"]


async def test_refund_status_query(sandbox: Sandbox, tuned: Any) -> None:
    out_trade_no = await paid_trade(sandbox)
    out_request_no = (await post_refund(sandbox, out_trade_no)).json()["out_request_no"]
    for path in (
        f"/payments/{out_trade_no}/refunds/no-such-refund",
        f"/payments/no-such-order/refunds/{out_request_no}",  # not this trade's refund
    ):
        missing = await sandbox.client.get(path)
        assert (missing.status_code, missing.json()["code"]) == (404, "REFUND_NOT_EXIST")

    await tuned.put("/sandbox/faults", json={"status_fail_rate": 1})
    failing = await sandbox.client.get(f"/payments/{out_trade_no}/refunds/{out_request_no}")
    assert (failing.status_code, failing.json()["code"]) == (503, "SYSTEM_ERROR")
    await tuned.put("/sandbox/faults", json={"status_fail_rate": 0, "status_delay_seconds": 0.1})
    started = asyncio.get_running_loop().time()
    await refund_status(sandbox, out_trade_no, out_request_no)
    assert asyncio.get_running_loop().time() - started >= 0.1


async def test_notifications_listing_names_exactly_one_subject(sandbox: Sandbox) -> None:
    for params in ({}, {"out_trade_no": "a", "out_request_no": "b"}):
        response = await sandbox.client.get("/sandbox/notifications", params=params)
        assert (response.status_code, response.json()["code"]) == (400, "INVALID_PARAMETER")
    missing = await sandbox.client.get(
        "/sandbox/notifications", params={"out_request_no": "no-such-refund"}
    )
    assert missing.status_code == 404


# Persistence


async def test_restart_resumes_a_processing_refund(tmp_path: Path) -> None:
    async with running_receiver() as receiver:
        async with running_sandbox(tmp_path, receiver, refund_delay_seconds=0.5) as sandbox:
            out_trade_no = await paid_trade(sandbox)
            refund = (await post_refund(sandbox, out_trade_no)).json()
        out_request_no = refund["out_request_no"]

        store = SandboxStore(tmp_path / "sandbox" / "sandbox.db")
        stored = store.get_refund(out_request_no)
        store.close()
        assert stored is not None and stored.status == "REFUND_PROCESSING"
        assert receiver.about(out_request_no) == []

        async with running_sandbox(tmp_path, receiver, refund_delay_seconds=0.5) as sandbox:
            await eventually(lambda: _delivered(sandbox, out_request_no))
            done = await refund_status(sandbox, out_trade_no, out_request_no)
            assert (done["refund_no"], done["status"]) == (refund["refund_no"], "REFUND_SUCCESS")
            [notification] = receiver.about(out_request_no)
            assert notification["refund_status"] == "REFUND_SUCCESS"
            assert receiver.rejected == 0


def test_a_database_from_before_refunds_keeps_its_deliveries(tmp_path: Path) -> None:
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
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT, notify_id TEXT NOT NULL,
            out_trade_no TEXT NOT NULL REFERENCES trades (out_trade_no),
            trade_status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            delivered INTEGER NOT NULL DEFAULT 0, given_up INTEGER NOT NULL DEFAULT 0,
            dropped INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
            last_response_status INTEGER, last_error TEXT);
        CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
            WHERE next_attempt_at IS NOT NULL;
        CREATE INDEX deliveries_trade ON deliveries (out_trade_no);
        INSERT INTO deliveries (notify_id, out_trade_no, trade_status, attempts, next_attempt_at)
            VALUES ('n1', 'order-1', 'TRADE_SUCCESS', 2, 100.0);
        """
    )
    old.close()

    store = SandboxStore(path)
    try:
        [delivery] = store.deliveries_for("order-1")
        assert (delivery.kind, delivery.out_no, delivery.status, delivery.attempts) == (
            "trade",
            "order-1",
            "TRADE_SUCCESS",
            2,
        )
        assert [d.id for d in store.due_deliveries(200.0, exclude=(), limit=10)] == [delivery.id]
    finally:
        store.close()
    SandboxStore(path).close()  # opening again changes nothing
