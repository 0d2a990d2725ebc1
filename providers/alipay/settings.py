"""Alipay open platform settings (env `TEMPAY_ALIPAY_*`). Unset APP_ID: no Alipay adapter."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tempay.settings import Duration


class AlipaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TEMPAY_ALIPAY_", extra="ignore", hide_input_in_errors=True
    )

    # The application's id on the Alipay open platform; unset means Alipay is not offered.
    app_id: str | None = None
    # The merchant application's private key (PEM, PKCS#1 or PKCS#8, or Alipay's bare base64).
    private_key_file: Path | None = None
    # Alipay's public key for this application (not the application's own public key).
    public_key_file: Path | None = None
    gateway: str = "https://openapi.alipay.com/gateway.do"
    # The merchant's Alipay user id (2088...): every notification's seller_id must equal it
    # (Alipay's advice for notify checks). Required with APP_ID (build_alipay_adapter says so).
    seller_id: str | None = None
    # A gateway call's answer counts as lost after this; unset: TEMPAY_PROVIDER_TIMEOUT.
    timeout: Duration | None = None
    # Notifications whose notify_time is older than this are refused (401). Alipay resends a
    # notification for about 25 hours, so this must stay well above that. One dated ahead by
    # more than TEMPAY_NOTIFICATION_TOLERANCE is refused too.
    notification_max_age: Duration = Field(default=timedelta(hours=48))

    @field_validator("app_id", "seller_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("gateway")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("TEMPAY_ALIPAY_GATEWAY must start with http:// or https://")
        return value
