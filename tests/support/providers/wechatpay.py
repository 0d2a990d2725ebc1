"""The merchant the WeChat Pay tests use at the fake WeChat Pay API: its ids, its APIv3 key,
its key files, and the settings that point an adapter at the fake."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.wechatpay.settings import WechatPaySettings
from tests.support.fakes.wechatpay_api import FakeWechatPay

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
APIV3_KEY = "0123456789abcdefghijklmnopqrstuv"  # 32 bytes
CERT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_keys(directory: Path, merchant: rsa.RSAPrivateKey, platform: rsa.RSAPrivateKey) -> None:
    (directory / "apiclient_key.pem").write_bytes(private_pem(merchant))
    (directory / "pub_key.pem").write_bytes(public_pem(platform))


def settings_for(
    directory: Path, fake: FakeWechatPay, api_base: str, **overrides: object
) -> WechatPaySettings:
    values: dict[str, object] = {
        "mchid": MCHID,
        "appid": APPID,
        "apiv3_key": APIV3_KEY,
        "private_key_file": directory / "apiclient_key.pem",
        "cert_serial": CERT_SERIAL,
        "public_key_file": directory / "pub_key.pem",
        "public_key_id": fake.public_key_id,
        "api_base": api_base,
        "timeout": 5,
        **overrides,
    }
    return WechatPaySettings(**values)  # type: ignore[arg-type]
