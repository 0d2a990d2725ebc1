"""`tempay list` filters: refused in one line, before any connection (the env's Temporal
address has nothing listening, so a filter that got through would fail differently)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from commands.dev import port_in_use
from tempay.domain import TransactionStatus
from tests.support.cli import Dev, assert_one_line_error, tempay


def test_bad_list_filters_are_one_clear_line(env: dict[str, str]) -> None:
    assert_one_line_error(
        tempay("list", "--kind", "topup", env=env),
        "unknown kind 'topup': one of payment, recharge, refund, withdrawal",
    )
    assert_one_line_error(
        tempay("list", "--count", "--status", "PAID", env=env),
        "unknown status 'PAID': one of CREATED, PENDING, SUCCEEDED, FAILED, EXPIRED, "
        "NEEDS_REVIEW, PARTIALLY_REFUNDED, REFUNDED",
    )
    assert_one_line_error(
        tempay("list", "--provider", "sandbox' OR Provider = 'x", env=env),
        "must be 1-64 characters of letters, digits",
    )
    assert_one_line_error(tempay("list", "--limit", "0", env=env), "--limit must be positive")
    # Good filters get as far as connecting.
    assert_one_line_error(
        tempay("list", "--status", "pending", "--kind", "RECHARGE", "--provider", "sandbox",
               env=env),
        "cannot reach Temporal",
    )  # fmt: skip
    assert_one_line_error(tempay("list", "--count", env=env), "cannot reach Temporal")


@pytest.mark.e2e
def test_list_filters_count_and_worker_metrics_under_dev(
    env: dict[str, str],
    dev_factory: Callable[[], Dev],
) -> None:
    dev = dev_factory()
    worker_metrics = f"http://127.0.0.1:{env['TEMPAY_WORKER_METRICS_PORT']}/metrics"
    webhook_metrics = f"http://127.0.0.1:{env['TEMPAY_WEBHOOK_PORT']}/metrics"
    printed = dev.log.read_text()
    assert f"  metrics       {webhook_metrics} (webhook), {worker_metrics} (worker)" in printed

    pay = ("pay", "--order-id", "P1", "--amount", "10.00", "--currency", "CNY")
    assert tempay(*pay, env=env).returncode == 0
    topped = tempay(
        "recharge", "--order-id", "C1", "--account-id", "acct-9", "--amount", "50.00",
        "--currency", "CNY", env=env,
    )  # fmt: skip
    assert topped.returncode == 0, topped.stderr

    want = "\n".join(
        [*(f"{s}\t{2 if s == 'PENDING' else 0}" for s in TransactionStatus), "TOTAL\t2", ""]
    )
    deadline = time.monotonic() + 20
    while (counted := tempay("list", "--count", env=env)).stdout != want:
        assert time.monotonic() < deadline, counted
        time.sleep(0.3)
    assert counted.returncode == 0 and counted.stderr == ""
    recharges = tempay("list", "--kind", "recharge", "--provider", "sandbox", env=env)
    assert recharges.stdout == "C1\tPENDING\trecharge\tsandbox\tpayment-C1\n"
    assert tempay("list", "--kind", "refund", env=env).stdout == ""
    only = tempay("list", "--count", "--kind", "payment", "--status", "pending", env=env)
    assert only.stdout == "PENDING\t1\nTOTAL\t1\n"

    scraped = httpx.get(worker_metrics, timeout=5)
    assert scraped.status_code == 200
    assert 'temporal_request{namespace="default",operation="RespondWorkflowTaskCompleted"' in (
        scraped.text
    )
    assert dev.stop() == 0
    assert not port_in_use(int(env["TEMPAY_WORKER_METRICS_PORT"]))
