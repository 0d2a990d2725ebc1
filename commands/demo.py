"""`tempay demo`: every settlement path end to end against a running stack, with progress."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
from temporalio.client import Client

from providers.sandbox.settings import SandboxClientSettings
from tempay.domain import PaymentView, SettlementTiming, TransactionStatus
from tempay.settings import Settings
from tempay.temporal import connect
from transactions import build_order, payment_view, start_payment, start_refund

# Short timings so every path, expiry included, finishes within seconds.
DEMO_TIMING = SettlementTiming(
    first_status_query_delay=timedelta(seconds=2),
    status_query_backoff_cap=timedelta(seconds=5),
    expires_after=timedelta(seconds=8),
    late_payment_window=timedelta(seconds=30),
    refund_window=timedelta(minutes=10),
)
FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>.*?</form>', re.S | re.I)


AfterSettlement = Callable[[Client, Settings, str], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: TransactionStatus
    payer: Callable[[httpx.AsyncClient, str, str], Awaitable[None]]
    # What the merchant does once the payment settled (e.g. refunds), if anything.
    after: AfterSettlement | None = None


async def submit_checkout(http: httpx.AsyncClient, payment_url: str, button: str) -> None:
    """What a person does: open the checkout page and press a button."""
    page = await http.get(payment_url)
    page.raise_for_status()
    for match in FORM_ACTION.finditer(page.text):
        if f">{button}<" in match.group(0) or f'value="{button}"' in match.group(0):
            response = await http.post(httpx.URL(payment_url).join(match.group(1)))
            response.raise_for_status()
            return
    raise RuntimeError(f"no {button} button on {payment_url}")


async def pay_at_checkout(http: httpx.AsyncClient, payment_url: str, _: str) -> None:
    await submit_checkout(http, payment_url, "Pay")


async def decline_at_checkout(http: httpx.AsyncClient, payment_url: str, _: str) -> None:
    await submit_checkout(http, payment_url, "Decline")


def scripted_pay(**instruction: str) -> Callable[[httpx.AsyncClient, str, str], Awaitable[None]]:
    async def pay(http: httpx.AsyncClient, _: str, order_id: str) -> None:
        response = await http.post(f"/sandbox/payments/{order_id}/pay", json=instruction)
        response.raise_for_status()

    return pay


async def walk_away(http: httpx.AsyncClient, payment_url: str, order_id: str) -> None:
    await http.get(payment_url)  # looks at the page, never pays


async def refund_in_two_parts(client: Client, settings: Settings, order_id: str) -> None:
    for part, amount in (("a", "4.00"), ("b", "6.00")):
        accepted = await start_refund(
            client,
            settings,
            order_id=order_id,
            refund_id=f"{order_id}-refund-{part}",
            amount=amount,
            reason="tempay demo",
        )
        print(
            f"  {order_id}: refund {accepted.refund_id} of {amount} {accepted.currency} "
            f"{accepted.status}, {accepted.refundable_amount} left to refund",
            flush=True,
        )


SCENARIOS = [
    Scenario("paid at checkout", TransactionStatus.SUCCEEDED, pay_at_checkout),
    Scenario("declined at checkout", TransactionStatus.FAILED, decline_at_checkout),
    Scenario(
        "notification dropped, settled by status query",
        TransactionStatus.SUCCEEDED,
        scripted_pay(notification="drop"),
    ),
    Scenario("unpaid, closed at expiry", TransactionStatus.EXPIRED, walk_away),
    Scenario(
        "paid 9.99 for a 10.00 order", TransactionStatus.NEEDS_REVIEW, scripted_pay(amount="9.99")
    ),
    Scenario(
        "paid, then refunded 4.00 + 6.00",
        TransactionStatus.REFUNDED,
        pay_at_checkout,
        after=refund_in_two_parts,
    ),
]


async def wait_settled(
    client: Client, order_id: str, within: float = 60.0, until: TransactionStatus | None = None
) -> PaymentView:
    """Poll until the payment settles (or reaches `until`)."""
    deadline = time.monotonic() + within
    while True:
        view = await payment_view(client, order_id)
        done = view.status is until if until else view.status.is_terminal
        if done or time.monotonic() > deadline:
            return view
        await asyncio.sleep(0.25)


async def run_scenario(
    client: Client, settings: Settings, http: httpx.AsyncClient, scenario: Scenario, run_id: str
) -> tuple[Scenario, PaymentView]:
    order_id = f"demo-{run_id}-{SCENARIOS.index(scenario) + 1}"
    order = build_order(
        settings,
        order_id=order_id,
        amount="10.00",
        currency="CNY",
        provider="sandbox",  # the demo pays and declines on the sandbox's own pages
        subject=f"tempay demo: {scenario.name}",
        timing=DEMO_TIMING.model_copy(
            update={"status_query_task_queue": settings.status_query_task_queue}
        ),
    )
    checkout = await start_payment(client, settings, order)
    print(f"  {order_id}: {checkout.status}, payer opens {checkout.payment_url}", flush=True)
    await scenario.payer(http, checkout.payment_url or "", order_id)
    view = await wait_settled(client, order_id)
    print(f"  {order_id}: {view.status} (settled by {view.settled_by})", flush=True)
    if scenario.after is not None and view.status is TransactionStatus.SUCCEEDED:
        await scenario.after(client, settings, order_id)
        view = await wait_settled(client, order_id, until=scenario.expected)
        print(f"  {order_id}: {view.status}", flush=True)
    return scenario, view


def table(results: list[tuple[Scenario, PaymentView]]) -> str:
    rows = [("path", "order", "status", "settled by", "ok")]
    for scenario, view in results:
        ok = "yes" if view.status is scenario.expected else f"NO (expected {scenario.expected})"
        rows.append((scenario.name, view.order_id, view.status, view.settled_by or "-", ok))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def run_demo(settings: Settings, sandbox_url: str | None = None) -> bool:
    """Every scenario through the sandbox at `sandbox_url` (default TEMPAY_SANDBOX_URL)."""
    client = await connect(settings)
    run_id = time.strftime("%H%M%S")
    print(f"tempay demo: {len(SCENARIOS)} payments through the sandbox provider", flush=True)
    sandbox_url = sandbox_url or SandboxClientSettings().url
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as http:
        results = await asyncio.gather(
            *(run_scenario(client, settings, http, s, run_id) for s in SCENARIOS)
        )
    print("\n" + table(list(results)) + "\n", flush=True)
    ok = all(view.status is scenario.expected for scenario, view in results)
    print(
        "tempay demo: every path settled as expected"
        if ok
        else "tempay demo: some paths did not settle as expected",
        file=sys.stdout if ok else sys.stderr,
        flush=True,
    )
    print(
        f"Explore them in the Temporal UI: http://127.0.0.1:{settings.temporal_ui_port}"
        f"/namespaces/{settings.temporal_namespace}/workflows",
        flush=True,
    )
    return ok
