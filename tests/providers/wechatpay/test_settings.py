"""TEMPAY_WECHATPAY_* settings: off without a merchant id, a clear startup error naming the
variable for anything missing or invalid, and no secret in any message or repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.registry import build_adapters
from providers.wechatpay import PROVIDER, WechatPayConfigError
from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import build_config, load_settings
from tempay.settings import Settings
from tests.support.fakes.wechatpay_api import FakeWechatPay
from tests.support.providers.wechatpay import (
    APIV3_KEY,
    APP_APPID,
    APPID,
    MINIPROGRAM_APPID,
    settings_for,
    write_keys,
)

PREFIX = "TEMPAY_WECHATPAY_"


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fake: FakeWechatPay,
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
) -> pytest.MonkeyPatch:
    """A complete, valid configuration in the environment."""
    write_keys(tmp_path, merchant_key, platform_key)
    values = settings_for(tmp_path, fake, "https://api.mch.weixin.qq.com").model_dump()
    for name, value in values.items():
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            monkeypatch.setenv(PREFIX + name.upper(), str(secret() if secret else value))
    return monkeypatch


def clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


def test_off_without_a_merchant_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear(monkeypatch)
    assert not PROVIDER.enabled(Settings(), load_settings())
    assert "wechatpay" not in build_adapters(Settings(data_dir=tmp_path))


def test_on_with_a_complete_configuration(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    adapters = build_adapters(Settings(data_dir=tmp_path))
    assert isinstance(adapters["wechatpay"], WechatPayAdapter)
    assert APIV3_KEY not in repr(adapters["wechatpay"])


@pytest.mark.parametrize(
    "name",
    ["APPID", "APIV3_KEY", "PRIVATE_KEY_FILE", "CERT_SERIAL", "PUBLIC_KEY_FILE", "PUBLIC_KEY_ID"],
)
def test_a_missing_piece_is_named(env: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    env.delenv(PREFIX + name)
    with pytest.raises(WechatPayConfigError, match=PREFIX + name):
        build_adapters(Settings(data_dir=tmp_path))


@pytest.mark.parametrize("key", ["too-short", APIV3_KEY + "x", "é" * 16 + "x"])
def test_an_apiv3_key_of_the_wrong_length(env: pytest.MonkeyPatch, key: str) -> None:
    env.setenv(PREFIX + "APIV3_KEY", key)
    with pytest.raises(WechatPayConfigError, match=PREFIX + "APIV3_KEY") as caught:
        build_adapters(Settings())
    assert key not in str(caught.value)


def test_unreadable_or_wrong_key_files(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv(PREFIX + "PRIVATE_KEY_FILE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(WechatPayConfigError, match=PREFIX + "PRIVATE_KEY_FILE"):
        build_adapters(Settings())
    # The public key where the private key should be, and the other way round.
    env.setenv(PREFIX + "PRIVATE_KEY_FILE", str(tmp_path / "pub_key.pem"))
    with pytest.raises(WechatPayConfigError, match=PREFIX + "PRIVATE_KEY_FILE"):
        build_adapters(Settings())
    env.setenv(PREFIX + "PRIVATE_KEY_FILE", str(tmp_path / "apiclient_key.pem"))
    env.setenv(PREFIX + "PUBLIC_KEY_FILE", str(tmp_path / "apiclient_key.pem"))
    with pytest.raises(WechatPayConfigError, match=PREFIX + "PUBLIC_KEY_FILE") as caught:
        build_adapters(Settings())
    assert "PRIVATE KEY-----" not in str(caught.value)


def test_invalid_values_are_named_not_echoed(env: pytest.MonkeyPatch) -> None:
    env.setenv(PREFIX + "TIMEOUT", "-3")
    with pytest.raises(WechatPayConfigError, match=PREFIX + "TIMEOUT"):
        load_settings()


def test_secrets_stay_out_of_reprs(env: pytest.MonkeyPatch) -> None:
    config = build_config(load_settings())
    assert APIV3_KEY not in repr(config) and APIV3_KEY not in repr(load_settings())
    assert APIV3_KEY not in str(load_settings().model_dump())


def test_the_mini_program_and_app_ids_are_optional(env: pytest.MonkeyPatch) -> None:
    config = build_config(load_settings())
    assert config.appids == {APPID, MINIPROGRAM_APPID, APP_APPID}
    env.delenv(PREFIX + "MINIPROGRAM_APPID")
    env.setenv(PREFIX + "APP_APPID", "")  # set but empty: unset
    config = build_config(load_settings())
    assert (config.miniprogram_appid, config.app_appid) == (None, None)
    assert config.appids == {APPID}


@pytest.mark.parametrize("name", ["APPID", "MINIPROGRAM_APPID", "APP_APPID"])
@pytest.mark.parametrize("value", ["wx 123", "wx123\nwx456", "wx" + "0" * 31, "wx中文"])
def test_a_malformed_app_id_is_named(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    # An app id is signed into the payer's parameters one value a line: no spaces or breaks.
    env.setenv(PREFIX + name, value)
    with pytest.raises(WechatPayConfigError, match=f"{PREFIX}{name} must be a WeChat app id"):
        build_adapters(Settings())


def test_the_retired_h5_ip_setting_stops_the_start(env: pytest.MonkeyPatch) -> None:
    # Every H5 order used to declare this one IP; orders now carry the payer's own, and a
    # deployment still setting it is told so, instead of silently losing the setting.
    env.setenv(PREFIX + "H5_PAYER_CLIENT_IP", "198.51.100.23")
    with pytest.raises(WechatPayConfigError, match=PREFIX + "H5_PAYER_CLIENT_IP") as caught:
        build_adapters(Settings())
    assert "payer_client_ip" in str(caught.value)
    assert "198.51.100.23" not in str(caught.value)
    env.delenv(PREFIX + "H5_PAYER_CLIENT_IP")
    assert isinstance(build_adapters(Settings())["wechatpay"], WechatPayAdapter)
