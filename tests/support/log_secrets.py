"""Every log record the test suite writes, in process, is read for secrets (tests/conftest.py
installs `SPOTTER` on the root logger; a secret found fails the session, naming the logger
and the line). Child processes' logs (`tempay dev`) are read by tests/ops/test_logs.py.

The patterns are the shapes of the secrets the suite uses: private keys, Standard Webhooks
and Stripe secrets, Stripe client_secrets, the fake WeChat Pay merchant's APIv3 key, and
the API keys the tests make."""

from __future__ import annotations

import logging
import re
import traceback

from tests.support.providers.wechatpay import APIV3_KEY

PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"\bwhsec_[A-Za-z0-9+/=_]{6,}",
        r"\bsk_(?:test|live)_[A-Za-z0-9_]{6,}",
        r"_secret_[A-Za-z0-9]{6,}",  # a Stripe client_secret (pi_..._secret_...)
        re.escape(APIV3_KEY),
        r"test-api-key-[0-9a-f]{8,}",
    )
)


class SecretSpotter(logging.Handler):
    """Keeps every record whose message (or traceback) holds a secret's shape."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format holds nothing to read
            return
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        for pattern in PATTERNS:
            if match := pattern.search(text):
                shown = match.group(0)[:10]
                self.found.append(
                    f"{record.name} ({record.levelname}): {shown}... in {text[:200]!r}"
                )


SPOTTER = SecretSpotter()
