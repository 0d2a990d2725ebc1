"""TEMPAY_STRIPE_* settings, and the registry offering Stripe only when configured."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers.registry import build_adapters
from providers.stripe.adapter import StripeAdapter
from providers.stripe.settings import StripeSettings
from tempay.settings import Settings

KEY = "sk_test_settings_secret_value_1"
NEW, OLD = "whsec_new_secret_value_2", "whsec_old_secret_value_3"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "WEBHOOK_SECRET", "API_BASE", "TIMEOUT", "RETURN_URL"):
        monkeypatch.delenv(f"TEMPAY_STRIPE_{name}", raising=False)


def test_not_offered_without_an_api_key(tmp_path) -> None:
    assert "stripe" not in build_adapters(Settings(data_dir=tmp_path))
    assert not StripeSettings().enabled


def test_offered_with_key_and_secret(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TEMPAY_STRIPE_API_KEY", KEY)
    monkeypatch.setenv("TEMPAY_STRIPE_WEBHOOK_SECRET", f"{NEW}, {OLD}")
    monkeypatch.setenv("TEMPAY_STRIPE_API_BASE", "http://127.0.0.1:9/")
    monkeypatch.setenv("TEMPAY_STRIPE_TIMEOUT", "2.5")
    settings = StripeSettings()
    assert [s.get_secret_value() for s in settings.webhook_secrets()] == [NEW, OLD]
    assert settings.api_base == "http://127.0.0.1:9" and settings.timeout.total_seconds() == 2.5
    adapter = build_adapters(Settings(data_dir=tmp_path))["stripe"]
    assert isinstance(adapter, StripeAdapter) and adapter.name == "stripe"
    for text in (repr(settings), str(settings), repr(adapter)):
        assert KEY not in text and NEW not in text and OLD not in text


def test_key_without_webhook_secret_stops_startup(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("TEMPAY_STRIPE_API_KEY", KEY)
    with pytest.raises(ValidationError) as caught:
        build_adapters(Settings(data_dir=tmp_path))
    assert "TEMPAY_STRIPE_WEBHOOK_SECRET" in str(caught.value) and KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("API_KEY", "pk_test_publishable_123", "TEMPAY_STRIPE_API_KEY"),
        ("WEBHOOK_SECRET", "not-a-whsec-secret", "whsec_"),
        ("WEBHOOK_SECRET", f"{NEW},", "whsec_"),
        ("API_BASE", "api.stripe.com", "https://"),
    ],
)
def test_bad_values_are_clear_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv("TEMPAY_STRIPE_API_KEY", KEY)
    monkeypatch.setenv("TEMPAY_STRIPE_WEBHOOK_SECRET", NEW)
    monkeypatch.setenv(f"TEMPAY_STRIPE_{name}", value)
    with pytest.raises(ValidationError) as caught:
        StripeSettings()
    assert message in str(caught.value)
    assert value not in str(caught.value) and KEY not in str(caught.value)
