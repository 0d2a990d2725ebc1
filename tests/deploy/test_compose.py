"""docker-compose.yml, the Dockerfile and .env.example, checked against the code.

The Docker engine does not run here, so the files are parsed and compared with what the
code says (tests/deploy/checks.py). Every check is also shown to fail on a broken copy.
The namespace/search-attribute setup script is the one part that runs: against the real
Temporal dev server, with the same `temporal` CLI the admin-tools image ships.
"""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.temporal import find_binary
from tests.deploy import checks

COMPOSE = checks.load_compose()
SERVICES = sorted(COMPOSE["services"])
BUILT = sorted(checks.built(COMPOSE))
SETUP_SCRIPT = checks.ROOT / "deploy" / "temporal" / checks.SETUP_SCRIPT


def fresh() -> dict[str, Any]:
    return copy.deepcopy(COMPOSE)


# --- the real files ----------------------------------------------------------------------


def test_the_stack_has_its_parts() -> None:
    assert checks.by_image(COMPOSE, "postgres"), "no PostgreSQL"
    assert checks.by_image(COMPOSE, checks.SERVER_IMAGE), "no Temporal server"
    assert checks.by_image(COMPOSE, checks.UI_IMAGE), "no Temporal UI"
    assert set(BUILT) == {"worker", "webhook", "sandbox"}
    assert checks.role_problems(COMPOSE) == []


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_pinned(service: str) -> None:
    assert checks.image_problems(service, COMPOSE["services"][service]) == []


@pytest.mark.parametrize("service", BUILT)
def test_built_service_runs_a_tempay_command(service: str) -> None:
    spec = COMPOSE["services"][service]
    assert checks.build_problems(service, spec) == []
    assert (
        checks.command_problems(service, spec, checks.console_scripts(), checks.subcommands()) == []
    )


@pytest.mark.parametrize("service", BUILT)
def test_built_service_sets_only_real_settings(service: str) -> None:
    known = checks.known_settings()
    assert checks.setting_problems(service, COMPOSE["services"][service], known) == []


def test_temporal_address_is_the_servers_grpc_port() -> None:
    assert checks.temporal_address_problems(COMPOSE) == []


def test_ports_hosts_and_urls_agree_with_the_settings() -> None:
    assert checks.port_problems(COMPOSE) == []


def test_ui_codec_endpoint_is_the_webhook_and_the_webhook_allows_the_ui() -> None:
    assert checks.codec_problems(COMPOSE) == []


def test_workers_scale() -> None:
    assert checks.scaling_problems(COMPOSE) == []


def test_search_attributes_are_registered_before_tempay_starts() -> None:
    assert checks.search_attribute_problems(COMPOSE) == []


def test_mounted_scripts_and_config_exist() -> None:
    assert checks.mount_problems(COMPOSE) == []


def test_env_example_lists_every_interpolated_variable() -> None:
    text = checks.COMPOSE_FILE.read_text()
    assert checks.interpolated(text) >= {"TEMPAY_CODEC_KEYS"}
    assert checks.env_example_problems(text, checks.ENV_EXAMPLE.read_text()) == []


def test_dockerfile_is_pinned_non_root_and_copies_what_it_installs() -> None:
    assert checks.dockerfile_problems(checks.DOCKERFILE.read_text()) == []


def test_env_file_stays_out_of_git_and_images() -> None:
    for ignore in (".gitignore", ".dockerignore"):
        lines = (checks.ROOT / ignore).read_text().splitlines()
        assert ".env" in lines, f"{ignore} must list .env (it holds the codec keys)"


def test_settings_and_subcommands_come_from_the_code() -> None:
    known = checks.known_settings()
    assert {"TEMPORAL_ADDRESS", "TEMPAY_WEBHOOK_PORT", "TEMPAY_SANDBOX_PUBLIC_URL"} <= known
    assert "TEMPAY_DATA_DIR" in known
    assert {"worker", "webhook", "sandbox", "pay"} <= checks.subcommands()


# --- every check fails on a broken copy --------------------------------------------------


def svc(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def env(compose: dict[str, Any], name: str) -> dict[str, Any]:
    environment: dict[str, Any] = svc(compose, name)["environment"]
    return environment


def set_image(name: str, image: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name).__setitem__("image", image)


def set_command(name: str, *argv: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name).__setitem__("command", list(argv))


def set_env(name: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: env(c, name).__setitem__(key, value)


def drop_env(name: str, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: env(c, name).pop(key)


def all_problems(compose: dict[str, Any]) -> list[str]:
    known = checks.known_settings()
    scripts, names = checks.console_scripts(), checks.subcommands()
    problems = checks.role_problems(compose)
    for name, spec in compose["services"].items():
        problems += checks.image_problems(name, spec)
    for name, spec in checks.built(compose).items():
        problems += checks.build_problems(name, spec)
        problems += checks.command_problems(name, spec, scripts, names)
        problems += checks.setting_problems(name, spec, known)
    for check in (
        checks.temporal_address_problems,
        checks.port_problems,
        checks.codec_problems,
        checks.scaling_problems,
        checks.search_attribute_problems,
        checks.mount_problems,
    ):
        problems += check(compose)
    return problems


def test_the_real_file_has_no_problems() -> None:
    assert all_problems(COMPOSE) == []


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("latest", set_image("postgresql", "postgres:latest"), "`latest` is not a version"),
    ("no tag", set_image("temporal-ui", "temporalio/ui"), "no tag"),
    ("variable tag", set_image("temporal", "temporalio/server:${V}"), "a variable decides"),
    ("unknown subcommand", set_command("worker", "tempay", "wrker"), "not a subcommand"),
    ("not a script", set_command("worker", "tempay-worker"), "not a console script"),
    ("bad option", set_command("worker", "tempay", "worker", "--fast"), "unrecognized"),
    ("no worker", set_command("worker", "tempay", "list"), "`tempay worker` runs in 0"),
    ("setting typo", set_env("webhook", "TEMPAY_WEBHOK_PORT", "8000"), "not a tempay setting"),
    (
        "wrong server",
        set_env("worker", "TEMPORAL_ADDRESS", "localhost:7233"),
        "expected temporal:7233",
    ),
    (
        "ui address",
        set_env("temporal-ui", "TEMPORAL_ADDRESS", "temporal:7234"),
        "TEMPORAL_ADDRESS=temporal:7234",
    ),
    ("default address", drop_env("worker", "TEMPORAL_ADDRESS"), "no TEMPORAL_ADDRESS"),
    ("loopback bind", set_env("webhook", "TEMPAY_WEBHOOK_HOST", "127.0.0.1"), "must be 0.0.0.0"),
    ("sandbox bind", drop_env("sandbox", "TEMPAY_SANDBOX_HOST"), "TEMPAY_SANDBOX_HOST must be"),
    ("other port", set_env("webhook", "TEMPAY_WEBHOOK_PORT", "9000"), "the code's default is 8000"),
    ("unpublished", lambda c: svc(c, "sandbox").pop("ports"), "port 8001 is not published"),
    (
        "remapped",
        lambda c: svc(c, "webhook").__setitem__("ports", ["18000:8000"]),
        "published on 18000",
    ),
    (
        "grpc remapped",
        lambda c: svc(c, "temporal").__setitem__("ports", ["17233:7233"]),
        "not published on 7233",
    ),
    (
        "ui remapped",
        lambda c: svc(c, "temporal-ui").__setitem__("ports", ["8233:8080"]),
        "not published on 8080",
    ),
    (
        "key in file",
        set_env("worker", "TEMPAY_CODEC_KEYS", "k1:c2VjcmV0"),
        "must come from .env",
    ),
    (
        "health port",
        lambda c: svc(c, "sandbox")["healthcheck"].__setitem__(
            "test", ["CMD", "python", "-c", "http://127.0.0.1:8000/healthz"]
        ),
        "healthcheck port 8000",
    ),
    ("no health", lambda c: svc(c, "webhook").pop("healthcheck"), "does not GET /healthz"),
    (
        "checkout link",
        set_env("sandbox", "TEMPAY_SANDBOX_PUBLIC_URL", "http://sandbox:8001"),
        "expected http://localhost:8001",
    ),
    (
        "notify url",
        set_env("worker", "TEMPAY_WEBHOOK_URL", "http://127.0.0.1:8000"),
        "expected http://webhook:8000",
    ),
    ("sandbox url", drop_env("webhook", "TEMPAY_SANDBOX_URL"), "TEMPAY_SANDBOX_URL unset"),
    (
        "codec inside",
        set_env("temporal-ui", "TEMPORAL_CODEC_ENDPOINT", "http://webhook:8000/codec"),
        "expected http://localhost:8000/codec",
    ),
    (
        "codec path",
        set_env("temporal-ui", "TEMPORAL_CODEC_ENDPOINT", "http://localhost:8000"),
        "expected http://localhost:8000/codec",
    ),
    (
        "cors",
        set_env("webhook", "TEMPAY_CODEC_CORS_ORIGINS", "http://localhost:8233"),
        "does not allow http://localhost:8080",
    ),
    ("no keys", drop_env("worker", "TEMPAY_CODEC_KEYS"), "no TEMPAY_CODEC_KEYS"),
    (
        "fixed name",
        lambda c: svc(c, "worker").__setitem__("container_name", "w"),
        "container_name prevents",
    ),
    (
        "host port",
        lambda c: svc(c, "worker").__setitem__("ports", ["9100:9100"]),
        "host port prevents",
    ),
    (
        "attribute missing",
        set_command("temporal-setup", "/deploy/setup-namespace.sh", "default", "OrderId"),
        "tempay needs",
    ),
    ("other namespace", set_env("worker", "TEMPORAL_NAMESPACE", "payments"), "registers on"),
    ("no wait", lambda c: svc(c, "worker")["depends_on"].pop("temporal-setup"), "does not wait"),
    (
        "missing mount",
        lambda c: svc(c, "temporal-setup").__setitem__("volumes", ["./deploy/nowhere:/deploy:ro"]),
        "does not exist",
    ),
    ("missing script", set_command("temporal-schema", "/deploy/setup.sh"), "runs /deploy/setup.sh"),
    (
        "dynamic config",
        set_env("temporal", "DYNAMIC_CONFIG_FILE_PATH", "config/dynamicconfig/x.yaml"),
        "not a mounted file",
    ),
    (
        "foreign build",
        lambda c: svc(c, "sandbox").__setitem__("build", "./deploy"),
        "not this repository's Dockerfile",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in BROKEN], ids=[i for i, _, _ in BROKEN]
)
def test_a_broken_compose_file_is_reported(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    compose = fresh()
    mutate(compose)
    problems = all_problems(compose)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("postgres:16.11-bookworm", True),
        ("temporalio/admin-tools:1.32.0", True),
        ("localhost:5000/tempay:1.0", True),
        (f"python@sha256:{'a' * 64}", True),
        (f"python:3.11-slim@sha256:{'b' * 64}", True),
        ("localhost:5000/tempay", False),
        ("python", False),
        ("python:latest", False),
        ("python@sha256:123", False),
        ("temporalio/ui:${UI_VERSION:-2.54.1}", False),
    ],
)
def test_image_pin_rules(image: str, pinned: bool) -> None:
    assert (checks.image_pin_problem(image) is None) is pinned


def test_env_example_problems_are_reported() -> None:
    compose_text = "x: ${TEMPAY_CODEC_KEYS:?set it}\ny: ${NEW_VARIABLE:-}\nz: $${NOT_ONE}\n"
    assert checks.interpolated(compose_text) == {"TEMPAY_CODEC_KEYS", "NEW_VARIABLE"}
    problems = checks.env_example_problems(compose_text, "TEMPAY_CODEC_KEYS=k1:c2VjcmV0\n")
    assert any("NEW_VARIABLE" in p for p in problems), problems
    assert any("must not carry a codec key" in p for p in problems), problems
    assert checks.env_example_problems(compose_text, "TEMPAY_CODEC_KEYS=\nNEW_VARIABLE=\n") == []


DOCKERFILE = checks.DOCKERFILE.read_text()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("FROM python:3.11.14-slim-bookworm", "FROM python"), "no tag"),
        (lambda t: t.replace("FROM python:3.11.14-slim-bookworm", "FROM python:latest"), "latest"),
        (lambda t: t.replace("USER tempay", ""), "must not run as root"),
        (lambda t: t.replace("USER tempay", "USER root"), "must not run as root"),
        (
            lambda t: t.replace("COPY providers ./providers", "COPY provider ./providers"),
            "copies provider",
        ),
        (lambda t: t.replace("COPY webhook ./webhook", ""), "does not copy webhook"),
        (
            lambda t: t.replace("pyproject.toml README.md", "pyproject.toml"),
            "does not copy README.md",
        ),
    ],
    ids=["untagged", "latest", "no user", "root", "missing source", "missing package", "readme"],
)
def test_a_broken_dockerfile_is_reported(edit: Callable[[str], str], expected: str) -> None:
    broken = edit(DOCKERFILE)
    assert broken != DOCKERFILE, "the edit must change the Dockerfile"
    problems = checks.dockerfile_problems(broken)
    assert any(expected in problem for problem in problems), problems


# --- the setup script, run against the real dev server -----------------------------------


async def run_setup(address: str, *args: str, attempts: int = 60) -> tuple[int, str]:
    environment = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "SETUP_ATTEMPTS": str(attempts),
        "SETUP_PAUSE_SECONDS": "0.5",
        "PATH": f"{find_binary('temporal').parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(SETUP_SCRIPT),
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def custom_attributes(env: WorkflowEnvironment, namespace: str) -> dict[str, int]:
    answer = await env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return dict(answer.custom_attributes)


async def test_setup_script_creates_the_namespace_and_keyword_attributes(
    dev_env: WorkflowEnvironment,
) -> None:
    address = env_address(dev_env)
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    names = [key.name for key in sa.ALL]
    for _ in range(2):  # the second run finds everything in place and changes nothing
        code, output = await run_setup(address, namespace, *names)
        assert code == 0, output
        attributes = await custom_attributes(dev_env, namespace)
        keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        assert {name: attributes.get(name) for name in names} == dict.fromkeys(names, keyword)


async def test_setup_script_fails_on_an_attribute_of_another_type(
    dev_env: WorkflowEnvironment,
) -> None:
    address = env_address(dev_env)
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    code, output = await run_setup(address, namespace, "OrderId")
    assert code == 0, output
    await dev_env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={"Amount": IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    code, output = await run_setup(address, namespace, "Amount", attempts=2)
    assert code != 0
    assert "search attribute Amount" in output


async def test_setup_script_needs_a_namespace_and_attributes() -> None:
    code, output = await run_setup("127.0.0.1:1", "default")
    assert code == 2
    assert "usage:" in output


def env_address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host
