"""The merchant application the Alipay tests use at the fake gateway: its app id and key pair,
and an `AlipayAdapter` built for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.alipay.adapter import AlipayAdapter
from tests.support.fakes.alipay_gateway import FakeAlipayGateway

APP_ID = "2021000123456789"


@dataclass(frozen=True)
class MerchantKeys:
    private_key: rsa.RSAPrivateKey
    public_pem: str

    def private_pem(self, pkcs1: bool = False) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL
            if pkcs1
            else serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_merchant_keys() -> MerchantKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return MerchantKeys(key, public.decode())


def alipay_public_key(fake: FakeAlipayGateway) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(fake.public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def make_adapter(
    fake: FakeAlipayGateway,
    keys: MerchantKeys,
    gateway_url: str = "http://127.0.0.1:9/gateway.do",
    **kwargs: object,
) -> AlipayAdapter:
    # The seller id the fake signs into its notifications, unless a test says otherwise.
    options: dict[str, Any] = {"seller_id": fake.seller_id, "timeout": 5.0, **kwargs}
    return AlipayAdapter(
        app_id=APP_ID,
        private_key=keys.private_key,
        alipay_public_key=alipay_public_key(fake),
        gateway=gateway_url,
        **options,
    )
