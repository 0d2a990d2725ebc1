"""`tempay demo`: every settlement path end to end against a running stack, with progress."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode

import httpx
from temporalio.client import Client

from providers.sandbox.settings import SandboxClientSettings
from tempay.channels import (
    AppAction,
    ClientSecretAction,
    JsapiAction,
    PayerAction,
    QrCodeAction,
)
from tempay.domain import CheckoutInfo, PaymentView, SettlementTiming, TransactionStatus
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
# The demo's payer on WeChat: an openid under the sandbox merchant's app (made up).
DEMO_OPENID = "oDemoPayer0000000000000000001"
# The payer's browser is the demo's own HTTP client, on this machine: WeChat H5 checks it.
DEMO_PAYER_IP = "127.0.0.1"


Payer = Callable[[httpx.AsyncClient, CheckoutInfo, str], Awaitable[None]]
AfterSettlement = Callable[[Client, Settings, str], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: TransactionStatus
    payer: Payer
    # What the merchant does once the payment settled (e.g. refunds), if anything.
    after: AfterSettlement | None = None
    # The order's channel on the sandbox (None: its default, alipay_wap) and the payer
    # details it needs.
    channel: str | None = None
    payer_openid: str | None = None
    payer_client_ip: str | None = None


@dataclass
class Form:
    action: str
    fields: dict[str, str]
    buttons: list[str]


class FormParser(HTMLParser):
    """The forms of a page: where each posts, its hidden fields, its buttons' labels."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(attributes.get("action", ""), {}, []))
        elif tag == "input" and self.forms and attributes.get("name"):
            self.forms[-1].fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "button" and self.forms:
            self._button = []

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None and self.forms:
            self.forms[-1].buttons.append("".join(self._button).strip())
            self._button = None


def forms_of(page: httpx.Response) -> list[Form]:
    parser = FormParser()
    parser.feed(page.text)
    return parser.forms


async def press(http: httpx.AsyncClient, page: httpx.Response, button: str) -> httpx.Response:
    """What a person does on a page: press a button, its form's fields sent as they are."""
    for form in forms_of(page):
        if button in form.buttons:
            response = await http.post(page.url.join(form.action), data=form.fields)
            response.raise_for_status()
            return response
    raise RuntimeError(f"no {button} button on {page.url}")


async def submit_checkout(http: httpx.AsyncClient, payment_url: str, button: str) -> None:
    """What a person does: open the checkout page and press a button."""
    page = await http.get(payment_url)
    page.raise_for_status()
    await press(http, page, button)


async def pay_at_checkout(http: httpx.AsyncClient, checkout: CheckoutInfo, _: str) -> None:
    await submit_checkout(http, checkout.payment_url or "", "Pay")


async def decline_at_checkout(http: httpx.AsyncClient, checkout: CheckoutInfo, _: str) -> None:
    await submit_checkout(http, checkout.payment_url or "", "Decline")


def scripted_pay(**instruction: str) -> Payer:
    async def pay(http: httpx.AsyncClient, _: CheckoutInfo, order_id: str) -> None:
        response = await http.post(f"/sandbox/payments/{order_id}/pay", json=instruction)
        response.raise_for_status()

    return pay


async def walk_away(http: httpx.AsyncClient, checkout: CheckoutInfo, order_id: str) -> None:
    await http.get(checkout.payment_url or "")  # looks at the page, never pays


async def scan_and_pay(http: httpx.AsyncClient, checkout: CheckoutInfo, _: str) -> None:
    """The QR page shows the code; the payer's phone scans it (opens its content) and pays."""
    action = checkout.payer_action
    if not isinstance(action, QrCodeAction):
        raise RuntimeError(f"expected a QR code, got {action and action.kind}")
    shown = await http.get(f"/checkout/{checkout.provider_trade_no}")
    shown.raise_for_status()
    if "<svg" not in shown.text or f'href="{action.content}"' not in shown.text:
        raise RuntimeError(f"the QR page of {checkout.provider_trade_no} shows no code")
    await submit_checkout(http, action.content, "Pay")


def tampered(action: PayerAction) -> dict[str, object]:
    """The action as an attacker would hand it: a cheaper amount, another prepay_id, a
    changed signature or secret."""
    data = action.model_dump()
    if isinstance(action, JsapiAction):
        sign = action.parameters.paySign
        data["parameters"]["paySign"] = ("B" if sign.startswith("A") else "A") + sign[1:]
    elif isinstance(action, AppAction) and action.parameters is not None:
        data["parameters"]["prepayid"] = action.parameters.prepayid + "0"
    elif isinstance(action, AppAction) and action.order_string is not None:
        params = dict(parse_qsl(action.order_string))
        biz = {**json.loads(params["biz_content"]), "total_amount": "0.01"}
        data["order_string"] = urlencode({**params, "biz_content": json.dumps(biz)})
    elif isinstance(action, ClientSecretAction):
        secret = action.client_secret
        data["client_secret"] = secret[:-1] + ("1" if secret.endswith("0") else "0")
    return data


async def pay_in_wallet(http: httpx.AsyncClient, checkout: CheckoutInfo, _: str) -> None:
    """What WeChat's JS bridge or app SDK, Alipay's SDK or Stripe.js does with the payer
    action: the sandbox's wallet verifies it (a tampered copy is refused first), then Pay."""
    action = checkout.payer_action
    if not isinstance(action, JsapiAction | AppAction | ClientSecretAction):
        raise RuntimeError(f"expected a wallet action, got {action and action.kind}")
    forged = await http.post("/wallet", json=tampered(action))
    if forged.status_code not in (400, 401, 404):
        raise RuntimeError(
            f"the wallet took a tampered {action.kind} action ({forged.status_code})"
        )
    page = await http.post("/wallet", json=json.loads(action.model_dump_json()))
    page.raise_for_status()
    await press(http, page, "Pay")


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


SUCCEEDED = TransactionStatus.SUCCEEDED
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
    Scenario(
        "QR code scanned and paid (wechat_native)", SUCCEEDED, scan_and_pay, channel="wechat_native"
    ),
    Scenario(
        "JSAPI parameters paid in the wallet (wechat_jsapi)",
        SUCCEEDED,
        pay_in_wallet,
        channel="wechat_jsapi",
        payer_openid=DEMO_OPENID,
    ),
    Scenario(
        "app order string paid in the wallet (alipay_app)",
        SUCCEEDED,
        pay_in_wallet,
        channel="alipay_app",
    ),
    Scenario(
        "app parameters paid in the wallet (wechat_app)",
        SUCCEEDED,
        pay_in_wallet,
        channel="wechat_app",
    ),
    Scenario(
        "client_secret paid in the wallet (stripe_payment_intent)",
        SUCCEEDED,
        pay_in_wallet,
        channel="stripe_payment_intent",
    ),
    Scenario(
        "H5 paid from the payer's IP (wechat_h5)",
        SUCCEEDED,
        pay_at_checkout,
        channel="wechat_h5",
        payer_client_ip=DEMO_PAYER_IP,
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
        channel=scenario.channel,
        subject=f"tempay demo: {scenario.name}",
        timing=DEMO_TIMING.model_copy(
            update={"status_query_task_queue": settings.status_query_task_queue}
        ),
        payer_openid=scenario.payer_openid,
        payer_client_ip=scenario.payer_client_ip,
    )
    checkout = await start_payment(client, settings, order)
    # A wallet action is a credential for the payer (paySign, client_secret): named, not shown.
    given = (
        f"opens {checkout.payment_url}"
        if checkout.payment_url
        else f"gets the {checkout.payer_action.kind if checkout.payer_action else 'no'} action"
    )
    print(f"  {order_id}: {checkout.status}, payer {given}", flush=True)
    await scenario.payer(http, checkout, order_id)
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
