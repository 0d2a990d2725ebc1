"""WeChat Pay settings (env `TEMPAY_WECHATPAY_*`), checked as a whole at startup.

A missing or invalid piece raises WechatPayConfigError naming the variable; secrets (the
APIv3 key, the private key) never appear in the message.

One merchant id, up to three app ids bound to it: the official account's (APPID: Native, H5
and JSAPI orders), the mini-program's (MINIPROGRAM_APPID) and the mobile app's (APP_APPID).
A channel whose app id is not set is refused by the adapter, before anything is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TEMPAY_WECHATPAY_"
APIV3_KEY_BYTES = 32
# WeChat's appid: string[1,32] ("wx" and 16 hex digits in practice); no spaces, no line
# breaks (an app id is signed into the payer's JSAPI and APP parameters, one per line).
APPID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,32}")
# Read only to refuse it: H5 orders carry the payer's own IP now (PayerDetails.client_ip).
RETIRED_H5_IP = "h5_payer_client_ip"


class WechatPayConfigError(ValueError):
    """The WeChat Pay configuration is incomplete or invalid."""


class WechatPaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    mchid: str | None = None
    appid: str | None = None  # the official account's: native, h5, jsapi
    miniprogram_appid: str | None = None  # wechat_miniprogram; unset: not offered
    app_appid: str | None = None  # wechat_app (the mobile app's); unset: not offered
    apiv3_key: SecretStr | None = None
    private_key_file: Path | None = None
    cert_serial: str | None = None
    public_key_file: Path | None = None
    public_key_id: str | None = None
    api_base: str = "https://api.mch.weixin.qq.com"
    timeout: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    # Retired: H5 orders carry the payer's real IP. Still read, so that a deployment that sets
    # it is told at startup (build_config) instead of silently losing the setting.
    h5_payer_client_ip: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.mchid)


@dataclass(frozen=True)
class WechatPayConfig:
    """Everything the adapter needs, loaded and checked."""

    mchid: str
    appid: str
    apiv3_key: SecretStr
    private_key: rsa.RSAPrivateKey
    cert_serial: str
    public_key: rsa.RSAPublicKey
    public_key_id: str
    api_base: str
    timeout: float
    miniprogram_appid: str | None = None
    app_appid: str | None = None

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"WechatPayConfig(mchid={self.mchid!r}, appids={sorted(self.appids)!r})"

    @property
    def appids(self) -> frozenset[str]:
        """Every app id this merchant configures: a trade bill line of any of them is ours."""
        return frozenset(
            a for a in (self.appid, self.miniprogram_appid, self.app_appid) if a is not None
        )


def _env(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings() -> WechatPaySettings:
    """The settings from the environment; invalid values are named, never echoed."""
    try:
        return WechatPaySettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_env(str(err['loc'][0]))}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise WechatPayConfigError(f"invalid WeChat Pay settings: {problems}") from None


def _read(field: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WechatPayConfigError(
            f"{_env(field)}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from None


def load_private_key(path: Path, field: str = "private_key_file") -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(field, path), password=None)
    except (ValueError, TypeError):
        raise WechatPayConfigError(
            f"{_env(field)}: {path} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise WechatPayConfigError(f"{_env(field)}: {path} must hold an RSA key of 2048+ bits")
    return key


def load_public_key(path: Path, field: str = "public_key_file") -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(_read(field, path))
    except (ValueError, TypeError):
        raise WechatPayConfigError(f"{_env(field)}: {path} is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise WechatPayConfigError(f"{_env(field)}: {path} must hold an RSA public key")
    return key


def build_config(settings: WechatPaySettings) -> WechatPayConfig:
    """Check every piece; the first problem found is raised, naming its variable."""
    required = (
        "mchid",
        "appid",
        "apiv3_key",
        "private_key_file",
        "cert_serial",
        "public_key_file",
        "public_key_id",
    )
    missing = [_env(name) for name in required if not getattr(settings, name)]
    if missing:
        raise WechatPayConfigError(f"WeChat Pay is enabled but {', '.join(missing)} unset")
    assert settings.apiv3_key is not None
    assert settings.private_key_file is not None and settings.public_key_file is not None
    key_length = len(settings.apiv3_key.get_secret_value().encode("utf-8"))
    if key_length != APIV3_KEY_BYTES:
        raise WechatPayConfigError(
            f"{_env('apiv3_key')} must be {APIV3_KEY_BYTES} bytes (it has {key_length})"
        )
    if not settings.api_base.startswith(("https://", "http://")):
        raise WechatPayConfigError(f"{_env('api_base')} must be an http(s) URL")
    if settings.h5_payer_client_ip is not None:
        # Refused, not ignored: it made every H5 order declare one fixed IP, which WeChat Pay
        # checks against the payer's own; orders now carry it, and must (422 without it).
        raise WechatPayConfigError(
            f"{_env(RETIRED_H5_IP)} is no longer read: wechat_h5 orders now carry the payer's "
            "own IP (payer_client_ip, required for that channel); unset it"
        )
    appids = {name: _appid(settings, name) for name in ("appid", "miniprogram_appid", "app_appid")}
    return WechatPayConfig(
        mchid=str(settings.mchid),
        appid=str(appids["appid"]),
        miniprogram_appid=appids["miniprogram_appid"],
        app_appid=appids["app_appid"],
        apiv3_key=settings.apiv3_key,
        private_key=load_private_key(settings.private_key_file),
        cert_serial=str(settings.cert_serial),
        public_key=load_public_key(settings.public_key_file),
        public_key_id=str(settings.public_key_id),
        api_base=settings.api_base.rstrip("/"),
        timeout=settings.timeout,
    )


def _appid(settings: WechatPaySettings, field: str) -> str | None:
    """An app id as set (None when unset or empty); one that cannot be WeChat's is refused."""
    value = getattr(settings, field)
    if not value:
        return None
    if not APPID_PATTERN.fullmatch(value):
        raise WechatPayConfigError(
            f"{_env(field)} must be a WeChat app id: 1-32 letters, digits, '_' or '-'"
        )
    return str(value)
