"""The Stripe provider: Checkout Sessions and PaymentIntents for payments, Refunds, signed
webhook events.

Offered when TEMPAY_STRIPE_API_KEY is set. Imported as `providers.stripe` (absolute imports
only): `import stripe` anywhere still means the Stripe SDK, which tempay uses only in its
tests, as the reference for signatures.
"""

from __future__ import annotations

from providers.base import ChannelSpec, ProviderSpec
from providers.stripe.adapter import CHECKOUT, DEFAULT_CHANNEL, PAYMENT_INTENT, StripeAdapter
from providers.stripe.settings import StripeSettings
from tempay.channels import PayerActionKind as K
from tempay.settings import Settings


def _enabled(settings: Settings, stripe: StripeSettings) -> bool:
    # Without the key Stripe is not offered; with it, a missing webhook secret stops startup
    # (StripeSettings refuses it as it is read).
    return stripe.enabled


def _build(settings: Settings, stripe: StripeSettings) -> StripeAdapter:
    return StripeAdapter.from_settings(stripe, settings.notification_tolerance)


# The names are the adapter's (CHANNELS), so the two cannot drift apart.
STRIPE_CHANNELS = (
    ChannelSpec(CHECKOUT, K.REDIRECT, description="Stripe's hosted Checkout page"),
    ChannelSpec(PAYMENT_INTENT, K.CLIENT_SECRET, description="the merchant's page: Stripe.js"),
)

PROVIDER = ProviderSpec(
    name=StripeAdapter.name,
    settings=StripeSettings,
    enabled=_enabled,
    build=_build,
    channels=STRIPE_CHANNELS,
    default_channel=DEFAULT_CHANNEL,
)

__all__ = ["PROVIDER", "StripeAdapter", "StripeSettings"]
