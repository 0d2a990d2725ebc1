"""WeChat Pay API v3 provider (env `TEMPAY_WECHATPAY_*`), offered when TEMPAY_WECHATPAY_MCHID
is set; then a missing or invalid piece stops startup with WechatPayConfigError naming it."""

from __future__ import annotations

from providers.base import ChannelSpec, ProviderSpec
from providers.wechatpay.adapter import DEFAULT_CHANNEL, NAME, WechatPayAdapter
from providers.wechatpay.settings import (
    WechatPayConfigError,
    WechatPaySettings,
    build_config,
    load_settings,
)
from tempay.channels import PayerActionKind as K
from tempay.channels import PayerField
from tempay.settings import Settings

OPENID, IP = frozenset({PayerField.OPENID}), frozenset({PayerField.CLIENT_IP})
WECHATPAY_CHANNELS = (
    ChannelSpec("wechat_native", K.QR_CODE, description="a QR code the payer scans"),
    ChannelSpec("wechat_h5", K.REDIRECT, IP, description="a mobile browser outside WeChat"),
    ChannelSpec("wechat_jsapi", K.JSAPI, OPENID, description="an official-account page"),
    ChannelSpec("wechat_miniprogram", K.JSAPI, OPENID, description="a mini-program"),
    ChannelSpec("wechat_app", K.APP, description="the merchant's app: the SDK's PayReq"),
)


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
