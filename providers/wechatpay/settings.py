"""WeChat Pay settings (env `TEMPAY_WECHATPAY_*`), checked as a whole at startup.

A missing or invalid piece raises WechatPayConfigError naming the variable; secrets (the
APIv3 key, the private key) never appear in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TEMPAY_WECHATPAY_"
APIV3_KEY_BYTES = 32


class WechatPayConfigError(ValueError):
    """The WeChat Pay configuration is incomplete or invalid."""


class WechatPaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    mchid: str | None = None
    appid: str | None = None
    apiv3_key: SecretStr | None = None
    private_key_file: Path | None = None
    cert_serial: str | None = None
    public_key_file: Path | None = None
    public_key_id: str | None = None
    api_base: str = "https://api.mch.weixin.qq.com"
    timeout: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    # H5 payments must name the payer's IP; orders do not carry it yet (see README).
    h5_payer_client_ip: str = "127.0.0.1"

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
    h5_payer_client_ip: str = "127.0.0.1"

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"WechatPayConfig(mchid={self.mchid!r}, appid={self.appid!r})"


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
    return WechatPayConfig(
        mchid=str(settings.mchid),
        appid=str(settings.appid),
        apiv3_key=settings.apiv3_key,
        private_key=load_private_key(settings.private_key_file),
        cert_serial=str(settings.cert_serial),
        public_key=load_public_key(settings.public_key_file),
        public_key_id=str(settings.public_key_id),
        api_base=settings.api_base.rstrip("/"),
        timeout=settings.timeout,
        h5_payer_client_ip=settings.h5_payer_client_ip,
    )
