"""The one configuration object. Every process reads it from the environment."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _seconds(value: Any) -> Any:
    """Durations in the environment are plain seconds ("90", "0.5"); ISO 8601 also works."""
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEMPAY_", extra="ignore")

    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "TEMPAY_TEMPORAL_ADDRESS"),
    )
    temporal_namespace: str = Field(
        default="default",
        validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "TEMPAY_TEMPORAL_NAMESPACE"),
    )
    task_queue: str = "tempay"
    data_dir: Path = Path(".tempay")

    temporal_ui_port: int = 8233
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8000
    # Base URL providers POST notifications to; notify_url = {webhook_url}/notify/{provider}.
    webhook_url: str = "http://127.0.0.1:8000"
    sandbox_url: str = "http://127.0.0.1:8001"

    # Settlement timing, copied into each workflow's input when it starts.
    first_status_query_delay: Duration = timedelta(seconds=60)
    status_query_backoff_cap: Duration = timedelta(minutes=10)
    payment_expiry: Duration = timedelta(minutes=30)
    late_payment_window: Duration = timedelta(hours=24)

    # Webhook limits.
    notification_max_bytes: int = 64 * 1024
    notification_tolerance: Duration = timedelta(minutes=5)
    signal_timeout: Duration = timedelta(seconds=5)

    @property
    def sandbox_public_key_file(self) -> Path:
        return self.data_dir / "sandbox" / "notify_public.pem"


@lru_cache
def get_settings() -> Settings:
    return Settings()
