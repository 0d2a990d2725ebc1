"""The `tempay` command as a user runs it, for the CLI tests: a command in a subprocess, the
check that it failed with one clear line, and `tempay dev` in the background.

The fixtures `env` (a data dir and free ports for every server) and `dev_factory` (starts
`tempay dev` with that env, stopped at the end) are re-exported by the conftest.py of the
folders whose tests use them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commands.dev import free_port


def tempay(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tempay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tempay: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    webhook_port = free_port()
    return {
        **os.environ,
        "TEMPAY_DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPAY_TEMPORAL_UI_PORT": str(free_port()),
        "TEMPAY_WEBHOOK_PORT": str(webhook_port),
        "TEMPAY_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}",
        "TEMPAY_SANDBOX_URL": f"http://127.0.0.1:{free_port()}",
        "TEMPAY_WORKER_METRICS_PORT": str(free_port()),
    }


class Dev:
    """`tempay dev` in the background, stopped the way a user stops it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tempay", "dev"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 90
            while "tempay dev: ready" not in log.read_text()[offset:]:
                assert self.process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


@pytest.fixture
def dev_factory(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Dev]]:
    started: list[Dev] = []

    def start() -> Dev:
        started.append(Dev(env, tmp_path / "dev.log"))
        return started[-1]

    yield start
    for dev in started:
        dev.stop()
