"""Provider adapters by name, built from the settings."""

from __future__ import annotations

from providers.alipay import alipay_adapters
from providers.base import ProviderAdapter
from providers.sandbox.adapter import SandboxAdapter
from tempay.settings import Settings


class UnknownProvider(LookupError):
    pass


def build_adapters(settings: Settings) -> dict[str, ProviderAdapter]:
    return {
        "sandbox": SandboxAdapter(
            settings.sandbox_url,
            public_key_file=settings.sandbox_public_key_file,
            tolerance=settings.notification_tolerance,
            timeout=settings.provider_timeout.total_seconds(),
        ),
        **alipay_adapters(settings),
    }
