"""Checks of docker-compose.yml, the Dockerfile and .env.example against the code.

Docker cannot run where the tests run, so the deployment files are read instead: every
checker takes the parsed files and returns a list of problems (empty when all is well), so
a test can feed it a broken copy and see the problem reported. What the code says (CLI
subcommands, setting names, default ports, search attributes) is derived from the code.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import ipaddress
import json
import pkgutil
import re
import shlex
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import AliasChoices, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings

from commands.cli import parser as cli_parser
from providers.sandbox.settings import SandboxSettings
from tempay import search_attributes as sa
from tempay.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

# The packages that hold settings classes (pydantic-settings BaseSettings subclasses).
SETTINGS_PACKAGES = ("tempay", "providers", "webhook")

SERVER_IMAGE = "temporalio/server"
UI_IMAGE = "temporalio/ui"
SETUP_SCRIPT = "setup-namespace.sh"
TEMPORAL_GRPC_DEFAULT = 7233  # temporalio/server's FRONTEND_GRPC_PORT default
UI_PORT_DEFAULT = 8080  # temporalio/ui's TEMPORAL_UI_PORT default
# The worker, webhook and sandbox processes: the `tempay` subcommands compose must run.
ROLES = ("worker", "webhook", "sandbox")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ValueError(f"{path} has no services")
    return data


# --- reading compose values ------------------------------------------------------------


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either compose form (mapping or KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def argv_of(service: dict[str, Any]) -> list[str]:
    """entrypoint + command, as compose runs them (strings are split like a shell)."""
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is None:
            continue
        argv += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    return argv


@dataclass(frozen=True)
class Port:
    host: int | None  # None: not published on the host
    container: int
    host_ip: str | None = None  # None: every interface of the host

    @property
    def where(self) -> str:
        if not self.host_ip:
            return f"every interface (port {self.host})"
        return (
            f"[{self.host_ip}]:{self.host}"
            if ":" in self.host_ip
            else f"{self.host_ip}:{self.host}"
        )


def ports_of(service: dict[str, Any]) -> list[Port]:
    """Published ports, from the long form or `[HOST_IP:][HOST:]CONTAINER[/PROTO]` (an IPv6
    HOST_IP in brackets)."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            host_ip = str(entry["host_ip"]) if entry.get("host_ip") else None
            ports.append(Port(int(published) if published else None, int(entry["target"]), host_ip))
            continue
        spec = str(entry).split("/")[0]
        if spec.startswith("["):
            ip, _, rest = spec[1:].partition("]")
            parts = [ip, *rest.removeprefix(":").split(":")]
        else:
            parts = spec.rsplit(":", 2)
        container = int(parts[-1])
        host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        host_ip = parts[-3] if len(parts) == 3 and parts[-3] else None
        ports.append(Port(host, container, host_ip))
    return ports


def loopback(host_ip: str | None) -> bool:
    """Whether a published port's host address is the host's loopback (None: every one)."""
    if not host_ip:
        return False
    try:
        return ipaddress.ip_address(host_ip.strip("[]")).is_loopback
    except ValueError:
        return False


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """depends_on in its long form (the short form is `condition: service_started`)."""
    value = service.get("depends_on") or {}
    if isinstance(value, list):
        return {str(name): {"condition": "service_started"} for name in value}
    return {str(name): dict(spec or {}) for name, spec in value.items()}


def host_port(service: dict[str, Any], container: int) -> int | None:
    for port in ports_of(service):
        if port.container == container:
            return port.host
    return None


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    """(source as written, container target) of every bind mount (sources with a path)."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts.append((str(entry["source"]), PurePosixPath(entry["target"])))
            continue
        source, target, *_ = str(entry).split(":") + [""]
        if source.startswith((".", "/")) and target:
            mounts.append((source, PurePosixPath(target)))
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a container path of a bind mount comes from, if any."""
    path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if path == target or target in path.parents:
            return ROOT / source / path.relative_to(target)
    return None


def image_name(service: dict[str, Any]) -> str:
    image = str(service.get("image", ""))
    reference = image.split("@")[0]
    last = reference.rsplit("/", 1)[-1]
    return reference[: len(reference) - len(last)] + last.split(":")[0]


def built(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def by_image(compose: dict[str, Any], image: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if image_name(s) == image}


def running(compose: dict[str, Any], subcommand: str) -> dict[str, dict[str, Any]]:
    """Built services whose command is `tempay SUBCOMMAND ...`."""
    return {name: s for name, s in built(compose).items() if argv_of(s)[1:2] == [subcommand]}


def talking_to_temporal(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The webhook and worker services: the processes that talk to Temporal and hold the
    provider adapters."""
    return {**running(compose, "webhook"), **running(compose, "worker")}


def one(services: dict[str, dict[str, Any]], what: str) -> tuple[str, dict[str, Any]]:
    if len(services) != 1:
        raise LookupError(f"expected exactly one {what} service, found {sorted(services)}")
    return next(iter(services.items()))


# --- what the code says ------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project.get("scripts", {}))


def subcommands(parser: argparse.ArgumentParser | None = None) -> set[str]:
    parser = parser or cli_parser()
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found |= set(action.choices)
    return found


def settings_classes() -> list[type[BaseSettings]]:
    """Every BaseSettings subclass defined in the project's packages (imports them all)."""
    for package_name in SETTINGS_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if not info.name.endswith(".__main__"):  # that one runs the CLI
                importlib.import_module(info.name)
    classes: list[type[BaseSettings]] = []
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        subclasses: list[type[BaseSettings]] = pending.pop().__subclasses__()
        pending += subclasses
        classes += [c for c in subclasses if c.__module__.split(".")[0] in SETTINGS_PACKAGES]
    return classes


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (upper case; they are not
    case-sensitive unless the class says so)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field.alias or field_name}")
    return {name.upper() for name in names}


def known_settings() -> set[str]:
    names: set[str] = set()
    for cls in settings_classes():
        names |= env_names(cls)
    return names


def default(cls: type[BaseSettings], field: str) -> Any:
    return cls.model_fields[field].default


def as_setting(cls: type[BaseSettings], field: str, raw: str | None) -> Any:
    """What the settings class makes of an environment value, as its field's type reads it;
    ValueError when it reads none (e.g. "maybe" for a bool)."""
    annotation = cls.model_fields[field].annotation
    assert annotation is not None, f"{cls.__name__}.{field} has no type"
    try:
        return TypeAdapter(annotation).validate_python(raw)
    except ValidationError as exc:
        raise ValueError(f"{raw!r} is not a value of {field}") from exc


# --- checks ------------------------------------------------------------------------------

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned (a tag other than `latest`, or a digest)."""
    if "$" in image:
        return f"{image!r}: a variable decides the version"
    reference, _, digest = image.partition("@")
    if digest:
        return None if _DIGEST.match(digest) else f"{image!r}: malformed digest"
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image!r}: no tag (means latest)"
    tag = last.split(":", 1)[1]
    if not _TAG.match(tag):
        return f"{image!r}: malformed tag"
    if tag == "latest" or tag.startswith("latest-"):
        return f"{image!r}: `latest` is not a version"
    return None


def image_problems(name: str, service: dict[str, Any]) -> list[str]:
    if "image" not in service:
        return [] if "build" in service else [f"{name}: neither image nor build"]
    problem = image_pin_problem(str(service["image"]))
    return [f"{name}: {problem}"] if problem else []


def build_problems(name: str, service: dict[str, Any]) -> list[str]:
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    if (ROOT / context).resolve() != ROOT or not (ROOT / context / dockerfile).is_file():
        return [f"{name}: builds {context}/{dockerfile}, not this repository's Dockerfile"]
    return []


def command_problems(
    name: str, service: dict[str, Any], scripts: dict[str, str], subcommand_names: set[str]
) -> list[str]:
    """A built service must run a `tempay` subcommand with options the CLI accepts."""
    argv = argv_of(service)
    if not argv:
        return [f"{name}: no command (the image's default is not a role)"]
    if argv[0] not in scripts:
        return [f"{name}: {argv[0]!r} is not a console script of pyproject.toml"]
    if len(argv) < 2 or argv[1] not in subcommand_names:
        return [f"{name}: {shlex.join(argv)!r}: not a subcommand of {argv[0]}"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            cli_parser().parse_args(argv[1:])
    except SystemExit:
        return [f"{name}: {shlex.join(argv)!r}: {stderr.getvalue().strip().splitlines()[-1]}"]
    return []


def role_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for role in ROLES:
        services = running(compose, role)
        if len(services) != 1:
            problems.append(f"`tempay {role}` runs in {len(services)} services, not 1")
    return problems


def setting_problems(name: str, service: dict[str, Any], known: set[str]) -> list[str]:
    return [
        f"{name}: {key} is not a tempay setting"
        for key in env_of(service)
        if key.upper().startswith(("TEMPAY_", "TEMPORAL_")) and key.upper() not in known
    ]


def temporal_address_problems(compose: dict[str, Any]) -> list[str]:
    """Every TEMPORAL_ADDRESS is the temporal service's gRPC port, which is published."""
    server_name, server = one(by_image(compose, SERVER_IMAGE), SERVER_IMAGE)
    grpc = int(env_of(server).get("FRONTEND_GRPC_PORT", TEMPORAL_GRPC_DEFAULT))
    problems = []
    # The CLI on the host reaches the stack with its default address.
    host_default = int(str(default(Settings, "temporal_address")).rsplit(":", 1)[1])
    if host_port(server, grpc) != host_default:
        problems.append(f"{server_name}: gRPC port {grpc} is not published on {host_default}")
    problems += _loopback_only(server_name, server, grpc, "Temporal's frontend (no auth)")
    expected = f"{server_name}:{grpc}"
    for name, service in compose["services"].items():
        address = env_of(service).get("TEMPORAL_ADDRESS")
        if address is not None and address != expected:
            problems.append(f"{name}: TEMPORAL_ADDRESS={address}, expected {expected}")
    for name, service in built(compose).items():
        talks_to_temporal = role_of(service) in ("worker", "webhook")
        if talks_to_temporal and "TEMPORAL_ADDRESS" not in env_of(service):
            problems.append(f"{name}: no TEMPORAL_ADDRESS (the default is 127.0.0.1)")
    return problems


def _loopback_only(name: str, service: dict[str, Any], container: int, what: str) -> list[str]:
    """A port published only on the host's loopback: whoever reaches `what` controls it."""
    return [
        f"{name}: port {container} published on {p.where}, not the host's loopback only: "
        f"{what} open to the network"
        for p in ports_of(service)
        if p.container == container and p.host is not None and not loopback(p.host_ip)
    ]


def _url_problem(name: str, key: str, value: str | None, expected: str) -> list[str]:
    if value is None:
        return [f"{name}: {key} unset, expected {expected}"]
    return [] if value.rstrip("/") == expected else [f"{name}: {key}={value}, expected {expected}"]


def _http_service(
    compose: dict[str, Any], role: str, cls: type[BaseSettings], prefix: str
) -> tuple[str, list[str], int, int | None]:
    """Checks the role's bind host and port settings; returns (name, problems, port, host port)."""
    name, service = one(running(compose, role), f"`tempay {role}`")
    env = env_of(service)
    problems = []
    port_default = int(default(cls, "port" if cls is SandboxSettings else f"{role}_port"))
    port = int(env.get(f"{prefix}PORT", port_default))
    if port != port_default:
        problems.append(f"{name}: {prefix}PORT={port}, the code's default is {port_default}")
    if env.get(f"{prefix}HOST") != "0.0.0.0":
        problems.append(f"{name}: {prefix}HOST must be 0.0.0.0 in a container")
    published = host_port(service, port)
    if published is None:
        problems.append(f"{name}: port {port} is not published")
    elif published != port:
        problems.append(f"{name}: published on {published}, not {port} as the docs and CLI say")
    test = (service.get("healthcheck") or {}).get("test", [])
    health = test if isinstance(test, str) else " ".join(map(str, test))
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/healthz", health)
    if match is None:
        problems.append(f"{name}: healthcheck does not GET /healthz")
    elif int(match.group(1)) != port:
        problems.append(f"{name}: healthcheck port {match.group(1)}, service port {port}")
    return name, problems, port, published


def port_problems(compose: dict[str, Any]) -> list[str]:
    hook, problems, hook_port, hook_host_port = _http_service(
        compose, "webhook", Settings, "TEMPAY_WEBHOOK_"
    )
    box, box_problems, box_port, box_host_port = _http_service(
        compose, "sandbox", SandboxSettings, "TEMPAY_SANDBOX_"
    )
    problems += box_problems
    box_env = env_of(compose["services"][box])
    if box_host_port is not None:  # (else "not published" is already reported)
        problems += _url_problem(
            box,
            "TEMPAY_SANDBOX_PUBLIC_URL",
            box_env.get("TEMPAY_SANDBOX_PUBLIC_URL"),
            f"http://localhost:{box_host_port}",
        )
    for name, service in built(compose).items():
        env = env_of(service)
        if "TEMPAY_WEBHOOK_URL" in env or name != box:
            problems += _url_problem(
                name,
                "TEMPAY_WEBHOOK_URL",
                env.get("TEMPAY_WEBHOOK_URL"),
                f"http://{hook}:{hook_port}",
            )
        if "TEMPAY_SANDBOX_URL" in env or name != box:
            problems += _url_problem(
                name,
                "TEMPAY_SANDBOX_URL",
                env.get("TEMPAY_SANDBOX_URL"),
                f"http://{box}:{box_port}",
            )
    return problems


def internal_port_of(service: dict[str, Any]) -> int:
    return int(env_of(service).get("TEMPAY_INTERNAL_PORT", default(Settings, "internal_port")))


def codec_problems(compose: dict[str, Any]) -> list[str]:
    """The UI's codec endpoint is the webhook's internal listener's /codec as published on
    the host (the operator's browser calls it), and the webhook lets the UI's published
    origin call it."""
    ui_name, ui = one(by_image(compose, UI_IMAGE), UI_IMAGE)
    hook, hook_service = one(running(compose, "webhook"), "`tempay webhook`")
    problems = []
    internal_host_port = host_port(hook_service, internal_port_of(hook_service))
    if internal_host_port is not None:  # (else internal_listener_problems says so)
        problems += _url_problem(
            ui_name,
            "TEMPORAL_CODEC_ENDPOINT",
            env_of(ui).get("TEMPORAL_CODEC_ENDPOINT"),
            f"http://localhost:{internal_host_port}/codec",
        )
    ui_port = int(env_of(ui).get("TEMPORAL_UI_PORT", UI_PORT_DEFAULT))
    ui_host_port = host_port(ui, ui_port)
    problems += _loopback_only(ui_name, ui, ui_port, "the Temporal UI (no login)")
    if ui_host_port != UI_PORT_DEFAULT:
        return [*problems, f"{ui_name}: port {ui_port} is not published on {UI_PORT_DEFAULT}"]
    origin = f"http://localhost:{ui_host_port}"
    raw = env_of(hook_service).get("TEMPAY_CODEC_CORS_ORIGINS", "")
    origins = json.loads(raw) if raw.strip().startswith("[") else raw.split(",")
    if origin not in {o.strip().rstrip("/") for o in origins}:
        problems.append(f"{hook}: TEMPAY_CODEC_CORS_ORIGINS={raw!r} does not allow {origin}")
    for name, service in built(compose).items():
        keys = env_of(service).get("TEMPAY_CODEC_KEYS")
        if role_of(service) in ("worker", "webhook") and keys is None:
            problems.append(f"{name}: no TEMPAY_CODEC_KEYS (payloads must be encrypted)")
        elif keys is not None and interpolated(keys) != {"TEMPAY_CODEC_KEYS"}:
            problems.append(f"{name}: TEMPAY_CODEC_KEYS must come from .env, not this file")
    return problems


def internal_listener_problems(compose: dict[str, Any]) -> list[str]:
    """/api, /codec and /metrics are on the webhook's internal listener, apart from the
    public one providers reach: it listens on every interface inside the container (the UI's
    browser through the host, Prometheus in the network) and is published on the host's
    loopback only, on the port the docs and the code name."""
    name, service = one(running(compose, "webhook"), "`tempay webhook`")
    env = env_of(service)
    problems = []
    combined = env.get("TEMPAY_INTERNAL_ON_WEBHOOK_PORT")
    if combined is not None:
        try:
            combined_on = as_setting(Settings, "internal_on_webhook_port", combined)
        except ValueError:
            combined_on = True  # not a boolean: report it, whatever it was meant to be
        if combined_on is not False:
            problems.append(
                f"{name}: TEMPAY_INTERNAL_ON_WEBHOOK_PORT={combined} puts /api, /codec and "
                "/metrics on the public port"
            )
    port_default = int(default(Settings, "internal_port"))
    port = internal_port_of(service)
    if port != port_default:
        problems.append(
            f"{name}: TEMPAY_INTERNAL_PORT={port}, the code's default is {port_default}"
        )
    if env.get("TEMPAY_INTERNAL_HOST") != "0.0.0.0":
        problems.append(
            f"{name}: TEMPAY_INTERNAL_HOST must be 0.0.0.0 in a container (its default "
            f"{default(Settings, 'internal_host')} is the container's own loopback)"
        )
    published = [p for p in ports_of(service) if p.container == port and p.host is not None]
    if not published:
        problems.append(f"{name}: internal port {port} is not published on 127.0.0.1")
    for entry in published:
        if not loopback(entry.host_ip):
            problems.append(
                f"{name}: internal port {port} published on {entry.where}, not on the "
                "host's loopback only: /api, /codec and /metrics open to the network"
            )
        elif entry.host != port:
            problems.append(
                f"{name}: internal port published on {entry.host}, not {port} as the docs "
                "and CLI say"
            )
    return problems


SANDBOX_SWITCH = "TEMPAY_SANDBOX"
_DEFAULTED = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}$")


def sandbox_problems(compose: dict[str, Any]) -> list[str]:
    """The sandbox signs whatever it is asked to, so it exists only where switched on: its
    service runs only under a profile and is published on the host's loopback only; the
    webhook and worker wait for it when it runs, and take its adapter only when .env says
    TEMPAY_SANDBOX=true (`${TEMPAY_SANDBOX:-false}`: unset or empty is off)."""
    box, service = one(running(compose, "sandbox"), "`tempay sandbox`")
    problems = []
    if not service.get("profiles"):
        problems.append(f"{box}: no profiles, so it runs by default (it must be switched on)")
    for entry in ports_of(service):
        if entry.host is not None and not loopback(entry.host_ip):
            problems.append(
                f"{box}: port {entry.container} published on {entry.where}, not on the "
                "host's loopback only"
            )
    for name, other in talking_to_temporal(compose).items():
        wait = depends_on(other).get(box)
        if wait is None or wait.get("condition") != "service_healthy":
            problems.append(f"{name}: does not wait for {box} to be healthy when it runs")
        raw = env_of(other).get(SANDBOX_SWITCH)
        match = _DEFAULTED.match(raw or "")
        if match is None or match.group(1) != SANDBOX_SWITCH:
            said = f"{SANDBOX_SWITCH}={raw}" if raw is not None else f"no {SANDBOX_SWITCH}"
            problems.append(
                f"{name}: {said}; it must come from .env with a false default "
                f"(${{{SANDBOX_SWITCH}:-false}})"
            )
            continue
        try:
            on_by_default = as_setting(Settings, "sandbox", match.group(2)) is not False
        except ValueError:
            on_by_default = True
        if on_by_default:
            problems.append(
                f"{name}: {SANDBOX_SWITCH} defaults to {match.group(2)!r}, not false: "
                "the sandbox must be off unless .env turns it on"
            )
    return problems


def profile_problems(compose: dict[str, Any]) -> list[str]:
    """The worker and webhook run without a profile, and a service that runs without one
    starts without the profiled services it depends on: such a depends_on says
    `required: false` (the Compose spec calls a model invalid whose depends_on names a
    service its profiles leave out; `required: false` only warns)."""
    services = compose["services"]
    problems = []
    for name, service in talking_to_temporal(compose).items():
        if service.get("profiles"):
            problems.append(f"{name}: under profiles {service['profiles']}, not started by default")
    for name, service in services.items():
        if service.get("profiles"):
            continue
        for target, spec in depends_on(service).items():
            if target not in services:
                problems.append(f"{name}: depends on {target}, which is not a service")
                continue
            profiles = services[target].get("profiles")
            if profiles and spec.get("required", True) is not False:
                problems.append(
                    f"{name}: depends on {target} (profiles {profiles}) without "
                    "`required: false`, so it cannot start without that profile"
                )
    return problems


def role_of(service: dict[str, Any]) -> str | None:
    argv = argv_of(service)
    return argv[1] if len(argv) > 1 else None


def scaling_problems(compose: dict[str, Any]) -> list[str]:
    """`docker compose up --scale worker=3` needs no fixed name and no host port."""
    problems = []
    for name, service in running(compose, "worker").items():
        if "container_name" in service:
            problems.append(f"{name}: container_name prevents --scale")
        if any(port.host is not None for port in ports_of(service)):
            problems.append(f"{name}: a published host port prevents --scale")
    return problems


def search_attribute_problems(compose: dict[str, Any]) -> list[str]:
    """A one-shot service registers tempay's search attributes on the namespace it uses."""
    setups = {
        n: s for n, s in compose["services"].items() if any(SETUP_SCRIPT in a for a in argv_of(s))
    }
    name, service = one(setups, SETUP_SCRIPT)
    argv = argv_of(service)
    args = argv[next(i for i, a in enumerate(argv) if SETUP_SCRIPT in a) + 1 :]
    problems = []
    namespaces = {
        env_of(s).get("TEMPORAL_NAMESPACE", default(Settings, "temporal_namespace"))
        for s in built(compose).values()
        if role_of(s) in ("worker", "webhook")
    }
    if not args or namespaces != {args[0]}:
        problems.append(f"{name}: registers on {args[:1]}, tempay uses {sorted(namespaces)}")
    expected = sorted(key.name for key in sa.ALL)
    if sorted(args[1:]) != expected:
        problems.append(f"{name}: registers {sorted(args[1:])}, tempay needs {expected}")
    for dependant, other in compose["services"].items():
        if role_of(other) in ("worker", "webhook"):
            condition = depends_on(other).get(name, {}).get("condition")
            if condition != "service_completed_successfully":
                problems.append(f"{dependant}: does not wait for {name} to complete")
    return problems


def mount_problems(compose: dict[str, Any]) -> list[str]:
    """Bind-mounted sources exist, and so do the mounted scripts and files services name."""
    problems = []
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            if not (ROOT / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
        for arg in argv_of(service):
            if arg.startswith("/"):
                path = host_path(service, arg)
                if path is not None and not path.is_file():
                    problems.append(f"{name}: runs {arg}, but {path} does not exist")
        config = env_of(service).get("DYNAMIC_CONFIG_FILE_PATH")
        if config is not None:
            full = config if config.startswith("/") else f"/etc/temporal/{config}"
            path = host_path(service, full)
            if path is None or not path.is_file():
                problems.append(f"{name}: DYNAMIC_CONFIG_FILE_PATH {full} is not a mounted file")
    return problems


_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)?")


def interpolated(text: str) -> set[str]:
    """Variables compose substitutes (`${VAR}`, `${VAR:-x}`, ...; `$${` is a literal `$`)."""
    return {name for name, _ in _INTERPOLATION.findall(text)}


def defaulted(text: str) -> set[str]:
    """Variables every substitution of which has a default (`${VAR:-x}`, `${VAR-x}`)."""
    found = _INTERPOLATION.findall(text)
    return {name for name, _ in found} - {name for name, dash in found if not dash}


_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def env_file_names(text: str, commented: bool = False) -> dict[str, str]:
    """NAME=value lines of an env file; with `commented`, the commented-out ones
    (`# NAME=value`), which document an optional variable without setting it."""
    names = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") != commented:
            continue
        match = _ENV_LINE.match(line.lstrip("#").strip() if commented else line)
        if match:
            names[match.group(1)] = match.group(2).strip()
    return names


def env_example_problems(compose_text: str, example_text: str) -> list[str]:
    """Every variable docker-compose.yml substitutes is listed; one with a default there may
    be listed commented out instead."""
    listed = env_file_names(example_text)
    shown = set(listed) | (
        set(env_file_names(example_text, commented=True)) & defaulted(compose_text)
    )
    problems = [
        f".env.example does not list {name}, which docker-compose.yml uses"
        for name in sorted(interpolated(compose_text) - shown)
    ]
    if listed.get("TEMPAY_CODEC_KEYS"):
        problems.append(".env.example must not carry a codec key (each install makes its own)")
    return problems


def env_example_sandbox_problems(compose: dict[str, Any], example_text: str) -> list[str]:
    """.env.example shows how to switch the sandbox on (COMPOSE_PROFILES naming its profile
    and TEMPAY_SANDBOX=true, together) and leaves it off (both commented out)."""
    _, service = one(running(compose, "sandbox"), "`tempay sandbox`")
    profiles = {str(p) for p in service.get("profiles") or []}
    if not profiles:
        return []  # (sandbox_problems says so)

    def profile_chosen(names: dict[str, str]) -> bool:
        return bool(profiles & {p.strip() for p in names.get("COMPOSE_PROFILES", "").split(",")})

    def switched_on(names: dict[str, str]) -> bool:
        try:
            return as_setting(Settings, "sandbox", names.get(SANDBOX_SWITCH)) is True
        except ValueError:
            return False

    problems = []
    active = env_file_names(example_text)
    if profile_chosen(active) or switched_on(active):
        problems.append(
            ".env.example switches the sandbox on (COMPOSE_PROFILES or TEMPAY_SANDBOX): "
            "it must stay off unless the operator turns it on"
        )
    documented = env_file_names(example_text, commented=True)
    if not (profile_chosen(documented) and switched_on(documented)):
        problems.append(
            f".env.example does not show COMPOSE_PROFILES={min(profiles)} with "
            f"{SANDBOX_SWITCH}=true (commented out), which switch the sandbox on"
        )
    return problems


# --- the Dockerfile ----------------------------------------------------------------------


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, args = logical.partition(" ")
        yield instruction.upper(), args.strip()
        logical = ""


def dockerfile_problems(text: str, context: Path = ROOT) -> list[str]:
    problems = []
    instructions = list(dockerfile_instructions(text))
    stages: set[str] = set()
    copied: set[str] = set()
    users = []
    for instruction, args in instructions:
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            image = words[0]
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2])
            if image not in stages:
                problem = image_pin_problem(image)
                if problem:
                    problems.append(f"Dockerfile FROM {problem}")
        elif instruction in ("COPY", "ADD"):
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                copied.add(source.rstrip("/").removeprefix("./"))
                if not list(context.glob(source)):
                    problems.append(f"Dockerfile copies {source}, which does not exist")
        elif instruction == "USER":
            users.append(args.split(":")[0])
    if not users or users[-1] in ("root", "0"):
        problems.append("Dockerfile: the processes must not run as root (no USER)")
    problems += [
        f"Dockerfile does not copy {need}, which `pip install .` needs"
        for need in sorted(install_needs(context) - copied)
    ]
    return problems


def install_needs(context: Path = ROOT) -> set[str]:
    """pyproject.toml, its readme, and every top-level package its find-config includes."""
    pyproject = tomllib.loads((context / "pyproject.toml").read_text())
    needs = {"pyproject.toml"}
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):
        needs.add(readme)
    patterns: Iterable[str] = (
        pyproject.get("tool", {})
        .get("setuptools", {})
        .get("packages", {})
        .get("find", {})
        .get("include", [])
    )
    for pattern in patterns:
        top = pattern.split(".")[0].rstrip("*")
        needs |= {
            p.name
            for p in context.iterdir()
            if p.is_dir() and p.name.startswith(top) and (p / "__init__.py").exists()
        }
    return needs


def book_problems(compose: dict[str, Any]) -> list[str]:
    """The worker and webhook use one PostgreSQL book (the dev default, SQLite in the data
    dir, would be one file per container), migrated by a one-shot `tempay db upgrade` on
    the same URL that both wait for (the worker refuses an older schema)."""
    migrations = {n: s for n, s in built(compose).items() if argv_of(s)[1:3] == ["db", "upgrade"]}
    if len(migrations) != 1:
        return [f"`tempay db upgrade` runs in {len(migrations)} one-shot services, not 1"]
    name, migrate = next(iter(migrations.items()))
    url = env_of(migrate).get("TEMPAY_DATABASE_URL")
    problems = []
    for dependant, service in talking_to_temporal(compose).items():
        theirs = env_of(service).get("TEMPAY_DATABASE_URL")
        if not theirs or not theirs.startswith(("postgresql://", "postgres://")):
            problems.append(f"{dependant}: TEMPAY_DATABASE_URL is not a PostgreSQL URL")
        elif theirs != url:
            problems.append(f"{dependant}: its book is not the one {name} migrates")
        if depends_on(service).get(name, {}).get("condition") != "service_completed_successfully":
            problems.append(f"{dependant}: does not wait for {name} to complete")
    return problems


# --- the observability profile -----------------------------------------------------------
#
# Prometheus, Grafana and Jaeger run only under the `observability` profile. What the code
# exports (metric names, label values, ports) is derived from the code; what an image holds
# (which command a healthcheck can run, which port it listens on) is read from each image's
# documentation and written down here, once.

OBSERVABILITY_PROFILE = "observability"
PROMETHEUS_IMAGE = "prom/prometheus"
GRAFANA_IMAGE = "grafana/grafana"
JAEGER_IMAGE = "jaegertracing/jaeger"
OBSERVABILITY_IMAGES = (PROMETHEUS_IMAGE, GRAFANA_IMAGE, JAEGER_IMAGE)

# Commands that exist inside each image, for healthchecks. prom/prometheus is built on
# quay.io/prometheus/busybox, grafana/grafana (default variant), jaegertracing/jaeger and
# temporalio/ui on Alpine: busybox `wget`, and no curl in the first three. The Temporal
# server image has `nc`; postgres has `pg_isready`; tempay's image is python:3.11-slim.
IMAGE_COMMANDS: dict[str, set[str]] = {
    "postgres": {"pg_isready", "psql", "sh"},
    SERVER_IMAGE: {"nc", "sh"},
    UI_IMAGE: {"wget", "curl", "sh"},
    PROMETHEUS_IMAGE: {"wget", "sh"},
    GRAFANA_IMAGE: {"wget", "sh"},
    JAEGER_IMAGE: {"wget", "sh"},
}
BUILT_COMMANDS = {"python", "tempay", "sh"}

# Ports the images listen on, from their documentation: Prometheus's web port, Grafana's
# http_port (GF_SERVER_HTTP_PORT), Jaeger v2's all-in-one defaults (OTLP gRPC and HTTP, the
# query UI, the healthcheckv2 extension), PostgreSQL's.
IMAGE_PORTS: dict[str, set[int]] = {
    "postgres": {5432},
    PROMETHEUS_IMAGE: {9090},
    GRAFANA_IMAGE: {3000},
    JAEGER_IMAGE: {4317, 4318, 16686, 13133},
}
OTLP_HTTP_PORT = 4318

# Series Prometheus makes itself (not exported by anyone): `up` per scrape target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# Where the worker's metric meters are used: workflows (workflow.metric_meter) and
# activities (activity.metric_meter).
METER_PACKAGES = ("workflows", "activities", "tempay")
_METER_KINDS = {
    "create_counter": "counter",
    "create_histogram": "histogram",
    "create_histogram_float": "histogram",
    "create_histogram_timedelta": "histogram",
    "create_gauge": "gauge",
    "create_gauge_float": "gauge",
    "create_gauge_timedelta": "gauge",
}


def under_profile(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if profile in (s.get("profiles") or [])}


def observability_profile_problems(compose: dict[str, Any]) -> list[str]:
    """Prometheus, Grafana and Jaeger run only under the profile, published on the host's
    loopback only (none has a login that guards it here); the profile holds nothing else,
    and nothing outside it needs it to start."""
    problems = []
    services = compose["services"]
    for image in OBSERVABILITY_IMAGES:
        found = by_image(compose, image)
        if len(found) != 1:
            problems.append(f"{image}: {len(found)} services, not 1")
        for name, service in found.items():
            if (service.get("profiles") or []) != [OBSERVABILITY_PROFILE]:
                problems.append(
                    f"{name}: profiles {service.get('profiles')}, not only "
                    f"[{OBSERVABILITY_PROFILE!r}]: it would run without the profile"
                )
    for name, service in under_profile(compose, OBSERVABILITY_PROFILE).items():
        if image_name(service) not in OBSERVABILITY_IMAGES:
            problems.append(
                f"{name}: under the {OBSERVABILITY_PROFILE} profile, but not one of its"
            )
        for port in ports_of(service):
            if port.host is not None and not loopback(port.host_ip):
                problems.append(
                    f"{name}: port {port.container} published on {port.where}, not on the "
                    "host's loopback only"
                )
    for name, service in services.items():
        if OBSERVABILITY_PROFILE in (service.get("profiles") or []):
            continue
        for target, spec in depends_on(service).items():
            target_profiles = (services.get(target) or {}).get("profiles") or []
            if OBSERVABILITY_PROFILE in target_profiles and spec.get("required", True):
                problems.append(f"{name}: needs {target}, which runs only under the profile")
    return problems


def one_shots(compose: dict[str, Any]) -> set[str]:
    """Services others wait to complete (`service_completed_successfully`) and that nothing
    restarts: they run once and exit, so there is no health to check."""
    completed = {
        target
        for service in compose["services"].values()
        for target, spec in depends_on(service).items()
        if spec.get("condition") == "service_completed_successfully"
    }
    return {n for n in completed if "restart" not in compose["services"].get(n, {"restart": 1})}


def healthcheck_argv(service: dict[str, Any]) -> list[str] | None:
    """The healthcheck as argv (CMD-SHELL split like a shell); None when there is none."""
    health = service.get("healthcheck")
    if not health or health.get("disable"):
        return None
    test = health.get("test")
    if isinstance(test, str):
        return shlex.split(test)
    if not test or test[0] == "NONE":
        return None
    words = [str(w) for w in test]
    if words[0] == "CMD-SHELL":
        return shlex.split(" ".join(words[1:]))
    return words[1:] if words[0] == "CMD" else words


def listening_ports(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a service listens on inside the network, from the code's settings (tempay's
    roles) or the image's documentation."""
    env = env_of(service)
    role = role_of(service) if "build" in service else None
    if role == "webhook":
        return {
            int(env.get("TEMPAY_WEBHOOK_PORT", default(Settings, "webhook_port"))),
            internal_port_of(service),
        }
    if role == "worker":
        ports = {worker_metrics_port(service)}
        ports.add(
            int(env.get("TEMPAY_WORKER_HEALTH_PORT", default(Settings, "worker_health_port")))
        )
        return ports - {0}
    if role == "sandbox":
        return {int(env.get("TEMPAY_SANDBOX_PORT", default(SandboxSettings, "port")))}
    image = image_name(service)
    if image == SERVER_IMAGE:
        return {int(env.get("FRONTEND_GRPC_PORT", TEMPORAL_GRPC_DEFAULT))}
    if image == UI_IMAGE:
        return {int(env.get("TEMPORAL_UI_PORT", UI_PORT_DEFAULT))}
    if image == GRAFANA_IMAGE and "GF_SERVER_HTTP_PORT" in env:
        return {int(env["GF_SERVER_HTTP_PORT"])}
    return set(IMAGE_PORTS.get(image, set()))


_LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)(/\S*)?")


def healthcheck_problems(compose: dict[str, Any]) -> list[str]:
    """Every service that keeps running has a healthcheck, run with a command its image
    holds, asking a port the service listens on. busybox wget saves what it fetches in the
    working directory unless told otherwise, which fails where the image's user cannot
    write there (Grafana's): so -O /dev/null (or --spider)."""
    problems = []
    once = one_shots(compose)
    for name, service in compose["services"].items():
        if name in once:
            continue
        argv = healthcheck_argv(service)
        if argv is None:
            problems.append(f"{name}: no healthcheck")
            continue
        image = image_name(service)
        commands = BUILT_COMMANDS if "build" in service else IMAGE_COMMANDS.get(image)
        if commands is None:
            problems.append(f"{name}: no command known to exist in {image}")
        elif PurePosixPath(argv[0]).name not in commands:
            problems.append(
                f"{name}: healthcheck runs {argv[0]!r}, which {image or 'the image'} lacks"
            )
        if PurePosixPath(argv[0]).name == "wget" and not (
            "--spider" in argv or any(a == "/dev/null" or a.endswith("=/dev/null") for a in argv)
        ):
            problems.append(f"{name}: wget saves to the working directory: add -O /dev/null")
        ports = listening_ports(name, service)
        for match in _LOCAL_URL.finditer(" ".join(argv)):
            if int(match.group(1)) not in ports:
                problems.append(
                    f"{name}: healthcheck asks port {match.group(1)}, the service listens on "
                    f"{sorted(ports)}"
                )
    return problems


def worker_metrics_port(service: dict[str, Any]) -> int:
    env = env_of(service)
    return int(env.get("TEMPAY_WORKER_METRICS_PORT", default(Settings, "worker_metrics_port")))


def worker_metrics_problems(compose: dict[str, Any]) -> list[str]:
    """The worker's metrics reach Prometheus in the network (every interface inside the
    container; the default 127.0.0.1 is the container's own loopback), are on, and are not
    published on the host."""
    problems = []
    for name, service in running(compose, "worker").items():
        env = env_of(service)
        port = worker_metrics_port(service)
        if port == 0:
            problems.append(f"{name}: TEMPAY_WORKER_METRICS_PORT=0 turns the metrics off")
        if env.get("TEMPAY_WORKER_METRICS_HOST") != "0.0.0.0":
            problems.append(
                f"{name}: TEMPAY_WORKER_METRICS_HOST must be 0.0.0.0 in a container (its "
                f"default {default(Settings, 'worker_metrics_host')} is the container's own "
                "loopback, out of Prometheus's reach)"
            )
        if any(p.container == port and p.host is not None for p in ports_of(service)):
            problems.append(f"{name}: metrics port {port} published on the host")
    return problems


def _option(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


@dataclass(frozen=True)
class PrometheusFiles:
    config: dict[str, Any]
    rules: list[dict[str, Any]]


def prometheus_files(compose: dict[str, Any]) -> tuple[PrometheusFiles | None, list[str]]:
    """The configuration and rule files the prometheus service reads, from the repository
    files its bind mounts hold (parsed)."""
    name, service = one(by_image(compose, PROMETHEUS_IMAGE), PROMETHEUS_IMAGE)
    container_path = _option(argv_of(service), "--config.file") or "/etc/prometheus/prometheus.yml"
    path = host_path(service, container_path)
    if path is None or not path.is_file():
        return None, [f"{name}: --config.file {container_path} is not a mounted repository file"]
    config = yaml.safe_load(path.read_text())
    problems = []
    rules = []
    for pattern in config.get("rule_files") or []:
        rule_path = host_path(service, str(pattern))
        if rule_path is None or not rule_path.is_file():
            problems.append(f"{name}: rule file {pattern} is not a mounted repository file")
            continue
        rules.append(yaml.safe_load(rule_path.read_text()))
    if not rules:
        problems.append(f"{name}: no rule files, so no alerts")
    return PrometheusFiles(config, rules), problems


def scrape_targets(job: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(host, port, how) of a scrape job's static and DNS (type A) targets."""
    targets = []
    for static in job.get("static_configs") or []:
        for target in static.get("targets") or []:
            host, _, port = str(target).rpartition(":")
            targets.append((host, int(port), "static"))
    for dns in job.get("dns_sd_configs") or []:
        for host in dns.get("names") or []:
            targets.append((str(host), int(dns.get("port", 0)), "dns"))
    return targets


def scrape_problems(compose: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Every target is a compose service on the port it serves /metrics on: the webhook's
    internal listener (the public one answers 404 for /metrics) and each worker's metrics
    port, found through DNS so that every `--scale` replica is scraped. Both are scraped."""
    services = compose["services"]
    hook, hook_service = one(running(compose, "webhook"), "`tempay webhook`")
    metrics_ports = {hook: {internal_port_of(hook_service)}}
    workers = running(compose, "worker")
    for name, service in workers.items():
        metrics_ports[name] = {worker_metrics_port(service)}
    problems = []
    scraped: set[str] = set()
    for job in config.get("scrape_configs") or []:
        job_name = job.get("job_name", "?")
        if job.get("metrics_path", "/metrics") != "/metrics":
            problems.append(f"job {job_name}: metrics_path {job['metrics_path']}, not /metrics")
        if job.get("scheme", "http") != "http":
            problems.append(f"job {job_name}: scheme {job['scheme']}: the listeners speak http")
        targets = scrape_targets(job)
        if not targets:
            problems.append(f"job {job_name}: no targets")
        for host, port, how in targets:
            if host not in services:
                problems.append(f"job {job_name}: {host}:{port}: {host} is not a service")
                continue
            if host not in metrics_ports:
                problems.append(f"job {job_name}: {host} serves no tempay metrics")
                continue
            if port not in metrics_ports[host]:
                problems.append(
                    f"job {job_name}: {host}:{port}, but {host} serves /metrics on "
                    f"{sorted(metrics_ports[host])}"
                )
                continue
            if host in workers and how != "dns":
                problems.append(
                    f"job {job_name}: static {host}:{port} scrapes one replica of --scale; "
                    "use dns_sd_configs (type A)"
                )
            scraped.add(host)
    problems += [f"{name} is not scraped" for name in sorted(set(metrics_ports) - scraped)]
    return problems


# --- metric names: what tempay exports ---------------------------------------------------


def webhook_metric_names() -> dict[str, tuple[str, ...]]:
    """The webhook's prometheus_client metrics as exposed (a counter `x` or `x_total` as
    `x_total`, a histogram as `_bucket`, `_sum`, `_count`), with their label names."""
    from prometheus_client.metrics import MetricWrapperBase

    from webhook import metrics

    names: dict[str, tuple[str, ...]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        labels = tuple(collector._labelnames)
        for family in collector.describe():
            suffixes = {
                "counter": ("_total", "_created"),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"),
            }.get(family.type, ("",))
            for suffix in suffixes:
                names[family.name + suffix] = labels + (("le",) if suffix == "_bucket" else ())
    return names


def _module_constants(tree: ast.Module) -> dict[str, str]:
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _python_files(packages: Iterable[str]) -> Iterator[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def worker_metric_names() -> dict[str, tuple[str, ...]]:
    """The metrics workflows and activities create through Temporal's metric meters, read
    from the source: the first argument of each `create_counter(...)` (and histogram,
    gauge), a string or a module constant. The SDK's Prometheus exporter adds no `_total`
    (tests/ops/test_worker_metrics.py scrapes them so); histograms get `_bucket`, `_sum`,
    `_count`. Labels: the keys of the attribute dicts passed to `.add`/`.record` cannot be
    tied to a name statically, so none are claimed."""
    names: dict[str, tuple[str, ...]] = {}
    for path in _python_files(METER_PACKAGES):
        tree = ast.parse(path.read_text(), str(path))
        constants = _module_constants(tree)
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _METER_KINDS
                and node.args
            ):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
            elif isinstance(arg, ast.Name) and arg.id in constants:
                name = constants[arg.id]
            else:
                raise ValueError(f"{path}:{node.lineno}: a metric name this check cannot read")
            if _METER_KINDS[node.func.attr] == "histogram":
                names |= {f"{name}{s}": () for s in ("_bucket", "_sum", "_count")}
            else:
                names[name] = ()
    return names


def tempay_metric_names() -> set[str]:
    return set(webhook_metric_names()) | set(worker_metric_names())


def source_strings(
    packages: Iterable[str] = ("webhook", "workflows", "activities", "tempay"),
) -> set[str]:
    """Every string literal in the code (label values such as outcomes and statuses are
    written there, as literals or enum values)."""
    found: set[str] = set()
    for path in _python_files(packages):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


# --- PromQL, read as far as the checks need ----------------------------------------------

_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_PROMQL_SELECTOR = re.compile(r"\{[^{}]*\}")
_PROMQL_RANGE = re.compile(r"\[[^\]]*\]")
_PROMQL_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_PROMQL_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
}
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_SELECTOR_WITH_NAME = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers that are not functions,
    keywords, label names or numbers)."""
    text = _PROMQL_STRING.sub('""', expr)
    text = _PROMQL_SELECTOR.sub(" ", text)
    text = _PROMQL_RANGE.sub(" ", text)
    text = _PROMQL_GROUPING.sub(" ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in _PROMQL_IDENT.finditer(text):
        word, call = match.groups()
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def promql_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every matcher written on a named metric."""
    found = []
    for metric, body in _SELECTOR_WITH_NAME.findall(expr):
        for label, op, value in _MATCHER.findall(body):
            found.append((metric, label, op, value))
    return found


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in _PROMQL_STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack


def expression_problems(
    where: str,
    expr: str,
    known: set[str],
    recorded: set[str],
    label_values: set[str],
    task_queues: set[str],
) -> list[str]:
    """An expression (a panel's query or a rule's) selects only metrics that exist, with
    label values the code writes and task queues tempay polls."""
    problems = []
    if not expr.strip():
        return [f"{where}: empty expression"]
    if not _balanced(expr):
        problems.append(f"{where}: unbalanced brackets in {expr!r}")
    for name in sorted(promql_metric_names(expr)):
        if name not in known | recorded | PROMETHEUS_OWN:
            problems.append(f"{where}: {name} is not a metric tempay exports")
    for metric, label, op, value in promql_matchers(expr):
        if label == "task_queue":
            wanted = {value} if op == "=" else set(value.split("|"))
            if op in ("=", "=~") and not wanted <= task_queues:
                problems.append(
                    f"{where}: task_queue {value!r}, tempay polls {sorted(task_queues)}"
                )
        elif metric.startswith("tempay_") and label not in ("job", "instance"):
            values = {value} if op in ("=", "!=") else set(value.split("|"))
            unknown = sorted(v for v in values if v not in label_values)
            if unknown:
                problems.append(f"{where}: {metric} {label} {unknown}: not a value the code writes")
    return problems


def task_queues(compose: dict[str, Any]) -> set[str]:
    """The task queues compose's workers poll: TEMPAY_TASK_QUEUE and its status queue."""
    queues = set()
    for service in running(compose, "worker").values():
        settings = Settings(task_queue=env_of(service).get("TEMPAY_TASK_QUEUE", "tempay"))
        queues |= {settings.task_queue, settings.status_query_task_queue}
    return queues


# --- rules ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
SEVERITIES = {"page", "ticket"}
STATUS_CAP_RECORD = "tempay:status_query_rate_cap"


def recorded_names(rule_files: list[dict[str, Any]]) -> set[str]:
    return {
        str(rule["record"])
        for rules in rule_files
        for group in (rules or {}).get("groups") or []
        for rule in group.get("rules") or []
        if "record" in rule
    }


def markdown_anchors(text: str) -> set[str]:
    """GitHub's anchors for a markdown file's headings."""
    anchors = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchors.add(slug)
    return anchors


def rule_problems(rule_files: list[dict[str, Any]], doc_anchors: set[str]) -> list[str]:
    """Prometheus's rule-file structure (promtool is not here): groups with unique names,
    each rule an alert or a recording with an expression; an alert has a `for` that is a
    duration, a severity, a summary, a description and a runbook that is a section of
    docs/observability.md."""
    problems = []
    alerts: set[str] = set()
    groups: set[str] = set()
    for rules in rule_files:
        if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
            problems.append("a rule file has no `groups` list")
            continue
        for group in rules["groups"]:
            name = group.get("name")
            if not name or name in groups:
                problems.append(f"group {name!r}: missing or repeated name")
            groups.add(str(name))
            if not group.get("rules"):
                problems.append(f"group {name}: no rules")
            for rule in group.get("rules") or []:
                kinds = [k for k in ("alert", "record") if k in rule]
                if len(kinds) != 1:
                    problems.append(f"group {name}: a rule must be an alert or a record: {rule}")
                    continue
                title = str(rule[kinds[0]])
                if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                    problems.append(f"{title}: no expr")
                extra = set(rule) - {
                    "alert",
                    "record",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations",
                }
                if extra:
                    problems.append(f"{title}: unknown keys {sorted(extra)}")
                if kinds == ["record"]:
                    if not _METRIC_NAME.match(title) or ":" not in title:
                        problems.append(f"{title}: a recording rule's name is level:metric:ops")
                    continue
                if title in alerts:
                    problems.append(f"{title}: two alerts of that name")
                alerts.add(title)
                if "for" in rule and not _DURATION.match(str(rule["for"])):
                    problems.append(f"{title}: for {rule['for']!r} is not a duration")
                severity = (rule.get("labels") or {}).get("severity")
                if severity not in SEVERITIES:
                    problems.append(
                        f"{title}: severity {severity!r}, not one of {sorted(SEVERITIES)}"
                    )
                annotations = rule.get("annotations") or {}
                for key in ("summary", "description", "runbook"):
                    if not annotations.get(key):
                        problems.append(f"{title}: no {key} annotation")
                runbook = str(annotations.get("runbook", ""))
                page, _, anchor = runbook.partition("#")
                if runbook and (page != "docs/observability.md" or anchor not in doc_anchors):
                    problems.append(
                        f"{title}: runbook {runbook} is not a section of docs/observability.md"
                    )
    return problems


def rule_expressions(rule_files: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for rules in rule_files:
        for group in (rules or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                yield str(rule.get("alert") or rule.get("record")), str(rule.get("expr", ""))


def status_cap_problems(compose: dict[str, Any], rule_files: list[dict[str, Any]]) -> list[str]:
    """The recorded cap is the workers' TEMPAY_STATUS_QUERY_RATE_CAP (their setting in
    compose, else the code's default)."""
    caps = {
        float(
            env_of(s).get(
                "TEMPAY_STATUS_QUERY_RATE_CAP", default(Settings, "status_query_rate_cap")
            )
        )
        for s in running(compose, "worker").values()
    }
    exprs = [e for n, e in rule_expressions(rule_files) if n == STATUS_CAP_RECORD]
    if len(exprs) != 1:
        return [f"{STATUS_CAP_RECORD} is recorded {len(exprs)} times, not once"]
    match = re.fullmatch(r"\s*vector\(\s*([0-9.]+)\s*\)\s*", exprs[0])
    if match is None or {float(match.group(1))} != caps:
        return [f"{STATUS_CAP_RECORD} = {exprs[0].strip()}, the workers' cap is {sorted(caps)}"]
    return []


# What needs a person, as the alert expressions must show it: (what, metric, matcher).
REQUIRED_ALERTS = (
    ("late money", "tempay_notifications_total", 'outcome="late_money"'),
    ("reviews piling up", "tempay_settlements", 'status="NEEDS_REVIEW"'),
    ("merchant deliveries failing", "tempay_merchant_deliveries", 'outcome="failed_attempt"'),
    ("status queries at the cap", STATUS_CAP_RECORD, ""),
    ("webhook 5xx", "tempay_notifications_total", 'outcome="temporal_unavailable"'),
)


def coverage_problems(
    exprs: Iterable[str], required: Iterable[tuple[str, str, str]], what: str
) -> list[str]:
    exprs = list(exprs)
    return [
        f"no {what} for {topic} ({metric}{'{' + matcher + '}' if matcher else ''})"
        for topic, metric, matcher in required
        if not any(metric in promql_metric_names(e) and matcher in e for e in exprs)
    ]


# --- Grafana -------------------------------------------------------------------------------

REQUIRED_PANELS = (
    ("settlements by status", "tempay_settlements", ""),
    ("notification outcomes", "tempay_notifications_total", ""),
    ("ack latency", "tempay_notification_ack_seconds_bucket", ""),
    ("status-query rate", "temporal_activity_execution_latency_count", 'task_queue="'),
    ("the cap", STATUS_CAP_RECORD, ""),
    ("merchant delivery backlog", "tempay_merchant_deliveries", 'outcome="failed_attempt"'),
    ("late money", "tempay_notifications_total", 'outcome="late_money"'),
)


@dataclass(frozen=True)
class GrafanaFiles:
    datasources: list[dict[str, Any]]
    dashboards: dict[str, dict[str, Any]]  # file name -> parsed JSON


def grafana_files(compose: dict[str, Any]) -> tuple[GrafanaFiles | None, list[str]]:
    """Grafana's provisioning, as mounted: data sources and dashboard providers under
    /etc/grafana/provisioning, and the dashboards in each provider's path (YAML and JSON
    must parse)."""
    name, service = one(by_image(compose, GRAFANA_IMAGE), GRAFANA_IMAGE)
    problems: list[str] = []
    root = host_path(service, "/etc/grafana/provisioning")
    if root is None or not root.is_dir():
        return None, [f"{name}: /etc/grafana/provisioning is not a mounted repository folder"]
    datasources: list[dict[str, Any]] = []
    for path in sorted((root / "datasources").glob("*.y*ml")):
        datasources += (yaml.safe_load(path.read_text()) or {}).get("datasources") or []
    dashboards: dict[str, dict[str, Any]] = {}
    providers = [
        provider
        for path in sorted((root / "dashboards").glob("*.y*ml"))
        for provider in (yaml.safe_load(path.read_text()) or {}).get("providers") or []
    ]
    if not providers:
        problems.append(f"{name}: no dashboard provider")
    for provider in providers:
        folder = host_path(service, str((provider.get("options") or {}).get("path", "")))
        if folder is None or not folder.is_dir():
            problems.append(f"{name}: provider {provider.get('name')}: its path is not mounted")
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                dashboards[path.name] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}: not JSON: {exc}")
        if not list(folder.glob("*.json")):
            problems.append(f"{name}: provider {provider.get('name')}: no dashboards")
    return GrafanaFiles(datasources, dashboards), problems


def datasource_problems(compose: dict[str, Any], datasources: list[dict[str, Any]]) -> list[str]:
    """Each data source has a uid and points at a service of the profile, on a port it
    listens on; exactly one is the default."""
    problems = []
    services = compose["services"]
    for source in datasources:
        label = source.get("name", "?")
        if not source.get("uid") or not source.get("type"):
            problems.append(f"datasource {label}: no uid or type")
        match = re.fullmatch(r"https?://([^:/]+):(\d+)/?", str(source.get("url", "")))
        if match is None:
            problems.append(
                f"datasource {label}: url {source.get('url')!r} is not http://service:port"
            )
            continue
        host, port = match.group(1), int(match.group(2))
        if host not in services:
            problems.append(f"datasource {label}: {host} is not a service")
        elif OBSERVABILITY_PROFILE not in (services[host].get("profiles") or []):
            problems.append(
                f"datasource {label}: {host} is not in the {OBSERVABILITY_PROFILE} profile"
            )
        elif port not in listening_ports(host, services[host]):
            problems.append(f"datasource {label}: {host} does not listen on {port}")
    if sum(1 for s in datasources if s.get("isDefault")) != 1:
        problems.append("exactly one datasource must be the default")
    return problems


def dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) of every query, rows' nested panels included."""
    pending = list(dashboard.get("panels") or [])
    while pending:
        panel = pending.pop(0)
        pending += panel.get("panels") or []
        for target in panel.get("targets") or []:
            yield panel, target


def dashboard_problems(dashboard: dict[str, Any], datasource_uids: set[str]) -> list[str]:
    """A dashboard Grafana can load: a uid and title, panels with unique ids and a place on
    the grid, each query an expression against a provisioned data source."""
    problems = []
    if not dashboard.get("uid") or not dashboard.get("title"):
        problems.append("dashboard: no uid or title")
    ids = [p.get("id") for p in dashboard.get("panels") or []]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append("dashboard: panel ids missing or repeated")
    for panel in dashboard.get("panels") or []:
        if not panel.get("title") or not panel.get("gridPos") or not panel.get("targets"):
            problems.append(f"panel {panel.get('id')}: no title, gridPos or queries")
    for panel, target in dashboard_targets(dashboard):
        uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
        if uid not in datasource_uids:
            problems.append(f"panel {panel.get('title')!r}: datasource {uid!r} is not provisioned")
        if not str(target.get("expr", "")).strip():
            problems.append(f"panel {panel.get('title')!r}: a query without an expression")
    return problems


def tracing_env_problems(compose: dict[str, Any]) -> list[str]:
    """The webhook and worker name themselves to OpenTelemetry, each differently, and take
    the OTLP endpoint from .env or the shell only (written here, it would send traces to a
    collector that runs only under the profile)."""
    problems = []
    names: dict[str, str] = {}
    for name, service in talking_to_temporal(compose).items():
        env = env_of(service)
        service_name = env.get("OTEL_SERVICE_NAME")
        if not service_name:
            problems.append(f"{name}: no OTEL_SERVICE_NAME")
        elif service_name in names.values():
            problems.append(f"{name}: OTEL_SERVICE_NAME {service_name} is another service's too")
        else:
            names[name] = service_name
        for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            if key not in env:
                problems.append(f"{name}: {key} is not passed through")
            elif env[key]:
                problems.append(f"{name}: {key}={env[key]}: it must come from .env (no value here)")
    return problems
