"""WeChat Pay API v3 signatures and AEAD_AES_256_GCM, byte-exact.

- Requests: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
  signature="..",timestamp="..",serial_no=".."`, the signature being base64 SHA256withRSA
  (PKCS#1 v1.5) over `METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n`, URL = path + query.
- Responses and notifications: `Wechatpay-Signature` over
  `Wechatpay-Timestamp\\nWechatpay-Nonce\\nbody\\n`, with the WeChat Pay public key whose id
  is in `Wechatpay-Serial`.
- Notification resources: AES-256-GCM with the APIv3 key, the resource's nonce and
  associated data; the base64 ciphertext ends with the 16-byte tag.
- The payer's parameters (no request: the merchant signs them, WeChat's client checks them
  against the prepay order), base64 SHA256withRSA (PKCS#1 v1.5) with the merchant's key:
  JSAPI / mini-program `paySign` over `appId\ntimeStamp\nnonceStr\npackage\n` (package =
  `prepay_id=...`; signType "RSA" is not signed); APP `sign` over
  `appid\ntimestamp\nnoncestr\nprepayid\n` (partnerid and package "Sign=WXPay" are not
  signed). Every line ends with \n, the last too.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tempay.errors import SignatureError

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
SIGNATURE_HEADER = "Wechatpay-Signature"
TIMESTAMP_HEADER = "Wechatpay-Timestamp"
NONCE_HEADER = "Wechatpay-Nonce"
SERIAL_HEADER = "Wechatpay-Serial"
SIGNATURE_TYPE_HEADER = "Wechatpay-Signature-Type"

_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')
# Unix seconds in ASCII digits only: int() alone also takes "+1", " 1", "1_0", "١" and
# raises past 4,300 digits; a float of a longer one overflows. Twelve reach the year 33658.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class DecryptionError(Exception):
    """A resource that does not decrypt (wrong key or tampered)."""


def sign(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """base64(SHA256withRSA PKCS#1 v1.5 over the UTF-8 message)."""
    raw = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def verify(public_key: rsa.RSAPublicKey, message: bytes, signature: str) -> None:
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None
    try:
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def request_message(method: str, url: str, timestamp: str, nonce: str, body: str) -> str:
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n"


def payer_message(*lines: str) -> str:
    """The JSAPI / APP signing string: one value a line. A value holding a line break would
    move the others, so it is refused (callers pass checked app ids and prepay ids)."""
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError("a signed payer parameter holds a line break")
    return "".join(line + "\n" for line in lines)


def jsapi_pay_sign(
    private_key: rsa.RSAPrivateKey, app_id: str, timestamp: str, nonce: str, package: str
) -> str:
    """`paySign` for WeixinJSBridge getBrandWCPayRequest / wx.requestPayment."""
    return sign(private_key, payer_message(app_id, timestamp, nonce, package))


def app_pay_sign(
    private_key: rsa.RSAPrivateKey, app_id: str, timestamp: str, nonce: str, prepay_id: str
) -> str:
    """`sign` for the WeChat SDK's PayReq."""
    return sign(private_key, payer_message(app_id, timestamp, nonce, prepay_id))


def new_nonce() -> str:
    return secrets.token_hex(16).upper()


def authorization(
    private_key: rsa.RSAPrivateKey,
    mchid: str,
    serial_no: str,
    method: str,
    url: str,
    body: str,
    timestamp: str,
    nonce: str,
) -> str:
    signature = sign(private_key, request_message(method, url, timestamp, nonce, body))
    return (
        f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


@dataclass(frozen=True)
class AuthorizationHeader:
    mchid: str
    nonce_str: str
    signature: str
    timestamp: str
    serial_no: str


def parse_authorization(value: str | None) -> AuthorizationHeader:
    """The parts of an Authorization header (the fake WeChat Pay API checks them)."""
    if not value or not value.startswith(SCHEMA + " "):
        raise SignatureError(f"Authorization must use the {SCHEMA} schema")
    params = dict(_AUTH_PARAM.findall(value[len(SCHEMA) + 1 :]))
    try:
        return AuthorizationHeader(
            mchid=params["mchid"],
            nonce_str=params["nonce_str"],
            signature=params["signature"],
            timestamp=params["timestamp"],
            serial_no=params["serial_no"],
        )
    except KeyError as exc:
        raise SignatureError(f"Authorization lacks {exc.args[0]}") from None


@dataclass(frozen=True)
class SignedHeaders:
    signature: str
    timestamp: str
    nonce: str
    serial: str


def signed_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """The four Wechatpay-* headers; any missing one is a SignatureError."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [
        name
        for name in (SIGNATURE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SERIAL_HEADER)
        if not lower.get(name.lower())
    ]
    if missing:
        raise SignatureError(f"missing {', '.join(missing)}")
    signature_type = lower.get(SIGNATURE_TYPE_HEADER.lower())
    if signature_type is not None and signature_type != SCHEMA:
        raise SignatureError(f"unsupported {SIGNATURE_TYPE_HEADER} {signature_type!r}")
    return SignedHeaders(
        signature=lower[SIGNATURE_HEADER.lower()],
        timestamp=lower[TIMESTAMP_HEADER.lower()],
        nonce=lower[NONCE_HEADER.lower()],
        serial=lower[SERIAL_HEADER.lower()],
    )


def parse_timestamp(value: str) -> int:
    """A `Wechatpay-Timestamp` as unix seconds; anything but 1-12 ASCII digits is refused."""
    if not _TIMESTAMP.fullmatch(value):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not unix seconds")
    return int(value)


def verify_signed(
    public_key: rsa.RSAPublicKey, public_key_id: str, headers: SignedHeaders, body: bytes
) -> None:
    """Checks the key id and the signature over `timestamp\\nnonce\\nbody\\n`."""
    if headers.serial != public_key_id:
        raise SignatureError(f"{SERIAL_HEADER} {headers.serial!r} is not our WeChat Pay key")
    message = headers.timestamp.encode() + b"\n" + headers.nonce.encode() + b"\n" + body + b"\n"
    verify(public_key, message, headers.signature)


def decrypt_resource(key: bytes, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    try:
        data = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("ciphertext is not base64") from None
    try:
        return AESGCM(key).decrypt(nonce.encode(), data, associated_data.encode())
    except (InvalidTag, ValueError):
        raise DecryptionError("resource does not decrypt with the APIv3 key") from None
