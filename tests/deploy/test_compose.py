"""docker-compose.yml, the Dockerfile and .env.example, checked against the code.

The Docker engine does not run here, so the files are parsed and compared with what the
code says (tests/support/deploy_checks.py). Every check is also shown to fail on a broken copy.
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
import yaml
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.temporal import find_binary
from tests.support import deploy_checks as checks

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
    assert set(BUILT) == {"worker", "webhook", "sandbox", "tempay-migrate"}
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


def test_ui_codec_endpoint_is_the_internal_listener_and_the_webhook_allows_the_ui() -> None:
    assert checks.codec_problems(COMPOSE) == []


def test_internal_listener_is_published_on_the_hosts_loopback_only() -> None:
    assert checks.internal_listener_problems(COMPOSE) == []


def test_sandbox_runs_only_when_switched_on() -> None:
    assert checks.sandbox_problems(COMPOSE) == []


def test_webhook_and_worker_start_without_the_sandbox_profile() -> None:
    assert checks.profile_problems(COMPOSE) == []


def test_workers_scale() -> None:
    assert checks.scaling_problems(COMPOSE) == []


def test_search_attributes_are_registered_before_tempay_starts() -> None:
    assert checks.search_attribute_problems(COMPOSE) == []


def test_the_book_is_one_postgresql_database_migrated_before_use() -> None:
    assert checks.book_problems(COMPOSE) == []


def test_mounted_scripts_and_config_exist() -> None:
    assert checks.mount_problems(COMPOSE) == []


def test_env_example_lists_every_interpolated_variable() -> None:
    text = checks.COMPOSE_FILE.read_text()
    assert checks.interpolated(text) >= {"TEMPAY_CODEC_KEYS"}
    assert checks.env_example_problems(text, checks.ENV_EXAMPLE.read_text()) == []


def test_env_example_shows_how_to_switch_the_sandbox_on_and_leaves_it_off() -> None:
    assert checks.env_example_sandbox_problems(COMPOSE, checks.ENV_EXAMPLE.read_text()) == []


def test_dockerfile_is_pinned_non_root_and_copies_what_it_installs() -> None:
    assert checks.dockerfile_problems(checks.DOCKERFILE.read_text()) == []


def test_env_file_stays_out_of_git_and_images() -> None:
    for ignore in (".gitignore", ".dockerignore"):
        lines = (checks.ROOT / ignore).read_text().splitlines()
        assert ".env" in lines, f"{ignore} must list .env (it holds the codec keys)"


def test_settings_and_subcommands_come_from_the_code() -> None:
    known = checks.known_settings()
    assert {"TEMPORAL_ADDRESS", "TEMPAY_WEBHOOK_PORT", "TEMPAY_SANDBOX_PUBLIC_URL"} <= known
    assert {"TEMPAY_INTERNAL_HOST", "TEMPAY_INTERNAL_PORT", "TEMPAY_SANDBOX"} <= known
    assert checks.default(checks.Settings, "internal_port") == 8002
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


def set_ports(name: str, *ports: str | dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name).__setitem__("ports", list(ports))


def set_key(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name).__setitem__(key, value)


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
        checks.internal_listener_problems,
        checks.sandbox_problems,
        checks.profile_problems,
        checks.codec_problems,
        checks.scaling_problems,
        checks.search_attribute_problems,
        checks.mount_problems,
        checks.book_problems,
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
        set_env("temporal-ui", "TEMPORAL_CODEC_ENDPOINT", "http://webhook:8002/codec"),
        "expected http://localhost:8002/codec",
    ),
    (
        "codec path",
        set_env("temporal-ui", "TEMPORAL_CODEC_ENDPOINT", "http://localhost:8002"),
        "expected http://localhost:8002/codec",
    ),
    (
        "codec public",
        set_env("temporal-ui", "TEMPORAL_CODEC_ENDPOINT", "http://localhost:8000/codec"),
        "expected http://localhost:8002/codec",
    ),
    (
        "codec remapped",
        set_ports("webhook", "8000:8000", "127.0.0.1:18002:8002"),
        "expected http://localhost:18002/codec",
    ),
    # The internal listener: 0.0.0.0 inside, the host's loopback outside, the public port
    # never.
    (
        "internal everywhere",
        set_ports("webhook", "8000:8000", "8002:8002"),
        "internal port 8002 published on every interface",
    ),
    (
        "internal 0.0.0.0",
        set_ports("webhook", "8000:8000", "0.0.0.0:8002:8002"),
        "internal port 8002 published on 0.0.0.0:8002",
    ),
    (
        "internal also ipv6",
        set_ports("webhook", "8000:8000", "127.0.0.1:8002:8002", "[::]:8002:8002"),
        "internal port 8002 published on [::]:8002",
    ),
    ("internal unpublished", set_ports("webhook", "8000:8000"), "8002 is not published"),
    ("temporal open", set_ports("temporal", "7233:7233"), "Temporal's frontend (no auth) open"),
    ("temporal any", set_ports("temporal", "0.0.0.0:7233:7233"), "not the host's loopback"),
    ("ui open", set_ports("temporal-ui", "8080:8080"), "the Temporal UI (no login) open"),
    (
        "internal long form",
        set_ports("webhook", "8000:8000", {"target": 8002, "published": "8002"}),
        "internal port 8002 published on every interface",
    ),
    (
        "internal long form 0.0.0.0",
        set_ports(
            "webhook", "8000:8000", {"target": 8002, "published": 8002, "host_ip": "0.0.0.0"}
        ),
        "internal port 8002 published on 0.0.0.0:8002",
    ),
    (
        "internal behind the public port",
        set_ports("webhook", "8000:8000", "127.0.0.1:8002:8002", "8001:8002"),
        "internal port 8002 published on every interface",
    ),
    (
        "internal remapped",
        set_ports("webhook", "8000:8000", "127.0.0.1:18002:8002"),
        "internal port published on 18002",
    ),
    ("internal bind", drop_env("webhook", "TEMPAY_INTERNAL_HOST"), "TEMPAY_INTERNAL_HOST must"),
    (
        "internal loopback bind",
        set_env("webhook", "TEMPAY_INTERNAL_HOST", "127.0.0.1"),
        "TEMPAY_INTERNAL_HOST must be 0.0.0.0",
    ),
    (
        "internal port",
        set_env("webhook", "TEMPAY_INTERNAL_PORT", "9002"),
        "the code's default is 8002",
    ),
    (
        "everything public",
        set_env("webhook", "TEMPAY_INTERNAL_ON_WEBHOOK_PORT", "true"),
        "puts /api, /codec and /metrics on the public port",
    ),
    # The sandbox: only under its profile, on the host's loopback, on only from .env.
    ("sandbox by default", lambda c: svc(c, "sandbox").pop("profiles"), "runs by default"),
    ("sandbox no profiles", set_key("sandbox", "profiles", []), "runs by default"),
    (
        "sandbox everywhere",
        set_ports("sandbox", "8001:8001"),
        "sandbox: port 8001 published on every interface",
    ),
    (
        "sandbox 0.0.0.0",
        set_ports("sandbox", "0.0.0.0:8001:8001"),
        "sandbox: port 8001 published on 0.0.0.0:8001",
    ),
    (
        "sandbox long form",
        set_ports("sandbox", {"target": 8001, "published": "8001"}),
        "sandbox: port 8001 published on every interface",
    ),
    ("sandbox on", set_env("worker", "TEMPAY_SANDBOX", "true"), "must come from .env"),
    (
        "sandbox on by default",
        set_env("webhook", "TEMPAY_SANDBOX", "${TEMPAY_SANDBOX:-true}"),
        "defaults to 'true'",
    ),
    (
        "sandbox empty default",
        set_env("worker", "TEMPAY_SANDBOX", "${TEMPAY_SANDBOX:-}"),
        "defaults to ''",
    ),
    (
        "sandbox empty from .env",
        set_env("worker", "TEMPAY_SANDBOX", "${TEMPAY_SANDBOX-false}"),
        "must come from .env with a false default",
    ),
    (
        "sandbox other variable",
        set_env("webhook", "TEMPAY_SANDBOX", "${SANDBOX:-false}"),
        "must come from .env with a false default",
    ),
    (
        "sandbox unsaid",
        drop_env("worker", "TEMPAY_SANDBOX"),
        "worker: no TEMPAY_SANDBOX; it must come from .env",
    ),
    (
        "sandbox required",
        lambda c: svc(c, "webhook")["depends_on"]["sandbox"].pop("required"),
        "webhook: depends on sandbox (profiles ['sandbox']) without `required: false`",
    ),
    (
        "sandbox required true",
        lambda c: svc(c, "worker")["depends_on"]["sandbox"].__setitem__("required", True),
        "worker: depends on sandbox (profiles ['sandbox']) without `required: false`",
    ),
    (
        "short depends_on",
        set_key("worker", "depends_on", ["temporal-setup", "sandbox"]),
        "worker: depends on sandbox (profiles ['sandbox']) without `required: false`",
    ),
    (
        "sandbox not awaited",
        lambda c: svc(c, "webhook")["depends_on"].pop("sandbox"),
        "webhook: does not wait for sandbox",
    ),
    (
        "sandbox started only",
        lambda c: svc(c, "worker")["depends_on"]["sandbox"].__setitem__(
            "condition", "service_started"
        ),
        "worker: does not wait for sandbox to be healthy",
    ),
    (
        "webhook under a profile",
        set_key("webhook", "profiles", ["sandbox"]),
        "webhook: under profiles ['sandbox']",
    ),
    (
        "missing dependency",
        lambda c: svc(c, "postgresql").__setitem__(
            "depends_on", {"nowhere": {"condition": "service_started"}}
        ),
        "depends on nowhere, which is not a service",
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
    ("sqlite book", set_env("worker", "TEMPAY_DATABASE_URL", "sqlite:////t.db"), "not a Postg"),
    (
        "other book",
        set_env("webhook", "TEMPAY_DATABASE_URL", "postgresql://u:p@elsewhere/tempay"),
        "not the one tempay-migrate migrates",
    ),
    (
        "unmigrated",
        lambda c: svc(c, "worker")["depends_on"].pop("tempay-migrate"),
        "does not wait for tempay-migrate",
    ),
    ("no migration", set_command("tempay-migrate", "tempay", "db", "backfill"), "runs in 0"),
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
    # A variable with a default may be shown commented out; a required one may not.
    assert checks.env_example_problems(compose_text, "TEMPAY_CODEC_KEYS=\n# NEW_VARIABLE=x\n") == []
    problems = checks.env_example_problems(compose_text, "# TEMPAY_CODEC_KEYS=\nNEW_VARIABLE=\n")
    assert any("does not list TEMPAY_CODEC_KEYS" in p for p in problems), problems
    both = "a: ${MAYBE:-}\nb: ${MAYBE}\n"
    assert checks.defaulted(both) == set()
    assert checks.env_example_problems(both, "# MAYBE=x\n") != []


ENV_EXAMPLE = checks.ENV_EXAMPLE.read_text()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t.replace("# COMPOSE_PROFILES=sandbox", "COMPOSE_PROFILES=sandbox"),
            "switches the sandbox on",
        ),
        (
            lambda t: t.replace("# TEMPAY_SANDBOX=true", "TEMPAY_SANDBOX=true"),
            "switches the sandbox on",
        ),
        (lambda t: t.replace("# COMPOSE_PROFILES=sandbox\n", ""), "does not show"),
        (
            lambda t: t.replace("# COMPOSE_PROFILES=sandbox", "# COMPOSE_PROFILES=dev"),
            "does not show",
        ),
        (lambda t: t.replace("# TEMPAY_SANDBOX=true", "# TEMPAY_SANDBOX=false"), "does not show"),
        (lambda t: t.replace("# TEMPAY_SANDBOX=true\n", ""), "does not show"),
    ],
    ids=["profile on", "switch on", "no profile", "other profile", "switch off", "no switch"],
)
def test_a_broken_env_example_sandbox_is_reported(
    edit: Callable[[str], str], expected: str
) -> None:
    broken = edit(ENV_EXAMPLE)
    assert broken != ENV_EXAMPLE, "the edit must change .env.example"
    problems = checks.env_example_sandbox_problems(COMPOSE, broken)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("entry", "port"),
    [
        ("8000:8000", checks.Port(8000, 8000)),
        ("8000", checks.Port(None, 8000)),
        ("127.0.0.1:8002:8002", checks.Port(8002, 8002, "127.0.0.1")),
        ("127.0.0.1::8002", checks.Port(None, 8002, "127.0.0.1")),
        ("[::1]:8002:8002/tcp", checks.Port(8002, 8002, "::1")),
        ("::1:8002:8002", checks.Port(8002, 8002, "::1")),
        (
            {"target": 8002, "published": "8002", "host_ip": "127.0.0.1"},
            checks.Port(8002, 8002, "127.0.0.1"),
        ),
    ],
)
def test_published_ports_are_read_with_their_host_address(
    entry: str | dict[str, Any], port: checks.Port
) -> None:
    assert checks.ports_of({"ports": [entry]}) == [port]


@pytest.mark.parametrize(
    ("host_ip", "is_loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        (None, False),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("localhost", False),
    ],
)
def test_loopback_host_addresses(host_ip: str | None, is_loopback: bool) -> None:
    assert checks.loopback(host_ip) is is_loopback


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


def test_compose_and_tempay_dev_flag_runs_whose_tasks_keep_failing() -> None:
    """The UI's Task Failures view (the upgrade procedure's check, docs/versioning.md) needs
    the server to flag them: the same threshold under compose and `tempay dev`."""
    from commands.dev import TASK_PROBLEMS_AFTER, TASK_PROBLEMS_KEY

    config = yaml.safe_load(
        (checks.ROOT / "deploy/temporal/dynamicconfig/development-sql.yaml").read_text()
    )
    assert config[TASK_PROBLEMS_KEY] == [{"value": TASK_PROBLEMS_AFTER, "constraints": {}}]
