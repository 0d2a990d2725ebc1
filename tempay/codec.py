"""Payload encryption: an AES-256-GCM PayloadCodec with named keys, so history written under
an older key stays readable after rotation.

Every payload is replaced by one whose data is nonce (12 bytes) + AES-GCM(serialized
Payload), with the key id as associated data, and whose metadata says
`encoding: binary/encrypted` and `encryption-key-id: <id>`: the shape of Temporal's
samples-python `encryption` sample, so its codec servers and tools read ours.

Keys come from TEMPAY_CODEC_KEYS (`id:base64key,id:base64key`, the first encrypts, all
decrypt) or, when that is unset, from the file `{data_dir}/codec_keys` in the same format
(one entry a line allowed) that `tempay dev` creates. Neither: payloads are not encrypted.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from tempay.errors import CodecKeyError, PayloadDecryptionError

if TYPE_CHECKING:
    from tempay.settings import Settings

log = logging.getLogger("tempay.codec")

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_FILE_NAME = "codec_keys"
NONCE_BYTES = 12
KEY_BYTES = 32
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class CodecKey:
    key_id: str
    key: bytes = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return f"CodecKey(key_id={self.key_id!r}, key=<hidden>)"


def parse_keys(text: str, source: str = "TEMPAY_CODEC_KEYS") -> tuple[CodecKey, ...]:
    """`id:base64,id:base64` (commas or newlines; `#` comments) -> keys, first one encrypts."""
    entries = [
        entry.strip()
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for entry in line.split(",")
        if entry.strip()
    ]
    if not entries:
        raise CodecKeyError(f"{source} holds no keys (expected key_id:base64 entries)")
    keys: list[CodecKey] = []
    for position, entry in enumerate(entries, start=1):
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep:
            raise CodecKeyError(f"{source} entry {position} is not key_id:base64(32 bytes)")
        if not _KEY_ID.fullmatch(key_id):
            raise CodecKeyError(
                f"{source} entry {position}: the key id must be 1-64 letters, digits, "
                "'.', '_' or '-'"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CodecKeyError(
                f"{source} key {key_id!r} is not valid base64"
            ) from None  # the cause would quote the key
        if len(key) != KEY_BYTES:
            raise CodecKeyError(
                f"{source} key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
            )
        if any(k.key_id == key_id for k in keys):
            raise CodecKeyError(f"{source} names key id {key_id!r} twice")
        keys.append(CodecKey(key_id, key))
    return tuple(keys)


def new_key_entry(key_id: str | None = None) -> str:
    """A fresh `key_id:base64` entry (e.g. to put first in TEMPAY_CODEC_KEYS to rotate)."""
    key_id = key_id or f"k{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
    if not _KEY_ID.fullmatch(key_id):
        raise CodecKeyError("a key id must be 1-64 letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def ensure_key_file(data_dir: Path) -> Path:
    """Create `{data_dir}/codec_keys` (mode 0600) with one new key, unless it exists."""
    path = key_file(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write(
            "# tempay payload encryption keys: key_id:base64(32 bytes), one a line.\n"
            "# The first encrypts; all decrypt. To rotate, put a new key first and keep the\n"
            "# old ones while histories written with them are still read.\n"
            f"{new_key_entry()}\n"
        )
    log.info("created payload encryption key file %s", path)
    return path


def configured_keys(settings: Settings) -> tuple[CodecKey, ...] | None:
    """TEMPAY_CODEC_KEYS, else the data dir's key file, else None (no encryption)."""
    if settings.codec_keys is not None:
        return parse_keys(settings.codec_keys.get_secret_value())
    path = key_file(settings.data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CodecKeyError(f"cannot read codec key file {path}: {exc.strerror}") from None
    keys = parse_keys(text, source=f"codec key file {path}")
    if path.stat().st_mode & 0o077:
        log.warning("codec key file %s is readable by other users: chmod 600 it", path)
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM per payload; the first key encrypts, every key decrypts."""

    def __init__(self, keys: Sequence[CodecKey]) -> None:
        super().__init__()
        if not keys:
            raise CodecKeyError("EncryptionCodec needs at least one key")
        self._current = keys[0].key_id
        self._ciphers = {k.key_id: AESGCM(k.key) for k in keys}

    @property
    def key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        return f"EncryptionCodec(key_ids={self.key_ids!r})"

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self._current.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on: readable as it is
        raw_id = payload.metadata.get(KEY_ID_METADATA, b"")
        key_id = raw_id.decode("utf-8", errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with unknown key id {key_id!r} "
                f"(configured: {', '.join(self._ciphers)}); add that key to "
                "TEMPAY_CODEC_KEYS (after the current one) to read it"
            )
        if len(payload.data) < NONCE_BYTES + _TAG_BYTES:
            raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) is truncated")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            return Payload.FromString(cipher.decrypt(nonce, sealed, raw_id))
        except InvalidTag:
            raise PayloadDecryptionError(
                f"encrypted payload (key {key_id!r}) failed authentication: "
                "tampered, corrupt, or not encrypted with this key"
            ) from None
        except DecodeError:
            raise PayloadDecryptionError(
                f"encrypted payload (key {key_id!r}) does not hold a Temporal payload"
            ) from None


def codec_for(settings: Settings) -> EncryptionCodec | None:
    keys = configured_keys(settings)
    return EncryptionCodec(keys) if keys else None


class ClearCodec(PayloadCodec):
    """No key configured: payloads are written in clear, and an encrypted one (written by
    an installation with keys) is refused with what to set, not an unknown-encoding error."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
                raise PayloadDecryptionError(
                    f"payloads are encrypted (key id {key_id!r}) and no key is configured "
                    "here: set TEMPAY_CODEC_KEYS, or run from the directory `tempay dev` runs "
                    "in (TEMPAY_DATA_DIR holds its codec_keys file)"
                )
        return list(payloads)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic data converter with the codec (and encrypted failure messages); without
    one, payloads stay in clear (ClearCodec)."""
    if codec is None:
        return dataclasses.replace(pydantic_data_converter, payload_codec=ClearCodec())
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        # Failure messages and stack traces can quote amounts and ids: encrypt them too.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
