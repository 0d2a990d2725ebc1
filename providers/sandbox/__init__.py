"""The sandbox provider: a local payment platform (server in `app`) and tempay's adapter for it.

It signs whatever anyone asks it to (it is a simulator), so it is offered only where it is
switched on (TEMPAY_SANDBOX=true, which `tempay dev` sets), never by default."""

from __future__ import annotations

from providers.base import ProviderSpec
from providers.sandbox.adapter import SandboxAdapter
from providers.sandbox.channels import DEFAULT_CHANNEL, SANDBOX_CHANNELS
from providers.sandbox.keys import key_directory, public_key_file
from providers.sandbox.settings import SandboxClientSettings
from tempay.settings import Settings


def _enabled(settings: Settings, sandbox: SandboxClientSettings) -> bool:
    return settings.sandbox_enabled


def _build(settings: Settings, sandbox: SandboxClientSettings) -> SandboxAdapter:
    return SandboxAdapter(
        sandbox.url,
        public_key_file=public_key_file(settings.data_dir),
        tolerance=settings.notification_tolerance,
        timeout=settings.provider_timeout.total_seconds(),
        account=sandbox.account,
        app_id=sandbox.app_id,
        # The worker makes the merchant's key pair here when it first signs; the sandbox
        # reads the public half from the same folder (shared data dir).
        merchant_key_directory=key_directory(settings.data_dir),
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
