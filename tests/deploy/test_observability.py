"""The compose `observability` profile (Prometheus, Grafana, Jaeger), checked against the
code: docker-compose.yml, deploy/prometheus and deploy/grafana are parsed, every scrape
target, query and alert is compared with what tempay really serves and exports, and every
check is shown to fail on a broken copy. The Temporal SDK's metric names are not in
tempay's code: a real worker on the dev server is scraped for them.
"""

from __future__ import annotations

import copy
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tempay.settings import Settings
from tempay.temporal import metrics_runtime
from tests.support import deploy_checks as checks
from workflows.metrics import count_settlement

COMPOSE = checks.load_compose()
PROMETHEUS, PROMETHEUS_LOAD_PROBLEMS = checks.prometheus_files(COMPOSE)
GRAFANA, GRAFANA_LOAD_PROBLEMS = checks.grafana_files(COMPOSE)
DOC = checks.ROOT / "docs" / "observability.md"


def fresh() -> dict[str, Any]:
    return copy.deepcopy(COMPOSE)


def prometheus() -> checks.PrometheusFiles:
    assert PROMETHEUS is not None, PROMETHEUS_LOAD_PROBLEMS
    return PROMETHEUS


def grafana() -> checks.GrafanaFiles:
    assert GRAFANA is not None, GRAFANA_LOAD_PROBLEMS
    return GRAFANA


def every_expression() -> list[tuple[str, str]]:
    """(where, expr) of every alert, recording rule and dashboard query."""
    found = [(f"rule {n}", e) for n, e in checks.rule_expressions(prometheus().rules)]
    for file_name, dashboard in grafana().dashboards.items():
        for panel, target in checks.dashboard_targets(dashboard):
            found.append((f"{file_name}: {panel.get('title')}", str(target.get("expr", ""))))
    return found


# --- the real files ----------------------------------------------------------------------


def test_the_profiles_services_run_only_under_it_on_the_hosts_loopback() -> None:
    assert checks.observability_profile_problems(COMPOSE) == []
    profiled = checks.under_profile(COMPOSE, checks.OBSERVABILITY_PROFILE)
    assert {checks.image_name(s) for s in profiled.values()} == set(checks.OBSERVABILITY_IMAGES)


def test_every_running_service_has_a_healthcheck_its_image_can_run() -> None:
    assert checks.healthcheck_problems(COMPOSE) == []
    # The one-shots are the services others wait to complete: nothing else is exempt.
    assert checks.one_shots(COMPOSE) == {
        "temporal-schema",
        "temporal-setup",
        "tempay-database",
        "tempay-migrate",
    }


def test_the_workers_metrics_reach_the_network_and_not_the_host() -> None:
    assert checks.worker_metrics_problems(COMPOSE) == []


def test_prometheus_scrapes_the_webhooks_internal_listener_and_every_worker() -> None:
    assert PROMETHEUS_LOAD_PROBLEMS == []
    assert checks.scrape_problems(COMPOSE, prometheus().config) == []


def test_rules_parse_and_have_the_structure_prometheus_loads() -> None:
    anchors = checks.markdown_anchors(DOC.read_text())
    assert checks.rule_problems(prometheus().rules, anchors) == []
    assert checks.status_cap_problems(COMPOSE, prometheus().rules) == []


def test_an_alert_for_each_thing_that_needs_a_person() -> None:
    alerts = [e for n, e in checks.rule_expressions(prometheus().rules)]
    assert checks.coverage_problems(alerts, checks.REQUIRED_ALERTS, "alert") == []


def test_grafana_provisioning_parses_and_points_at_the_profiles_services() -> None:
    assert GRAFANA_LOAD_PROBLEMS == []
    files = grafana()
    assert checks.datasource_problems(COMPOSE, files.datasources) == []
    uids = {str(s["uid"]) for s in files.datasources}
    assert files.dashboards, "no dashboard is provisioned"
    for dashboard in files.dashboards.values():
        assert checks.dashboard_problems(dashboard, uids) == []
        exprs = [str(t.get("expr", "")) for _, t in checks.dashboard_targets(dashboard)]
        assert checks.coverage_problems(exprs, checks.REQUIRED_PANELS, "panel") == []


def test_every_tempay_metric_queried_is_one_the_code_exports() -> None:
    """tempay_* names and label values against the code; temporal_* names are the SDK's,
    checked against a real worker below."""
    known = checks.tempay_metric_names()
    recorded = checks.recorded_names(prometheus().rules)
    values = checks.source_strings()
    queues = checks.task_queues(COMPOSE)
    used_sdk = set()
    for where, expr in every_expression():
        names = checks.promql_metric_names(expr)
        used_sdk |= {n for n in names if n.startswith("temporal_")}
        known_here = known | {n for n in names if n.startswith("temporal_")}
        assert checks.expression_problems(where, expr, known_here, recorded, values, queues) == []
    assert used_sdk, "the status-query panel and alert read the SDK's activity metrics"


def test_the_tracing_variables_come_from_env() -> None:
    assert checks.tracing_env_problems(COMPOSE) == []


def test_metric_names_come_from_the_code() -> None:
    webhook = checks.webhook_metric_names()
    assert webhook["tempay_notifications_total"] == ("provider", "outcome")
    assert "tempay_notification_ack_seconds_bucket" in webhook
    assert "tempay_notifications" not in webhook  # prometheus_client adds _total
    worker = checks.worker_metric_names()
    assert {"tempay_settlements", "tempay_merchant_deliveries"} <= set(worker)
    assert "tempay_settlements_total" not in worker  # the SDK's exporter adds no _total
    assert {"late_money", "NEEDS_REVIEW", "failed_attempt"} <= checks.source_strings()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (le) (rate(a_bucket{x="y"}[5m]))', {"a_bucket"}),
        ("histogram_quantile(0.9, sum by (le, job) (rate(b[$__rate_interval])))", {"b"}),
        ("a / on (job) group_left (x) b offset 1h", {"a", "b"}),
        ("0.8 * scalar(tempay:cap) and c unless d", {"tempay:cap", "c", "d"}),
        ('sum(x{outcome=~"a|b"}) or vector(0)', {"x"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert checks.promql_metric_names(expr) == names


# --- the SDK's metric names, scraped from a real worker ------------------------------------


@activity.defn(name="query_payment")
async def query_payment(order_id: str) -> str:
    return order_id


@workflow.defn(name="ObservabilityProbe", sandboxed=False)
class ObservabilityProbe:
    """Settles (tempay's own counter, through the workflow meter) and runs one activity on
    a status-query queue, as a payment's status query does."""

    @workflow.run
    async def run(self, status_queue: str) -> str:
        count_settlement("payment", "SUCCEEDED")
        return await workflow.execute_activity(
            query_payment,
            "probe",
            task_queue=status_queue,
            start_to_close_timeout=timedelta(seconds=10),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_sdk_metrics_queried_are_ones_a_real_worker_exports(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    port = free_port()
    runtime = metrics_runtime(Settings(data_dir=tmp_path, worker_metrics_port=port))
    assert runtime is not None
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        runtime=runtime,
    )
    queue = f"obs-{uuid.uuid4().hex[:8]}"
    status_queue = Settings(task_queue=queue).status_query_task_queue
    async with (
        Worker(client, task_queue=queue, workflows=[ObservabilityProbe]),
        Worker(client, task_queue=status_queue, activities=[query_payment]),
    ):
        await client.execute_workflow(
            ObservabilityProbe.run, status_queue, id=f"obs-{uuid.uuid4().hex}", task_queue=queue
        )
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    # tempay's counter is exported under the name the code gives it, with no suffix.
    assert "tempay_settlements" in exported
    used = {name for _, expr in every_expression() for name in checks.promql_metric_names(expr)}
    assert {n for n in used if n.startswith("temporal_")} <= exported


# --- every check fails on a broken copy --------------------------------------------------


def svc(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def set_key(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name).__setitem__(key, value)


def set_env(name: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name)["environment"].__setitem__(key, value)


def drop_env(name: str, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: svc(c, name)["environment"].pop(key)


def compose_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for check in (
        checks.observability_profile_problems,
        checks.healthcheck_problems,
        checks.worker_metrics_problems,
        checks.tracing_env_problems,
    ):
        problems += check(compose)
    problems += checks.scrape_problems(compose, prometheus().config)
    problems += checks.datasource_problems(compose, grafana().datasources)
    problems += checks.status_cap_problems(compose, prometheus().rules)
    return problems


BROKEN_COMPOSE: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("prometheus always", lambda c: svc(c, "prometheus").pop("profiles"), "would run without"),
    ("grafana other profile", set_key("grafana", "profiles", ["sandbox"]), "would run without"),
    ("jaeger missing", lambda c: c["services"].pop("jaeger"), "jaegertracing/jaeger: 0 services"),
    (
        "worker under the profile",
        set_key("worker", "profiles", ["observability"]),
        "worker: under the observability profile",
    ),
    ("grafana open", set_key("grafana", "ports", ["3000:3000"]), "grafana: port 3000 published"),
    (
        "prometheus 0.0.0.0",
        set_key("prometheus", "ports", ["0.0.0.0:9090:9090"]),
        "prometheus: port 9090 published on 0.0.0.0",
    ),
    (
        "webhook needs grafana",
        lambda c: svc(c, "webhook")["depends_on"].__setitem__(
            "grafana", {"condition": "service_healthy"}
        ),
        "webhook: needs grafana",
    ),
    ("no healthcheck", lambda c: svc(c, "worker").pop("healthcheck"), "worker: no healthcheck"),
    ("ui no healthcheck", lambda c: svc(c, "temporal-ui").pop("healthcheck"), "no healthcheck"),
    (
        "disabled healthcheck",
        set_key("jaeger", "healthcheck", {"disable": True}),
        "jaeger: no healthcheck",
    ),
    (
        "curl in busybox",
        set_key(
            "prometheus",
            "healthcheck",
            {"test": ["CMD", "curl", "-f", "http://127.0.0.1:9090/-/ready"]},
        ),
        "prometheus: healthcheck runs 'curl'",
    ),
    (
        "wget writes",
        set_key("grafana", "healthcheck", {"test": "wget -q http://127.0.0.1:3000/api/health"}),
        "grafana: wget saves",
    ),
    (
        "wrong port",
        set_key(
            "jaeger",
            "healthcheck",
            {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:14269/"]},
        ),
        "jaeger: healthcheck asks port 14269",
    ),
    (
        "worker probe other port",
        set_env("worker", "TEMPAY_WORKER_HEALTH_PORT", "9100"),
        "worker: healthcheck asks port 9465",
    ),
    (
        "worker loopback",
        drop_env("worker", "TEMPAY_WORKER_METRICS_HOST"),
        "TEMPAY_WORKER_METRICS_HOST must be 0.0.0.0",
    ),
    ("metrics off", set_env("worker", "TEMPAY_WORKER_METRICS_PORT", "0"), "turns the metrics off"),
    (
        "metrics published",
        set_key("worker", "ports", ["127.0.0.1:9464:9464"]),
        "metrics port 9464 published",
    ),
    (
        "scrape the moved port",
        set_env("webhook", "TEMPAY_INTERNAL_PORT", "9002"),
        "webhook:8002, but webhook serves /metrics on [9002]",
    ),
    (
        "otlp endpoint fixed",
        set_env("worker", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
        "it must come from .env",
    ),
    ("no service name", drop_env("webhook", "OTEL_SERVICE_NAME"), "webhook: no OTEL_SERVICE_NAME"),
    (
        "same service name",
        set_env("worker", "OTEL_SERVICE_NAME", "tempay-webhook"),
        "is another service's too",
    ),
    (
        "other cap",
        set_env("worker", "TEMPAY_STATUS_QUERY_RATE_CAP", "20"),
        "the workers' cap is [20.0]",
    ),
    (
        "grafana on another port",
        set_env("grafana", "GF_SERVER_HTTP_PORT", "3001"),
        "grafana: healthcheck asks port 3000",
    ),
    (
        "datasource outside the profile",
        lambda c: svc(c, "prometheus").__setitem__("profiles", ["other"]),
        "datasource Prometheus: prometheus is not in the observability profile",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [(m, e) for _, m, e in BROKEN_COMPOSE],
    ids=[i for i, _, _ in BROKEN_COMPOSE],
)
def test_a_broken_compose_file_is_reported(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    compose = fresh()
    mutate(compose)
    problems = compose_problems(compose)
    assert any(expected in p for p in problems), problems


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"job_name": name, **spec}


WEBHOOK_JOB = job("webhook", static_configs=[{"targets": ["webhook:8002"]}])
WORKER_JOB = job("worker", dns_sd_configs=[{"names": ["worker"], "type": "A", "port": 9464}])


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        ([WORKER_JOB], "webhook is not scraped"),
        ([WEBHOOK_JOB], "worker is not scraped"),
        (
            [job("webhook", static_configs=[{"targets": ["webhook:8000"]}]), WORKER_JOB],
            "webhook:8000, but webhook serves /metrics on [8002]",
        ),
        (
            [WEBHOOK_JOB, job("worker", static_configs=[{"targets": ["worker:9464"]}])],
            "scrapes one replica of --scale",
        ),
        (
            [WEBHOOK_JOB, WORKER_JOB, job("x", static_configs=[{"targets": ["nowhere:1"]}])],
            "nowhere is not a service",
        ),
        (
            [WEBHOOK_JOB, WORKER_JOB, job("pg", static_configs=[{"targets": ["postgresql:5432"]}])],
            "postgresql serves no tempay metrics",
        ),
        (
            [
                job(
                    "webhook",
                    metrics_path="/api/metrics",
                    static_configs=[{"targets": ["webhook:8002"]}],
                ),
                WORKER_JOB,
            ],
            "metrics_path /api/metrics",
        ),
        ([WEBHOOK_JOB, WORKER_JOB, job("empty")], "job empty: no targets"),
    ],
)
def test_a_broken_scrape_config_is_reported(jobs: list[dict[str, Any]], expected: str) -> None:
    problems = checks.scrape_problems(COMPOSE, {"scrape_configs": jobs})
    assert any(expected in p for p in problems), problems


def alert(**rule: Any) -> dict[str, Any]:
    base = {
        "alert": "A",
        "expr": "up == 0",
        "for": "5m",
        "labels": {"severity": "page"},
        "annotations": {"summary": "s", "description": "d", "runbook": "docs/observability.md#x"},
    }
    return {k: v for k, v in {**base, **rule}.items() if v is not None}


def rules_of(*rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"groups": [{"name": "g", "rules": list(rules)}]}]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([{"rules": []}], "no `groups` list"),
        ([{"groups": [{"name": "g", "rules": []}]}], "group g: no rules"),
        (rules_of(alert(), alert()), "A: two alerts of that name"),
        (rules_of(alert(expr=None)), "A: no expr"),
        (rules_of(alert(**{"for": "five minutes"})), "is not a duration"),
        (rules_of(alert(labels={})), "severity None"),
        (rules_of(alert(labels={"severity": "critical"})), "severity 'critical'"),
        (rules_of(alert(annotations={"summary": "s"})), "no description annotation"),
        (
            rules_of(alert(annotations={"summary": "s", "description": "d", "runbook": "x#y"})),
            "runbook x#y is not a section",
        ),
        (
            rules_of(
                alert(
                    annotations={
                        "summary": "s",
                        "description": "d",
                        "runbook": "docs/observability.md#nowhere",
                    }
                )
            ),
            "is not a section of docs/observability.md",
        ),
        (rules_of({"alert": "A", "record": "r:x", "expr": "up"}), "an alert or a record"),
        (rules_of({"record": "plain", "expr": "up"}), "level:metric:ops"),
        (rules_of(alert(expre="up")), "unknown keys ['expre']"),
    ],
)
def test_broken_rules_are_reported(files: list[dict[str, Any]], expected: str) -> None:
    problems = checks.rule_problems(files, {"x"})
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("tempay_notifications[5m]", "tempay_notifications is not a metric tempay exports"),
        ("rate(tempay_settlements_total[5m])", "tempay_settlements_total is not a metric"),
        ('tempay_notifications_total{outcome="late-money"}', "['late-money']: not a value"),
        ('tempay_settlements{status=~"NEEDS_REVIEW|REVIEW"}', "['REVIEW']: not a value"),
        ('temporal_activity_execution_latency_count{task_queue="status"}', "task_queue 'status'"),
        ("sum(rate(tempay_settlements[5m])", "unbalanced brackets"),
        ("tempay:nothing_recorded", "tempay:nothing_recorded is not a metric"),
        ("", "empty expression"),
    ],
)
def test_a_broken_expression_is_reported(expr: str, expected: str) -> None:
    known = checks.tempay_metric_names() | {"temporal_activity_execution_latency_count"}
    problems = checks.expression_problems(
        "q",
        expr,
        known,
        checks.recorded_names(prometheus().rules),
        checks.source_strings(),
        checks.task_queues(COMPOSE),
    )
    assert any(expected in p for p in problems), problems


def test_missing_coverage_is_reported() -> None:
    alerts = [e for n, e in checks.rule_expressions(prometheus().rules) if n != "TempayLateMoney"]
    problems = checks.coverage_problems(alerts, checks.REQUIRED_ALERTS, "alert")
    assert problems == [
        'no alert for late money (tempay_notifications_total{outcome="late_money"})'
    ]
    assert checks.coverage_problems([], checks.REQUIRED_PANELS, "panel") != []


def test_a_broken_dashboard_or_datasource_is_reported() -> None:
    dashboard = copy.deepcopy(next(iter(grafana().dashboards.values())))
    dashboard["panels"][1]["id"] = dashboard["panels"][0]["id"]
    dashboard["panels"][2]["targets"][0]["datasource"] = {"uid": "loki"}
    dashboard["panels"][3]["targets"][0]["expr"] = " "
    problems = checks.dashboard_problems(dashboard, {"prometheus", "jaeger"})
    for expected in ("ids missing or repeated", "datasource 'loki'", "without an expression"):
        assert any(expected in p for p in problems), problems
    sources = copy.deepcopy(grafana().datasources)
    sources[0]["url"] = "http://prometheus:9091"
    sources[1]["url"] = "http://tempo:3200"
    sources[1]["isDefault"] = True
    problems = checks.datasource_problems(COMPOSE, sources)
    for expected in (
        "prometheus does not listen on 9091",
        "tempo is not a service",
        "one datasource",
    ):
        assert any(expected in p for p in problems), problems


def test_unmounted_provisioning_is_reported() -> None:
    compose = fresh()
    svc(compose, "prometheus")["volumes"] = ["prometheus-data:/prometheus"]
    svc(compose, "grafana")["volumes"] = ["grafana-data:/var/lib/grafana"]
    files, problems = checks.prometheus_files(compose)
    assert files is None and "is not a mounted repository file" in problems[0]
    grafana_files, problems = checks.grafana_files(compose)
    assert grafana_files is None and "is not a mounted repository folder" in problems[0]
