"""A fake Stripe API served on 127.0.0.1, and a Stripe adapter pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest

from providers.stripe.adapter import StripeAdapter
from tempay.domain import PaymentOrder, SettlementTiming
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.stack import bound_socket, serve, url_of

API_KEY = "sk_test_tempay_fake_0123456789"
WEBHOOK_SECRET = "whsec_test_tempay_fake_abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    sock = bound_socket()
    fake = FakeStripe(api_key=API_KEY, webhook_secrets=[WEBHOOK_SECRET], base_url=url_of(sock))
    async with serve(fake.app(), sock):
        yield fake


@pytest.fixture
async def adapter(fake: FakeStripe) -> AsyncIterator[StripeAdapter]:
    adapter = StripeAdapter(API_KEY, [WEBHOOK_SECRET], api_base=fake.base_url, timeout=5)
    yield adapter
    await adapter.aclose()


def make_order(
    order_id: str, amount: str = "10.00", currency: str = "USD", **extra: object
) -> PaymentOrder:
    return PaymentOrder(
        order_id=order_id,
        amount=Decimal(amount),
        currency=currency,
        provider="stripe",
        subject=f"Order {order_id}",
        return_url=f"https://shop.example/orders/{order_id}",
        timing=SettlementTiming(expires_after=timedelta(minutes=30)),
        **extra,  # type: ignore[arg-type]
    )
