"""Stripe's settings, from the environment (prefix TEMPAY_STRIPE_). Secrets stay SecretStr."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tempay.settings import Duration


class StripeConfigError(ValueError):
    """The Stripe settings cannot work; the message names the variable (never its value)."""


class StripeSettings(BaseSettings):
    # Errors never echo their input: a malformed key must not reach a log.
    model_config = SettingsConfigDict(
        env_prefix="TEMPAY_STRIPE_", extra="ignore", hide_input_in_errors=True
    )

    # sk_... (or a restricted rk_... key). Unset: the stripe provider is not offered.
    api_key: SecretStr | None = None
    # whsec_...; several, comma-separated, while rotating an endpoint's secret.
    webhook_secret: SecretStr | None = None
    api_base: str = "https://api.stripe.com"
    # How long a Stripe call may take before its answer counts as lost.
    timeout: Duration = timedelta(seconds=10)
    # success_url/cancel_url for orders that carry no return_url of their own.
    return_url: str | None = None

    @field_validator("api_key", "webhook_secret", "return_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key")
    @classmethod
    def _key_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip().startswith(("sk_", "rk_")):
            raise ValueError("TEMPAY_STRIPE_API_KEY must be a secret key (sk_...) or rk_...")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = [p.strip() for p in value.get_secret_value().split(",")]
            if not parts or any(not p.startswith("whsec_") or len(p) <= 6 for p in parts):
                raise ValueError(
                    "TEMPAY_STRIPE_WEBHOOK_SECRET must be whsec_... "
                    "(several comma-separated while rotating)"
                )
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("TEMPAY_STRIPE_API_BASE must start with https:// (or http://)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secret_with_key(self) -> StripeSettings:
        if self.api_key is not None and self.webhook_secret is None:
            raise StripeConfigError(
                "TEMPAY_STRIPE_WEBHOOK_SECRET (whsec_..., from the Stripe webhook endpoint) "
                "is required when TEMPAY_STRIPE_API_KEY is set: Stripe events are always verified"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.api_key is not None

    def webhook_secrets(self) -> list[SecretStr]:
        if self.webhook_secret is None:
            return []
        return [SecretStr(p.strip()) for p in self.webhook_secret.get_secret_value().split(",")]
