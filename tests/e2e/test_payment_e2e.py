"""End to end on the real dev server: the sandbox provider, the webhook service and a worker,
all over real HTTP. A payer pays (or declines) on the sandbox's checkout page or through its
scripted API; the tests watch the payment settle in Temporal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.domain import PaymentView, SettlementTiming, TransactionStatus
from tempay.errors import OrderConflict
from tests.support.stack import Stack, running_stack, start_payment
from workflows.payment import PaymentWorkflow

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 15
T = TypeVar("T")

# Only the notification can settle these: the first status query is far away.
NOTIFICATION_ONLY = SettlementTiming(
    first_status_query_delay=timedelta(minutes=1),
    status_query_backoff_cap=timedelta(minutes=1),
    expires_after=timedelta(minutes=5),
    late_payment_window=timedelta(milliseconds=500),
    refund_window=timedelta(0),
)


# Fixtures


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    task_queue = f"tq-e2e-{uuid.uuid4().hex[:8]}"
    async with running_stack(dev_env.client, tmp_path_factory.mktemp("e2e"), task_queue) as s:
        yield s


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """What a payer's browser does: plain HTTP, following nothing it is not told to."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
async def sandbox(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as client:
        yield client


@pytest.fixture
def order_id() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


# Helpers


@dataclass
class Form:
    method: str
    action: str
    buttons: list[str] = field(default_factory=list)


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._in_button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append(Form((values.get("method") or "get").lower(), values["action"] or ""))
        elif tag == "button" and self.forms:
            self._in_button = True
            self.forms[-1].buttons.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._in_button = False

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self.forms[-1].buttons[-1] += data.strip()


def forms_of(page: str) -> list[Form]:
    parser = FormParser()
    parser.feed(page)
    return parser.forms


async def open_checkout(browser: httpx.AsyncClient, payment_url: str) -> list[Form]:
    page = await browser.get(payment_url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    return forms_of(page.text)


async def press(browser: httpx.AsyncClient, payment_url: str, button: str) -> httpx.Response:
    """Open the checkout page and submit the form whose button says `button`."""
    [form] = [f for f in await open_checkout(browser, payment_url) if button in f.buttons]
    assert form.method == "post"
    return await browser.post(
        urljoin(payment_url, form.action),
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def scripted_pay(sandbox: httpx.AsyncClient, order_id: str, **instruction: Any) -> None:
    response = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json=instruction)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "TRADE_SUCCESS"


async def settled(handle: WorkflowHandle[Any, PaymentView]) -> PaymentView:
    return await asyncio.wait_for(handle.result(), SETTLE_SECONDS)


async def eventually(check: Callable[[], Awaitable[T | None]], seconds: float = 10) -> T:
    """The first truthy answer of `check`, polled until `seconds` pass."""
    async with asyncio.timeout(seconds):
        while True:
            answer = await check()
            if answer:
                return answer
            await asyncio.sleep(0.05)


async def notification_counts(stack: Stack) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=stack.webhook_url) as client:
        text = (await client.get("/metrics")).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tempay_notifications_total" and sample.labels["provider"] == "sandbox"
    }


async def deliveries(sandbox: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await sandbox.get("/sandbox/notifications", params={"out_trade_no": order_id})
    assert response.status_code == 200
    return response.json()


# A person pays on the checkout page


async def test_person_pays_on_the_checkout_page(
    stack: Stack, browser: httpx.AsyncClient, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    handle, checkout = await start_payment(
        stack.client, stack.settings, order_id, timing=NOTIFICATION_ONLY
    )
    assert checkout.status is TransactionStatus.PENDING
    assert checkout.workflow_id == f"payment-{order_id}"
    assert checkout.payment_url and checkout.payment_url.startswith(f"{stack.sandbox_url}/")

    page = await browser.get(checkout.payment_url)
    assert order_id in page.text and "10.00 CNY" in page.text
    result = await press(browser, checkout.payment_url, "Pay")
    assert result.status_code == 200
    assert "Payment succeeded" in result.text
    assert f'href="https://shop.example/orders/{order_id}"' in result.text

    view = await settled(handle)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert (view.paid_amount, view.paid_currency) == (Decimal("10.00"), "CNY")
    assert view.provider_trade_no == checkout.provider_trade_no
    assert (view.notifications_received, view.status_queries) == (1, 0)
    [delivery] = await deliveries(sandbox, order_id)
    assert delivery["delivered"] and delivery["last_response_status"] == 200

    # Paid: the page no longer offers to pay.
    assert await open_checkout(browser, checkout.payment_url) == []


# A lost notification: the status query settles it


async def test_dropped_notification_settles_by_status_query(
    stack: Stack, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    handle, _ = await start_payment(stack.client, stack.settings, order_id)
    await scripted_pay(sandbox, order_id, notification="drop")
    view = await settled(handle)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "status_query"
    assert (view.paid_amount, view.paid_currency) == (Decimal("10.00"), "CNY")
    assert view.notifications_received == 0 and view.status_queries >= 1
    [delivery] = await deliveries(sandbox, order_id)
    assert delivery["dropped"] and delivery["attempts"] == 0


# Operators find payments by status in the Temporal UI


async def test_search_attributes_show_the_final_status(
    stack: Stack, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    handle, _ = await start_payment(stack.client, stack.settings, order_id)
    pending = await handle.describe()
    assert pending.typed_search_attributes.get(sa.PAYMENT_STATUS) == "PENDING"

    await scripted_pay(sandbox, order_id)
    assert (await settled(handle)).status is TransactionStatus.SUCCEEDED

    described = await handle.describe()
    assert described.status is WorkflowExecutionStatus.COMPLETED
    attributes = described.typed_search_attributes
    assert attributes.get(sa.PAYMENT_STATUS) == "SUCCEEDED"
    assert attributes.get(sa.ORDER_ID) == order_id
    assert attributes.get(sa.PROVIDER) == "sandbox"
    assert attributes.get(sa.TRANSACTION_KIND) == "payment"

    query = f'PaymentStatus = "SUCCEEDED" AND OrderId = "{order_id}"'

    async def listed() -> list[str]:
        return [execution.id async for execution in stack.client.list_workflows(query)]

    assert await eventually(listed) == [f"payment-{order_id}"]
    pending_query = f'PaymentStatus = "PENDING" AND OrderId = "{order_id}"'
    assert [e.id async for e in stack.client.list_workflows(pending_query)] == []


# A person declines


async def test_person_declines_on_the_checkout_page(
    stack: Stack, browser: httpx.AsyncClient, order_id: str
) -> None:
    handle, checkout = await start_payment(
        stack.client, stack.settings, order_id, timing=NOTIFICATION_ONLY
    )
    assert checkout.payment_url
    result = await press(browser, checkout.payment_url, "Decline")
    assert result.status_code == 200
    assert "Payment declined" in result.text

    # FAILED at once; the workflow then stays open for the late-payment window.
    async def failed() -> PaymentView | None:
        view = await handle.query(PaymentWorkflow.details)
        return view if view.status is TransactionStatus.FAILED else None

    view = await eventually(failed)
    assert view.settled_by == "notification"
    assert view.paid_amount is None
    final = await settled(handle)
    assert final.status is TransactionStatus.FAILED
    assert final.review_reason == "payer declined or payment failed"
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.PAYMENT_STATUS) == "FAILED"


# The payer paid something else


async def test_amount_mismatch_needs_review(
    stack: Stack, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    handle, _ = await start_payment(stack.client, stack.settings, order_id)
    await scripted_pay(sandbox, order_id, amount="9.99")
    view = await settled(handle)
    assert view.status is TransactionStatus.NEEDS_REVIEW
    assert (view.paid_amount, view.paid_currency) == (Decimal("9.99"), "CNY")
    assert view.amount == Decimal("10.00")
    assert view.review_reason and "9.99" in view.review_reason and "10.00" in view.review_reason
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.PAYMENT_STATUS) == "NEEDS_REVIEW"


# The provider sends the notification twice


async def test_duplicate_notifications_settle_once(
    stack: Stack, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    handle, _ = await start_payment(
        stack.client, stack.settings, order_id, timing=NOTIFICATION_ONLY
    )
    before = await notification_counts(stack)
    await scripted_pay(sandbox, order_id, notification="duplicate")
    view = await settled(handle)
    assert view.status is TransactionStatus.SUCCEEDED
    assert view.settled_by == "notification"
    assert view.notifications_received == 1

    # Both deliveries are acknowledged, so the provider stops retrying either.
    async def both_delivered() -> list[dict[str, Any]] | None:
        found = await deliveries(sandbox, order_id)
        return found if len(found) == 2 and all(d["delivered"] for d in found) else None

    first, second = await eventually(both_delivered)
    assert first["notify_id"] == second["notify_id"]

    # The repeat reached the workflow before it completed (counted as a duplicate), or after
    # (acknowledged by the webhook as already settled): once, either way, and nothing changed.
    after = await notification_counts(stack)
    signalled = after.get("signalled", 0) - before.get("signalled", 0)
    already_settled = after.get("already_settled", 0) - before.get("already_settled", 0)
    assert (signalled, already_settled) in ((2, 0), (1, 1))
    assert view.duplicate_notifications == signalled - 1
    assert await handle.result() == view


# The order id is the idempotency key


async def test_same_order_id_is_the_same_payment(
    stack: Stack, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    handle, first = await start_payment(stack.client, stack.settings, order_id)
    again_handle, again = await start_payment(stack.client, stack.settings, order_id)
    assert again == first
    assert again.payment_url and again.payment_url == first.payment_url
    assert again_handle.first_execution_run_id == handle.first_execution_run_id

    for amount, currency in (("11.00", "CNY"), ("10.00", "USD")):
        with pytest.raises(OrderConflict, match="already exists with different terms"):
            await start_payment(stack.client, stack.settings, order_id, amount, currency)

    view = await handle.query(PaymentWorkflow.details)
    assert (view.status, view.amount, view.currency) == (
        TransactionStatus.PENDING,
        Decimal("10.00"),
        "CNY",
    )
    await scripted_pay(sandbox, order_id)
    assert (await settled(handle)).status is TransactionStatus.SUCCEEDED


# The merchant's application is told, signed (Standard Webhooks), until it takes the event


async def test_merchant_is_told_of_a_checkout_payment(
    stack: Stack, browser: httpx.AsyncClient, order_id: str
) -> None:
    handle, checkout = await start_payment(
        stack.client, stack.settings, order_id, timing=NOTIFICATION_ONLY
    )
    assert checkout.payment_url
    assert (await press(browser, checkout.payment_url, "Pay")).status_code == 200
    view = await settled(handle)
    assert view.status is TransactionStatus.SUCCEEDED

    # The workflow finishes only once the merchant acknowledged: the event is there.
    [delivery] = stack.merchant.deliveries_for(order_id)
    event_id = f"evt_payment-{order_id}_succeeded"
    assert (delivery.webhook_id, delivery.answered, delivery.error) == (event_id, 204, None)
    assert delivery.headers["webhook-signature"].startswith("v1,")
    assert delivery.headers["content-type"] == "application/json"
    body = delivery.body
    assert body is not None
    assert (body["id"], body["type"]) == (event_id, "payment.succeeded")
    data = body["data"]
    assert (data["amount"], data["currency"]) == ("10.00", "CNY")
    assert (data["paid_amount"], data["paid_currency"]) == ("10.00", "CNY")
    assert (data["status"], data["kind"], data["settled_by"]) == (
        "SUCCEEDED",
        "payment",
        "notification",
    )
    assert data["provider_trade_no"] == checkout.provider_trade_no
    [progress] = view.merchant_events
    assert (progress.event_id, progress.state, progress.attempts) == (event_id, "delivered", 1)


async def test_merchant_failing_twice_gets_the_same_event_third(
    stack: Stack, sandbox: httpx.AsyncClient, order_id: str
) -> None:
    # Retries start 0.1 s apart here (5 s by default), so the test stays fast.
    timing = NOTIFICATION_ONLY.model_copy(
        update={"merchant_retry_interval": timedelta(milliseconds=100)}
    )
    stack.merchant.refuse(order_id, 2)
    handle, _ = await start_payment(stack.client, stack.settings, order_id, timing=timing)
    await scripted_pay(sandbox, order_id)
    view = await settled(handle)
    assert view.status is TransactionStatus.SUCCEEDED

    deliveries = stack.merchant.deliveries_for(order_id)
    assert [d.answered for d in deliveries] == [500, 500, 204]
    assert {d.webhook_id for d in deliveries} == {f"evt_payment-{order_id}_succeeded"}
    assert all(d.error is None for d in deliveries)  # every attempt verified
    assert deliveries[0].body == deliveries[2].body
    [event] = stack.merchant.events_for(order_id)
    assert event.type == "payment.succeeded" and event.data.amount == Decimal("10.00")
    [progress] = view.merchant_events
    assert (progress.state, progress.attempts) == ("delivered", 3)


async def test_merchant_is_told_of_a_decline(
    stack: Stack, browser: httpx.AsyncClient, order_id: str
) -> None:
    handle, checkout = await start_payment(
        stack.client, stack.settings, order_id, timing=NOTIFICATION_ONLY
    )
    assert checkout.payment_url
    await press(browser, checkout.payment_url, "Decline")
    assert (await settled(handle)).status is TransactionStatus.FAILED
    [event] = stack.merchant.events_for(order_id)
    assert (event.id, event.type) == (f"evt_payment-{order_id}_failed", "payment.failed")
    assert event.data.review_reason == "payer declined or payment failed"
