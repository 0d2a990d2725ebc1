"""The Alipay open platform provider (RSA2): `alipay_adapters(settings)` for the registry."""

from __future__ import annotations

from providers.alipay.adapter import AlipayAdapter
from providers.alipay.settings import AlipaySettings
from providers.alipay.signature import KeyFileError, load_private_key, load_public_key
from providers.base import ProviderAdapter
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


def alipay_adapters(
    settings: Settings, alipay: AlipaySettings | None = None
) -> dict[str, ProviderAdapter]:
    """{"alipay": adapter} when TEMPAY_ALIPAY_APP_ID is set, else {}."""
    alipay = alipay if alipay is not None else AlipaySettings()
    if alipay.app_id is None:
        return {}
    return {"alipay": build_alipay_adapter(settings, alipay)}


__all__ = ["AlipayAdapter", "AlipayConfigError", "AlipaySettings", "alipay_adapters"]
