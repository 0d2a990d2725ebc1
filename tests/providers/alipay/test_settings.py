"""TEMPAY_ALIPAY_*: the adapter exists only with an APP_ID, and bad key files stop the start
with the variable's name, never the key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from providers.alipay import PROVIDER, AlipayAdapter, AlipayConfigError, AlipaySettings
from providers.registry import build_adapters
from tempay.settings import Settings
from tests.support.fakes.alipay_gateway import SELLER_ID
from tests.support.providers.alipay import APP_ID, MerchantKeys

ENV = ("APP_ID", "PRIVATE_KEY_FILE", "PUBLIC_KEY_FILE", "GATEWAY", "SELLER_ID", "TIMEOUT")


def configured(**values: object) -> AlipaySettings:
    """AlipaySettings for APP_ID and SELLER_ID, with `values` (key files, ...)."""
    return AlipaySettings(**{"app_id": APP_ID, "seller_id": SELLER_ID, **values})  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(f"TEMPAY_ALIPAY_{name}", raising=False)


@pytest.fixture
def key_files(tmp_path: Path, merchant_keys: MerchantKeys) -> tuple[Path, Path]:
    private = tmp_path / "app_private.pem"
    private.write_bytes(merchant_keys.private_pem())
    public = tmp_path / "alipay_public.pem"
    public.write_text(merchant_keys.public_pem)  # any RSA public key stands in for Alipay's
    return private, public


def test_no_app_id_no_adapter() -> None:
    assert not PROVIDER.enabled(Settings(), AlipaySettings())
    assert "alipay" not in build_adapters(Settings())


def test_registered_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key_files: tuple[Path, Path]
) -> None:
    private, public = key_files
    monkeypatch.setenv("TEMPAY_ALIPAY_APP_ID", APP_ID)
    monkeypatch.setenv("TEMPAY_ALIPAY_PRIVATE_KEY_FILE", str(private))
    monkeypatch.setenv("TEMPAY_ALIPAY_PUBLIC_KEY_FILE", str(public))
    monkeypatch.setenv("TEMPAY_ALIPAY_GATEWAY", "http://127.0.0.1:9/gateway.do")
    monkeypatch.setenv("TEMPAY_ALIPAY_SELLER_ID", SELLER_ID)
    adapters = build_adapters(Settings())
    assert isinstance(adapters["alipay"], AlipayAdapter)
    assert "alipay" in adapters  # beside whichever others are configured
    assert "PRIVATE" not in repr(adapters["alipay"])


@pytest.mark.parametrize("missing", ["PRIVATE_KEY_FILE", "PUBLIC_KEY_FILE"])
def test_app_id_without_a_key_file_names_the_variable(
    key_files: tuple[Path, Path], missing: str
) -> None:
    private, public = key_files
    settings = configured(
        private_key_file=None if missing == "PRIVATE_KEY_FILE" else private,
        public_key_file=None if missing == "PUBLIC_KEY_FILE" else public,
    )
    with pytest.raises(AlipayConfigError, match=f"TEMPAY_ALIPAY_{missing} is required"):
        build_adapters(Settings(), {"alipay": settings})


def test_unreadable_key_file_names_the_variable(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    _, public = key_files
    gone = tmp_path / "nowhere.pem"
    settings = configured(private_key_file=gone, public_key_file=public)
    with pytest.raises(AlipayConfigError, match="TEMPAY_ALIPAY_PRIVATE_KEY_FILE: cannot read"):
        build_adapters(Settings(), {"alipay": settings})


def test_a_key_file_that_is_not_a_key_never_shows_its_contents(
    tmp_path: Path, key_files: tuple[Path, Path], merchant_keys: MerchantKeys
) -> None:
    private, _ = key_files
    secret = "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-MATERIAL\n-----END PRIVATE KEY-----\n"
    bad = tmp_path / "bad.pem"
    bad.write_text(secret)
    with pytest.raises(AlipayConfigError) as caught:
        build_adapters(
            Settings(),
            {"alipay": configured(private_key_file=bad, public_key_file=private)},
        )
    message = str(caught.value)
    assert "TEMPAY_ALIPAY_PRIVATE_KEY_FILE" in message and "TOP-SECRET" not in message
    # A private key given as Alipay's public key is refused too, without showing it.
    with pytest.raises(AlipayConfigError) as swapped:
        build_adapters(
            Settings(),
            {"alipay": configured(private_key_file=private, public_key_file=private)},
        )
    assert "TEMPAY_ALIPAY_PUBLIC_KEY_FILE" in str(swapped.value)
    pem = merchant_keys.private_pem().decode()
    assert pem.splitlines()[1] not in str(swapped.value) + message


def test_pkcs1_pem_and_alipays_bare_base64_keys_load(
    tmp_path: Path, merchant_keys: MerchantKeys
) -> None:
    pkcs1 = tmp_path / "pkcs1.pem"
    pkcs1.write_bytes(merchant_keys.private_pem(pkcs1=True))
    der = merchant_keys.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    bare_private = tmp_path / "app_private.txt"
    bare_private.write_text(base64.b64encode(der).decode() + "\n")
    public_der = merchant_keys.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bare_public = tmp_path / "alipay_public.txt"
    bare_public.write_text(base64.b64encode(public_der).decode())
    for private in (pkcs1, bare_private):
        adapters = build_adapters(
            Settings(),
            {"alipay": configured(private_key_file=private, public_key_file=bare_public)},
        )
        assert isinstance(adapters["alipay"], AlipayAdapter)


@pytest.mark.parametrize("seller_id", [None, "", "   "])
def test_app_id_without_a_seller_id_names_the_variable(
    key_files: tuple[Path, Path], seller_id: str | None
) -> None:
    # Without it no notification's seller_id would be checked (Alipay says: check it).
    private, public = key_files
    settings = configured(seller_id=seller_id, private_key_file=private, public_key_file=public)
    with pytest.raises(AlipayConfigError, match="TEMPAY_ALIPAY_SELLER_ID is required"):
        build_adapters(Settings(), {"alipay": settings})


def test_app_id_from_the_environment_without_a_seller_id_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, key_files: tuple[Path, Path]
) -> None:
    private, public = key_files
    monkeypatch.setenv("TEMPAY_ALIPAY_APP_ID", APP_ID)
    monkeypatch.setenv("TEMPAY_ALIPAY_PRIVATE_KEY_FILE", str(private))
    monkeypatch.setenv("TEMPAY_ALIPAY_PUBLIC_KEY_FILE", str(public))
    with pytest.raises(AlipayConfigError, match="TEMPAY_ALIPAY_SELLER_ID"):
        build_adapters(Settings())


def test_gateway_must_be_http() -> None:
    with pytest.raises(ValueError, match="TEMPAY_ALIPAY_GATEWAY"):
        AlipaySettings(app_id=APP_ID, gateway="openapi.alipay.com/gateway.do")
