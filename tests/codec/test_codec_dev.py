"""`tempay dev` encrypts by default, and the `tempay` CLI reads the same key file; key
configuration errors are one clear line that never shows key material."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tempay.codec import ENCODING, ensure_key_file, key_file
from tests.support.cli import Dev, assert_one_line_error, tempay


def test_malformed_codec_keys_setting_is_one_line_without_the_key(env: dict[str, str]) -> None:
    material = base64.b64encode(os.urandom(20)).decode()
    result = tempay("status", "X1", env={**env, "TEMPAY_CODEC_KEYS": f"k1:{material}"})
    assert_one_line_error(result, "bad setting codec_keys")
    assert "20 bytes" in result.stderr
    assert material not in result.stderr + result.stdout


def test_malformed_key_file_is_one_line_naming_the_file(env: dict[str, str]) -> None:
    data_dir = Path(env["TEMPAY_DATA_DIR"])
    data_dir.mkdir(parents=True)
    key_file(data_dir).write_text("k1:c2hvcnQ=\n")
    result = tempay("status", "X1", env=env)
    assert_one_line_error(result, str(key_file(data_dir)))
    assert "c2hvcnQ=" not in result.stderr


def test_dev_encrypts_with_a_key_file_and_serves_the_ui_its_codec(
    env: dict[str, str],
    dev_factory: Callable[[], Dev],
) -> None:
    dev_factory()
    path = key_file(Path(env["TEMPAY_DATA_DIR"]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    webhook = env["TEMPAY_WEBHOOK_URL"]
    ui = f"http://127.0.0.1:{env['TEMPAY_TEMPORAL_UI_PORT']}"

    # A CLI command outside `tempay dev` finds the key through the data dir.
    paid = tempay("pay", "--order-id", "ENC1", "--amount", "87.65", "--currency", "CNY", env=env)
    assert paid.returncode == 0, paid.stderr
    status = json.loads(tempay("status", "ENC1", env=env).stdout)
    assert (status["order_id"], status["amount"]) == ("ENC1", "87.65")

    history = asyncio.run(raw_history(env["TEMPORAL_ADDRESS"], "payment-ENC1"))
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == ENCODING
    assert b"87.65" not in history.SerializeToString()

    # The UI was started with the codec endpoint, and the codec answers its origin.
    settings = httpx.get(f"{ui}/api/v1/settings", timeout=10).json()
    assert settings["Codec"]["Endpoint"] == f"http://127.0.0.1:{env['TEMPAY_WEBHOOK_PORT']}/codec"
    preflight = httpx.options(
        f"{webhook}/codec/decode",
        headers={
            "Origin": ui,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ui


async def raw_history(address: str, workflow_id: str) -> History:
    """The history as stored, read by a client without the codec."""
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    raw = await client.get_workflow_handle(workflow_id).fetch_history()
    return History(events=raw.events)


def run_worker_until(environ: dict[str, str], marker: str, seconds: float = 30) -> str:
    """Start `tempay worker`, return its log up to `marker`, then stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tempay", "worker"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + seconds
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if marker in line or time.monotonic() > deadline:
                break
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return "".join(lines)


def test_worker_warns_at_start_when_payloads_are_not_encrypted(
    dev_env: WorkflowEnvironment,
    env: dict[str, str],
) -> None:
    env = {**env, "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host}
    env.pop("TEMPAY_CODEC_KEYS", None)
    assert tempay("db", "upgrade", env=env).returncode == 0  # a worker needs its book
    log = run_worker_until(env, "worker polling")
    assert "payloads are NOT encrypted" in log

    ensure_key_file(Path(env["TEMPAY_DATA_DIR"]))
    log = run_worker_until(env, "worker polling")
    assert "worker polling" in log
    assert "NOT encrypted" not in log
