"""The sandbox provider: a local payment platform (server in `app`) and tempay's adapter for it.

It signs whatever anyone asks it to (it is a simulator), so it is offered only where it is
switched on (TEMPAY_SANDBOX=true, which `tempay dev` sets), never by default."""

from __future__ import annotations

from providers.base import ChannelSpec, ProviderSpec
from providers.sandbox.adapter import DEFAULT_CHANNEL, SandboxAdapter
from providers.sandbox.keys import public_key_file
from providers.sandbox.settings import SandboxClientSettings
from tempay.channels import PayerActionKind as K
from tempay.channels import PayerField
from tempay.settings import Settings

OPENID, IP = frozenset({PayerField.OPENID}), frozenset({PayerField.CLIENT_IP})
# The real providers' channel names, each answered with the same kind of payer action (the
# sandbox's own pages stand in for the wallets), so an integration moves to a real provider
# by changing `provider` alone.
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


def _enabled(settings: Settings, sandbox: SandboxClientSettings) -> bool:
    return settings.sandbox_enabled


def _build(settings: Settings, sandbox: SandboxClientSettings) -> SandboxAdapter:
    return SandboxAdapter(
        sandbox.url,
        public_key_file=public_key_file(settings.data_dir),
        tolerance=settings.notification_tolerance,
        timeout=settings.provider_timeout.total_seconds(),
        account=sandbox.account,
    )


PROVIDER = ProviderSpec(
    name=SandboxAdapter.name,
    settings=SandboxClientSettings,
    enabled=_enabled,
    build=_build,
    channels=SANDBOX_CHANNELS,
    default_channel=DEFAULT_CHANNEL,
)

__all__ = ["PROVIDER", "SandboxAdapter", "SandboxClientSettings"]
