"""`tempay worker` as an operator runs it, for tests: started with a stack's settings,
stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.stack import Stack


class WorkerProcess:
    """`tempay worker` as an operator runs it, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tempay", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


def worker_env(stack: Stack, metrics_port: int) -> dict[str, str]:
    s = stack.settings
    assert s.merchant_webhook_url is not None and s.merchant_webhook_secret is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPAY_", "TEMPORAL_"))}
    return {
        **env,
        "TEMPORAL_ADDRESS": s.temporal_address,
        "TEMPORAL_NAMESPACE": s.temporal_namespace,
        "TEMPAY_TASK_QUEUE": s.task_queue,
        "TEMPAY_DATA_DIR": str(s.data_dir),
        "TEMPAY_SANDBOX_URL": stack.sandbox_url,
        "TEMPAY_SANDBOX": "true",
        "TEMPAY_WEBHOOK_URL": s.webhook_url,
        "TEMPAY_MERCHANT_WEBHOOK_URL": s.merchant_webhook_url,
        "TEMPAY_MERCHANT_WEBHOOK_SECRET": s.merchant_webhook_secret.get_secret_value(),
        "TEMPAY_WORKER_METRICS_PORT": str(metrics_port),
    }
