"""The sandbox exists only where it is switched on, and nothing picks a provider silently
(issue 18): the servers read TEMPAY_SANDBOX only; CLI commands beside a `tempay dev` also
read the marker it leaves in its data dir."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from commands.dev import StackError, dev_settings
from providers.registry import build_adapters
from tempay.errors import InvalidInput
from tempay.settings import SANDBOX_MARKER, Settings
from transactions import build_order, build_withdrawal
from webhook.app import create_app


def made_by_tempay_dev(data_dir: Path) -> Path:
    marker = data_dir / SANDBOX_MARKER
    marker.parent.mkdir(parents=True)
    marker.write_text("left by tempay dev\n")
    return data_dir


def order(settings: Settings, provider: str | None = None) -> str:
    built = build_order(settings, order_id="A1", amount="10.00", currency="CNY", provider=provider)
    return built.provider


def test_a_deployment_that_does_not_ask_has_no_sandbox(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert "sandbox" not in build_adapters(settings)
    with pytest.raises(InvalidInput, match="name the provider"):
        order(settings)
    with pytest.raises(InvalidInput, match="name the provider"):
        build_withdrawal(
            settings, withdrawal_id="W1", amount="1", currency="CNY", payee_account="p@x"
        )
    assert order(settings, "alipay") == "alipay"  # named: taken as it is


def test_a_leftover_marker_does_not_switch_a_server_on(tmp_path: Path) -> None:
    """A `tempay webhook` or `tempay worker` started where someone once ran `tempay dev`
    (the default data dir is relative) still has no sandbox: servers need TEMPAY_SANDBOX."""
    settings = Settings(data_dir=made_by_tempay_dev(tmp_path))
    assert "sandbox" not in build_adapters(settings)
    assert settings.provider_default is None
    beside = settings.beside_tempay_dev()  # what `tempay pay` makes of it
    assert beside.sandbox_enabled and order(beside) == "sandbox"
    assert not Settings(data_dir=tmp_path, sandbox=False).beside_tempay_dev().sandbox_enabled


def test_switched_on_and_a_deliberate_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPAY_SANDBOX", "true")
    assert "sandbox" in build_adapters(Settings(data_dir=tmp_path))
    monkeypatch.setenv("TEMPAY_SANDBOX", "0")
    assert Settings(data_dir=tmp_path).sandbox is False
    monkeypatch.setenv("TEMPAY_SANDBOX", "maybe")
    with pytest.raises(ValueError, match="sandbox"):
        Settings(data_dir=tmp_path)  # an unreadable switch stops the start
    monkeypatch.delenv("TEMPAY_SANDBOX")
    monkeypatch.setenv("TEMPAY_DEFAULT_PROVIDER", "stripe")
    assert order(Settings(data_dir=tmp_path)) == "stripe"


async def test_no_sandbox_route_where_it_is_off(tmp_path: Path) -> None:
    """No key file, no adapter: 404 for /notify/sandbox (it was a 500 when the key file was
    missing), while a switched-on deployment with its key file missing answers 503."""

    async def post(settings: Settings) -> httpx.Response:
        app = create_app(settings, build_adapters(settings))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post("/notify/sandbox", content=b"{}", headers={"X-Sign": "x"})

    off = await post(Settings(data_dir=tmp_path))
    assert off.status_code == 404
    on = await post(Settings(data_dir=tmp_path, sandbox=True))
    assert on.status_code == 503 and "public key" in on.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_tempay_dev_on_loopback(host: str) -> None:
    settings = dev_settings(Settings(webhook_host=host))
    assert settings.sandbox_enabled and settings.internal_on_webhook_port


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_tempay_dev_refuses_to_serve_everything_beyond_loopback(host: str) -> None:
    with pytest.raises(StackError, match="127.0.0.1 only"):
        dev_settings(Settings(webhook_host=host))
