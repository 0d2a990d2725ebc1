"""`tempay dev`: the embedded Temporal, the sandbox provider, the webhook service and the
worker as supervised child processes in the foreground. Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from book.migrate import prepare as prepare_book
from providers.registry import build_adapters
from providers.sandbox.keys import ensure_keypair
from providers.sandbox.settings import SandboxClientSettings
from tempay import search_attributes as sa
from tempay.codec import ensure_key_file
from tempay.errors import BookOutdated, BookUnavailable, TemporalUnavailable
from tempay.settings import SANDBOX_MARKER, Settings, is_loopback_address
from tempay.temporal import apply_retention, connect, find_binary, metrics_address
from transactions.reconcile import ensure_schedules

STOP_GRACE_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 60.0


class StackError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor is killed, so nothing is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dev_settings(settings: Settings) -> Settings:
    """`settings` as a stack on one machine runs them: the sandbox provider on (it is the
    default provider there), and /api, /codec and /metrics on the webhook port beside
    /notify, since everything listens on 127.0.0.1 only (StackError for another host)."""
    host = settings.webhook_host
    with contextlib.suppress(ValueError):
        host = "localhost" if ipaddress.ip_address(host).is_loopback else host
    if host != "localhost":
        raise StackError(
            f"TEMPAY_WEBHOOK_HOST={settings.webhook_host}: `tempay dev` serves the sandbox, "
            "/api, /codec and /metrics on the webhook port, so it listens on 127.0.0.1 only; "
            "run `tempay webhook` (two listeners) to take notifications from elsewhere"
        )
    if not is_loopback_address(settings.temporal_address):
        raise StackError(
            f"TEMPORAL_ADDRESS={settings.temporal_address}: `tempay dev` runs its own "
            "Temporal on this machine (127.0.0.1; set TEMPORAL_ADDRESS=127.0.0.1:PORT to move "
            "it); to use another Temporal, run `tempay worker` and `tempay webhook`"
        )
    return settings.model_copy(
        update={"sandbox": True, "internal_on_webhook_port": True, "temporal_plaintext": True}
    )


def private_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a stack of its own (benchmarks, fault scenarios): its data in `data_dir`
    and every listening port a fresh one, so it runs beside a `tempay dev` or another such
    stack (`private_stack` gives the sandbox one too). `overrides` are further Settings
    fields."""
    webhook_port = free_port()
    settings = Settings(
        temporal_address=f"127.0.0.1:{free_port()}",
        data_dir=data_dir,
        webhook_port=webhook_port,
        webhook_url=f"http://127.0.0.1:{webhook_port}",
        temporal_ui_port=free_port(),
        worker_metrics_port=free_port(),
        **overrides,
    )
    return dev_settings(settings)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops in order
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "tempay", "worker"]


# After how many failed workflow tasks in a row the server flags a run (the UI's Task
# Failures view, search attribute TemporalReportedProblems); compose's dynamic config too.
TASK_PROBLEMS_KEY = "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute"
TASK_PROBLEMS_AFTER = 2


def _sandbox_url() -> str:
    return SandboxClientSettings().url


@dataclass
class Stack:
    """The four processes of a tempay installation on one machine. `worker` is the worker's
    command line (the benchmarks run one that also serves their baselines: proof/worker.py);
    the sandbox serves at `sandbox_url` (TEMPAY_SANDBOX_URL unless given)."""

    settings: Settings
    sandbox_env: dict[str, str] = field(default_factory=dict)
    with_ui: bool = True
    worker: Sequence[str] = field(default_factory=worker_argv)
    children: list[Child] = field(default_factory=list)
    sandbox_url: str = field(default_factory=_sandbox_url)
    book: str = "not prepared"  # what start() found or made of the book

    def __post_init__(self) -> None:
        # The embedded server speaks plain text: whatever TLS, API key or profile a shell
        # exports for another cluster, this stack and its children talk to their own server.
        self.settings = self.settings.model_copy(update={"temporal_plaintext": True})

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    @property
    def temporal_port(self) -> int:
        return int(self.settings.temporal_address.rsplit(":", 1)[1])

    @property
    def sandbox_port(self) -> int:
        return int(self.sandbox_url.rsplit(":", 1)[1].split("/")[0])

    def ports(self) -> dict[str, int]:
        ports = {
            "Temporal": self.temporal_port,
            "webhook": self.settings.webhook_port,
            "sandbox": self.sandbox_port,
        }
        if self.with_ui:
            ports["Temporal UI"] = self.settings.temporal_ui_port
        if self.settings.worker_metrics_port:
            ports["worker metrics"] = self.settings.worker_metrics_port
        return ports

    def env(self) -> dict[str, str]:
        s = self.settings
        # The children talk to this stack's own server: none of the shell's TEMPORAL_*
        # (another cluster's API key, TLS files, profile) reaches them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.update(
            {
                "TEMPAY_DATA_DIR": str(self.data_dir),
                "TEMPORAL_ADDRESS": s.temporal_address,
                "TEMPORAL_NAMESPACE": s.temporal_namespace,
                "TEMPAY_TEMPORAL_PLAINTEXT": "true",
                "TEMPAY_TASK_QUEUE": s.task_queue,
                "TEMPAY_WEBHOOK_PORT": str(s.webhook_port),
                "TEMPAY_WEBHOOK_URL": s.webhook_url,
                "TEMPAY_SANDBOX_URL": self.sandbox_url,
                "TEMPAY_SANDBOX_PORT": str(self.sandbox_port),
                "TEMPAY_SANDBOX_PUBLIC_URL": self.sandbox_url,
                "TEMPAY_SANDBOX": "true" if s.sandbox_enabled else "false",
                "TEMPAY_INTERNAL_ON_WEBHOOK_PORT": str(s.internal_on_webhook_port).lower(),
                # The stack's own (a private stack's is a free port): not whatever 9464 holds.
                "TEMPAY_WORKER_METRICS_PORT": str(s.worker_metrics_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if "TEMPAY_CODEC_CORS_ORIGINS" not in env:
            # The UI (in the browser) calls the webhook's /codec endpoints from its own origin.
            ui = s.temporal_ui_port
            env["TEMPAY_CODEC_CORS_ORIGINS"] = f"http://127.0.0.1:{ui},http://localhost:{ui}"
        env.update(self.sandbox_env)
        return env

    @property
    def codec_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.settings.webhook_port}/codec"

    def temporal_argv(self) -> list[str]:
        argv = [
            str(find_binary("temporal")),
            "server",
            "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(self.temporal_port),
            "--namespace", self.settings.temporal_namespace,
            "--db-filename", str(self.data_dir / "temporal.db"),
            # WAL: measured 2-3x faster workflow starts than SQLite's default journal.
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=normal",
            "--log-level", "warn",
            # The UI's Task Failures view: a workflow whose tasks failed twice in a row is
            # flagged (TemporalReportedProblems), as on Temporal Cloud (docs/versioning.md).
            "--dynamic-config-value",
            f"{TASK_PROBLEMS_KEY}={TASK_PROBLEMS_AFTER}",
        ]  # fmt: skip
        for key in sa.ALL:
            argv += ["--search-attribute", f"{key.name}=Keyword"]
        if self.with_ui:
            argv += ["--ui-ip", "127.0.0.1", "--ui-port", str(self.settings.temporal_ui_port)]
            # The UI decrypts payloads through the webhook service's codec endpoints.
            argv += ["--ui-codec-endpoint", self.codec_endpoint]
        else:
            argv += ["--headless"]
        return argv

    def start(self) -> None:
        busy = [f"{name} port {port}" for name, port in self.ports().items() if port_in_use(port)]
        if busy:
            raise StackError(
                f"{', '.join(busy)} already in use: is another `tempay dev` running? "
                "(ports are set by TEMPORAL_ADDRESS, TEMPAY_WEBHOOK_PORT, TEMPAY_SANDBOX_URL, "
                "TEMPAY_WORKER_METRICS_PORT)"
            )
        logs = self.data_dir / "logs"
        try:
            self.book = prepare_book(self.settings)
        except (BookOutdated, BookUnavailable) as exc:
            raise StackError(str(exc)) from None
        ensure_keypair(self.data_dir / "sandbox")
        if self.settings.sandbox_enabled:
            # CLI commands on this data dir (another shell) then see the sandbox as on.
            (self.data_dir / SANDBOX_MARKER).write_text(
                "Written by `tempay dev`: the sandbox provider is on for this data dir "
                "(TEMPAY_SANDBOX=false turns it off).\n"
            )
        if self.settings.codec_keys is None:
            # Every child (and CLI commands on this data dir) reads this file: payloads of the
            # embedded stack are encrypted by default.
            ensure_key_file(self.data_dir)
        python = sys.executable
        self.children = [
            Child("temporal", self.temporal_argv(), logs / "temporal.log"),
            Child("sandbox", [python, "-m", "providers.sandbox.app"], logs / "sandbox.log"),
            Child("webhook", [python, "-m", "tempay", "webhook"], logs / "webhook.log"),
            Child("worker", list(self.worker), logs / "worker.log"),
        ]
        env = self.env()
        for child in self.children:
            child.start(env)

    async def wait_ready(self, within: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + within
        checks = {
            "Temporal": self._temporal_ready,
            "sandbox": lambda: self._http_ready(f"{self.sandbox_url}/healthz"),
            "webhook": lambda: self._http_ready(
                f"http://127.0.0.1:{self.settings.webhook_port}/healthz"
            ),
            "worker": self._worker_polling,
        }
        for name, check in checks.items():
            while not await check():
                self.raise_if_exited()
                if time.monotonic() > deadline:
                    raise StackError(f"{name} did not start within {within:.0f} s: see {self.logs}")
                await asyncio.sleep(0.2)
        # The embedded server keeps closed workflows 24 h unless told otherwise; the book
        # keeps them for good.
        client = await connect(self.settings)
        await apply_retention(client, self.settings.temporal_namespace, self.settings.retention)
        await self._schedule_reconciliation(client)

    async def _schedule_reconciliation(self, client: Client) -> None:
        """A daily reconciliation per provider that offers statements (once: a schedule
        already there is left as it is)."""
        adapters = build_adapters(self.settings)
        try:
            zones = {
                name: adapter.statement_timezone
                for name, adapter in adapters.items()
                if adapter.offers_statements
            }
        finally:
            for adapter in adapters.values():
                await adapter.aclose()
        await ensure_schedules(client, self.settings, zones)

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    async def _temporal_ready(self) -> bool:
        try:
            await connect(self.settings)
        except TemporalUnavailable:
            return False
        return True

    async def _worker_polling(self) -> bool:
        client = await connect(self.settings)
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.settings.temporal_namespace,
                task_queue=TaskQueue(name=self.settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return bool(response.pollers)

    @staticmethod
    async def _http_ready(url: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    def raise_if_exited(self) -> None:
        for child in self.children:
            code = child.exited()
            if code is not None:
                raise StackError(f"{child.name} exited with code {code}: see {child.log_path}")

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(f"no child process named {name!r}")

    def kill_child(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send one child `sig` (SIGKILL: no chance to clean up) and wait until it is gone."""
        process = self.child(name).process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def start_child(self, name: str) -> None:
        """Start one child again, with the environment it had (its log is appended to)."""
        child = self.child(name)
        if child.exited() is None and child.process is not None:
            raise StackError(f"{name} is still running")
        child.start(self.env())

    def stop(self) -> None:
        # The worker first, Temporal last, so nothing is cut off mid-task.
        for child in reversed(self.children):
            child.stop()


def _days(retention: timedelta) -> str:
    days = retention / timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")


def private_stack(settings: Settings, **fields: Any) -> Stack:
    """The stack of `private_settings`, its sandbox on a fresh port too; `fields` are
    further Stack fields (sandbox_env, with_ui, worker)."""
    return Stack(settings, sandbox_url=f"http://127.0.0.1:{free_port()}", **fields)


async def supervise(stack: Stack, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stack.raise_if_exited()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def run_dev(settings: Settings, demo: bool = False) -> int:
    from commands.demo import run_demo

    find_binary("temporal")  # before anything is written: says what to install
    try:
        settings = dev_settings(settings)
    except StackError as exc:
        print(f"tempay dev: error: {exc}", file=sys.stderr, flush=True)
        return 1
    stack = Stack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        stack.start()
        print(f"tempay dev: starting; data and logs in {stack.data_dir}", flush=True)
        await stack.wait_ready()
        s = settings
        address = metrics_address(s)
        print(
            "tempay dev: ready\n"
            f"  Temporal      {s.temporal_address} (namespace {s.temporal_namespace}, "
            f"SQLite {stack.data_dir / 'temporal.db'})\n"
            f"  Temporal UI   http://127.0.0.1:{s.temporal_ui_port}\n"
            f"  webhook       http://127.0.0.1:{s.webhook_port}  (POST /notify/sandbox)\n"
            f"  codec         {stack.codec_endpoint}  (payloads are encrypted; the UI decrypts "
            "through it)\n"
            f"  sandbox       {stack.sandbox_url}\n"
            f"  book          {stack.book}; Temporal keeps closed workflows "
            f"{_days(s.retention)}\n"
            "  worker        task queue " + s.task_queue + "\n"
            f"  metrics       http://127.0.0.1:{s.webhook_port}/metrics (webhook), "
            + (f"http://{address}/metrics (worker)" if address else "worker metrics off")
            + "\n"
            "Ctrl-C stops everything; starting again resumes every pending payment.",
            flush=True,
        )
        if demo:
            demo_task = asyncio.create_task(run_demo(settings, stack.sandbox_url))
            supervisor = asyncio.create_task(supervise(stack, stop))
            done, _ = await asyncio.wait(
                {demo_task, supervisor}, return_when=asyncio.FIRST_COMPLETED
            )
            if supervisor in done:
                demo_task.cancel()
                supervisor.result()
            else:
                demo_task.result()
                print("tempay dev: demo finished; the stack keeps running (Ctrl-C stops it)")
        await supervise(stack, stop)
        print("tempay dev: stopping", flush=True)
        return 0
    except StackError as exc:
        print(f"tempay dev: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
