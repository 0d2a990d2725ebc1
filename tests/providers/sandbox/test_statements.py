"""The sandbox's daily statement over real HTTP: GET /statements/{day} serves Alipay's zipped
trade bill of the trades paid and refunds succeeded that Asia/Shanghai day (including a trade
made at the sandbox outside tempay); each statement fault plants its discrepancy; and
tempay's sandbox adapter reads it, refusing another merchant's."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.bills import CHINA, parse_trade_bill
from providers.sandbox.adapter import SandboxAdapter
from providers.sandbox.settings import DEFAULT_ACCOUNT
from tempay.errors import ProviderError, ProviderRejected, StatementError
from tempay.statements import StatementLine, StatementLineKind
from tests.support.providers.sandbox import Receiver, Sandbox, eventually, running_sandbox

NO_STATEMENT_FAULTS = {
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
        tmp_path_factory.mktemp("tempay"), receiver, refund_delay_seconds=0
    ) as sandbox:
        yield sandbox


@pytest.fixture
async def faults(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox client, with the statement faults off again afterwards."""
    yield sandbox.client
    response = await sandbox.client.put("/sandbox/faults", json=NO_STATEMENT_FAULTS)
    assert response.status_code == 200, response.text


def shanghai_day(utc_iso: str) -> date:
    return datetime.fromisoformat(utc_iso).astimezone(CHINA).date()


async def paid_trade(sandbox: Sandbox, order_amount: str = "10.00", **pay: Any) -> dict[str, Any]:
    """A trade made and paid at the sandbox directly, as a payer outside tempay would."""
    trade = await sandbox.create(amount=order_amount)
    response = await sandbox.pay(trade["out_trade_no"], **pay)
    assert response.status_code == 200, response.text
    return response.json()


async def statement(sandbox: Sandbox, day: date) -> list[StatementLine]:
    response = await sandbox.client.get(f"/statements/{day.isoformat()}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    return list(
        parse_trade_bill(
            io.BytesIO(response.content),
            expected_account=DEFAULT_ACCOUNT,
            day=day,
            currencies_in_remarks=True,
        )
    )


def about(lines: list[StatementLine], *order_ids: str) -> list[StatementLine]:
    return [line for line in lines if line.order_id in order_ids]


async def refunded(sandbox: Sandbox, out_trade_no: str, refund_id: str, amount: str) -> None:
    response = await sandbox.client.post(
        f"/payments/{out_trade_no}/refunds",
        json={
            "out_request_no": refund_id,
            "refund_amount": amount,
            "currency": "CNY",
            "notify_url": sandbox.receiver.notify_url,
        },
    )
    assert response.status_code == 200, response.text

    async def done() -> bool:
        answer = await sandbox.client.get(f"/payments/{out_trade_no}/refunds/{refund_id}")
        return bool(answer.json()["status"] == "REFUND_SUCCESS")

    await eventually(done)


async def test_the_days_paid_trades_and_succeeded_refunds(sandbox: Sandbox) -> None:
    paid = await paid_trade(sandbox, "12.30")
    unpaid = await sandbox.create()
    declined = await sandbox.create()
    assert await sandbox.client.post(f"/sandbox/payments/{declined['out_trade_no']}/decline")
    await refunded(sandbox, paid["out_trade_no"], f"r-{paid['out_trade_no']}", "2.30")
    day = shanghai_day(paid["paid_at"])

    lines = about(
        await statement(sandbox, day),
        paid["out_trade_no"],
        unpaid["out_trade_no"],
        declined["out_trade_no"],
    )
    payment, refund = lines
    assert payment.kind is StatementLineKind.PAYMENT
    assert (payment.order_id, payment.provider_trade_no) == (paid["out_trade_no"], paid["trade_no"])
    assert (payment.amount, payment.currency) == (Decimal("12.30"), "CNY")
    assert payment.at == datetime.fromisoformat(paid["paid_at"]).replace(microsecond=0)
    assert payment.merchant == DEFAULT_ACCOUNT
    assert refund.kind is StatementLineKind.REFUND
    assert (refund.order_id, refund.refund_id) == (
        paid["out_trade_no"],
        f"r-{paid['out_trade_no']}",
    )
    assert (refund.amount, refund.provider_trade_no) == (Decimal("2.30"), paid["trade_no"])


async def test_the_zip_is_alipays_layout(sandbox: Sandbox) -> None:
    paid = await paid_trade(sandbox)
    day = shanghai_day(paid["paid_at"])
    response = await sandbox.client.get(f"/statements/{day}")
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    stem = f"{DEFAULT_ACCOUNT}_{day:%Y%m%d}"
    assert archive.namelist() == [f"{stem}_业务明细.csv", f"{stem}_业务明细(汇总).csv"]
    details = archive.read(f"{stem}_业务明细.csv").decode("gbk").splitlines()
    assert details[:2] == ["#支付宝业务明细查询", f"#账号：[{DEFAULT_ACCOUNT}]"]
    assert details[4].startswith("支付宝交易号,商户订单号,业务类型")
    assert any(
        row.startswith(f"{paid['trade_no']}\t,{paid['out_trade_no']}\t,交易") for row in details
    )
    assert details[-1].startswith("#导出时间：[")
    assert f'filename="{stem}.csv.zip"' in response.headers["content-disposition"]


async def test_a_trade_paid_outside_tempay_in_another_amount_and_currency(
    sandbox: Sandbox,
) -> None:
    """Nothing but the sandbox knows this trade; the statement shows what the payer paid."""
    paid = await paid_trade(sandbox, "10.00", amount="9.99", currency="USD")
    lines = about(await statement(sandbox, shanghai_day(paid["paid_at"])), paid["out_trade_no"])
    assert [(line.amount, line.currency) for line in lines] == [(Decimal("9.99"), "USD")]


async def test_other_days_do_not_hold_it(sandbox: Sandbox) -> None:
    paid = await paid_trade(sandbox)
    day = shanghai_day(paid["paid_at"])
    assert about(await statement(sandbox, day - timedelta(days=1)), paid["out_trade_no"]) == []
    assert await statement(sandbox, date(2001, 1, 1)) == []


@pytest.mark.parametrize("day", ["2024-13-01", "yesterday", "2024-W01-1", "20240101"])
async def test_a_day_that_is_not_a_date_is_refused(sandbox: Sandbox, day: str) -> None:
    response = await sandbox.client.get(f"/statements/{day}")
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMETER"
    assert "YYYY-MM-DD" in response.json()["message"]


async def test_a_day_that_has_not_begun_has_no_statement(sandbox: Sandbox) -> None:
    tomorrow = datetime.now(CHINA).date() + timedelta(days=1)
    response = await sandbox.client.get(f"/statements/{tomorrow}")
    assert response.status_code == 404
    assert response.json()["code"] == "BILL_NOT_EXIST"


# Faults: each plants one discrepancy


async def test_drop_leaves_a_paid_trade_out(sandbox: Sandbox, faults: httpx.AsyncClient) -> None:
    dropped, kept = await paid_trade(sandbox), await paid_trade(sandbox)
    await refunded(sandbox, dropped["out_trade_no"], f"r-{dropped['out_trade_no']}", "1.00")
    await faults.put("/sandbox/faults", json={"statement_drop_order": dropped["out_trade_no"]})
    day = shanghai_day(dropped["paid_at"])
    lines = about(await statement(sandbox, day), dropped["out_trade_no"], kept["out_trade_no"])
    # The trade's payment line is gone; its refund, and every other trade, are still there.
    assert [(line.order_id, line.kind) for line in lines] == [
        (kept["out_trade_no"], StatementLineKind.PAYMENT),
        (dropped["out_trade_no"], StatementLineKind.REFUND),
    ]


async def test_amount_delta_changes_one_trades_amount(
    sandbox: Sandbox, faults: httpx.AsyncClient
) -> None:
    changed = await paid_trade(sandbox, "10.00")
    patch = {
        "statement_amount_delta_order": changed["out_trade_no"],
        "statement_amount_delta": "-0.01",
    }
    assert (await faults.put("/sandbox/faults", json=patch)).status_code == 200
    lines = about(
        await statement(sandbox, shanghai_day(changed["paid_at"])), changed["out_trade_no"]
    )
    assert [line.amount for line in lines] == [Decimal("9.99")]
    # The trade itself is unchanged: only the statement differs.
    assert (await sandbox.status(changed["out_trade_no"]))["paid_amount"] == "10.00"


async def test_extra_trade_is_one_only_the_statement_has(
    sandbox: Sandbox, faults: httpx.AsyncClient
) -> None:
    await faults.put("/sandbox/faults", json={"statement_extra_trade": "never-made-1"})
    day = datetime.now(CHINA).date()
    first = about(await statement(sandbox, day), "never-made-1")
    again = about(await statement(sandbox, day), "never-made-1")
    assert len(first) == 1 and first == again  # the same trade number every time
    extra = first[0]
    assert (extra.kind, extra.amount, extra.currency) == (
        StatementLineKind.PAYMENT,
        Decimal("1.00"),
        "CNY",
    )
    assert extra.at == datetime.combine(day, datetime.min.time(), CHINA) + timedelta(hours=12)
    assert (await sandbox.client.get("/payments/never-made-1")).status_code == 404


@pytest.mark.parametrize(
    "patch",
    [
        {"statement_drop_order": "not an order id"},
        {"statement_amount_delta": 0.01},  # money is never a JSON number
        {"statement_amount_delta": "NaN"},
        {"statement_extra_trade": "x" * 65},
    ],
)
async def test_invalid_statement_faults_are_refused(
    sandbox: Sandbox, faults: httpx.AsyncClient, patch: dict[str, Any]
) -> None:
    response = await faults.put("/sandbox/faults", json=patch)
    assert response.status_code == 400, response.text
    assert (await faults.get("/sandbox/faults")).json()["statement_amount_delta"] == "1.00"


async def test_statement_faults_from_the_environment(tmp_path: Path, receiver: Receiver) -> None:
    async with running_sandbox(
        tmp_path,
        receiver,
        statement_drop_order="A1",
        statement_amount_delta_order="A2",
        statement_amount_delta="0.50",
        statement_extra_trade="A3",
        account="2088000000000009",
    ) as sandbox:
        faults = (await sandbox.client.get("/sandbox/faults")).json()
        assert {name: faults[name] for name in NO_STATEMENT_FAULTS} == {
            "statement_drop_order": "A1",
            "statement_amount_delta_order": "A2",
            "statement_amount_delta": "0.50",
            "statement_extra_trade": "A3",
        }
        response = await sandbox.client.get(f"/statements/{datetime.now(CHINA).date()}")
        lines = list(
            parse_trade_bill(io.BytesIO(response.content), expected_account="2088000000000009")
        )
        assert [line.order_id for line in lines] == ["A3"]


# The adapter


async def test_the_adapter_reads_the_statement(sandbox: Sandbox) -> None:
    paid = await paid_trade(sandbox, "7.70")
    adapter = SandboxAdapter(sandbox.url)
    try:
        lines = [line async for line in adapter.statement(shanghai_day(paid["paid_at"]))]
    finally:
        await adapter.aclose()
    assert [
        (line.provider_trade_no, line.amount) for line in about(lines, paid["out_trade_no"])
    ] == [(paid["trade_no"], Decimal("7.70"))]


async def test_the_adapter_refuses_another_merchants_statement(sandbox: Sandbox) -> None:
    adapter = SandboxAdapter(sandbox.url, account="2088000000000777")
    try:
        with pytest.raises(StatementError, match="not this merchant's '2088000000000777'"):
            [line async for line in adapter.statement(datetime.now(CHINA).date())]
    finally:
        await adapter.aclose()


async def test_the_adapter_reports_a_refusal_and_an_unreachable_sandbox(sandbox: Sandbox) -> None:
    adapter = SandboxAdapter(sandbox.url)
    tomorrow = datetime.now(CHINA).date() + timedelta(days=1)
    try:
        with pytest.raises(ProviderRejected, match="HTTP 404 .*BILL_NOT_EXIST"):
            [line async for line in adapter.statement(tomorrow)]
    finally:
        await adapter.aclose()
    unreachable = SandboxAdapter("http://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(ProviderError, match="sandbox GET /statements/.*ConnectError") as caught:
            [line async for line in unreachable.statement(tomorrow)]
        assert not isinstance(caught.value, ProviderRejected)  # to be tried again
    finally:
        await unreachable.aclose()
