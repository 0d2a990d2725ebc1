"""The AES-256-GCM payload codec, its key configuration, and the data converter around it."""

from __future__ import annotations

import base64
import logging
import os
import stat
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

from tempay.codec import (
    EncryptionCodec,
    codec_for,
    configured_keys,
    data_converter,
    ensure_key_file,
    key_file,
    new_key_entry,
    parse_keys,
)
from tempay.errors import CodecKeyError, InvalidInput, PayloadDecryptionError
from tempay.settings import Settings

ORDER = {"order_id": "ord-secret-4711", "amount": Decimal("1234.56")}


def settings(data_dir: Path, keys: str | None = None) -> Settings:
    return Settings(data_dir=data_dir, codec_keys=SecretStr(keys) if keys else None)


async def payloads_of(value: object) -> list[Payload]:
    """What the pydantic data converter (no codec) makes of `value`: the plaintext payloads."""
    return await data_converter(None).encode([value])


# Round trip, rotation, passthrough


async def test_roundtrip_hides_the_plaintext_and_restores_it(old_entry: str) -> None:
    codec = EncryptionCodec(parse_keys(old_entry))
    plain = await payloads_of(ORDER)
    encrypted = await codec.encode(plain)

    assert len(encrypted) == 1
    assert dict(encrypted[0].metadata) == {
        "encoding": b"binary/encrypted",
        "encryption-key-id": b"k-old",
    }
    assert b"ord-secret-4711" not in encrypted[0].SerializeToString()
    assert b"1234.56" not in encrypted[0].SerializeToString()
    assert await codec.decode(encrypted) == plain


async def test_each_encoding_uses_a_fresh_nonce(old_entry: str) -> None:
    codec = EncryptionCodec(parse_keys(old_entry))
    plain = await payloads_of(ORDER)
    first, second = await codec.encode(plain), await codec.encode(plain)
    assert first[0].data[:12] != second[0].data[:12]
    assert first[0].data != second[0].data


async def test_the_data_converter_encrypts_through_the_codec(old_entry: str) -> None:
    converter = data_converter(EncryptionCodec(parse_keys(old_entry)))
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    encoded = await converter.encode([ORDER])
    assert encoded[0].metadata["encoding"] == b"binary/encrypted"
    assert await converter.decode(encoded, [dict]) == [
        {"order_id": "ord-secret-4711", "amount": "1234.56"}
    ]


async def test_rotation_reads_old_payloads_and_writes_with_the_new_key(
    old_entry: str, new_entry: str
) -> None:
    before = EncryptionCodec(parse_keys(old_entry))
    written_before = await before.encode(await payloads_of(ORDER))

    after = EncryptionCodec(parse_keys(f"{new_entry},{old_entry}"))
    assert after.key_id == "k-new"
    assert await after.decode(written_before) == await payloads_of(ORDER)
    written_after = await after.encode(await payloads_of(ORDER))
    assert written_after[0].metadata["encryption-key-id"] == b"k-new"
    # Only the new configuration reads what it writes.
    with pytest.raises(PayloadDecryptionError, match="unknown key id 'k-new'"):
        await before.decode(written_after)


async def test_unknown_key_id_names_the_id_but_never_a_key(old_entry: str, new_entry: str) -> None:
    encrypted = await EncryptionCodec(parse_keys(new_entry)).encode(await payloads_of(ORDER))
    with pytest.raises(PayloadDecryptionError) as caught:
        await EncryptionCodec(parse_keys(old_entry)).decode(encrypted)
    message = str(caught.value)
    assert "'k-new'" in message and "k-old" in message
    for entry in (old_entry, new_entry):
        assert entry.split(":", 1)[1] not in message


@pytest.mark.parametrize("flip", [0, 12, -1])  # nonce, ciphertext, tag
async def test_tampered_ciphertext_is_refused(old_entry: str, flip: int) -> None:
    codec = EncryptionCodec(parse_keys(old_entry))
    (encrypted,) = await codec.encode(await payloads_of(ORDER))
    data = bytearray(encrypted.data)
    data[flip] ^= 0x01
    tampered = Payload(metadata=encrypted.metadata, data=bytes(data))
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([tampered])


async def test_key_id_is_authenticated(old_entry: str) -> None:
    """Relabelling a payload with another configured key id fails: the id is associated data."""
    key = parse_keys(old_entry)[0].key
    same_key_twice = (
        f"k-old:{base64.b64encode(key).decode()},k-alias:{base64.b64encode(key).decode()}"
    )
    codec = EncryptionCodec(parse_keys(same_key_twice))
    (encrypted,) = await codec.encode(await payloads_of(ORDER))
    relabelled = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k-alias"},
        data=encrypted.data,
    )
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([relabelled])


async def test_truncated_payload_is_refused(old_entry: str) -> None:
    codec = EncryptionCodec(parse_keys(old_entry))
    short = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k-old"}, data=b"x" * 20
    )
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await codec.decode([short])


async def test_payloads_written_before_encryption_pass_through(old_entry: str) -> None:
    codec = EncryptionCodec(parse_keys(old_entry))
    plain = await payloads_of(ORDER)
    empty = Payload(metadata={"encoding": b"binary/null"})
    mixed = [*plain, *(await codec.encode(plain)), empty]
    assert await codec.decode(mixed) == [*plain, *plain, empty]


# Key configuration


def test_keys_parse_in_order_first_encrypts(old_entry: str, new_entry: str) -> None:
    keys = parse_keys(f" {new_entry} ,\n{old_entry},")
    assert [k.key_id for k in keys] == ["k-new", "k-old"]
    assert EncryptionCodec(keys).key_id == "k-new"
    assert "k-new" in repr(keys) and new_entry.split(":", 1)[1] not in repr(keys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no keys"),
        ("k1", "entry 1 is not key_id:base64"),
        (":" + base64.b64encode(os.urandom(32)).decode(), "entry 1: the key id"),
        ("bad id:" + base64.b64encode(os.urandom(32)).decode(), "entry 1: the key id"),
        ("k1:not*base64!", "key 'k1' is not valid base64"),
        ("k1:" + base64.b64encode(os.urandom(16)).decode(), "key 'k1' is 16 bytes"),
        (
            "k1:"
            + base64.b64encode(os.urandom(32)).decode()
            + ",k1:"
            + base64.b64encode(os.urandom(32)).decode(),
            "names key id 'k1' twice",
        ),
    ],
)
def test_malformed_keys_get_a_clear_error_without_key_material(text: str, message: str) -> None:
    with pytest.raises(CodecKeyError, match=message) as caught:
        parse_keys(text)
    assert isinstance(caught.value, InvalidInput)  # the CLI prints it as one line
    material = text.partition(":")[2].split(",")[0]
    if material:
        assert material not in str(caught.value)


def test_malformed_setting_is_a_validation_error_that_does_not_echo_it() -> None:
    material = base64.b64encode(os.urandom(31)).decode()
    with pytest.raises(ValidationError) as caught:
        Settings(codec_keys=SecretStr(f"k1:{material}"))
    assert "31 bytes" in str(caught.value)
    assert material not in str(caught.value)


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, old_entry: str) -> None:
    monkeypatch.setenv("TEMPAY_CODEC_KEYS", old_entry)
    loaded = Settings()
    assert loaded.codec_keys is not None
    assert old_entry not in repr(loaded)
    assert [k.key_id for k in configured_keys(loaded) or ()] == ["k-old"]


async def test_no_keys_and_no_file_means_no_encryption(tmp_path: Path) -> None:
    assert configured_keys(settings(tmp_path)) is None
    assert codec_for(settings(tmp_path)) is None
    clear = data_converter(None)
    [payload] = await clear.encode([ORDER])
    assert payload.metadata["encoding"] == b"json/plain" and b"ord-secret-4711" in payload.data
    [back] = await clear.decode([payload], [dict])
    assert back["order_id"] == "ord-secret-4711"


async def test_without_a_key_an_encrypted_payload_is_refused_by_name(tmp_path: Path) -> None:
    sealed = await data_converter(EncryptionCodec(parse_keys(new_key_entry("k-9")))).encode([ORDER])
    with pytest.raises(PayloadDecryptionError, match="key id 'k-9'.*TEMPAY_CODEC_KEYS"):
        await data_converter(None).decode(sealed, [dict])


def test_key_file_is_created_once_private_and_read_when_the_setting_is_unset(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    path = ensure_key_file(data_dir)
    assert path == key_file(data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert ensure_key_file(data_dir) == path and path.read_text() == first  # never replaced

    codec = codec_for(settings(data_dir))
    assert codec is not None
    (key,) = parse_keys(first, source=str(path))
    assert codec.key_ids == (key.key_id,)


def test_the_setting_wins_over_the_key_file(tmp_path: Path, old_entry: str) -> None:
    ensure_key_file(tmp_path)
    codec = codec_for(settings(tmp_path, old_entry))
    assert codec is not None and codec.key_ids == ("k-old",)


def test_a_malformed_key_file_names_the_file(tmp_path: Path) -> None:
    key_file(tmp_path).write_text("k1:tooshort\n")
    with pytest.raises(CodecKeyError, match=str(key_file(tmp_path))):
        codec_for(settings(tmp_path))


def test_a_key_file_others_can_read_is_warned_about(
    tmp_path: Path, old_entry: str, caplog: pytest.LogCaptureFixture
) -> None:
    key_file(tmp_path).write_text(old_entry + "\n")
    key_file(tmp_path).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tempay.codec"):
        assert codec_for(settings(tmp_path)) is not None
    assert "chmod 600" in caplog.text
    assert old_entry.split(":", 1)[1] not in caplog.text
