"""The `tempay` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from commands.dev import port_in_use
from tests.support.cli import Dev, assert_one_line_error, tempay


def ports(env: dict[str, str]) -> list[int]:
    return [
        int(env["TEMPORAL_ADDRESS"].rsplit(":", 1)[1]),
        int(env["TEMPAY_TEMPORAL_UI_PORT"]),
        int(env["TEMPAY_WEBHOOK_PORT"]),
        int(env["TEMPAY_SANDBOX_URL"].rsplit(":", 1)[1]),
        int(env["TEMPAY_WORKER_METRICS_PORT"]),
    ]


def wait_for_status(env: dict[str, str], order_id: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        view = json.loads(tempay("status", order_id, env=env).stdout)
        if view["status"] == status or time.monotonic() > deadline:
            return view
        time.sleep(0.3)


def test_bad_input_is_one_clear_line(env: dict[str, str]) -> None:
    pay = ("pay", "--order-id", "A1")
    assert_one_line_error(
        tempay(*pay, "--amount", "10.001", "--currency", "CNY", env=env), "decimal places"
    )
    assert_one_line_error(tempay(*pay, "--amount", "ten", "--currency", "CNY", env=env), "ten")
    assert_one_line_error(tempay(*pay, "--amount", "-1", "--currency", "CNY", env=env), "positive")
    assert_one_line_error(
        tempay(*pay, "--amount", "10", "--currency", "XYZ", env=env), "unknown currency"
    )
    assert_one_line_error(
        tempay("pay", "--order-id", "a b", "--amount", "1", "--currency", "CNY", env=env),
        "order id",
    )
    assert_one_line_error(
        tempay(
            "recharge",
            "--order-id",
            "C1",
            "--account-id",
            " ",
            "--amount",
            "1",
            "--currency",
            "CNY",
            env=env,
        ),  # fmt: skip
        "--account-id",
    )
    # What a channel needs of the payer is checked before anything starts (no stack runs).
    one = ("pay", "--order-id", "J1", "--amount", "1", "--currency", "CNY", "--provider", "sandbox")
    assert_one_line_error(
        tempay(*one, "--channel", "wechat_jsapi", env=env),
        "channel wechat_jsapi needs payer_openid",
    )
    assert_one_line_error(
        tempay(*one, "--channel", "wechat_h5", "--payer-client-ip", "1.2.3.999", env=env),
        "payer_client_ip must be",
    )
    assert_one_line_error(tempay(*one, "--channel", "nope", env=env), "sandbox has no channel")


def test_channels_lists_each_providers_channels_with_the_payer_action(env: dict[str, str]) -> None:
    listed = tempay("channels", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[:4] for line in listed.stdout.splitlines()[1:]]
    assert ["wechatpay", "wechat_jsapi", "jsapi", "payer_openid"] in rows
    assert ["wechatpay", "wechat_h5", "redirect", "payer_client_ip"] in rows
    assert ["alipay", "alipay_qr", "qr_code", "-"] in rows
    assert ["stripe", "stripe_payment_intent", "client_secret", "-"] in rows


def test_bad_withdrawal_input_is_one_clear_line(env: dict[str, str]) -> None:
    def withdraw(*args: str) -> subprocess.CompletedProcess[str]:
        terms = {"--withdrawal-id": "W1", "--amount": "10.00", "--currency": "CNY"}
        terms |= {"--provider": "sandbox"}  # no `tempay dev` here: no default provider
        terms |= {"--payee-account": "payee@example.com"}
        terms |= dict(zip(args[::2], args[1::2], strict=True))
        return tempay("withdraw", *[x for kv in terms.items() for x in kv], env=env)

    assert_one_line_error(withdraw("--amount", "10.001"), "decimal places")
    assert_one_line_error(withdraw("--amount", "ten"), "ten")
    assert_one_line_error(withdraw("--currency", "XYZ"), "unknown currency")
    assert_one_line_error(withdraw("--withdrawal-id", "w 1"), "withdrawal id")
    assert_one_line_error(withdraw("--payee-account", " "), "--payee-account")
    assert_one_line_error(
        tempay("status", env=env),
        "name one transaction: ORDER_ID, --refund REFUND_ID or --withdrawal",
    )
    assert_one_line_error(withdraw(), "cannot reach Temporal")
    assert_one_line_error(tempay("status", "--withdrawal", "W1", env=env), "cannot reach Temporal")


def test_unreachable_server_is_one_clear_line(env: dict[str, str]) -> None:
    pay = ("pay", "--order-id", "A1", "--amount", "1.00", "--currency", "CNY")
    assert_one_line_error(tempay("status", "A1", env=env), "cannot reach Temporal")
    assert_one_line_error(
        tempay(*pay, "--provider", "sandbox", env=env),
        "cannot reach Temporal",
    )
    assert_one_line_error(tempay("list", env=env), "cannot reach Temporal")


def test_outside_dev_a_provider_must_be_named(env: dict[str, str]) -> None:
    """No `tempay dev` made this data dir: no provider is picked silently (issue 18)."""
    pay = ("pay", "--order-id", "A1", "--amount", "1.00", "--currency", "CNY")
    assert_one_line_error(tempay(*pay, env=env), "name the provider")
    withdraw = ("withdraw", "--withdrawal-id", "W1", "--amount", "1.00", "--currency", "CNY")
    assert_one_line_error(
        tempay(*withdraw, "--payee-account", "p@example.com", env=env), "name the provider"
    )
    # A deliberate default is not a silent one.
    chosen = {**env, "TEMPAY_DEFAULT_PROVIDER": "alipay"}
    assert_one_line_error(tempay(*pay, env=chosen), "cannot reach Temporal")


@pytest.mark.e2e
def test_dev_stops_everything_and_resumes_pending_payments(
    env: dict[str, str], dev_factory: Callable[[], Dev]
) -> None:
    dev = dev_factory()
    paid = tempay("pay", "--order-id", "R1", "--amount", "10.00", "--currency", "CNY", env=env)
    assert paid.returncode == 0, paid.stderr
    checkout = json.loads(paid.stdout)
    assert checkout["status"] == "PENDING" and checkout["workflow_id"] == "payment-R1"
    assert_one_line_error(tempay("status", "nope", env=env), "no transaction for order 'nope'")
    assert_one_line_error(
        tempay("pay", "--order-id", "R1", "--amount", "11.00", "--currency", "CNY", env=env),
        "already exists with different terms",
    )

    topped = tempay(
        "recharge", "--order-id", "C1", "--account-id", "acct-9", "--amount", "50.00",
        "--currency", "CNY", env=env,
    )  # fmt: skip
    assert topped.returncode == 0, topped.stderr
    recharge = json.loads(tempay("status", "C1", env=env).stdout)
    assert (recharge["kind"], recharge["account_id"], recharge["amount"]) == (
        "recharge",
        "acct-9",
        "50.00",
    )

    withdrawn = tempay(
        "withdraw", "--withdrawal-id", "W1", "--amount", "5.00", "--currency", "CNY",
        "--payee-account", "payee@example.com", env=env,
    )  # fmt: skip
    assert withdrawn.returncode == 0, withdrawn.stderr
    submitted = json.loads(withdrawn.stdout)
    assert submitted["workflow_id"] == "withdrawal-W1"
    assert submitted["status"] in ("PENDING", "SUCCEEDED")
    withdrawal = json.loads(tempay("status", "--withdrawal", "W1", env=env).stdout)
    assert (withdrawal["kind"], withdrawal["amount"]) == ("withdrawal", "5.00")
    assert_one_line_error(tempay("status", "--withdrawal", "nope", env=env), "no withdrawal")

    assert dev.stop() == 0
    assert not [port for port in ports(env) if port_in_use(port)]

    dev_factory()  # the same data dir: Temporal's SQLite file and the sandbox's trades
    again = tempay("pay", "--order-id", "R1", "--amount", "10.00", "--currency", "CNY", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["payment_url"] == checkout["payment_url"]
    form = httpx.post(checkout["payment_url"] + "/pay", timeout=10)
    assert form.status_code == 200
    view = wait_for_status(env, "R1", "SUCCEEDED")
    assert view["status"] == "SUCCEEDED" and view["settled_by"] == "notification"

    deadline = time.monotonic() + 20
    while "R1\tSUCCEEDED" not in tempay("list", "--status", "SUCCEEDED", env=env).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.3)

    # Refunds and operator actions, as a user types them.
    refunded = tempay("refund", "R1", "--refund-id", "RF1", "--amount", "4.00", env=env)
    assert refunded.returncode == 0, refunded.stderr
    accepted = json.loads(refunded.stdout)
    assert (accepted["workflow_id"], accepted["refundable_amount"]) == ("refund-RF1", "6.00")
    assert_one_line_error(
        tempay("refund", "R1", "--refund-id", "RF2", "--amount", "7.00", env=env),
        "exceeds what remains refundable on order R1: 6.00 CNY",
    )
    assert_one_line_error(
        tempay("refund", "R1", "--refund-id", "RF1", "--amount", "5.00", env=env),
        "refund RF1 already exists for 4.00 CNY",
    )
    assert_one_line_error(
        tempay("resolve", "R1", "--decision", "accept", "--reason", "why", env=env),
        "only a NEEDS_REVIEW payment can be resolved",
    )
    view = wait_for_status(env, "R1", "PARTIALLY_REFUNDED")
    assert view["refunded_amount"] == "4.00"
    refund = json.loads(tempay("status", "--refund", "RF1", env=env).stdout)
    assert (refund["status"], refund["order_id"]) == ("SUCCEEDED", "R1")

    started = tempay("pay", "--order-id", "X1", "--amount", "3", "--currency", "CNY", env=env)
    assert started.returncode == 0, started.stderr
    cancelled = tempay(
        "cancel", "X1", "--reason", "customer changed their mind", "--operator", "ann", env=env
    )
    assert cancelled.returncode == 0, cancelled.stderr
    view = json.loads(cancelled.stdout)
    assert (view["status"], view["review_reason"]) == (
        "EXPIRED",
        "cancelled by ann: customer changed their mind",
    )
    assert view["operator_actions"][0]["operator"] == "ann"
    assert_one_line_error(
        tempay("cancel", "X1", "--reason", "again", env=env),
        "is EXPIRED: only an unpaid payment (CREATED or PENDING) can be cancelled",
    )
    assert_one_line_error(tempay("cancel", "X1", "--reason", " ", env=env), "--reason must say")


def test_http_errors_without_a_message_say_what_and_where() -> None:
    from commands.cli import describe_http_error

    request = httpx.Request("POST", "http://127.0.0.1:9/sandbox/payments/o-1/pay")
    assert describe_http_error(httpx.ReadTimeout("", request=request)) == (
        "ReadTimeout (POST http://127.0.0.1:9/sandbox/payments/o-1/pay)"
    )
    response = httpx.Response(502, request=request)
    status = httpx.HTTPStatusError(
        f"Server error '502 Bad Gateway' for url '{request.url}'",
        request=request,
        response=response,
    )
    assert describe_http_error(status) == str(status)  # already names the URL
    assert describe_http_error(httpx.ConnectError("refused")) == "refused"  # no request
