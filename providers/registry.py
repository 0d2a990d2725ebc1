"""Provider adapters by name, built from the settings."""

from __future__ import annotations

from providers.alipay import alipay_adapters
from providers.base import ProviderAdapter
from providers.sandbox.adapter import SandboxAdapter
from providers.stripe.adapter import StripeAdapter
from providers.stripe.settings import StripeSettings
from providers.wechatpay import adapter_from_env as wechatpay_from_env
from tempay.settings import Settings


def build_adapters(settings: Settings) -> dict[str, ProviderAdapter]:
    adapters: dict[str, ProviderAdapter] = {**alipay_adapters(settings)}
    # The sandbox signs whatever anyone asks it to (it is a simulator): it exists only
    # where it is switched on (`tempay dev`, TEMPAY_SANDBOX=true), never by default.
    if settings.sandbox_enabled:
        adapters["sandbox"] = SandboxAdapter(
            settings.sandbox_url,
            public_key_file=settings.sandbox_public_key_file,
            tolerance=settings.notification_tolerance,
            timeout=settings.provider_timeout.total_seconds(),
        )
    # Offered only with TEMPAY_STRIPE_API_KEY; then a missing webhook secret stops startup.
    stripe_settings = StripeSettings()
    if stripe_settings.enabled:
        adapters["stripe"] = StripeAdapter.from_settings(
            stripe_settings, settings.notification_tolerance
        )
    # Only when TEMPAY_WECHATPAY_MCHID is set; a bad configuration stops startup.
    if (wechatpay := wechatpay_from_env(settings.notification_tolerance)) is not None:
        adapters["wechatpay"] = wechatpay
    # The webhook routes by this key and stamps the adapter's name on what it verified.
    for name, adapter in adapters.items():
        if name != adapter.name:
            raise RuntimeError(f"provider {name!r} is served by an adapter named {adapter.name!r}")
    return adapters
