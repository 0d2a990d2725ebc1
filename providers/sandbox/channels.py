"""The sandbox's channels: the real providers' channel names, each answered with the same
kind of payer action (the sandbox's own pages stand in for the wallets), so an integration
moves to a real provider by changing `provider` alone.

One table, read by the spec (`providers/sandbox/__init__.py`), the server (which refuses any
other channel) and the adapter (which maps each answer to its payer action)."""

from __future__ import annotations

from providers.base import ChannelSpec
from tempay.channels import PayerActionKind as K
from tempay.channels import PayerField

OPENID, IP = frozenset({PayerField.OPENID}), frozenset({PayerField.CLIENT_IP})

SANDBOX_CHANNELS = (
    ChannelSpec("alipay_wap", K.REDIRECT, description="the sandbox's checkout page"),
    ChannelSpec("alipay_page", K.REDIRECT, description="the sandbox's checkout page"),
    ChannelSpec("alipay_qr", K.QR_CODE, description="the sandbox's QR page"),
    ChannelSpec("alipay_app", K.APP, description="a signed order string for the wallet page"),
    ChannelSpec("wechat_native", K.QR_CODE, description="the sandbox's QR page"),
    ChannelSpec("wechat_h5", K.REDIRECT, IP, description="the sandbox's checkout page"),
    ChannelSpec("wechat_jsapi", K.JSAPI, OPENID, description="the sandbox's wallet page"),
    ChannelSpec("wechat_miniprogram", K.JSAPI, OPENID, description="the wallet page"),
    ChannelSpec("wechat_app", K.APP, description="PayReq parameters for the wallet page"),
    ChannelSpec("stripe_checkout", K.REDIRECT, description="the sandbox's checkout page"),
    ChannelSpec("stripe_payment_intent", K.CLIENT_SECRET, description="the wallet page"),
)
CHANNELS: dict[str, ChannelSpec] = {spec.name: spec for spec in SANDBOX_CHANNELS}

# An order that names no channel gets this one.
DEFAULT_CHANNEL = "alipay_wap"
# The app channel whose action is Alipay's signed order string (wechat_app's is PayReq).
ORDER_STRING_CHANNEL = "alipay_app"


def channel_names() -> str:
    return ", ".join(CHANNELS)
