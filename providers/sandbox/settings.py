"""Sandbox provider settings (env `TEMPAY_SANDBOX_*`): the server's, its runtime-adjustable
faults, and what tempay's own processes need to reach it.

Whether the sandbox exists at all is TEMPAY_SANDBOX, a core setting (`Settings.sandbox`):
the trust boundary relies on it, so it is not here."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# A probability: the share of notifications or status queries a fault hits.
Rate = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# Where the sandbox serves by default (TEMPAY_SANDBOX_HOST and TEMPAY_SANDBOX_PORT).
DEFAULT_URL = "http://127.0.0.1:8001"
# The merchant account its statements name (TEMPAY_SANDBOX_ACCOUNT), an Alipay-like PID.
DEFAULT_ACCOUNT = "2088000000000001"
# The sandbox merchant's app (TEMPAY_SANDBOX_APP_ID): the appId of its JSAPI and APP
# parameter sets and the app_id of its Alipay order strings. The adapter signs with it and
# the sandbox accepts only it; both read the same variable.
DEFAULT_APP_ID = "wxsandbox00000001"
# How old a payer's parameter set may be at the wallet page: WeChat's prepay_id is valid
# for two hours.
DEFAULT_WALLET_TOLERANCE_SECONDS = 2 * 3600.0


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError('an amount is a decimal string such as "1.00", never a JSON number')
    return value


# A statement fault: the out_trade_no it strikes, "" for none.
OrderNo = Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})?$")]
# An amount added to a statement line: a decimal string, exact.
AmountDelta = Annotated[Decimal, BeforeValidator(_no_float), Field(allow_inf_nan=False)]


class SandboxClientSettings(BaseSettings):
    """How tempay's processes (the worker, the webhook, `tempay dev` and the demo) reach the
    sandbox. Apart from the server's settings, so that a worker never reads those."""

    model_config = SettingsConfigDict(env_prefix="TEMPAY_SANDBOX_", extra="ignore")

    # The sandbox's API (TEMPAY_SANDBOX_URL); `tempay dev` serves the sandbox there.
    url: str = DEFAULT_URL
    # The account its statements must name (the server's TEMPAY_SANDBOX_ACCOUNT); also the
    # merchant id (`partnerid`) of APP parameter sets.
    account: str = DEFAULT_ACCOUNT
    # The merchant's app that JSAPI, APP and Alipay app parameters name (the server's too).
    app_id: str = Field(default=DEFAULT_APP_ID, min_length=1, max_length=32)


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEMPAY_SANDBOX_", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    # Base of every payment_url: what a payer's browser can reach.
    public_url: str = DEFAULT_URL
    # Multiplies the notification retry schedule (4m, 10m, ... 15h); tests use a tiny value.
    time_scale: Seconds = 1.0
    drop_rate: Rate = 0
    duplicate_rate: Rate = 0
    reorder_window: Seconds = 0
    delay_seconds: Seconds = 0
    status_fail_rate: Rate = 0
    status_delay_seconds: Seconds = 0
    # Refunds and transfers complete this long after they are accepted (0: at once). Real
    # seconds, not multiplied by time_scale: already short, and tests set them directly.
    refund_delay_seconds: Seconds = 2
    transfer_delay_seconds: Seconds = 2
    # Transfers recorded and paid, but answered late (the caller times out) or with a 503.
    transfer_timeout_rate: Rate = 0
    transfer_timeout_seconds: Seconds = 30
    transfer_error_rate: Rate = 0
    # The merchant account the statements (GET /statements/{day}) name.
    account: str = Field(default=DEFAULT_ACCOUNT, min_length=1, max_length=64)
    # The merchant's app: the only appId / app_id the wallet page and POST /payments accept.
    app_id: str = Field(default=DEFAULT_APP_ID, min_length=1, max_length=32)
    # A parameter set older than this (or more than a minute ahead) is refused as stale.
    wallet_tolerance_seconds: float = Field(
        default=DEFAULT_WALLET_TOLERANCE_SECONDS, gt=0, allow_inf_nan=False
    )
    # Statement faults (see Faults).
    statement_drop_order: OrderNo = ""
    statement_amount_delta_order: OrderNo = ""
    statement_amount_delta: AmountDelta = Decimal("1.00")
    statement_extra_trade: OrderNo = ""
    delivery_timeout: float = Field(default=10, gt=0, allow_inf_nan=False)
    delivery_concurrency: int = Field(default=32, ge=1)
    # Shared with the rest of tempay, hence no sandbox prefix.
    data_dir: Path = Field(default=Path(".tempay"), validation_alias="TEMPAY_DATA_DIR")

    @property
    def directory(self) -> Path:
        """Holds sandbox.db and the notification key pair."""
        return self.data_dir / "sandbox"


class Faults(BaseModel):
    """Faults the sandbox injects now, and how long refunds and transfers take; starts from
    the settings, changed with PUT /sandbox/faults."""

    drop_rate: Rate = 0
    duplicate_rate: Rate = 0
    reorder_window: Seconds = 0
    delay_seconds: Seconds = 0
    status_fail_rate: Rate = 0
    status_delay_seconds: Seconds = 0
    refund_delay_seconds: Seconds = 2
    transfer_delay_seconds: Seconds = 2
    transfer_timeout_rate: Rate = 0
    transfer_timeout_seconds: Seconds = 30
    transfer_error_rate: Rate = 0
    # The day's statement leaves out this trade's payment line (missing at the provider)...
    statement_drop_order: OrderNo = ""
    # ...shows this trade's amount plus statement_amount_delta (an amount mismatch)...
    statement_amount_delta_order: OrderNo = ""
    statement_amount_delta: AmountDelta = Decimal("1.00")
    # ...and holds a paid trade of 1.00 CNY under this out_trade_no that the sandbox never
    # had (missing in tempay). "" switches each off.
    statement_extra_trade: OrderNo = ""

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> Faults:
        return cls.model_validate(settings.model_dump(include=set(cls.model_fields)))

    def apply(self, patch: FaultsPatch) -> None:
        # The patch is validated as a whole first, so a bad field changes nothing.
        for name, value in patch.model_dump(exclude_unset=True, exclude_none=True).items():
            setattr(self, name, value)


class FaultsPatch(BaseModel):
    """A partial update of the faults: omitted fields keep their value."""

    model_config = ConfigDict(extra="forbid")

    drop_rate: Rate | None = None
    duplicate_rate: Rate | None = None
    reorder_window: Seconds | None = None
    delay_seconds: Seconds | None = None
    status_fail_rate: Rate | None = None
    status_delay_seconds: Seconds | None = None
    refund_delay_seconds: Seconds | None = None
    transfer_delay_seconds: Seconds | None = None
    transfer_timeout_rate: Rate | None = None
    transfer_timeout_seconds: Seconds | None = None
    transfer_error_rate: Rate | None = None
    statement_drop_order: OrderNo | None = None
    statement_amount_delta_order: OrderNo | None = None
    statement_amount_delta: AmountDelta | None = None
    statement_extra_trade: OrderNo | None = None
