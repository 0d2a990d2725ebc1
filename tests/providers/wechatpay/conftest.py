"""Keys, the fake WeChat Pay API on 127.0.0.1, and an adapter pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import WechatPayConfig, build_config
from tests.support.fakes.wechatpay_api import FakeWechatPay, new_key
from tests.support.providers.wechatpay import (
    APIV3_KEY,
    APPID,
    CERT_SERIAL,
    MCHID,
    OTHER_APPIDS,
    settings_for,
    write_keys,
)
from tests.support.stack import serve


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
        other_appids=OTHER_APPIDS,
    )


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
