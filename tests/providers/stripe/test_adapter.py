"""The Stripe adapter against the fake Stripe API over real HTTP: payments and refunds."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from providers.stripe.adapter import StripeAdapter, from_minor_units, to_minor_units
from tempay.domain import (
    PaymentOrder,
    ProviderPaymentState,
    ProviderRefundState,
    RefundRequest,
    SettlementTiming,
)
from tempay.errors import ProviderError, ProviderOutcomeUnknown, ProviderRefused, ProviderRejected
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import API_KEY, WEBHOOK_SECRET, make_order
from tests.support.stack import bound_socket, url_of

SESSIONS = "/v1/checkout/sessions"


def refund(order_id: str, refund_id: str, amount: str = "4.00", currency: str = "USD"):
    return RefundRequest(
        order_id=order_id, refund_id=refund_id, amount=Decimal(amount), currency=currency
    )


# ---- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10.00", "USD", 1000),
        ("0.01", "EUR", 1),
        ("500", "JPY", 500),
        ("1234567.89", "USD", 123456789),
    ],
)
def test_minor_units_round_trip_exactly(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == minor
    back, code = from_minor_units(minor, currency.lower())
    assert (back, code) == (Decimal(amount), currency) and str(back) == amount


def test_minor_units_never_round() -> None:
    with pytest.raises(ProviderRejected):
        to_minor_units(Decimal("10.001"), "USD")
    with pytest.raises(Exception, match="integer"):
        from_minor_units(10.5, "usd")


# ---- create ----------------------------------------------------------------------------------


async def test_create_makes_a_checkout_session(adapter: StripeAdapter, fake: FakeStripe) -> None:
    created = await adapter.create_payment(make_order("ord-create", "12.34"))
    session = fake.sessions[created.provider_trade_no]
    assert created.payment_url == session["url"] and created.provider_trade_no.startswith("cs_")
    assert session["mode"] == "payment" and session["status"] == "open"
    assert (session["amount_total"], session["currency"]) == (1234, "usd")
    assert session["client_reference_id"] == "ord-create"
    assert session["metadata"]["order_id"] == "ord-create"
    assert session["_intent_metadata"] == {"order_id": "ord-create"}
    assert session["success_url"] == "https://shop.example/orders/ord-create"
    assert "tempay-create-ord-create" in fake.stored


async def test_create_in_a_zero_decimal_currency(adapter: StripeAdapter, fake: FakeStripe) -> None:
    created = await adapter.create_payment(make_order("ord-jpy", "500", "JPY"))
    session = fake.sessions[created.provider_trade_no]
    assert (session["amount_total"], session["currency"]) == (500, "jpy")


async def test_create_again_is_the_same_session(adapter: StripeAdapter, fake: FakeStripe) -> None:
    first = await adapter.create_payment(make_order("ord-twice"))
    second = await adapter.create_payment(make_order("ord-twice"))
    assert first == second and len(fake.sessions) == 1


async def test_same_order_id_with_other_terms_is_refused(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await adapter.create_payment(make_order("ord-terms", "10.00"))
    with pytest.raises(ProviderRejected, match="idempotency_error"):
        await adapter.create_payment(make_order("ord-terms", "11.00"))
    assert len(fake.sessions) == 1


async def test_create_needs_a_return_url(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = make_order("ord-noreturn").model_copy(update={"return_url": ""})
    with pytest.raises(ProviderRejected, match="TEMPAY_STRIPE_RETURN_URL"):
        await adapter.create_payment(order)
    assert fake.calls == []
    with_default = StripeAdapter(
        API_KEY, [WEBHOOK_SECRET], api_base=fake.base_url, return_url="https://shop.example/"
    )
    try:
        created = await with_default.create_payment(order)
    finally:
        await with_default.aclose()
    assert fake.sessions[created.provider_trade_no]["success_url"] == "https://shop.example/"


async def test_orders_that_outlive_the_create_key_are_refused(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = make_order("ord-long").model_copy(
        update={"timing": SettlementTiming(expires_after=timedelta(hours=23))}
    )
    with pytest.raises(ProviderRejected, match="within"):
        await adapter.create_payment(order)
    assert fake.sessions == {}


# ---- query -----------------------------------------------------------------------------------


async def created(adapter: StripeAdapter, order_id: str, amount: str = "10.00") -> PaymentOrder:
    order = make_order(order_id, amount)
    await adapter.create_payment(order)
    return order


async def test_query_open_session_is_pending(adapter: StripeAdapter) -> None:
    order = await created(adapter, "ord-open")
    seen = await adapter.query_payment(order)
    assert seen.state is ProviderPaymentState.PENDING
    assert (seen.order_id, seen.provider, seen.source) == ("ord-open", "stripe", "status_query")
    assert seen.amount is None and str(seen.provider_trade_no).startswith("cs_")


async def test_query_finds_the_session_without_creating_another(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = await created(adapter, "ord-find")
    for _ in range(3):
        await adapter.query_payment(order)
    assert len(fake.sessions) == 1
    assert ("GET", f"{SESSIONS}/{fake.session_for('ord-find')['id']}") in fake.calls


async def test_query_paid_session(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = await created(adapter, "ord-paid", "10.00")
    fake.pay("ord-paid")
    seen = await adapter.query_payment(order)
    assert seen.state is ProviderPaymentState.PAID
    assert (seen.amount, seen.currency) == (Decimal("10.00"), "USD")
    assert seen.provider_trade_no == fake.session_for("ord-paid")["id"]


async def test_query_reports_what_was_received(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = await created(adapter, "ord-short", "10.00")
    fake.pay("ord-short", amount=999)
    seen = await adapter.query_payment(order)
    assert (seen.state, seen.amount, seen.currency) == (
        ProviderPaymentState.PAID,
        Decimal("9.99"),
        "USD",
    )


async def test_query_after_a_declined_card_is_still_pending(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = await created(adapter, "ord-declined")
    fake.decline("ord-declined")
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.PENDING
    fake.pay("ord-declined")  # the payer's second card
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.PAID


async def test_query_delayed_method(adapter: StripeAdapter, fake: FakeStripe) -> None:
    ok = await created(adapter, "ord-debit-ok")
    bad = await created(adapter, "ord-debit-bad")
    fake.pay_later("ord-debit-ok")
    fake.pay_later("ord-debit-bad")
    assert (await adapter.query_payment(ok)).state is ProviderPaymentState.PENDING
    fake.settle_later("ord-debit-ok", succeeded=True)
    fake.settle_later("ord-debit-bad", succeeded=False)
    paid = await adapter.query_payment(ok)
    assert (paid.state, paid.amount) == (ProviderPaymentState.PAID, Decimal("10.00"))
    assert (await adapter.query_payment(bad)).state is ProviderPaymentState.FAILED


async def test_query_expired_session_is_closed(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = await created(adapter, "ord-expired")
    fake.expire("ord-expired")
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.CLOSED


# ---- close -----------------------------------------------------------------------------------


async def test_close_expires_an_open_session(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = await created(adapter, "ord-close")
    outcome = await adapter.close_payment(order)
    assert outcome.closed and outcome.observation is not None
    assert outcome.observation.state is ProviderPaymentState.CLOSED
    assert fake.session_for("ord-close")["status"] == "expired"
    # Closing again (an activity retry) changes nothing.
    assert (await adapter.close_payment(order)).closed
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.CLOSED


async def test_close_of_a_paid_session_reports_paid(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    order = await created(adapter, "ord-close-paid")
    fake.pay("ord-close-paid")
    outcome = await adapter.close_payment(order)
    assert not outcome.closed and outcome.observation is not None
    assert outcome.observation.state is ProviderPaymentState.PAID
    assert outcome.observation.amount == Decimal("10.00")
    assert outcome.observation.source == "close"
    assert fake.session_for("ord-close-paid")["status"] == "complete"


async def test_close_of_a_session_stripe_expired(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = await created(adapter, "ord-close-gone")
    fake.expire("ord-close-gone")
    assert (await adapter.close_payment(order)).closed


# ---- failures --------------------------------------------------------------------------------


async def test_stripe_down_is_a_retryable_error() -> None:
    sock = bound_socket()  # bound, never listening: connections are refused
    try:
        adapter = StripeAdapter(API_KEY, [WEBHOOK_SECRET], api_base=url_of(sock), timeout=2)
        order = make_order("ord-down")
        for call in (adapter.create_payment, adapter.query_payment, adapter.close_payment):
            with pytest.raises(ProviderError) as caught:
                await call(order)
            assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
        # Nothing was sent, so nothing moved: plain ProviderError, not an unknown outcome.
        with pytest.raises(ProviderError) as caught:
            await adapter.create_refund(refund("ord-down", "rf-down"))
        assert not isinstance(caught.value, ProviderOutcomeUnknown)
        await adapter.aclose()
    finally:
        sock.close()


async def test_server_error_on_query_is_retryable(adapter: StripeAdapter, fake: FakeStripe) -> None:
    order = await created(adapter, "ord-500")
    fake.fail_next[SESSIONS] = 500
    with pytest.raises(ProviderError) as caught:
        await adapter.query_payment(order)
    assert not isinstance(caught.value, ProviderRejected | ProviderOutcomeUnknown)
    assert (await adapter.query_payment(order)).state is ProviderPaymentState.PENDING


async def test_rate_limit_is_retryable(adapter: StripeAdapter, fake: FakeStripe) -> None:
    fake.fail_next[SESSIONS] = 429
    with pytest.raises(ProviderError) as caught:
        await adapter.create_payment(make_order("ord-429"))
    assert not isinstance(caught.value, ProviderRejected)
    await adapter.create_payment(make_order("ord-429"))
    assert len(fake.sessions) == 1


async def test_wrong_api_key_names_the_setting_not_the_key(fake: FakeStripe) -> None:
    wrong = "sk_test_wrong_key_987654321"
    adapter = StripeAdapter(wrong, [WEBHOOK_SECRET], api_base=fake.base_url)
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.create_payment(make_order("ord-key"))
    finally:
        await adapter.aclose()
    assert "TEMPAY_STRIPE_API_KEY" in str(caught.value) and wrong not in str(caught.value)
    assert not isinstance(caught.value, ProviderRejected)
    assert wrong not in repr(adapter) and fake.sessions == {}


# ---- refunds ---------------------------------------------------------------------------------


async def paid(adapter: StripeAdapter, fake: FakeStripe, order_id: str) -> None:
    await created(adapter, order_id, "10.00")
    fake.pay(order_id)


async def test_refund_and_query_it(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await paid(adapter, fake, "ord-rf")
    request = refund("ord-rf", "rf-1", "4.00")
    answer = await adapter.create_refund(request)
    assert answer.state is ProviderRefundState.SUCCEEDED and answer.source == "create"
    assert (answer.refund_id, answer.order_id) == ("rf-1", "ord-rf")
    assert (answer.amount, answer.currency) == (Decimal("4.00"), "USD")
    [stored] = fake.refunds.values()
    assert stored["payment_intent"] == fake.session_for("ord-rf")["payment_intent"]
    assert (stored["amount"], stored["metadata"]) == (
        400,
        {"refund_id": "rf-1", "order_id": "ord-rf"},
    )
    assert "tempay-refund-rf-1" in fake.stored
    seen = await adapter.query_refund(request)
    assert seen is not None and seen.source == "status_query"
    assert (seen.state, seen.amount, seen.provider_refund_no) == (
        ProviderRefundState.SUCCEEDED,
        Decimal("4.00"),
        answer.provider_refund_no,
    )


async def test_refund_states(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await paid(adapter, fake, "ord-rf-states")
    fake.refund_status = "pending"
    request = refund("ord-rf-states", "rf-slow", "1.00")
    assert (await adapter.create_refund(request)).state is ProviderRefundState.PENDING
    for stripe_status, state in [
        ("requires_action", ProviderRefundState.PENDING),
        ("failed", ProviderRefundState.FAILED),
        ("canceled", ProviderRefundState.FAILED),
        ("succeeded", ProviderRefundState.SUCCEEDED),
    ]:
        fake.settle_refund("rf-slow", stripe_status)
        seen = await adapter.query_refund(request)
        assert seen is not None and seen.state is state, stripe_status


async def test_refund_retry_refunds_once(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await paid(adapter, fake, "ord-rf-retry")
    request = refund("ord-rf-retry", "rf-retry", "3.00")
    first = await adapter.create_refund(request)
    second = await adapter.create_refund(request)
    assert first == second and len(fake.refunds) == 1


async def test_refund_whose_answer_is_lost(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await paid(adapter, fake, "ord-rf-lost")
    request = refund("ord-rf-lost", "rf-lost", "2.00")
    fake.lose_answer_next.add("/v1/refunds")
    with pytest.raises(ProviderOutcomeUnknown):
        await adapter.create_refund(request)
    # The money moved: the query sees it, and a retry with the same key returns it.
    seen = await adapter.query_refund(request)
    assert seen is not None and seen.state is ProviderRefundState.SUCCEEDED
    again = await adapter.create_refund(request)
    assert again.provider_refund_no == seen.provider_refund_no and len(fake.refunds) == 1


async def test_refund_that_times_out_is_an_unknown_outcome(fake: FakeStripe) -> None:
    adapter = StripeAdapter(API_KEY, [WEBHOOK_SECRET], api_base=fake.base_url, timeout=0.5)
    try:
        await paid(adapter, fake, "ord-rf-slow")
        request = refund("ord-rf-slow", "rf-slow-answer", "2.00")
        fake.slow_answer_next["/v1/refunds"] = 1.5
        with pytest.raises(ProviderOutcomeUnknown, match="ReadTimeout"):
            await adapter.create_refund(request)
        again = await adapter.create_refund(request)
    finally:
        await adapter.aclose()
    assert again.state is ProviderRefundState.SUCCEEDED and len(fake.refunds) == 1


async def test_refund_server_error_is_an_unknown_outcome(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await paid(adapter, fake, "ord-rf-500")
    fake.fail_next["/v1/refunds"] = 500
    with pytest.raises(ProviderOutcomeUnknown):
        await adapter.create_refund(refund("ord-rf-500", "rf-500"))


async def test_refund_over_the_remaining_amount_is_refused(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await paid(adapter, fake, "ord-rf-big")
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(refund("ord-rf-big", "rf-big", "10.01"))
    assert caught.value.code == "amount_too_large"
    assert caught.value.details["type"] == "invalid_request_error"
    await adapter.create_refund(refund("ord-rf-big", "rf-all", "10.00"))
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(refund("ord-rf-big", "rf-more", "1.00"))
    assert caught.value.code == "charge_already_refunded"
    assert len(fake.refunds) == 1


async def test_refund_of_an_unpaid_order_is_refused(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await created(adapter, "ord-rf-unpaid")
    request = refund("ord-rf-unpaid", "rf-unpaid")
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(request)
    assert caught.value.code == "payment_not_found"
    assert await adapter.query_refund(request) is None
    assert fake.refunds == {}


async def test_refund_in_another_currency_is_refused(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await paid(adapter, fake, "ord-rf-eur")
    with pytest.raises(ProviderRefused) as caught:
        await adapter.create_refund(refund("ord-rf-eur", "rf-eur", "1.00", "EUR"))
    assert caught.value.code == "currency_mismatch" and fake.refunds == {}


async def test_query_unknown_refund_is_none(adapter: StripeAdapter, fake: FakeStripe) -> None:
    await paid(adapter, fake, "ord-rf-none")
    assert await adapter.query_refund(refund("ord-rf-none", "rf-never")) is None


async def test_query_refund_pages_through_the_list(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    await paid(adapter, fake, "ord-rf-many")
    for n in range(105):
        await adapter.create_refund(refund("ord-rf-many", f"rf-{n}", "0.01"))
    # Stripe lists newest first: the first refund is on the second page.
    seen = await adapter.query_refund(refund("ord-rf-many", "rf-0", "0.01"))
    assert seen is not None and seen.refund_id == "rf-0"
    assert fake.calls.count(("GET", "/v1/refunds")) == 2
