"""WeChat Pay API v3 provider (env `TEMPAY_WECHATPAY_*`), offered when TEMPAY_WECHATPAY_MCHID
is set; then a missing or invalid piece stops startup with WechatPayConfigError naming it."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.wechatpay.adapter import (
    DEFAULT_CHANNEL,
    NAME,
    WECHATPAY_CHANNELS,
    WechatPayAdapter,
)
from providers.wechatpay.settings import (
    WechatPayConfigError,
    WechatPaySettings,
    build_config,
    load_settings,
)
from tempay.settings import Settings

# The channels are declared beside the adapter's products (adapter.PRODUCTS), so the needs
# the core checks before a start are the ones the adapter checks again before it sends.


def _enabled(settings: Settings, wechatpay: WechatPaySettings) -> bool:
    return wechatpay.enabled


def _build(settings: Settings, wechatpay: WechatPaySettings) -> WechatPayAdapter:
    return WechatPayAdapter(build_config(wechatpay), tolerance=settings.notification_tolerance)


PROVIDER = ProviderSpec(
    name=NAME,
    settings=load_settings,
    enabled=_enabled,
    build=_build,
    channels=WECHATPAY_CHANNELS,
    default_channel=DEFAULT_CHANNEL,
)

__all__ = ["PROVIDER", "WechatPayAdapter", "WechatPayConfigError"]
