"""Keys, the fake WeChat Pay API on 127.0.0.1, and an adapter pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import WechatPayConfig, WechatPaySettings, build_config
from tests.support.fakes.wechatpay_api import FakeWechatPay, new_key
from tests.support.stack import serve

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


@pytest.fixture(scope="session")
def merchant_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="session")
def platform_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def fake(merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey) -> FakeWechatPay:
    return FakeWechatPay(
        mchid=MCHID,
        appid=APPID,
        apiv3_key=APIV3_KEY.encode(),
        merchant_public_key=merchant_key.public_key(),
        cert_serial=CERT_SERIAL,
        platform_key=platform_key,
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


@pytest.fixture
def config(
    tmp_path: Path,
    fake: FakeWechatPay,
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
) -> WechatPayConfig:
    write_keys(tmp_path, merchant_key, platform_key)
    return build_config(settings_for(tmp_path, fake, "http://127.0.0.1:9"))


@pytest.fixture
async def api(fake: FakeWechatPay) -> AsyncIterator[str]:
    async with serve(fake.app()) as url:
        yield url


@pytest.fixture
async def adapter(
    tmp_path: Path,
    fake: FakeWechatPay,
    api: str,
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
) -> AsyncIterator[WechatPayAdapter]:
    write_keys(tmp_path, merchant_key, platform_key)
    adapter = WechatPayAdapter(build_config(settings_for(tmp_path, fake, api)))
    yield adapter
    await adapter.aclose()
