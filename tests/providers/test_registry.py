"""The one list of providers (providers/registry.py): it names the providers tempay ships, builds
their adapters one way, and drives what callers see: the API's provider choices, and the
channel an order gets when the caller names none."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import providers
from commands.cli import parser
from providers import registry
from providers.base import ProviderSpec
from providers.registry import PROVIDER_NAMES, PROVIDERS, build_adapters, default_channel
from providers.sandbox.adapter import SandboxAdapter
from providers.sandbox.keys import public_key_file
from providers.sandbox.settings import SandboxClientSettings
from tempay.errors import InvalidInput, SignatureError
from tempay.settings import Settings
from transactions import build_order
from webhook.api import PaymentIn, RechargeIn, WithdrawalIn

SHIPPED = ("alipay", "sandbox", "stripe", "wechatpay")
# What each provider's folder declares as its default channel (None: it takes none).
DEFAULTS = {
    "alipay": "alipay_wap",
    "sandbox": "alipay_wap",
    "stripe": "stripe_checkout",
    "wechatpay": "wechat_native",
}


def test_the_list_has_one_line_per_provider_folder() -> None:
    folders = sorted(
        p.name for p in Path(providers.__file__).parent.iterdir() if (p / "__init__.py").is_file()
    )
    assert PROVIDER_NAMES == SHIPPED
    assert sorted(PROVIDER_NAMES) == folders
    assert len(set(PROVIDER_NAMES)) == len(PROVIDERS)


def test_the_import_contracts_cover_every_provider_folder() -> None:
    """pyproject.toml names the folders in its import-linter contracts: a provider left out
    could import another, or be imported from outside the registry, unnoticed."""
    config = tomllib.loads((Path(providers.__file__).parents[1] / "pyproject.toml").read_text())
    contracts = {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}
    [independent] = [c for c in contracts.values() if c["type"] == "independence"]
    protected = {
        module
        for c in contracts.values()
        if c["type"] == "protected" and "providers.registry" in c["allowed_importers"]
        for module in c["protected_modules"]
    }
    folders = {f"providers.{name}" for name in PROVIDER_NAMES}
    assert set(independent["modules"]) == folders
    assert protected == folders


def test_each_provider_declares_its_default_channel() -> None:
    assert {spec.name: spec.default_channel for spec in PROVIDERS} == DEFAULTS
    for spec in PROVIDERS:
        assert default_channel(spec.name) == spec.default_channel
        if spec.channels and spec.default_channel is not None:
            # A default the provider's own adapter would refuse would fail every such order.
            assert spec.default_channel in [c.name for c in spec.channels], spec.name
    assert default_channel("not-shipped") is None


# The API and the CLI take their choices and defaults from the list


@pytest.mark.parametrize("body", [PaymentIn, RechargeIn, WithdrawalIn])
def test_the_apis_provider_enum_is_the_list(body: type[Any]) -> None:
    schema = body.model_json_schema()["properties"]["provider"]
    [choice] = [s for s in schema["anyOf"] if s.get("type") == "string"]
    assert choice["enum"] == list(PROVIDER_NAMES)


def test_the_apis_channel_says_each_providers_default() -> None:
    schema = PaymentIn.model_json_schema()["properties"]["channel"]
    assert schema["default"] is None
    for name, channel in DEFAULTS.items():
        assert (f"{name}: {channel}" in schema["description"]) == (channel is not None)


@pytest.mark.parametrize("provider", SHIPPED)
def test_an_order_without_a_channel_gets_its_providers_default(provider: str) -> None:
    body = PaymentIn.model_validate(
        {"order_id": "A1", "amount": "10.00", "currency": "CNY", "provider": provider}
    )
    assert body.channel is None
    order = build_order(
        Settings(),
        order_id=body.order_id,
        amount=body.amount,
        currency=body.currency,
        provider=body.provider,
        channel=body.channel,
    )
    assert order.channel == DEFAULTS[provider]


def test_a_named_channel_is_kept_and_one_not_offered_is_refused() -> None:
    order = build_order(
        Settings(), order_id="A1", amount="1.00", currency="CNY", provider="sandbox",
        channel="alipay_page",
    )  # fmt: skip
    assert order.channel == "alipay_page"
    for channel in ("", "anything"):
        with pytest.raises(InvalidInput, match=f"sandbox has no channel {channel!r}"):
            build_order(
                Settings(), order_id="A1", amount="1.00", currency="CNY", provider="sandbox",
                channel=channel,
            )  # fmt: skip
    # A provider tempay does not ship (one a deployment added) has no default here.
    order = build_order(Settings(), order_id="A1", amount="1.00", currency="CNY", provider="x")
    assert order.channel is None


@pytest.mark.parametrize("provider", SHIPPED)
def test_the_cli_leaves_the_channel_to_the_provider(provider: str) -> None:
    for command in ("pay", "recharge"):
        argv = [command, "--order-id", "A1", "--amount", "1.00", "--currency", "CNY"]
        argv += ["--provider", provider] + (["--account-id", "u1"] if command == "recharge" else [])
        assert parser().parse_args(argv).channel is None
    args = parser().parse_args(
        ["pay", "--order-id", "A1", "--amount", "1", "--currency", "CNY", "--channel", "wechat_h5"]
    )
    assert args.channel == "wechat_h5"


# Building the adapters


async def test_the_sandbox_is_built_only_where_it_is_switched_on(tmp_path: Path) -> None:
    given = {"sandbox": SandboxClientSettings(url="http://127.0.0.1:9/")}
    assert "sandbox" not in build_adapters(Settings(data_dir=tmp_path), given)
    on = Settings(data_dir=tmp_path, sandbox=True)
    adapter = build_adapters(on, given)["sandbox"]
    assert isinstance(adapter, SandboxAdapter)
    # Its URL from its own settings, its key from tempay's data dir.
    assert str(adapter.http.client.base_url) == "http://127.0.0.1:9"
    assert adapter._public_key_file == public_key_file(tmp_path)
    await adapter.aclose()


def test_the_sandbox_url_is_read_from_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPAY_SANDBOX_URL", "http://127.0.0.1:18001")
    assert SandboxClientSettings().url == "http://127.0.0.1:18001"
    assert not hasattr(Settings(), "sandbox_url")
    monkeypatch.delenv("TEMPAY_SANDBOX_URL")
    assert SandboxClientSettings().url == "http://127.0.0.1:8001"


def test_settings_for_a_provider_tempay_does_not_ship_are_refused() -> None:
    with pytest.raises(ValueError, match="sandbx"):
        build_adapters(Settings(), {"sandbx": SandboxClientSettings()})


def test_an_adapter_named_otherwise_than_its_provider_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sandbox = registry.provider_spec("sandbox")
    assert sandbox is not None
    renamed: ProviderSpec[Any] = replace(sandbox, name="other")
    monkeypatch.setattr(registry, "PROVIDERS", (renamed,))
    monkeypatch.setattr(registry, "PROVIDER_NAMES", ("other",))
    with pytest.raises(RuntimeError, match="'other' is served by an adapter named 'sandbox'"):
        build_adapters(Settings(data_dir=tmp_path, sandbox=True))


# One signature error


def test_no_provider_defines_its_own_signature_error() -> None:
    root = Path(providers.__file__).parent
    defined = [
        f"{path.relative_to(root)}: {node.name}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and "Signature" in node.name
    ]
    assert defined == []


def test_every_signature_module_raises_the_one_error() -> None:
    from providers.alipay import signature as alipay
    from providers.sandbox import signature as sandbox
    from providers.stripe import signature as stripe
    from providers.wechatpay import crypto as wechatpay

    for module in (alipay, sandbox, stripe, wechatpay):
        assert module.SignatureError is SignatureError, module.__name__
