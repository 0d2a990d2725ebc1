"""The Alipay open platform provider (RSA2), offered when TEMPAY_ALIPAY_APP_ID is set."""

from __future__ import annotations

from providers.alipay.adapter import DEFAULT_CHANNEL, AlipayAdapter
from providers.alipay.settings import AlipaySettings
from providers.alipay.signature import KeyFileError, load_private_key, load_public_key
from providers.base import ChannelSpec, ProviderSpec
from tempay.channels import PayerActionKind as K
from tempay.settings import Settings


class AlipayConfigError(RuntimeError):
    """TEMPAY_ALIPAY_APP_ID is set but the rest cannot be used; names the variable."""


def build_alipay_adapter(settings: Settings, alipay: AlipaySettings) -> AlipayAdapter:
    """The adapter for `alipay` (whose app_id must be set); key files are read now, so a bad
    one stops the process at start with the variable's name (never the key's contents)."""
    assert alipay.app_id is not None
    keys = {}
    for setting, path in (
        ("TEMPAY_ALIPAY_PRIVATE_KEY_FILE", alipay.private_key_file),
        ("TEMPAY_ALIPAY_PUBLIC_KEY_FILE", alipay.public_key_file),
    ):
        if path is None:
            raise AlipayConfigError(f"{setting} is required when TEMPAY_ALIPAY_APP_ID is set")
        keys[setting] = path
    if alipay.seller_id is None:
        raise AlipayConfigError(
            "TEMPAY_ALIPAY_SELLER_ID is required when TEMPAY_ALIPAY_APP_ID is set: the "
            "merchant's Alipay user id (2088...), which every notification's seller_id must match"
        )
    try:
        private_key = load_private_key(
            keys["TEMPAY_ALIPAY_PRIVATE_KEY_FILE"], "TEMPAY_ALIPAY_PRIVATE_KEY_FILE"
        )
        public_key = load_public_key(
            keys["TEMPAY_ALIPAY_PUBLIC_KEY_FILE"], "TEMPAY_ALIPAY_PUBLIC_KEY_FILE"
        )
    except KeyFileError as exc:
        raise AlipayConfigError(str(exc)) from None
    timeout = alipay.timeout or settings.provider_timeout
    return AlipayAdapter(
        app_id=alipay.app_id,
        private_key=private_key,
        alipay_public_key=public_key,
        gateway=alipay.gateway,
        seller_id=alipay.seller_id,
        timeout=timeout.total_seconds(),
        notification_max_age=alipay.notification_max_age,
        notification_tolerance=settings.notification_tolerance,
    )


ALIPAY_CHANNELS = (
    ChannelSpec("alipay_wap", K.REDIRECT, description="mobile browser: Alipay's WAP page"),
    ChannelSpec("alipay_page", K.REDIRECT, description="desktop browser: Alipay's page"),
    ChannelSpec("alipay_pc", K.REDIRECT, description="alipay_page by its older name"),
    ChannelSpec("alipay_app", K.APP, description="the merchant's app: a signed order string"),
    ChannelSpec("alipay_qr", K.QR_CODE, description="a QR code the payer scans (precreate)"),
)


def _enabled(settings: Settings, alipay: AlipaySettings) -> bool:
    return alipay.app_id is not None


PROVIDER = ProviderSpec(
    name=AlipayAdapter.name,
    settings=AlipaySettings,
    enabled=_enabled,
    build=build_alipay_adapter,
    channels=ALIPAY_CHANNELS,
    default_channel=DEFAULT_CHANNEL,
)

__all__ = ["PROVIDER", "AlipayAdapter", "AlipayConfigError", "AlipaySettings"]
