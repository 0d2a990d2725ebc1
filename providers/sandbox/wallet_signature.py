"""The merchant's signatures over what a payer hands the wallet, as WeChat Pay (v3) and
Alipay define them; the sandbox merchant signs (tempay's adapter), the sandbox verifies.

All three are RSA-SHA256 (PKCS#1 v1.5) with the merchant's key, base64-encoded:

- JSAPI / mini-program `paySign` (WeChat "JSAPI调起支付"): over four lines, each ended by
  "\\n", the last included: appId, timeStamp, nonceStr, package ("prepay_id=..."). signType
  ("RSA") is not signed.
- APP `sign` (WeChat "APP调起支付"): over appid, timestamp, noncestr, prepayid, the same way.
- Alipay's app order string (alipay.trade.app.pay, as `sdkExecute` makes it): the request
  parameters without `sign` and without empty values, sorted by key, joined as
  `key=value` with "&" (values as they are, not URL-encoded), signed RSA2; the order string
  is every parameter URL-encoded, `sign` included.

Failures raise tempay.errors.SignatureError saying which check failed, never with a key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tempay.errors import SignatureError

# A signature of a 2048-bit key is 344 base64 characters; WeChat allows up to 512.
MAX_SIGNATURE_CHARS = 512


def lines_message(*fields: str) -> bytes:
    """WeChat's signed text: each field on its own line, every line ended by "\\n"."""
    return "".join(f"{field}\n" for field in fields).encode("utf-8")


def jsapi_message(app_id: str, timestamp: str, nonce: str, package: str) -> bytes:
    return lines_message(app_id, timestamp, nonce, package)


def app_message(app_id: str, timestamp: str, nonce: str, prepay_id: str) -> bytes:
    return lines_message(app_id, timestamp, nonce, prepay_id)


def order_string_content(params: Mapping[str, str]) -> bytes:
    """Alipay's text to sign: `sign` and empty values out, sorted by key, raw values."""
    kept = sorted((k, v) for k, v in params.items() if k != "sign" and v != "")
    return "&".join(f"{k}={v}" for k, v in kept).encode("utf-8")


def sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(public_key: rsa.RSAPublicKey, message: bytes, signature: str, name: str) -> None:
    """`name` is the field the signature came in (paySign, sign), for the message."""
    if not signature:
        raise SignatureError(f"{name} is missing")
    if len(signature) > MAX_SIGNATURE_CHARS:
        raise SignatureError(f"{name} is longer than any signature")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{name} is not base64") from None
    try:
        # RSA verification does not leak where a signature differs: no timing side channel.
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError(f"{name} does not verify with the merchant's public key") from None


def order_string(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> str:
    """The signed order string the merchant's app hands to Alipay's SDK (`payV2`)."""
    signed = {**params, "sign": sign(private_key, order_string_content(params))}
    return urlencode(sorted(signed.items()))


def parse_order_string(text: str) -> dict[str, str]:
    """The order string's parameters; SignatureError for one that is not a query string or
    names a parameter twice (which of the two would be signed?)."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SignatureError("the order string is not a URL-encoded parameter list") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise SignatureError("the order string names a parameter twice")
    return params
