"""Transfers (withdrawal payouts) at the sandbox provider over real HTTP: idempotency, the
asynchronous outcome and its signed notification, and the faults where the caller cannot tell
whether money moved. Whatever happens, a transfer is paid out at most once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.providers.sandbox import (
    DEFAULT_FAULTS,
    Receiver,
    Sandbox,
    eventually,
    running_receiver,
    running_sandbox,
)

BASELINE = {**DEFAULT_FAULTS, "transfer_delay_seconds": 0, "transfer_timeout_seconds": 5}
# Far shorter than the sandbox's hold: the caller gives up first.
CLIENT_TIMEOUT = 0.3
# Statement faults (tests/providers/sandbox/test_statements.py) are off unless a test says.
STATEMENT_FAULTS_OFF = {
    "statement_drop_order": "",
    "statement_amount_delta_order": "",
    "statement_amount_delta": "1.00",
    "statement_extra_trade": "",
}


@pytest.fixture(scope="module")
async def sandbox(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> AsyncIterator[Sandbox]:
    async with running_sandbox(
        tmp_path_factory.mktemp("transfers"),
        receiver,
        transfer_delay_seconds=0,
        transfer_timeout_seconds=5,
    ) as sandbox:
        yield sandbox


@pytest.fixture
async def tuned(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    yield sandbox.client
    response = await sandbox.client.put("/sandbox/faults", json=BASELINE)
    assert response.status_code == 200, response.text


def transfer_request(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    return {
        "out_biz_no": f"wd-{uuid.uuid4().hex[:12]}",
        "amount": "25.00",
        "currency": "CNY",
        "payee_account": "payee@example.com",
        "payee_name": "Li Lei",
        "remark": "withdrawal",
        "notify_url": receiver.notify_url,
        **overrides,
    }


async def post_transfer(
    client: httpx.AsyncClient, receiver: Receiver, **overrides: Any
) -> httpx.Response:
    return await client.post("/transfers", json=transfer_request(receiver, **overrides))


async def transfer_status(sandbox: Sandbox, out_biz_no: str) -> Any:
    response = await sandbox.client.get(f"/transfers/{out_biz_no}")
    assert response.status_code == 200, response.text
    return response.json()


async def ground_truth(sandbox: Sandbox, out_biz_no: str) -> dict[str, Any]:
    response = await sandbox.client.get("/sandbox/transfers", params={"out_biz_no": out_biz_no})
    assert response.status_code == 200, response.text
    [transfer] = response.json()
    return transfer


async def _notified(sandbox: Sandbox, out_biz_no: str) -> bool:
    response = await sandbox.client.get("/sandbox/notifications", params={"out_biz_no": out_biz_no})
    deliveries = response.json()
    return len(deliveries) == 1 and deliveries[0]["delivered"]


# Accepting and finishing transfers


async def test_transfer_is_idempotent_by_out_biz_no(sandbox: Sandbox, tuned: Any) -> None:
    await tuned.put("/sandbox/faults", json={"transfer_delay_seconds": 60})
    request = transfer_request(sandbox.receiver, amount="25", currency="cny")
    first = await sandbox.client.post("/transfers", json=request)
    assert first.status_code == 200, first.text
    transfer = first.json()
    assert transfer["status"] == "TRANSFER_PROCESSING"
    assert transfer["transfer_no"].startswith("SBT")
    assert (transfer["out_biz_no"], transfer["amount"], transfer["currency"]) == (
        request["out_biz_no"],
        "25.00",
        "CNY",
    )
    assert transfer["payee_account"] == "payee@example.com" and transfer["created_at"]

    again = await sandbox.client.post("/transfers", json={**request, "remark": "retry"})
    assert again.json() == transfer
    for changed in ({"amount": "26.00"}, {"payee_account": "someone@example.com"}):
        conflict = await sandbox.client.post("/transfers", json={**request, **changed})
        assert (conflict.status_code, conflict.json()["code"]) == (409, "TRANSFER_CONFLICT")

    truth = await ground_truth(sandbox, request["out_biz_no"])
    assert (truth["transfer_no"], truth["requests"], truth["paid_out"]) == (
        transfer["transfer_no"],
        4,
        0,  # still processing: no money has left yet
    )


async def test_transfer_succeeds_and_sends_a_signed_notification(sandbox: Sandbox) -> None:
    created = (await post_transfer(sandbox.client, sandbox.receiver)).json()
    out_biz_no = created["out_biz_no"]
    await eventually(lambda: _notified(sandbox, out_biz_no))
    transfer = await transfer_status(sandbox, out_biz_no)
    assert transfer["status"] == "TRANSFER_SUCCESS" and transfer["gmt_finish"]
    [notification] = sandbox.receiver.about(out_biz_no)
    assert notification == {
        "notify_id": notification["notify_id"],
        "notify_time": notification["notify_time"],
        "notify_type": "transfer_status_sync",
        "out_biz_no": out_biz_no,
        "transfer_no": created["transfer_no"],
        "transfer_status": "TRANSFER_SUCCESS",
        "amount": "25.00",
        "currency": "CNY",
        "fail_reason": None,
        "gmt_finish": transfer["gmt_finish"],
    }
    assert sandbox.receiver.rejected == 0
    assert (await ground_truth(sandbox, out_biz_no))["paid_out"] == 1


async def test_transfer_to_an_invalid_payee_fails_with_a_notification(sandbox: Sandbox) -> None:
    created = await post_transfer(
        sandbox.client, sandbox.receiver, payee_account="invalid-account-42"
    )
    assert created.json()["status"] == "TRANSFER_PROCESSING"
    out_biz_no = created.json()["out_biz_no"]
    await eventually(lambda: _notified(sandbox, out_biz_no))
    transfer = await transfer_status(sandbox, out_biz_no)
    assert transfer["status"] == "TRANSFER_FAILED"
    assert "invalid-account-42" in transfer["fail_reason"]
    [notification] = sandbox.receiver.about(out_biz_no)
    assert notification["transfer_status"] == "TRANSFER_FAILED"
    assert notification["fail_reason"] == transfer["fail_reason"]
    assert (await ground_truth(sandbox, out_biz_no))["paid_out"] == 0


async def test_concurrent_requests_for_one_transfer_pay_once(sandbox: Sandbox) -> None:
    request = transfer_request(sandbox.receiver)
    responses = await asyncio.gather(
        *(sandbox.client.post("/transfers", json=request) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["transfer_no"] for r in responses}) == 1
    await eventually(lambda: _notified(sandbox, request["out_biz_no"]))
    truth = await ground_truth(sandbox, request["out_biz_no"])
    assert (truth["status"], truth["requests"], truth["paid_out"]) == ("TRANSFER_SUCCESS", 10, 1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": "1.001"},
        {"amount": "-5"},
        {"amount": 25},
        {"currency": "XYZ"},
        {"payee_account": ""},
        {"notify_url": "not a url"},
        {"out_biz_no": "bad id!"},
        {"sandbox_fault": "explode"},
    ],
)
async def test_invalid_transfer_requests(sandbox: Sandbox, overrides: dict[str, Any]) -> None:
    response = await post_transfer(sandbox.client, sandbox.receiver, **overrides)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_PARAMETER"


async def test_transfer_status_query(sandbox: Sandbox, tuned: Any) -> None:
    missing = await sandbox.client.get("/transfers/no-such-withdrawal")
    assert (missing.status_code, missing.json()["code"]) == (404, "TRANSFER_NOT_EXIST")
    out_biz_no = (await post_transfer(sandbox.client, sandbox.receiver)).json()["out_biz_no"]
    await tuned.put("/sandbox/faults", json={"status_fail_rate": 1})
    failing = await sandbox.client.get(f"/transfers/{out_biz_no}")
    assert (failing.status_code, failing.json()["code"]) == (503, "SYSTEM_ERROR")


async def test_transfer_faults_are_adjustable(sandbox: Sandbox, tuned: Any) -> None:
    patch = {"transfer_timeout_rate": 0.5, "transfer_error_rate": 0.25, "transfer_delay_seconds": 1}
    updated = await tuned.put("/sandbox/faults", json=patch)
    assert updated.status_code == 200
    assert updated.json() == {**BASELINE, **STATEMENT_FAULTS_OFF, **patch}
    invalid = await tuned.put("/sandbox/faults", json={"transfer_error_rate": 2})
    assert invalid.status_code == 400
    assert (await tuned.get("/sandbox/faults")).json()["transfer_error_rate"] == 0.25


# Faults: the transfer is made, but the caller is not told


@pytest.mark.parametrize("scripted", [True, False], ids=["scripted", "by-rate"])
async def test_timed_out_transfer_is_made_once(
    sandbox: Sandbox, tuned: Any, scripted: bool
) -> None:
    overrides: dict[str, Any] = {"sandbox_fault": "timeout"} if scripted else {}
    if not scripted:
        await tuned.put("/sandbox/faults", json={"transfer_timeout_rate": 1})
    request = transfer_request(sandbox.receiver, **overrides)
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=CLIENT_TIMEOUT) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("/transfers", json=request)
    await tuned.put("/sandbox/faults", json={"transfer_timeout_rate": 0})

    # The caller queries first: the transfer was recorded and goes ahead.
    found = await transfer_status(sandbox, request["out_biz_no"])
    assert found["status"] in ("TRANSFER_PROCESSING", "TRANSFER_SUCCESS")
    retried = await sandbox.client.post("/transfers", json={**request, "sandbox_fault": None})
    assert retried.status_code == 200
    assert retried.json()["transfer_no"] == found["transfer_no"]
    await eventually(lambda: _notified(sandbox, request["out_biz_no"]))
    truth = await ground_truth(sandbox, request["out_biz_no"])
    assert (truth["status"], truth["requests"], truth["paid_out"]) == ("TRANSFER_SUCCESS", 2, 1)


@pytest.mark.parametrize("scripted", [True, False], ids=["scripted", "by-rate"])
async def test_transfer_answered_with_an_error_is_made_once(
    sandbox: Sandbox, tuned: Any, scripted: bool
) -> None:
    overrides: dict[str, Any] = {"sandbox_fault": "error"} if scripted else {}
    if not scripted:
        await tuned.put("/sandbox/faults", json={"transfer_error_rate": 1})
    request = transfer_request(sandbox.receiver, **overrides)
    failed = await sandbox.client.post("/transfers", json=request)
    assert (failed.status_code, failed.json()["code"]) == (503, "SYSTEM_ERROR")
    await tuned.put("/sandbox/faults", json={"transfer_error_rate": 0})

    found = await transfer_status(sandbox, request["out_biz_no"])
    retried = await sandbox.client.post("/transfers", json={**request, "sandbox_fault": None})
    assert retried.json()["transfer_no"] == found["transfer_no"]
    await eventually(lambda: _notified(sandbox, request["out_biz_no"]))
    truth = await ground_truth(sandbox, request["out_biz_no"])
    assert (truth["status"], truth["requests"], truth["paid_out"]) == ("TRANSFER_SUCCESS", 2, 1)


async def test_a_held_answer_ends_when_the_caller_hangs_up(tmp_path: Path) -> None:
    """The sandbox does not sit on a timed-out request for the whole hold: stopping it right
    after the caller gave up takes well under the server's 1 s graceful-shutdown limit."""
    loop = asyncio.get_running_loop()
    async with running_receiver() as receiver:
        async with running_sandbox(tmp_path, receiver, transfer_timeout_seconds=30) as sandbox:
            async with httpx.AsyncClient(base_url=sandbox.url, timeout=0.2) as impatient:
                with pytest.raises(httpx.ReadTimeout):
                    await post_transfer(impatient, receiver, sandbox_fault="timeout")
            await asyncio.sleep(0.1)  # the sandbox notices the hang-up within 50 ms
            stopping = loop.time()
        assert loop.time() - stopping < 0.8
