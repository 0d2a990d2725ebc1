"""WeChat Pay API v3 provider (env `TEMPAY_WECHATPAY_*`), offered when TEMPAY_WECHATPAY_MCHID
is set; then a missing or invalid piece stops startup with WechatPayConfigError naming it."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.wechatpay.adapter import CHANNELS, DEFAULT_CHANNEL, NAME, WechatPayAdapter
from providers.wechatpay.settings import (
    WechatPayConfigError,
    WechatPaySettings,
    build_config,
    load_settings,
)
from tempay.settings import Settings


def _enabled(settings: Settings, wechatpay: WechatPaySettings) -> bool:
    return wechatpay.enabled


def _build(settings: Settings, wechatpay: WechatPaySettings) -> WechatPayAdapter:
    return WechatPayAdapter(build_config(wechatpay), tolerance=settings.notification_tolerance)


PROVIDER = ProviderSpec(
    name=NAME,
    settings=load_settings,
    enabled=_enabled,
    build=_build,
    channels=tuple(CHANNELS),
    default_channel=DEFAULT_CHANNEL,
)

__all__ = ["PROVIDER", "WechatPayAdapter", "WechatPayConfigError"]
