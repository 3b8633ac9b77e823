"""The deploy artifacts: Kustomize folders build, alert rules and the dashboard parse and name
only metrics the daemon exports, the systemd unit and the Dockerfile say what the README says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO

from reconciler.daemon.metrics import Metrics

DEPLOY = REPO / "deploy"
KUSTOMIZE = sorted(
    p.parent.relative_to(DEPLOY).as_posix()
    for p in (DEPLOY / "kubernetes").rglob("kustomization.yaml")
    if "kind: Component" not in p.read_text()
)
METRIC = re.compile(r"\b(reconciler_[a-z0-9_]+)\b")


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is required in CI (it builds the Kustomize folders)")
        pytest.skip("kubectl is not installed")
    return kubectl


def test_there_is_a_base_and_both_model_sources() -> None:
    assert KUSTOMIZE == [
        "kubernetes/base",
        "kubernetes/overlays/configmap",
        "kubernetes/overlays/git-sync",
    ]


@pytest.mark.parametrize("folder", KUSTOMIZE)
def test_kustomize_builds(folder: str) -> None:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodMonitor", "ConfigMap"} <= kinds
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    for c in containers.values():
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert c["resources"]["requests"]["memory"]
    daemon = containers["reconciler"]
    assert daemon["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert daemon["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    assert mounts["/etc/reconciler"] == "config"
    assert "--config=/etc/reconciler/reconciler.toml" in daemon["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = volumes["config"]["configMap"]["name"]
    assert any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == config for d in docs)
    if folder.endswith("git-sync"):
        assert "git-sync" in containers
        assert "--dir=/git/current/models.d" in daemon["args"]
    if folder.endswith("configmap"):
        assert mounts["/models.d"] == "models"
        name = volumes["models"]["configMap"]["name"]
        (models,) = [d for d in docs if d["metadata"]["name"] == name]
        assert models["data"]  # the model files, one key each


def _exported() -> set[str]:
    return Metrics().names()


def test_alert_rules_parse_and_name_only_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {
        "ReconcilerSyncFailing",
        "ReconcilerOutOfSync",
        "ReconcilerModelUnavailable",
        "ReconcilerNotificationsFailing",
    } <= alerts.keys()
    assert alerts["ReconcilerOutOfSync"]["for"] == "15m"
    exported = _exported()
    for name, rule in alerts.items():
        used = set(METRIC.findall(rule["expr"]))
        assert used, name
        assert used <= exported, f"{name} names {used - exported}"


def test_the_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "reconciler-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert len(exprs) >= 10
    assert used <= _exported(), used - _exported()
    # Every metric that matters to an operator is on it.
    assert {
        "reconciler_models_out_of_sync",
        "reconciler_registry_request_duration_seconds_bucket",
        "reconciler_drift_corrected_total",
        "reconciler_notifications_total",
    } <= used


def test_metric_names_are_what_the_daemon_serves() -> None:
    # names() is what the two tests above compare against: check it with a real scrape.
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    served = {
        s.name
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
    }
    assert served <= metrics.names()
    assert "reconciler_build_info" in served and "reconciler_writes_total" in served


def test_the_systemd_unit_runs_as_a_dynamic_user_with_an_env_file() -> None:
    unit = (DEPLOY / "systemd" / "reconciler.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0].isupper()
    )
    assert settings["DynamicUser"] == "yes"
    assert settings["EnvironmentFile"] == "/etc/reconciler/env"
    assert " watch " in settings["ExecStart"]
    assert (DEPLOY / "systemd" / "reconciler.env.example").exists()


def test_the_dockerfile_runs_watch_as_a_non_root_user() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    instructions = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in final if line[:1].isupper()
    }
    assert instructions["FROM"].startswith("python:3.11-slim")
    assert instructions["USER"].split(":")[0] not in ("0", "root")
    assert json.loads(instructions["ENTRYPOINT"]) == ["reconciler"]
    assert json.loads(instructions["CMD"])[0] == "watch"
    assert "/healthz" in instructions["HEALTHCHECK"] + "\n".join(final)
