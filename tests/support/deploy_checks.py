"""Checks of docker-compose.yml, the Dockerfile and .env.example against the code.

Docker cannot run where the tests run, so the deployment files are read instead: every
checker takes the parsed files and returns a list of problems (empty when all is well), so
a test can feed it a broken copy and see the problem reported. What the code says (CLI
subcommands, setting names, default ports, search attributes) is derived from the code.
"""

from __future__ import annotations

import argparse
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
