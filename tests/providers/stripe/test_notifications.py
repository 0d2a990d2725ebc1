"""Stripe events: verified on the raw body, then mapped; and the webhook's answers to them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.stripe.adapter import IgnoredEvent, StripeAdapter
from providers.stripe.signature import compute_signature
from tempay.domain import (
    PaymentObservation,
    ProviderPaymentState,
    ProviderRefundState,
    RefundObservation,
    RefundRequest,
)
from tempay.errors import MalformedNotification, UnverifiedNotification
from tempay.settings import Settings
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import WEBHOOK_SECRET, make_order
from webhook.app import create_app as create_webhook_app

OLD_SECRET = "whsec_test_tempay_old_secret_0001"


def headers(header: str) -> dict[str, str]:
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def parse(adapter: StripeAdapter, fake: FakeStripe, event: dict[str, Any]) -> Any:
    body, header = fake.signed(event)
    return adapter.parse_any_notification(headers(header), body)


async def open_session(adapter: StripeAdapter, order_id: str) -> None:
    await adapter.create_payment(make_order(order_id, "10.00"))


async def test_completed_and_paid(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await open_session(adapter, "ord-n-paid")
    event = fake.pay("ord-n-paid")
    seen = parse(adapter, fake, event)
    assert isinstance(seen, PaymentObservation)
    assert (seen.order_id, seen.state, seen.amount, seen.currency) == (
        "ord-n-paid",
        ProviderPaymentState.PAID,
        Decimal("10.00"),
        "USD",
    )
    assert (seen.source, seen.notification_id) == ("notification", event["id"])
    assert seen.provider_trade_no == fake.session_for("ord-n-paid")["id"]
    assert seen.occurred_at is not None


async def test_each_payment_event(adapter: StripeAdapter, fake: FakeStripe) -> None:
    for order_id in ("ord-n-1", "ord-n-2", "ord-n-3", "ord-n-4"):
        await open_session(adapter, order_id)
    cases = [
        (fake.decline("ord-n-1"), ProviderPaymentState.PENDING),  # the payer may try again
        (fake.pay_later("ord-n-2"), ProviderPaymentState.PENDING),  # a bank debit settling
        (fake.settle_later("ord-n-2", succeeded=True), ProviderPaymentState.PAID),
        (fake.pay_later("ord-n-3"), ProviderPaymentState.PENDING),
        (fake.settle_later("ord-n-3", succeeded=False), ProviderPaymentState.FAILED),
        (fake.expire("ord-n-4"), ProviderPaymentState.CLOSED),
    ]
    for event, state in cases:
        seen = parse(adapter, fake, event)
        assert isinstance(seen, PaymentObservation) and seen.state is state, event["type"]
        assert seen.notification_id == event["id"]
        assert (seen.amount is not None) == (state is ProviderPaymentState.PAID)


async def test_refund_events(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await open_session(adapter, "ord-n-rf")
    fake.pay("ord-n-rf")
    fake.refund_status = "pending"
    await adapter.create_refund(
        RefundRequest(
            order_id="ord-n-rf", refund_id="rf-n-1", amount=Decimal("2.50"), currency="USD"
        )
    )
    event = fake.settle_refund("rf-n-1", "succeeded")
    for kind in ("refund.updated", "refund.created", "charge.refund.updated"):
        seen = parse(adapter, fake, {**event, "type": kind})
        assert isinstance(seen, RefundObservation)
        assert (seen.refund_id, seen.order_id, seen.state) == (
            "rf-n-1",
            "ord-n-rf",
            ProviderRefundState.SUCCEEDED,
        )
        assert (seen.amount, seen.currency, seen.notification_id) == (
            Decimal("2.50"),
            "USD",
            event["id"],
        )
    # parse_notification is for payments only.
    body, header = fake.signed(event)
    with pytest.raises(MalformedNotification):
        adapter.parse_notification(headers(header), body)


def test_other_event_types_are_ignored(adapter: StripeAdapter, fake: FakeStripe) -> None:
    event = fake.event("customer.created", {"id": "cus_1", "object": "customer"})
    with pytest.raises(IgnoredEvent) as caught:
        parse(adapter, fake, event)
    answer = adapter.refusal(caught.value.http_status, str(caught.value))
    assert answer.status_code == 200
    assert json.loads(answer.body)["received"] is True


def test_objects_without_a_tempay_order_are_ignored(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    session: dict[str, Any] = {"id": "cs_x", "object": "checkout.session", "status": "complete"}
    session |= {"payment_status": "paid", "amount_total": 100, "currency": "usd", "metadata": {}}
    for event in (
        fake.event("checkout.session.completed", session),
        fake.event("payment_intent.payment_failed", {"id": "pi_x", "metadata": {}}),
        fake.event("refund.updated", {"id": "re_x", "status": "succeeded", "metadata": {}}),
    ):
        with pytest.raises(IgnoredEvent):
            parse(adapter, fake, event)


def test_signed_session_in_an_unknown_state_is_malformed(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    session = {"id": "cs_1", "client_reference_id": "o-1", "status": "weird"}
    with pytest.raises(MalformedNotification, match="weird"):
        parse(adapter, fake, fake.event("checkout.session.completed", session))


def test_bad_signatures_are_unverified(adapter: StripeAdapter, fake: FakeStripe) -> None:
    event = fake.event("checkout.session.expired", {"id": "cs_1"})
    body, header = fake.signed(event)
    for hdrs, raw in [
        ({}, body),
        (headers("t=1"), body),
        (headers(header), body + b" "),
        (headers(fake.signed(event, secrets=["whsec_other_secret"])[1]), body),
        (headers(fake.signed(event, timestamp=int(time.time()) - 301)[1]), body),
    ]:
        with pytest.raises(UnverifiedNotification):
            adapter.parse_any_notification(hdrs, raw)


def test_rotated_secrets(fake: FakeStripe) -> None:
    adapter = StripeAdapter("sk_test_x", [WEBHOOK_SECRET, OLD_SECRET])
    event = fake.event("checkout.session.expired", {"id": "cs_1", "client_reference_id": "o-1"})
    for secrets in ([WEBHOOK_SECRET], [OLD_SECRET], [OLD_SECRET, WEBHOOK_SECRET]):
        body, header = fake.signed(event, secrets=secrets)
        seen = adapter.parse_any_notification(headers(header), body)
        assert seen.state is ProviderPaymentState.CLOSED and seen.order_id == "o-1"


def test_signed_garbage_is_malformed(adapter: StripeAdapter, fake: FakeStripe) -> None:
    for raw in (b"not json", b"[1, 2]", b'{"id": "evt_1", "type": "x"}', b"\xff\xfe"):
        header = fake.signed({})[1].split(",")[0]  # a fresh t=
        t = int(header.removeprefix("t="))
        sig = compute_signature(raw, t, WEBHOOK_SECRET)
        with pytest.raises(MalformedNotification):
            adapter.parse_any_notification(headers(f"t={t},v1={sig}"), raw)


def test_acknowledgement(adapter: StripeAdapter) -> None:
    ack = adapter.acknowledgement()
    assert (ack.status_code, json.loads(ack.body), ack.media_type) == (
        200,
        {"received": True},
        "application/json",
    )


# The webhook's answers that come before Temporal is involved (no Temporal here: the
# service connects lazily, and only a verified payment or withdrawal event needs it).


@pytest.fixture
async def webhook(adapter: StripeAdapter, tmp_path: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, temporal_address="127.0.0.1:1")
    app = create_webhook_app(settings, {"stripe": adapter})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
        yield client


async def test_webhook_answers(
    webhook: httpx.AsyncClient, adapter: StripeAdapter, fake: FakeStripe
) -> None:
    event = fake.event("checkout.session.expired", {"id": "cs_1", "client_reference_id": "o-1"})
    body, header = fake.signed(event)
    missing = await webhook.post("/notify/stripe", content=body)
    assert missing.status_code == 401 and "error" in missing.json()
    stale = fake.signed(event, timestamp=int(time.time()) - 400)[1]
    assert (
        await webhook.post("/notify/stripe", content=body, headers=headers(stale))
    ).status_code == 401
    _, sig_for_garbage = fake.signed(event)
    t = int(sig_for_garbage.split(",")[0].removeprefix("t="))
    sig = compute_signature(b"{not json", t, WEBHOOK_SECRET)
    bad = await webhook.post(
        "/notify/stripe", content=b"{not json", headers=headers(f"t={t},v1={sig}")
    )
    assert bad.status_code == 400
    other = fake.event("invoice.paid", {"id": "in_1"})
    body, header = fake.signed(other)
    ignored = await webhook.post("/notify/stripe", content=body, headers=headers(header))
    assert ignored.status_code == 200 and ignored.json()["received"] is True


async def test_webhook_answers_a_huge_timestamp_with_401(
    webhook: httpx.AsyncClient, fake: FakeStripe
) -> None:
    # 5,000 digits: past Python's 4,300-digit int() limit, which used to answer 500.
    body, header = fake.signed(fake.event("checkout.session.expired", {"id": "cs_1"}))
    huge = "t=" + "9" * 5000 + "," + header.split(",", 1)[1]
    answer = await webhook.post("/notify/stripe", content=body, headers=headers(huge))
    assert answer.status_code == 401 and "error" in answer.json()
