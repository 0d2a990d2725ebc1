"""Provider adapters by name, built from the settings."""

from __future__ import annotations

from providers.base import ProviderAdapter
from providers.sandbox.adapter import SandboxAdapter
from providers.wechatpay import adapter_from_env as wechatpay_from_env
from tempay.settings import Settings


class UnknownProvider(LookupError):
    pass


def build_adapters(settings: Settings) -> dict[str, ProviderAdapter]:
    adapters: dict[str, ProviderAdapter] = {
        "sandbox": SandboxAdapter(
            settings.sandbox_url,
            public_key_file=settings.sandbox_public_key_file,
            tolerance=settings.notification_tolerance,
            timeout=settings.provider_timeout.total_seconds(),
        ),
    }
    # Only when TEMPAY_WECHATPAY_MCHID is set; a bad configuration stops startup.
    if (wechatpay := wechatpay_from_env(settings.notification_tolerance)) is not None:
        adapters["wechatpay"] = wechatpay
    return adapters
