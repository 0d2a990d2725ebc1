"""A fake Stripe API served on 127.0.0.1, and a Stripe adapter pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.stripe.adapter import StripeAdapter
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.providers.stripe import API_KEY, WEBHOOK_SECRET
from tests.support.stack import bound_socket, serve, url_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    sock = bound_socket()
    fake = FakeStripe(api_key=API_KEY, webhook_secrets=[WEBHOOK_SECRET], base_url=url_of(sock))
    async with serve(fake.app(), sock):
        yield fake


@pytest.fixture
async def adapter(fake: FakeStripe) -> AsyncIterator[StripeAdapter]:
    adapter = StripeAdapter(API_KEY, [WEBHOOK_SECRET], api_base=fake.base_url, timeout=5)
    yield adapter
    await adapter.aclose()
