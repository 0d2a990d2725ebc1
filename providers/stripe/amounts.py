"""Stripe's amounts: integers of the currency's minor units (1000 is USD 10.00, JPY 1000),
to and from tempay's Decimal, exactly (never through float, never rounded)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tempay.domain import MINOR_UNITS
from tempay.errors import MalformedNotification, ProviderRejected


def to_minor_units(amount: Decimal, currency: str) -> int:
    scaled = amount.scaleb(MINOR_UNITS[currency])
    if scaled != scaled.to_integral_value():
        raise ProviderRejected(f"{amount} {currency} has more decimals than {currency} allows")
    return int(scaled)


def from_minor_units(value: Any, currency: Any) -> tuple[Decimal, str]:
    """Stripe's integer amount and lower-case currency as tempay's Decimal and ISO code."""
    code = str(currency or "").upper()
    if code not in MINOR_UNITS:
        raise MalformedNotification(f"unsupported currency {currency!r}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedNotification(f"amount {value!r} is not an integer of minor units")
    places = MINOR_UNITS[code]
    return Decimal(value).scaleb(-places).quantize(Decimal(1).scaleb(-places)), code
