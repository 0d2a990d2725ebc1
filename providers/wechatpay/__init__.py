"""WeChat Pay API v3 provider adapter (env `TEMPAY_WECHATPAY_*`)."""

from __future__ import annotations

from datetime import timedelta

from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import (
    WechatPayConfigError,
    WechatPaySettings,
    build_config,
    load_settings,
)

__all__ = ["WechatPayAdapter", "WechatPayConfigError", "adapter_from_env"]


def adapter_from_env(
    tolerance: timedelta, settings: WechatPaySettings | None = None
) -> WechatPayAdapter | None:
    """The adapter when TEMPAY_WECHATPAY_MCHID is set, else None; a missing or invalid
    piece raises WechatPayConfigError naming its variable."""
    settings = settings or load_settings()
    if not settings.enabled:
        return None
    return WechatPayAdapter(build_config(settings), tolerance=tolerance)
