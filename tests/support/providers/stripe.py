"""The Stripe account the tests use at the fake Stripe API: its secret key, its webhook
signing secret, and an order to pay through it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from tempay.domain import PaymentOrder, SettlementTiming

API_KEY = "sk_test_tempay_fake_0123456789"
WEBHOOK_SECRET = "whsec_test_tempay_fake_abcdef"


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
