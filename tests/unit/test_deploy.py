"""deploy/ against the code: the manifests, alert rules and dashboard name only commands,
settings, endpoints and topics that exist, and the files parse.

What needs running processes (every metric the rules and the dashboard query is served) is
checked in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.config import Settings, load_settings, variable
from topics.definitions import topic_specs

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
# libpq's own variables, which libpq reads itself (pipeline/pg.py).
LIBPQ_VARIABLES = {"PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT"}
METRIC = re.compile(r"\broomstream_[a-z_]+\b")


def documents() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for d in documents():
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, spec in pod_specs():
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{name}/{c['name']}", c, spec


def configmap() -> dict[str, str]:
    [cm] = of_kind("ConfigMap")
    return {k: str(v) for k, v in cm["data"].items()}


def test_every_manifest_rule_file_and_dashboard_parses() -> None:
    assert MANIFESTS, "deploy/k8s holds no manifests"
    kinds = {d["kind"] for d in documents()}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster"} <= kinds
    assert {"Deployment", "StatefulSet", "PodDisruptionBudget", "ConfigMap", "Job"} <= kinds
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rules["groups"][0]["rules"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    assert dashboard["panels"]


def test_every_container_runs_a_roomstream_command_of_the_cli() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    parser = build_parser()
    seen = set()
    for where, c, _ in containers():
        assert c["image"] == f"roomstream:{version}", where
        command = c["command"]
        assert command[0] == "roomstream", where
        args = parser.parse_args(command[1:])  # exits (fails the test) on a bad command
        seen.add(args.command)
    assert {"worker", "committer", "db", "topics"} <= seen
    assert (DEPLOY / "Dockerfile").is_file()


def test_every_variable_in_the_manifests_is_a_setting_or_libpqs() -> None:
    settings = {variable(f) for f in fields(Settings)}
    names = set(configmap())
    for _, c, _ in containers():
        # The pod's own name, for the command line, is no setting.
        names |= {e["name"] for e in c.get("env", []) if "fieldRef" not in e.get("valueFrom", {})}
    unknown = names - settings - LIBPQ_VARIABLES
    assert not unknown, f"not settings: {sorted(unknown)}"
    load_settings(configmap())  # and their values load


def test_the_files_the_settings_name_are_mounted_in_every_container() -> None:
    files = [v for k, v in configmap().items() if k.endswith(("_FILE", "_SSLROOTCERT"))]
    assert files
    for where, c, _ in containers():
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        for f in files:
            assert any(f.startswith(m + "/") for m in mounts), f"{where} lacks {f}"


def test_probes_are_wired_to_the_health_endpoints_on_the_metrics_port() -> None:
    port = int(configmap()["ROOMSTREAM_METRICS_PORT"])
    assert configmap()["ROOMSTREAM_METRICS_ADDR"] == "0.0.0.0"
    deployments = of_kind("Deployment") + of_kind("StatefulSet")
    assert {d["metadata"]["name"] for d in deployments} == {
        "roomstream-worker",
        "roomstream-committer",
    }
    for d in deployments:
        [c] = d["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert ports["metrics"] == port
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert "memory" in c["resources"]["limits"]


def test_disruption_budgets_keep_a_committer_and_most_workers() -> None:
    by_name = {d["metadata"]["name"]: d for d in of_kind("Deployment") + of_kind("StatefulSet")}
    budgets = {p["metadata"]["name"]: p["spec"] for p in of_kind("PodDisruptionBudget")}
    assert budgets["roomstream-committer"]["minAvailable"] == 1
    assert by_name["roomstream-committer"]["spec"]["replicas"] == 2
    assert budgets["roomstream-worker"]["maxUnavailable"] == 1
    for name, spec in budgets.items():
        labels = by_name[name]["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_workers_keep_their_id_and_their_store_across_restarts() -> None:
    # Static membership needs an id that survives the pod (a Deployment's pod names do not), and
    # a restarted worker reads only the changelog's tail when its local store survives too.
    [workers] = [d for d in of_kind("StatefulSet") if d["metadata"]["name"] == "roomstream-worker"]
    spec = workers["spec"]
    [c] = spec["template"]["spec"]["containers"]
    args = build_parser().parse_args(c["command"][1:])
    assert args.command == "worker"
    assert args.id == "$(POD_NAME)"
    [pod_name] = [e for e in c["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    stack_dir = configmap()["ROOMSTREAM_STACK_DIR"]
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == stack_dir]
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    assert mount["name"] in claims, "the worker's store is not on a volume of its own"
    assert mount["name"] not in {v["name"] for v in spec["template"]["spec"]["volumes"]}
    services = {d["metadata"]["name"]: d["spec"] for d in of_kind("Service")}
    assert services[spec["serviceName"]]["clusterIP"] == "None"


def test_the_kafka_topics_are_the_definitions_for_the_configured_settings() -> None:
    settings = load_settings(configmap())
    want = {
        settings.topic(s.name): (s.partitions, s.replication_factor, s.config)
        for s in topic_specs(settings, brokers=3)
    }
    got = {
        t["spec"]["topicName"]: (
            t["spec"]["partitions"],
            t["spec"]["replicas"],
            {k: str(v) for k, v in t["spec"]["config"].items()},
        )
        for t in of_kind("KafkaTopic")
    }
    assert got == want
    [node_pool] = of_kind("KafkaNodePool")
    assert node_pool["spec"]["replicas"] >= settings.replication_factor


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def metrics_named() -> set[str]:
    """Every roomstream_* name the rules and the dashboard query."""
    return {m for e in [*rule_expressions(), *dashboard_expressions()] for m in METRIC.findall(e)}


@pytest.mark.parametrize(
    "alert",
    [
        "RoomstreamLagGrowing",
        "RoomstreamDeadLetters",
        "RoomstreamNoActiveCommitter",
        "RoomstreamForwardExtremities",
        "RoomstreamParkedEventsExpiring",
    ],
)
def test_the_alerts_the_issue_asks_for_exist(alert: str) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert alert in {r["alert"] for g in rules["groups"] for r in g["rules"]}
