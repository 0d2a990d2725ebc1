"""Alipay's RSA2 `verify`: it raises tempay's one SignatureError, saying which check failed
(missing, garbled, wrong), and returns nothing when the sign holds; checked against
signatures made by Alipay's own SDK."""

from __future__ import annotations

import pytest
from alipay.aop.api.util.SignatureUtils import sign_with_rsa2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.alipay import signature
from tempay.errors import SignatureError
from tests.support.providers.alipay import MerchantKeys, new_merchant_keys

PARAMS = {
    "app_id": "2021000123456789",
    "notify_id": "ac05099524730693a8b330c5ecf72da9786",
    "out_trade_no": "A1001",
    "total_amount": "10.00",
    "trade_status": "TRADE_SUCCESS",
}


def public_key(keys: MerchantKeys) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(keys.public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def sdk_sign(keys: MerchantKeys, content: str) -> str:
    sign: str = sign_with_rsa2(keys.private_pem(pkcs1=True).decode(), content, "utf-8")
    return sign


@pytest.fixture(scope="module")
def content() -> str:
    return signature.notification_sign_content(PARAMS)


def test_a_sign_made_by_alipays_sdk_verifies(merchant_keys: MerchantKeys, content: str) -> None:
    sign = sdk_sign(merchant_keys, content)
    signature.verify(public_key(merchant_keys), content.encode(), sign)  # no SignatureError
    # Ours signs as the SDK does.
    assert signature.sign(merchant_keys.private_key, content) == sign


@pytest.mark.parametrize("missing", [None, ""])
def test_a_missing_sign_is_refused(
    merchant_keys: MerchantKeys, content: str, missing: str | None
) -> None:
    with pytest.raises(SignatureError, match="^missing sign$"):
        signature.verify(public_key(merchant_keys), content.encode(), missing)


@pytest.mark.parametrize("garbled", ["not*base64", "abc", "é", "c2lnbg==\n!"])
def test_a_garbled_sign_is_refused(merchant_keys: MerchantKeys, content: str, garbled: str) -> None:
    with pytest.raises(SignatureError, match="^sign is not base64$"):
        signature.verify(public_key(merchant_keys), content.encode(), garbled)


def test_a_sign_by_another_key_is_refused(merchant_keys: MerchantKeys, content: str) -> None:
    other = new_merchant_keys()
    with pytest.raises(SignatureError, match="does not verify with Alipay's public key") as e:
        signature.verify(public_key(merchant_keys), content.encode(), sdk_sign(other, content))
    # The message names the check, never a key.
    for keys in (merchant_keys, other):
        assert keys.private_pem().decode().splitlines()[1] not in str(e.value)
        assert keys.public_pem.splitlines()[1] not in str(e.value)


def test_a_sign_over_other_content_is_refused(merchant_keys: MerchantKeys, content: str) -> None:
    sign = sdk_sign(merchant_keys, content)
    tampered = content.replace("10.00", "1000.00").encode()
    with pytest.raises(SignatureError, match="does not verify"):
        signature.verify(public_key(merchant_keys), tampered, sign)
    # Well-formed base64 that is not a signature at all.
    with pytest.raises(SignatureError, match="does not verify"):
        signature.verify(public_key(merchant_keys), content.encode(), "c2lnbg==")
