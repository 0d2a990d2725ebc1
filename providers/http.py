"""The HTTP plumbing every provider adapter shares: one connection pool, opened on first use
and closed with the adapter, and one reading of a request that failed on the way.

Whether a failed request may have reached the provider decides what the core may do next:
nothing sent (NOT_SENT) is a plain ProviderError, safe to retry; a call that moves money
whose answer was lost (no answer, or a 5xx) is ProviderOutcomeUnknown, to be queried first.
"""

from __future__ import annotations

from typing import Any

import httpx

from providers.base import ProviderAdapter
from tempay.errors import ProviderError, ProviderOutcomeUnknown

# httpx errors raised before a request left: nothing reached the provider.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def unanswered(message: str, moves_money: bool) -> ProviderError:
    """The error for a request that may have arrived but whose answer is lost or unusable."""
    if moves_money:
        return ProviderOutcomeUnknown(f"{message}; the request may have been processed")
    return ProviderError(message)


class ProviderHTTP:
    """An adapter's connection to its provider's API."""

    def __init__(self, *, base_url: str = "", timeout: float) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        # Opened lazily: an adapter is built at startup, before (and whether or not) it calls.
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self._base_url, timeout=self._timeout)
        return self._client

    async def send(
        self, request: httpx.Request, what: str, *, moves_money: bool = False
    ) -> httpx.Response:
        """The provider's answer; a 4xx is the caller's to read. `what` names the call in
        errors ("stripe POST /v1/refunds"): it never holds a secret."""
        try:
            response = await self.client.send(request)
        except NOT_SENT as exc:
            raise ProviderError(f"{what}: unreachable ({type(exc).__name__}: {exc})") from exc
        except httpx.HTTPError as exc:
            raise unanswered(
                f"{what}: no answer ({type(exc).__name__}: {exc})", moves_money
            ) from exc
        if response.status_code >= 500:
            raise unanswered(f"{what}: HTTP {response.status_code}", moves_money)
        return response

    async def request(
        self, method: str, url: str, what: str, *, moves_money: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """`send` for a request built from httpx's arguments (json=, data=, params=, ...)."""
        request = self.client.build_request(method, url, **kwargs)
        return await self.send(request, what, moves_money=moves_money)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class HTTPAdapter(ProviderAdapter):
    """An adapter that calls its provider over HTTP, through `self.http`."""

    def __init__(self, *, base_url: str = "", timeout: float) -> None:
        self.http = ProviderHTTP(base_url=base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()
