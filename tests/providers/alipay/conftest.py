"""Alipay fixtures: the merchant application's key pair, the fake gateway, an adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.alipay.adapter import AlipayAdapter
from tests.support.fakes.alipay_gateway import FakeAlipayGateway
from tests.support.providers.alipay import APP_ID, MerchantKeys, make_adapter, new_merchant_keys
from tests.support.stack import serve


@pytest.fixture(scope="session")
def merchant_keys() -> MerchantKeys:
    return new_merchant_keys()


@pytest.fixture
def fake(merchant_keys: MerchantKeys) -> FakeAlipayGateway:
    return FakeAlipayGateway(APP_ID, merchant_keys.public_pem)


@pytest.fixture
async def gateway_url(fake: FakeAlipayGateway) -> AsyncIterator[str]:
    async with serve(fake.app()) as url:
        yield f"{url}/gateway.do"


@pytest.fixture
async def adapter(
    fake: FakeAlipayGateway, merchant_keys: MerchantKeys, gateway_url: str
) -> AsyncIterator[AlipayAdapter]:
    adapter = make_adapter(fake, merchant_keys, gateway_url)
    yield adapter
    await adapter.aclose()
