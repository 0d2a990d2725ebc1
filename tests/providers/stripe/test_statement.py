"""Stripe's day as tempay's statement: the Checkout Sessions paid with a charge made that day
(UTC) and the refunds that succeeded that day, read page by page from the fake Stripe API
over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from providers.stripe.adapter import StripeAdapter
from providers.stripe.statement import day_bounds, refund_line, session_line
from tempay.domain import RefundRequest
from tempay.errors import ProviderError, StatementError
from tempay.statements import StatementLine, StatementLineKind
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import make_order

DAY = date(2024, 5, 1)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """May `day` 2024 (0: April 30) at hour:minute UTC."""
    return datetime(2024, 5, 1, hour, minute, tzinfo=UTC) + timedelta(days=day - 1)


def seconds(when: datetime) -> int:
    return int(when.timestamp())


async def session(
    adapter: StripeAdapter,
    fake: FakeStripe,
    order_id: str,
    created: datetime,
    paid: datetime | None,
    amount: str = "10.00",
    currency: str = "USD",
) -> dict[str, Any]:
    """A Checkout Session made by the adapter at `created`, paid by card at `paid`."""
    await adapter.create_payment(make_order(order_id, amount, currency))
    stored = fake.session_for(order_id)
    stored["created"] = seconds(created)
    if paid is not None:
        fake.pay(order_id, at=seconds(paid))
    return stored


async def refunded(
    adapter: StripeAdapter,
    fake: FakeStripe,
    order_id: str,
    refund_id: str,
    amount: str,
    when: datetime,
) -> dict[str, Any]:
    await adapter.create_refund(
        RefundRequest(
            order_id=order_id, refund_id=refund_id, amount=Decimal(amount), currency="USD"
        )
    )
    [stored] = [r for r in fake.refunds.values() if r["metadata"].get("refund_id") == refund_id]
    stored["created"] = seconds(when)
    return stored


async def collect(lines: AsyncIterator[StatementLine]) -> list[StatementLine]:
    return [line async for line in lines]


def test_the_day_is_utc() -> None:
    assert day_bounds(DAY) == (seconds(at(1, 0)), seconds(at(2, 0)))


async def test_the_statement_is_the_days_payments_and_refunds(
    adapter: StripeAdapter, fake: FakeStripe
) -> None:
    fake.max_page_size = 2  # fewer than the day holds: the adapter must follow has_more
    in_day = await session(adapter, fake, "ord-day", at(1, 10), at(1, 10, 5))
    # Created the evening before, paid after midnight: the day it was paid.
    overnight = await session(adapter, fake, "ord-night", at(0, 23, 50), at(1, 0, 10), "500", "JPY")
    await session(adapter, fake, "ord-before", at(0, 12), at(0, 12, 5))
    await session(adapter, fake, "ord-after", at(1, 23, 55), at(2, 0, 5))
    await session(adapter, fake, "ord-open", at(1, 9), None)
    await session(adapter, fake, "ord-late", at(1, 9, 30), None)
    fake.pay_later("ord-late")  # complete, unpaid: a bank debit still settling
    await session(adapter, fake, "ord-more", at(1, 15), at(1, 15, 1), "0.50")

    refund = await refunded(adapter, fake, "ord-day", "rf-day", "4.00", at(1, 12))
    await refunded(adapter, fake, "ord-before", "rf-before", "1.00", at(0, 13))
    fake.refund_status = "pending"
    await refunded(adapter, fake, "ord-more", "rf-pending", "0.10", at(1, 16))
    # A refund made in the Dashboard: no tempay metadata; its PaymentIntent names the order.
    dashboard = {
        "id": "re_dashboard_1",
        "object": "refund",
        "amount": 100,
        "currency": "jpy",
        "payment_intent": overnight["payment_intent"],
        "status": "succeeded",
        "metadata": {},
        "created": seconds(at(1, 20)),
    }
    fake.refunds[dashboard["id"]] = dashboard

    lines = await collect(adapter.statement(DAY))

    more = fake.session_for("ord-more")
    assert lines == [
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-more",
            provider_trade_no=more["id"],
            amount=Decimal("0.50"),
            currency="USD",
            at=at(1, 15, 1),
        ),
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-day",
            provider_trade_no=in_day["id"],
            amount=Decimal("10.00"),
            currency="USD",
            at=at(1, 10, 5),
        ),
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-night",
            provider_trade_no=overnight["id"],
            amount=Decimal("500"),
            currency="JPY",
            at=at(1, 0, 10),
        ),
        StatementLine(
            kind=StatementLineKind.REFUND,
            order_id="ord-night",
            provider_trade_no=None,
            refund_id=None,
            provider_refund_no="re_dashboard_1",
            amount=Decimal("100"),
            currency="JPY",
            at=at(1, 20),
        ),
        StatementLine(
            kind=StatementLineKind.REFUND,
            order_id="ord-day",
            provider_trade_no=None,
            refund_id="rf-day",
            provider_refund_no=refund["id"],
            amount=Decimal("4.00"),
            currency="USD",
            at=at(1, 12),
        ),
    ]
    assert all(isinstance(line.amount, Decimal) for line in lines)
    # Paged: several list calls for each, two objects at a time.
    lists = [path for method, path in fake.calls if method == "GET"]
    assert lists.count("/v1/checkout/sessions") >= 3
    assert lists.count("/v1/refunds") >= 2


async def test_a_quiet_day_is_an_empty_statement(adapter: StripeAdapter) -> None:
    assert await collect(adapter.statement(DAY)) == []


async def test_a_failing_list_is_a_provider_error(adapter: StripeAdapter, fake: FakeStripe) -> None:
    fake.fail_next["/v1/checkout/sessions"] = 500
    with pytest.raises(ProviderError, match="HTTP 500"):
        await collect(adapter.statement(DAY))


def paid_session(**changes: Any) -> dict[str, Any]:
    session: dict[str, Any] = {
        "id": "cs_test_1",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": {
            "id": "pi_test_1",
            "status": "succeeded",
            "amount_received": 1000,
            "currency": "usd",
            "latest_charge": {"id": "ch_test_1", "created": seconds(at(1, 10))},
        },
    }
    session.update(changes)
    return session


def test_a_session_line_needs_its_payment_intent_and_charge() -> None:
    start, end = day_bounds(DAY)
    assert session_line(paid_session(), start, end, "A1").amount == Decimal("10.00")  # type: ignore[union-attr]
    with pytest.raises(StatementError, match="cs_test_1: paid, no PaymentIntent"):
        session_line(paid_session(payment_intent="pi_test_1"), start, end, "A1")
    intent = {**paid_session()["payment_intent"], "latest_charge": "ch_test_1"}
    with pytest.raises(StatementError, match="pi_test_1 has no charge"):
        session_line(paid_session(payment_intent=intent), start, end, "A1")
    intent = {**paid_session()["payment_intent"], "currency": "xyz"}
    with pytest.raises(StatementError, match="cs_test_1: unsupported currency 'xyz'"):
        session_line(paid_session(payment_intent=intent), start, end, "A1")


def test_a_refund_line_needs_an_amount_and_a_time() -> None:
    refund = {"id": "re_1", "status": "succeeded", "amount": 1.5, "currency": "usd", "created": 1}
    with pytest.raises(StatementError, match="re_1: amount 1.5 is not an integer"):
        refund_line(refund)
    with pytest.raises(StatementError, match="refund re_1 has no created time"):
        refund_line({**refund, "amount": 150, "created": None})
    assert refund_line({**refund, "status": "failed"}) is None
