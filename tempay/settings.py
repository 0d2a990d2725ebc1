"""The one configuration object. Every process reads it from the environment."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tempay.codec import parse_keys
from tempay.errors import CodecKeyError, InvalidSecret
from tempay.merchant_webhooks import parse_secret, webhook_url_problem


def _seconds(value: Any) -> Any:
    """Durations in the environment are plain seconds ("90", "0.5"); ISO 8601 also works."""
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]

# Written by `tempay dev` into its data dir: the sandbox provider is on there.
SANDBOX_MARKER = Path("sandbox") / "enabled-by-tempay-dev"

# The backend API's bearer key: long enough that guessing it is hopeless.
API_KEY_MIN_LENGTH = 16


class Settings(BaseSettings):
    # Errors never echo their input: a malformed secret must not reach a log.
    model_config = SettingsConfigDict(
        env_prefix="TEMPAY_", extra="ignore", hide_input_in_errors=True
    )

    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "TEMPAY_TEMPORAL_ADDRESS"),
    )
    temporal_namespace: str = Field(
        default="default",
        validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "TEMPAY_TEMPORAL_NAMESPACE"),
    )
    # The connection's security (TLS, client certificate, API key, gRPC metadata) comes from
    # the Temporal CLI's own settings: TEMPORAL_* variables and TOML profiles
    # (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE), read by tempay/temporal.py. True: address
    # and namespace only, in plain text: `tempay dev` and its children talk to the embedded
    # server so, whatever a shell exports for another cluster.
    temporal_plaintext: bool = False
    task_queue: str = "tempay"
    data_dir: Path = Path(".tempay")
    # Servers' logs (tempay/logs.py): the level, and `text` for a person or `json` (one
    # object per line, with the transaction's ids) for a log pipeline.
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # The book (book/), tempay's system of record: TEMPAY_DATABASE_URL, `postgresql://...`
    # for PostgreSQL; unset: SQLite at {data_dir}/tempay.db. Secret: it may hold a password.
    database_url: SecretStr | None = None
    # How long Temporal keeps a closed workflow (the namespace's retention; `tempay dev`
    # applies it to the embedded server, whose own default is 24 h). The book keeps it for
    # good; Temporal Cloud allows 1 to 90 days.
    retention: Duration = timedelta(days=7)
    # When each provider's daily reconciliation runs, in the provider's own timezone
    # (Asia/Shanghai for Alipay, WeChat Pay and the sandbox): HH:MM. Their bills for a day
    # are ready the next morning.
    reconcile_at: str = "10:00"

    temporal_ui_port: int = 8233
    # The public listener: what providers call (POST /notify/{provider}) and GET /healthz.
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8000
    # The internal listener: /api, /codec and /metrics, for the merchant's own systems and
    # operators, apart from the public one so that whoever can reach notify_url cannot
    # reach them (and /healthz). `tempay dev` (everything on 127.0.0.1) serves both on
    # the webhook port instead (TEMPAY_INTERNAL_ON_WEBHOOK_PORT=true): a deliberate choice.
    internal_host: str = "127.0.0.1"
    internal_port: int = Field(default=8002, ge=1, le=65535)
    internal_on_webhook_port: bool = False
    # Base URL providers POST notifications to; notify_url = {webhook_url}/notify/{provider}.
    webhook_url: str = "http://127.0.0.1:8000"
    # The sandbox provider exists only where it is switched on: its adapter, its
    # notification route and the default provider. Servers need TEMPAY_SANDBOX=true (`tempay
    # dev` sets it for its children); CLI commands beside a `tempay dev` also see it on
    # (`beside_tempay_dev`). Its own settings (TEMPAY_SANDBOX_URL, ...) are the provider's:
    # providers/sandbox/settings.py.
    sandbox: bool | None = None
    # The provider `tempay pay/recharge/withdraw` and /api use when the caller names none.
    # Unset: "sandbox" where the sandbox is on; elsewhere a provider must always be named.
    default_provider: str | None = None
    # The worker's Prometheus endpoint (the Temporal SDK's worker metrics and tempay's
    # settlements and merchant deliveries): http://{host}:{port}/metrics; port 0 turns it off.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    # The worker's health endpoint (commands/worker_health.py): /healthz and /readyz on
    # http://{host}:{port}; port 0 (the default) turns it off.
    worker_health_host: str = "127.0.0.1"
    worker_health_port: int = Field(default=0, ge=0, le=65535)
    # On SIGTERM the worker stops taking tasks, and its activities get this long to finish
    # before they are cancelled (and retried elsewhere).
    worker_shutdown_grace: Duration = timedelta(seconds=10)
    # How long a call to a provider may take before its answer counts as lost.
    provider_timeout: Duration = timedelta(seconds=10)

    # Settlement timing, copied into each workflow's input when it starts.
    first_status_query_delay: Duration = timedelta(seconds=60)
    status_query_backoff_cap: Duration = timedelta(minutes=10)
    payment_expiry: Duration = timedelta(minutes=30)
    late_payment_window: Duration = timedelta(hours=24)
    # A succeeded payment takes refunds this long (its workflow stays open that long).
    refund_window: Duration = timedelta(days=365)
    # A refund or withdrawal in NEEDS_REVIEW waits this long for `tempay resolve`.
    review_window: Duration = timedelta(days=30)

    # Status queries (query_payment/refund/transfer) run on the `{task_queue}-status` task
    # queue, which the server rate-limits to this many per second across all workers: the
    # most status queries a provider sees, however many transactions are pending.
    status_query_rate_cap: float = Field(default=50.0, gt=0)
    # Workflows the worker keeps in memory between tasks; an evicted one is replayed from
    # its history when it next wakes. Bounds the worker's memory however many are pending.
    worker_max_cached_workflows: int = Field(default=500, ge=0)

    # Webhook limits.
    notification_max_bytes: int = 64 * 1024
    notification_tolerance: Duration = timedelta(minutes=5)
    # The whole notification body must arrive within this (slow or stalled senders: 408).
    notification_read_timeout: Duration = timedelta(seconds=10)
    signal_timeout: Duration = timedelta(seconds=5)
    # HTTP limits of both listeners (webhook/server.py): a request's headers must arrive
    # within http_header_timeout (else 408 and the connection closes); at most
    # http_max_connections connections at once per listener (more: 503 at once).
    http_header_timeout: Duration = timedelta(seconds=10)
    http_max_connections: int = Field(default=256, ge=1)

    # The merchant's application: settled payments are POSTed there, signed by the Standard
    # Webhooks scheme with this `whsec_...` secret. Unset: nothing is sent.
    merchant_webhook_url: str | None = None
    merchant_webhook_secret: SecretStr | None = None

    # Payload encryption (tempay/codec.py): `key_id:base64(32 bytes)` entries, comma-separated;
    # the first encrypts, all decrypt. Unset: the data dir's `codec_keys` file if it exists
    # (`tempay dev` creates it), else payloads are not encrypted.
    codec_keys: SecretStr | None = None
    # Browser origins (comma-separated) allowed to call /codec/*: the Temporal UI's.
    codec_cors_origins: str = "http://127.0.0.1:8233,http://localhost:8233"
    # When set, /codec/* requires `Authorization: Bearer <token>`.
    codec_auth_token: SecretStr | None = None

    # The backend API (/api, webhook/api.py): callers send `Authorization: Bearer <key>`.
    # Unset: every /api route answers 503, never open without a key.
    api_key: SecretStr | None = None
    # How long an /api call waits for the worker and provider before answering 504.
    api_timeout: Duration = timedelta(seconds=30)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("TEMPAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("retention")
    @classmethod
    def _retention_at_least_a_day(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1):
            raise ValueError("must be at least one day (Temporal's minimum retention)")
        return value

    @field_validator("reconcile_at")
    @classmethod
    def _reconcile_at_is_a_time(cls, value: str) -> str:
        hour, _, minute = value.partition(":")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise ValueError(f"must be a time of day as HH:MM, not {value!r}")
        return f"{int(hour):02d}:{int(minute):02d}"

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_api_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < API_KEY_MIN_LENGTH:
            raise ValueError(
                f"TEMPAY_API_KEY must be at least {API_KEY_MIN_LENGTH} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return value

    @field_validator("codec_keys", "codec_auth_token", mode="before")
    @classmethod
    def _blank_codec_secret_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("codec_keys")
    @classmethod
    def _codec_keys_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_keys(value.get_secret_value())
            except CodecKeyError as exc:
                raise ValueError(str(exc)) from None
        return value

    @property
    def codec_cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.codec_cors_origins.split(",") if o.strip()]

    @field_validator("merchant_webhook_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("merchant_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Refused at start, not on every delivery attempt: a URL httpx cannot send to would
        # fail each one, in logs and history. The message never shows the URL or any part of
        # it (a password with an unencoded `/`, `#` or `?` is what httpx calls the port).
        problem = webhook_url_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"TEMPAY_MERCHANT_WEBHOOK_URL {problem} (its value is not shown)")
        return value

    @field_validator("merchant_webhook_secret", mode="before")
    @classmethod
    def _blank_secret_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("merchant_webhook_secret")
    @classmethod
    def _whsec_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_secret(value.get_secret_value())
            except InvalidSecret as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _secret_with_url(self) -> Settings:
        if self.merchant_webhook_url and self.merchant_webhook_secret is None:
            raise ValueError(
                "TEMPAY_MERCHANT_WEBHOOK_SECRET (whsec_...) is required when "
                "TEMPAY_MERCHANT_WEBHOOK_URL is set: merchant events are always signed"
            )
        return self

    @property
    def status_query_task_queue(self) -> str:
        return f"{self.task_queue}-status"

    @property
    def book_url(self) -> str:
        """The book's SQLAlchemy URL: a bare postgresql:// URL gets the psycopg 3 driver."""
        url = self.database_url.get_secret_value() if self.database_url else ""
        if not url:
            return f"sqlite:///{(self.data_dir / 'tempay.db').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        return url

    @property
    def sandbox_enabled(self) -> bool:
        return bool(self.sandbox)

    def beside_tempay_dev(self) -> Settings:
        """These settings for a CLI command that starts transactions: in a data dir that
        `tempay dev` made (its SANDBOX_MARKER), with TEMPAY_SANDBOX unset, the sandbox is on
        (the default provider), as it is for that stack. Servers never read the marker: a
        leftover file must not switch the sandbox on in a deployment."""
        if not (self.data_dir / SANDBOX_MARKER).is_file():
            return self
        settings = self.talking_to_tempay_dev()
        return settings.model_copy(update={"sandbox": True}) if self.sandbox is None else settings

    def talking_to_tempay_dev(self) -> Settings:
        """These settings for any CLI command in a data dir that `tempay dev` made, pointed
        at this machine: that stack's own Temporal speaks plain text, whatever the shell
        exports for another cluster (TEMPORAL_API_KEY, TLS files). Servers never read it."""
        if (self.data_dir / SANDBOX_MARKER).is_file() and is_loopback_address(
            self.temporal_address
        ):
            return self.model_copy(update={"temporal_plaintext": True})
        return self

    @property
    def provider_default(self) -> str | None:
        """The provider used when none is named; None: the caller must name one."""
        if self.default_provider:
            return self.default_provider
        return "sandbox" if self.sandbox_enabled else None


@lru_cache
def is_loopback_address(address: str) -> bool:
    """Whether host:port names this machine (127.0.0.0/8, ::1, localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def get_settings() -> Settings:
    return Settings()
