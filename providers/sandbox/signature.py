"""The sandbox's notification signature: RSA-SHA256 (PKCS#1 v1.5) over the raw body.

The signature travels base64-encoded in the `X-Sandbox-Signature` header. The body carries
`notify_time`, re-stamped and re-signed on every delivery attempt, so a verifier can
reject replays outside a tolerance window.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tempay.errors import SignatureError

SIGNATURE_HEADER = "X-Sandbox-Signature"


def sign_body(private_key: rsa.RSAPrivateKey, body: bytes) -> str:
    signature = private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify_body(public_key: rsa.RSAPublicKey, body: bytes, header: str | None) -> None:
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        signature = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{SIGNATURE_HEADER} is not base64") from None
    try:
        # RSA verification does not leak where a signature differs: no timing side channel.
        public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("signature does not match the body") from None
