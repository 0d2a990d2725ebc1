"""The merchant the WeChat Pay tests use at the fake WeChat Pay API: its ids (one mchid, three
app ids: official account, mini-program, mobile app), its APIv3 key, its key files, and the
settings that point an adapter at the fake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.wechatpay.settings import WechatPaySettings
from tempay.channels import PayerDetails
from tempay.domain import PaymentOrder
from tests.support.fakes.wechatpay_api import FakeWechatPay

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"  # the official account's
MINIPROGRAM_APPID = "wx3f8c1a2b4d5e6f70"
APP_APPID = "wx9a8b7c6d5e4f3a21"  # the mobile app's
OTHER_APPIDS = (MINIPROGRAM_APPID, APP_APPID)
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
        "miniprogram_appid": MINIPROGRAM_APPID,
        "app_appid": APP_APPID,
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


def payment_order(
    order_id: str,
    channel: str | None = "wechat_native",
    amount: str = "12.34",
    payer: PayerDetails | None = None,
    **kw: str,
) -> PaymentOrder:
    """An order as build_order makes it for WeChat Pay (notify_url included)."""
    return PaymentOrder(
        order_id=order_id,
        amount=Decimal(amount),
        currency=kw.pop("currency", "CNY"),
        provider="wechatpay",
        channel=channel,
        subject=kw.pop("subject", "测试商品"),
        notify_url="https://tempay.example/notify/wechatpay",
        payer=payer,
        **kw,
    )
