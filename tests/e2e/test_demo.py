"""`tempay demo` (what `tempay dev --demo` runs) against a real stack: the sandbox, the webhook
and a worker on the real Temporal dev server. Every row ends as the demo expects, and the
payments on the new channels were paid on the sandbox's own pages (the QR code scanned, the
wallet's verification passed) and settled by the sandbox's signed notification."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from commands.demo import SCENARIOS, run_demo
from providers.sandbox.channels import CHANNELS, DEFAULT_CHANNEL
from tempay.channels import PayerAction
from tempay.domain import CheckoutInfo, TransactionStatus
from tests.support.stack import running_stack
from transactions import payment_view

pytestmark = pytest.mark.e2e


def table_rows(output: str) -> dict[str, tuple[str, str, str, str]]:
    """The demo's closing table: path -> (order, status, settled by, ok)."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("path "))
    rows = {}
    for line in lines[header + 2 : header + 2 + len(SCENARIOS)]:
        path, order, status, settled_by, ok = re.split(r"\s{2,}", line.strip(), maxsplit=4)
        rows[path] = (order, status, settled_by, ok)
    return rows


async def test_the_demo_ends_every_row_as_expected(
    dev_env: WorkflowEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_queue = f"tq-demo-{uuid.uuid4().hex[:8]}"
    async with running_stack(dev_env.client, tmp_path, task_queue) as stack:
        ok = await run_demo(stack.settings, stack.sandbox_url)
        output = capsys.readouterr().out
        assert ok, output
        assert "every path settled as expected" in output

        rows = table_rows(output)
        assert set(rows) == {scenario.name for scenario in SCENARIOS}
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
            for scenario in SCENARIOS:
                order_id, status, settled_by, row_ok = rows[scenario.name]
                assert (status, row_ok) == (scenario.expected, "yes"), scenario.name
                # As Temporal has it, not only as the demo printed it.
                view = await payment_view(stack.client, order_id)
                assert view.status is scenario.expected, scenario.name
                channel = scenario.channel or DEFAULT_CHANNEL
                # Settled: the action (a credential) is shown no more; the demo said which
                # kind the payer got when it started the payment.
                assert view.payer_action is None, scenario.name
                kind = CHANNELS[channel].action
                given = "opens http" if kind in ("redirect", "qr_code") else f"gets the {kind}"
                assert f"{order_id}: PENDING, payer {given}" in output, scenario.name
                if scenario.channel is None:
                    continue
                # A new channel's row: paid by the payer on the sandbox's pages, once, and
                # settled by the sandbox's notification.
                assert (view.status, settled_by) == (TransactionStatus.SUCCEEDED, "notification")
                trade = (await sandbox.get(f"/payments/{order_id}")).json()
                assert trade["status"] == "TRADE_SUCCESS"
                deliveries = (
                    await sandbox.get("/sandbox/notifications", params={"out_trade_no": order_id})
                ).json()
                assert [d["trade_status"] for d in deliveries] == ["TRADE_SUCCESS"]
                assert deliveries[0]["delivered"]
        # A wallet action is a credential: the demo names its kind, never its content. The
        # settled view shows it no more; the checkout's answer in the history still has it.
        checked = 0
        for scenario in SCENARIOS:
            order_id = rows[scenario.name][0]
            action = await checkout_action(stack.client, f"payment-{order_id}")
            if action is not None and action.kind in ("jsapi", "app", "client_secret"):
                secret = action.model_dump_json()
                values = re.findall(
                    r'"(?:paySign|sign|order_string|client_secret)":"([^"]+)"', secret
                )
                assert values, secret
                for value in values:
                    assert value not in output
                checked += 1
        assert checked == 4  # jsapi, two app kinds, client_secret


async def checkout_action(client: Client, workflow_id: str) -> PayerAction | None:
    """The payer action the checkout update answered, read back from the history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.HasField("workflow_execution_update_completed_event_attributes"):
            outcome = event.workflow_execution_update_completed_event_attributes.outcome
            [answer] = await client.data_converter.decode(outcome.success.payloads, [CheckoutInfo])
            return answer.payer_action
    return None
