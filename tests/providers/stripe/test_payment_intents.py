"""The stripe_payment_intent channel against the fake Stripe API over real HTTP: the create
request and its ClientSecretAction, finding the PaymentIntent again, each status as the core
sees it, cancel at expiry, events, refunds and the statement; and the client_secret kept out
of every log line and error."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.stripe import PROVIDER
from providers.stripe.adapter import (
    CHANNELS,
    DEFAULT_CHANNEL,
    INTENT_STATUS_MAP,
    PAYMENT_INTENT,
    IgnoredEvent,
    StripeAdapter,
)
from tempay.channels import ClientSecretAction, PayerActionKind, RedirectAction
from tempay.domain import (
    PaymentObservation,
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundRequest,
)
from tempay.errors import (
    MalformedNotification,
    ProviderError,
    ProviderRefused,
    ProviderRejected,
    UnverifiedNotification,
)
from tempay.statements import StatementLine, StatementLineKind
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import API_KEY, make_order

INTENTS = "/v1/payment_intents"


def intent_order(order_id: str, amount: str = "10.00", currency: str = "USD") -> PaymentOrder:
    return make_order(order_id, amount, currency, channel=PAYMENT_INTENT)


async def created(adapter: StripeAdapter, order_id: str, amount: str = "10.00") -> str:
    """The order's PaymentIntent made; its client_secret, as the payer's page gets it."""
    made = await adapter.create_payment(intent_order(order_id, amount))
    assert isinstance(made.payer_action, ClientSecretAction)
    return made.payer_action.client_secret


def headers(header: str) -> dict[str, str]:
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def parse(adapter: StripeAdapter, fake: FakeStripe, event: dict[str, Any]) -> Any:
    body, header = fake.signed(event)
    return adapter.parse_any_notification(headers(header), body)


# ---- the channels ------------------------------------------------------------------------


def test_the_spec_declares_exactly_the_adapters_channels() -> None:
    assert tuple(c.name for c in PROVIDER.channels) == CHANNELS
    assert PROVIDER.default_channel == DEFAULT_CHANNEL == "stripe_checkout"
    kinds = {c.name: c.action for c in PROVIDER.channels}
    assert kinds == {
        "stripe_checkout": PayerActionKind.REDIRECT,
        "stripe_payment_intent": PayerActionKind.CLIENT_SECRET,
    }
    assert all(not c.needs for c in PROVIDER.channels)  # Stripe needs no payer details


async def test_an_order_without_a_channel_stays_checkout(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = make_order("ord-pi-none")
    assert order.channel is None
    made = await adapter.create_payment(order)
    assert isinstance(made.payer_action, RedirectAction) and made.payment_url
    assert made.provider_trade_no.startswith("cs_") and fake.intents == {}


async def test_an_order_open_from_before_channels_stays_checkout_whatever_it_names(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    """Before Stripe had channels it ignored `channel`: an order still open from then may
    name another provider's (`alipay_wap`). Its status query and close must still find its
    Checkout Session, or it could be paid after tempay gave up on it."""
    order = make_order("ord-pi-old", channel="alipay_wap")
    made = await adapter.create_payment(order)
    assert isinstance(made.payer_action, RedirectAction)
    assert made.provider_trade_no.startswith("cs_") and fake.intents == {}
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.PENDING
    closed = await adapter.close_payment(order)
    assert closed.closed


# ---- create ------------------------------------------------------------------------------


async def test_create_sends_the_payment_intent_and_answers_its_client_secret(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = intent_order("ord-pi-create", "12.34")
    made = await adapter.create_payment(order)
    intent = fake.intent_for("ord-pi-create")
    # What Stripe received, as the fake parsed and checked it.
    assert (intent["amount"], intent["currency"]) == (1234, "usd")
    assert intent["automatic_payment_methods"] == {"enabled": True}
    assert intent["description"] == "Order ord-pi-create"
    assert intent["metadata"] == {
        "order_id": "ord-pi-create",
        "tempay_kind": "payment",
        "tempay_channel": "stripe_payment_intent",
    }
    assert intent["status"] == "requires_payment_method"
    assert fake.calls == [("POST", INTENTS)]
    assert "tempay-create-ord-pi-create" in fake.stored
    # What the payer's page gets: the secret only; there is no URL.
    assert made.payer_action == ClientSecretAction(client_secret=intent["client_secret"])
    assert made.payment_url is None and made.provider_trade_no == intent["id"]
    assert fake.sessions == {}


async def test_a_payment_intent_needs_no_return_url(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = intent_order("ord-pi-noreturn").model_copy(update={"return_url": ""})
    made = await adapter.create_payment(order)
    assert made.provider_trade_no == fake.intent_for("ord-pi-noreturn")["id"]


async def test_create_again_is_the_same_payment_intent(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    first = await adapter.create_payment(intent_order("ord-pi-twice"))
    second = await adapter.create_payment(intent_order("ord-pi-twice"))
    assert first == second and len(fake.intents) == 1


async def test_same_order_id_with_other_terms_or_channel_is_refused(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await adapter.create_payment(intent_order("ord-pi-terms", "10.00"))
    with pytest.raises(ProviderRejected, match="idempotency_error"):
        await adapter.create_payment(intent_order("ord-pi-terms", "11.00"))
    # One order id, one object at Stripe: the key of a session is refused for an intent.
    await adapter.create_payment(make_order("ord-pi-was-checkout"))
    with pytest.raises(ProviderRejected, match="idempotency_error"):
        await adapter.create_payment(intent_order("ord-pi-was-checkout"))
    with pytest.raises(ProviderRejected, match="idempotency_error"):
        await adapter.create_payment(make_order("ord-pi-terms"))
    assert len(fake.intents) == 1 and len(fake.sessions) == 1


async def test_stripe_refusals_carry_stripes_code(adapter: StripeAdapter, fake: FakeStripe) -> None:
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_payment(intent_order("ord-pi-small", "0.49"))
    assert caught.value.code == "amount_too_small" and fake.intents == {}


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"currency": "usd"}, "parameter_missing"),
        ({"amount": "10.5", "currency": "usd"}, "parameter_invalid_integer"),
        ({"amount": "1000", "currency": "USD"}, "parameter_invalid"),
        ({"amount": "1000", "currency": "usd", "confirm": "true"}, "parameter_unknown"),
        (
            {"amount": "1000", "currency": "usd", "metadata[" + "k" * 41 + "]": "v"},
            "parameter_invalid",
        ),
        (
            {"amount": "1000", "currency": "usd", "metadata[order_id]": "v" * 501},
            "parameter_invalid",
        ),
        (
            {"amount": "1000", "currency": "usd", "automatic_payment_methods[enabled]": "yes"},
            "parameter_invalid_boolean",
        ),
        ({"amount": "100000000", "currency": "usd"}, "amount_too_large"),
    ],
)
async def test_the_fake_refuses_what_stripe_refuses(
    fake: FakeStripe, form: dict[str, str], code: str
) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        answer = await client.post(
            INTENTS,
            data=form,
            headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": str(form)},
        )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert fake.intents == {}


async def test_the_fake_cancels_and_finds_only_as_stripe_does(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    fake.confirm_intent(await created(adapter, "ord-pi-fake"))
    intent_id = fake.intent_for("ord-pi-fake")["id"]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=auth) as client:
        cancel = await client.post(
            f"{INTENTS}/{intent_id}/cancel", headers={"Idempotency-Key": "k1"}
        )
        assert cancel.status_code == 400
        assert cancel.json()["error"]["code"] == "payment_intent_unexpected_state"
        missing = await client.get(f"{INTENTS}/pi_nope")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "resource_missing")
        unkeyed = await client.post(INTENTS, data={"amount": "1000", "currency": "usd"})
        assert unkeyed.status_code == 400
        wrong_key = await client.get(
            f"{INTENTS}/{intent_id}", headers={"Authorization": "Bearer x"}
        )
        assert wrong_key.status_code == 401
    with pytest.raises(Exception, match="does not match any associated PaymentIntent"):
        fake.confirm_intent(f"{intent_id}_secret_guessed")
    assert fake.intent_for("ord-pi-fake")["status"] == "succeeded"


# ---- query: each status as the core sees it -----------------------------------------------


# Written out, not read from the adapter's map: a wrong entry there must fail here. Only
# `succeeded` is money; no status is FAILED (a failed attempt can be retried).
EXPECTED_STATES = {
    "requires_payment_method": ProviderPaymentState.PENDING,
    "requires_confirmation": ProviderPaymentState.PENDING,
    "requires_action": ProviderPaymentState.PENDING,
    "processing": ProviderPaymentState.PENDING,
    "requires_capture": ProviderPaymentState.PENDING,
    "succeeded": ProviderPaymentState.PAID,
    "canceled": ProviderPaymentState.CLOSED,
}


def test_every_status_stripe_documents_is_mapped() -> None:
    assert set(INTENT_STATUS_MAP) == set(EXPECTED_STATES)


@pytest.mark.parametrize(("status", "state"), sorted(EXPECTED_STATES.items()))
async def test_query_maps_each_status(
    adapter: StripeAdapter, fake: FakeStripe, status: str, state: ProviderPaymentState
) -> None:
    await created(adapter, "ord-pi-status")
    intent = fake.intent_for("ord-pi-status")
    intent["status"] = status
    if status == "succeeded":
        intent["amount_received"] = 1000
    seen = await adapter.query_payment(intent_order("ord-pi-status"))
    assert seen.state is state
    assert (seen.order_id, seen.source, seen.provider_trade_no) == (
        "ord-pi-status",
        "status_query",
        intent["id"],
    )
    assert (seen.amount is not None) == (state is ProviderPaymentState.PAID)


def test_no_payment_intent_status_is_failed() -> None:
    # Stripe hands a failed PaymentIntent back for another attempt: FAILED (terminal in
    # tempay) would turn the payer's next card into late money.
    assert ProviderPaymentState.FAILED not in INTENT_STATUS_MAP.values()
    assert INTENT_STATUS_MAP["requires_payment_method"] is ProviderPaymentState.PENDING


async def test_query_of_an_unknown_status_is_an_error_not_a_guess(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await created(adapter, "ord-pi-weird")
    fake.intent_for("ord-pi-weird")["status"] = "exploded"
    with pytest.raises(ProviderError, match="unknown PaymentIntent status 'exploded'"):
        await adapter.query_payment(intent_order("ord-pi-weird"))


async def test_query_finds_the_intent_without_creating_another(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await created(adapter, "ord-pi-find")
    for _ in range(3):
        await adapter.query_payment(intent_order("ord-pi-find"))
    assert len(fake.intents) == 1
    assert ("GET", f"{INTENTS}/{fake.intent_for('ord-pi-find')['id']}") in fake.calls


async def test_a_declined_card_is_still_pending_and_the_next_card_pays(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    secret = await created(adapter, "ord-pi-declined")
    order = intent_order("ord-pi-declined")
    fake.decline_intent(secret)
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.PENDING
    fake.confirm_intent(secret)  # the payer's second card
    paid = await adapter.query_payment(order)
    assert (paid.state, paid.amount, paid.currency) == (
        ProviderPaymentState.PAID,
        Decimal("10.00"),
        "USD",
    )


async def test_query_reports_what_was_received(adapter: StripeAdapter, fake: FakeStripe) -> None:
    secret = await created(adapter, "ord-pi-short")
    fake.confirm_intent(secret, amount=999)
    seen = await adapter.query_payment(intent_order("ord-pi-short"))
    assert (seen.state, seen.amount) == (ProviderPaymentState.PAID, Decimal("9.99"))


async def test_a_delayed_method_is_pending_until_it_settles(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    ok, bad = await created(adapter, "ord-pi-debit-ok"), await created(adapter, "ord-pi-debit-bad")
    fake.process_intent(ok)
    fake.process_intent(bad)
    assert (await adapter.query_payment(intent_order("ord-pi-debit-ok"))).state is (
        ProviderPaymentState.PENDING
    )
    fake.settle_intent(ok, succeeded=True)
    fake.settle_intent(bad, succeeded=False)
    paid = await adapter.query_payment(intent_order("ord-pi-debit-ok"))
    assert paid.state is ProviderPaymentState.PAID
    # A failed debit hands the PaymentIntent back, like a declined card: still payable.
    assert (await adapter.query_payment(intent_order("ord-pi-debit-bad"))).state is (
        ProviderPaymentState.PENDING
    )


# ---- close -------------------------------------------------------------------------------


async def test_close_cancels_the_payment_intent(adapter: StripeAdapter, fake: FakeStripe) -> None:
    secret = await created(adapter, "ord-pi-close")
    order = intent_order("ord-pi-close")
    fake.decline_intent(secret)
    outcome = await adapter.close_payment(order)
    assert outcome.closed and outcome.observation is not None
    assert (outcome.observation.state, outcome.observation.source) == (
        ProviderPaymentState.CLOSED,
        "close",
    )
    intent = fake.intent_for("ord-pi-close")
    assert (intent["status"], intent["cancellation_reason"]) == ("canceled", "abandoned")
    assert ("POST", f"{INTENTS}/{intent['id']}/cancel") in fake.calls
    # Closing again (an activity retry) changes nothing; the payer can no longer pay.
    assert (await adapter.close_payment(order)).closed
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.CLOSED
    with pytest.raises(Exception, match="status is canceled"):
        fake.confirm_intent(secret)


async def test_close_of_a_paid_intent_reports_paid(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    secret = await created(adapter, "ord-pi-close-paid")
    fake.confirm_intent(secret)
    outcome = await adapter.close_payment(intent_order("ord-pi-close-paid"))
    assert not outcome.closed and outcome.observation is not None
    assert (outcome.observation.state, outcome.observation.amount) == (
        ProviderPaymentState.PAID,
        Decimal("10.00"),
    )
    assert outcome.observation.source == "close"
    assert fake.intent_for("ord-pi-close-paid")["status"] == "succeeded"


async def test_close_of_a_processing_intent_is_not_closed(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    secret = await created(adapter, "ord-pi-close-debit")
    fake.process_intent(secret)
    outcome = await adapter.close_payment(intent_order("ord-pi-close-debit"))
    assert not outcome.closed and outcome.observation is not None
    assert outcome.observation.state is ProviderPaymentState.PENDING


# ---- events ------------------------------------------------------------------------------


async def test_payment_intent_events_map_by_the_intents_status(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    secret = await created(adapter, "ord-pi-events")
    intent_id = fake.intent_for("ord-pi-events")["id"]
    cases = [
        (fake.decline_intent(secret), ProviderPaymentState.PENDING),
        (fake.process_intent(secret), ProviderPaymentState.PENDING),
        (fake.settle_intent(secret, succeeded=False), ProviderPaymentState.PENDING),
        (fake.confirm_intent(secret), ProviderPaymentState.PAID),
    ]
    for event, state in cases:
        seen = parse(adapter, fake, event)
        assert isinstance(seen, PaymentObservation) and seen.state is state, event["type"]
        assert (seen.order_id, seen.provider_trade_no) == ("ord-pi-events", intent_id)
        assert (seen.source, seen.notification_id) == ("notification", event["id"])
        assert (seen.amount is not None) == (state is ProviderPaymentState.PAID)
    assert (seen.amount, seen.currency) == (Decimal("10.00"), "USD")


async def test_a_canceled_event_is_closed(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await created(adapter, "ord-pi-canceled")
    await adapter.close_payment(intent_order("ord-pi-canceled"))
    event = fake.event("payment_intent.canceled", dict(fake.intent_for("ord-pi-canceled")))
    assert parse(adapter, fake, event).state is ProviderPaymentState.CLOSED


async def test_checkouts_own_payment_intent_events_do_not_settle_the_order(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await adapter.create_payment(make_order("ord-pi-checkout"))
    declined = fake.decline("ord-pi-checkout")
    seen = parse(adapter, fake, declined)
    # PENDING news for the right order, naming no trade: the order knows its session's.
    assert (seen.order_id, seen.state, seen.provider_trade_no) == (
        "ord-pi-checkout",
        ProviderPaymentState.PENDING,
        None,
    )
    fake.pay("ord-pi-checkout")
    intent = fake.intents[fake.session_for("ord-pi-checkout")["payment_intent"]]
    for kind in ("payment_intent.succeeded", "payment_intent.canceled"):
        with pytest.raises(IgnoredEvent, match="settles by its session's events"):
            parse(adapter, fake, fake.event(kind, dict(intent)))


async def test_malformed_or_foreign_intent_events(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await created(adapter, "ord-pi-bad-event")
    intent = dict(fake.intent_for("ord-pi-bad-event"))
    weird = fake.event("payment_intent.succeeded", {**intent, "status": "exploded"})
    with pytest.raises(MalformedNotification, match="unknown PaymentIntent status"):
        parse(adapter, fake, weird)
    no_order = {**intent, "metadata": {"tempay_channel": "stripe_payment_intent"}}
    with pytest.raises(IgnoredEvent):
        parse(adapter, fake, fake.event("payment_intent.succeeded", no_order))
    # A succeeded PaymentIntent's event, tampered on the way: 401, nothing mapped.
    paid = fake.event("payment_intent.succeeded", {**intent, "status": "succeeded"})
    body, header = fake.signed(paid)
    with pytest.raises(UnverifiedNotification):
        adapter.parse_any_notification(headers(header), body.replace(b"1000", b"9000"))


# ---- refunds -----------------------------------------------------------------------------


async def test_a_payment_intent_payment_is_refunded(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    fake.confirm_intent(await created(adapter, "ord-pi-rf"))
    request = RefundRequest(
        order_id="ord-pi-rf", refund_id="rf-pi-1", amount=Decimal("4.00"), currency="USD"
    )
    answer = await adapter.create_refund(request)
    assert (answer.state, answer.amount) == (ProviderRefundState.SUCCEEDED, Decimal("4.00"))
    [stored] = fake.refunds.values()
    assert stored["payment_intent"] == fake.intent_for("ord-pi-rf")["id"]
    seen = await adapter.query_refund(request)
    assert seen is not None and seen.provider_refund_no == stored["id"]


async def test_an_unpaid_payment_intent_is_not_refunded(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    fake.decline_intent(await created(adapter, "ord-pi-rf-unpaid"))
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(
            RefundRequest(
                order_id="ord-pi-rf-unpaid", refund_id="rf-pi-2", amount=Decimal(1), currency="USD"
            )
        )
    assert caught.value.code == "payment_not_found" and fake.refunds == {}


# ---- the statement -----------------------------------------------------------------------

DAY = date(2024, 5, 1)


def at(hour: int, minute: int = 0, day: int = 1) -> int:
    return int(datetime(2024, 5, day, hour, minute, tzinfo=UTC).timestamp())


async def test_the_statement_lists_payment_intent_payments_once(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    fake.max_page_size = 2  # the PaymentIntents list is followed page by page
    fake.confirm_intent(await created(adapter, "ord-pi-day", "25.00"), at=at(10))
    fake.confirm_intent(await created(adapter, "ord-pi-other-day"), at=at(10, day=2))
    await created(adapter, "ord-pi-unpaid")
    # A Checkout payment: its PaymentIntent is in the list too, and is the session's line.
    await adapter.create_payment(make_order("ord-pi-checkout-day"))
    fake.pay("ord-pi-checkout-day", at=at(11))
    # A PaymentIntent made outside tempay and Checkout: not tempay's statement.
    outsider = {**fake.intent_for("ord-pi-day"), "id": "pi_outside_1", "metadata": {}}
    fake.intents[outsider["id"]] = outsider
    for obj in [*fake.intents.values(), *fake.sessions.values()]:
        obj["created"] = at(9)
    refund = await adapter.create_refund(
        RefundRequest(
            order_id="ord-pi-day", refund_id="rf-pi-day", amount=Decimal(5), currency="USD"
        )
    )
    [stored] = fake.refunds.values()
    stored["created"] = at(12)

    lines = [line async for line in adapter.statement(DAY)]

    session = fake.session_for("ord-pi-checkout-day")
    assert lines == [
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-pi-checkout-day",
            provider_trade_no=session["id"],
            amount=Decimal("10.00"),
            currency="USD",
            at=datetime.fromtimestamp(at(11), UTC),
        ),
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-pi-day",
            provider_trade_no=fake.intent_for("ord-pi-day")["id"],
            amount=Decimal("25.00"),
            currency="USD",
            at=datetime.fromtimestamp(at(10), UTC),
        ),
        StatementLine(
            kind=StatementLineKind.REFUND,
            order_id="ord-pi-day",
            provider_trade_no=None,
            refund_id="rf-pi-day",
            provider_refund_no=refund.provider_refund_no,
            amount=Decimal("5.00"),
            currency="USD",
            at=datetime.fromtimestamp(at(12), UTC),
        ),
    ]
    assert [p for m, p in fake.calls if m == "GET"].count(INTENTS) >= 3


# ---- the client_secret stays with the payer ------------------------------------------------


async def test_the_client_secret_is_in_no_log_line_or_error(
    adapter: StripeAdapter, fake: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    secret = await created(adapter, "ord-pi-secret")
    order = intent_order("ord-pi-secret")
    await adapter.create_payment(order)
    await adapter.query_payment(order)
    fake.intent_for("ord-pi-secret")["status"] = "exploded"  # an answer the adapter refuses
    for call in (adapter.query_payment, adapter.close_payment):
        with pytest.raises(ProviderError) as caught:
            await call(order)
        errors.append(str(caught.value))
    fake.intent_for("ord-pi-secret")["status"] = "requires_payment_method"
    fake.fail_next[INTENTS] = 500
    with pytest.raises(ProviderError) as caught:
        await adapter.query_payment(order)
    errors.append(str(caught.value))
    with pytest.raises(ProviderRejected) as caught:
        await adapter.create_payment(order.model_copy(update={"amount": Decimal("11.00")}))
    errors.append(str(caught.value))
    intent = dict(fake.intent_for("ord-pi-secret"))
    body, header = fake.signed(fake.event("payment_intent.succeeded", intent))
    with pytest.raises(UnverifiedNotification) as unverified:
        adapter.parse_any_notification(headers(header), body + b" ")
    errors.append(str(unverified.value))
    weird = fake.event("payment_intent.succeeded", {**intent, "status": "exploded"})
    body, header = fake.signed(weird)
    with pytest.raises(MalformedNotification) as malformed:
        adapter.parse_any_notification(headers(header), body)
    errors.append(str(malformed.value))
    assert caplog.records  # httpx logged every call: the lines were there to leak into
    assert secret not in caplog.text
    assert all(secret not in message for message in errors), errors
    assert secret not in repr(adapter)
