"""The providers tempay ships, one line each, and their adapters built from the settings.

A provider's folder declares itself in one ProviderSpec (`PROVIDER` in its __init__.py); adding
a provider is that folder and one line below (docs/providers/adding.md). This is the one
module that names a provider's folder (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pydantic_settings import BaseSettings

from providers import alipay, sandbox, stripe, wechatpay
from providers.base import ChannelSpec, ProviderAdapter, ProviderSpec
from tempay.channels import PAYER_FIELD_MEANING, PayerDetails
from tempay.errors import InvalidInput
from tempay.settings import Settings

# In this order their settings are read and their adapters built (and a bad one stops startup).
PROVIDERS: tuple[ProviderSpec[Any], ...] = (
    alipay.PROVIDER,
    sandbox.PROVIDER,
    stripe.PROVIDER,
    wechatpay.PROVIDER,
)

PROVIDER_NAMES: tuple[str, ...] = tuple(spec.name for spec in PROVIDERS)


def provider_spec(name: str) -> ProviderSpec[Any] | None:
    """The provider by that name; None for one tempay does not ship."""
    return next((spec for spec in PROVIDERS if spec.name == name), None)


def default_channel(provider: str) -> str | None:
    """The channel an order with `provider` gets when the caller names none."""
    spec = provider_spec(provider)
    return spec.default_channel if spec is not None else None


def channel_spec(provider: str, channel: str) -> ChannelSpec | None:
    spec = provider_spec(provider)
    return next((c for c in spec.channels if c.name == channel), None) if spec else None


def checked_channel(
    provider: str, channel: str | None, payer: PayerDetails | None
) -> tuple[str | None, PayerDetails | None]:
    """The order's channel (the provider's default when none is named) and the payer details
    it keeps: exactly those the channel needs. Raises InvalidInput, before anything starts,
    for a channel the provider does not offer or a payer detail the channel needs and the
    order lacks. Details the channel does not use are not kept (they are personal data)."""
    spec = provider_spec(provider)
    if spec is None:
        return channel, payer
    chosen = spec.default_channel if channel is None else channel
    if not spec.channels:
        if channel is not None:
            raise InvalidInput(f"{provider} takes no channel; leave it out")
        return None, None
    offered = next((c for c in spec.channels if c.name == chosen), None)
    if offered is None:
        names = ", ".join(c.name for c in spec.channels)
        raise InvalidInput(f"{provider} has no channel {chosen!r}: one of {names}")
    missing = [f for f in sorted(offered.needs) if payer is None or payer.get(f) is None]
    if missing:
        needed = "; ".join(f"{field.value}, {PAYER_FIELD_MEANING[field]}" for field in missing)
        raise InvalidInput(f"channel {offered.name} needs {needed}")
    if offered.public_payer_ip and payer is not None and payer.client_ip is not None:
        if not ipaddress.ip_address(payer.client_ip).is_global:
            raise InvalidInput(
                f"channel {offered.name} needs the payer's public IP address in "
                "payer_client_ip: a private, loopback or reserved one is what a proxy or your "
                "own network shows; take the address your edge saw the payer connect from"
            )
    return offered.name, payer.only(offered.needs) if payer is not None else None


def build_adapters(
    settings: Settings, provider_settings: Mapping[str, BaseSettings] | None = None
) -> dict[str, ProviderAdapter]:
    """The adapter of every provider this deployment offers, by name. A provider's own
    settings come from the environment unless `provider_settings` holds them (by name)."""
    given = provider_settings or {}
    if unknown := sorted(set(given) - set(PROVIDER_NAMES)):
        raise ValueError(f"settings for providers tempay does not ship: {', '.join(unknown)}")
    adapters: dict[str, ProviderAdapter] = {}
    for spec in PROVIDERS:
        own = given[spec.name] if spec.name in given else spec.settings()
        if not spec.enabled(settings, own):
            continue
        adapter = spec.build(settings, own)
        # The webhook routes by this key and stamps the adapter's name on what it verified.
        if adapter.name != spec.name:
            raise RuntimeError(
                f"provider {spec.name!r} is served by an adapter named {adapter.name!r}"
            )
        adapters[spec.name] = adapter
    return adapters
