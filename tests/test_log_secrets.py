"""The suite's log spotter (tests/support/log_secrets.py) sees a secret in a record, and in a
record's traceback, and nothing in an ordinary line."""

from __future__ import annotations

import logging

from tests.support.log_secrets import SecretSpotter


def test_the_spotter_finds_each_shape_of_secret() -> None:
    spotter = SecretSpotter()
    log = logging.getLogger("tempay.test.spotter")
    log.addHandler(spotter)
    log.propagate = False
    try:
        log.info("delivered evt_1 to the merchant in 12 ms")
        assert spotter.found == []
        for line in (
            "merchant secret whsec_c2VjcmV0LXNlY3JldA==",
            "stripe key sk_test_tempay_fake_0123456789",
            "client secret pi_3N_secret_abcdefgh12",
            "-----BEGIN PRIVATE KEY-----",
            "key 0123456789abcdefghijklmnopqrstuv",
            "api key test-api-key-0123456789abcdef",
        ):
            log.warning("%s", line)
        try:
            raise ValueError("whsec_in_a_traceback_123")
        except ValueError:
            log.exception("failed")
        assert len(spotter.found) == 7
        assert "whsec_in_a" in spotter.found[-1]
    finally:
        log.removeHandler(spotter)
        log.propagate = True
