"""The sandbox's key pairs, kept as PEM files in the data dir (`{TEMPAY_DATA_DIR}/sandbox/`).

- The sandbox's notification key: the sandbox signs its notifications with the private half;
  tempay's webhook verifies them with the public half.
- The sandbox merchant's key (as a WeChat Pay or Alipay merchant has its own): tempay's
  adapter signs the payer's parameter sets (JSAPI `paySign`, the app's `sign`, Alipay's
  order string) with the private half; the sandbox's wallet page verifies them with the
  public half, as a real platform does with the public key the merchant uploaded.

Whichever process comes first makes a pair; every other one, in any process, reads the same
files (creation is atomic: a race between processes leaves one pair, never two halves)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PRIVATE_KEY_NAME = "notify_private.pem"
PUBLIC_KEY_NAME = "notify_public.pem"
MERCHANT_PRIVATE_KEY_NAME = "merchant_private.pem"
MERCHANT_PUBLIC_KEY_NAME = "merchant_public.pem"


def key_directory(data_dir: Path) -> Path:
    """Both pairs' folder in tempay's data dir (TEMPAY_DATA_DIR), beside sandbox.db."""
    return data_dir / "sandbox"


def public_key_file(data_dir: Path) -> Path:
    """The public key that verifies the sandbox's notifications, in tempay's data dir
    (TEMPAY_DATA_DIR): the sandbox writes it, the webhook reads it."""
    return key_directory(data_dir) / PUBLIC_KEY_NAME


def merchant_public_key_file(directory: Path) -> Path:
    return directory / MERCHANT_PUBLIC_KEY_NAME


def ensure_keypair(
    directory: Path,
    private_name: str = PRIVATE_KEY_NAME,
    public_name: str = PUBLIC_KEY_NAME,
) -> tuple[Path, Path]:
    """Create the key pair once; later calls, here or in another process, keep it. The
    public file always matches the private one."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / private_name, directory / public_name
    if not private_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = directory / f".{private_name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            # A hard link fails if the name exists: the first process's key wins, whole.
            os.link(tmp, private_path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    public_pem = (
        load_private_key(private_path)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        tmp = directory / f".{public_name}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(public_pem)
        os.replace(tmp, public_path)
    return private_path, public_path


def ensure_merchant_keypair(directory: Path) -> tuple[Path, Path]:
    return ensure_keypair(directory, MERCHANT_PRIVATE_KEY_NAME, MERCHANT_PUBLIC_KEY_NAME)


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path} does not hold an RSA public key")
    return key
