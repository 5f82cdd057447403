"""What surrounds the chart: skaffold.yaml, the chart README, manifests/, Dockerfile, helm installer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .helmkit import CHART, REPO, SCHEMAS, Chart, Validator

MANIFESTS = REPO / "manifests"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_validate_when_skaffold_yaml_then_it_matches_the_v4beta14_schema() -> None:
    schema = json.loads((SCHEMAS / "skaffold-v4beta14.subset.json").read_text())
    config = load_yaml(REPO / "skaffold.yaml")
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert not errors, errors


def test_read_when_skaffold_yaml_then_it_builds_one_kind_local_image_and_deploys_the_chart() -> None:
    config = load_yaml(REPO / "skaffold.yaml")
    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == "kind.local/alphapanda"  # Knative skips tag resolution for kind.local
    assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
    # Skaffold's template variables: the image name with / . - : replaced by _.
    assert release["setValueTemplates"]["image.repository"] == "{{.IMAGE_REPO_kind_local_alphapanda}}"
    assert release["setValueTemplates"]["image.tag"] == "{{.IMAGE_TAG_kind_local_alphapanda}}"
    assert {p["name"] for p in config["profiles"]} == {"dev", "zerodha-sandbox"}


@pytest.mark.parametrize("profile", ["dev", "zerodha-sandbox"])
def test_render_when_skaffold_profile_values_then_the_chart_renders_them(
    chart: Chart, validator: Validator, profile: str
) -> None:
    config = load_yaml(REPO / "skaffold.yaml")
    (entry,) = [p for p in config["profiles"] if p["name"] == profile]
    (patch,) = entry["patches"]
    args = [a for f in patch["value"] for a in ("-f", str(REPO / f))]
    release = config["deploy"]["helm"]["releases"][0]
    for key, value in release["setValueTemplates"].items():
        args += ["--set", f"{key}={'dev' if 'IMAGE_' in value else value}"]
    rendered = chart.template(*args)
    assert not [e for obj in rendered.objects for e in validator.errors(obj)]
    brokers = {o["metadata"]["labels"]["alphapanda.io/broker"] for o in rendered.objects}
    assert ("zerodha" in brokers) == (profile == "zerodha-sandbox")


def leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted value paths a user sets: leaves, plus maps documented as one parameter."""
    opaque = {
        "functions",
        "resources",
        "config",
        "dlqConfig",
        "annotations",
        "resourceAttributes",
        "data",
        "securityContext",
        "nodeSelector",
        "affinity",
        "source",
        "podAnnotations",
    }
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in opaque:
            out += leaf_paths(value, path + ".")
        else:
            out.append(path)
    return out


def test_read_when_chart_readme_then_every_value_is_in_the_parameter_table() -> None:
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    values = load_yaml(CHART / "values.yaml")
    missing = [p for p in leaf_paths(values) if p not in documented]
    assert not missing, f"add to charts/alphapanda/README.md: {missing}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]) == set(values), "values.yaml and values.schema.json list different keys"


def test_read_when_readme_and_notes_then_they_show_the_working_brokers_forms() -> None:
    for text in ((CHART / "README.md").read_text(), (CHART / "templates" / "NOTES.txt").read_text()):
        for form in (
            "--set 'brokers={paper,zerodha}'",
            "--set brokers=paper\\,zerodha",
            '--set-json \'brokers=["paper","zerodha"]\'',
        ):
            assert form in text


def test_render_when_observability_kustomized_then_every_object_is_valid_kubernetes(
    kubectl_bin: Path, validator: Validator
) -> None:
    done = subprocess.run(
        [str(kubectl_bin), "kustomize", str(MANIFESTS / "observability")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap", "Namespace"}
    errors = [e for obj in objects for e in validator.errors(obj)]
    assert not errors, "\n".join(errors)
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert deployments == {"otel-collector", "tempo", "prometheus", "grafana"}


def test_read_when_grafana_provisioning_then_dashboard_queries_the_pipeline_metrics() -> None:
    grafana = MANIFESTS / "observability" / "grafana"
    datasources = {d["uid"]: d["type"] for d in load_yaml(grafana / "datasources.yaml")["datasources"]}
    assert datasources == {"prometheus": "prometheus", "tempo": "tempo"}
    dashboard = json.loads((grafana / "alphapanda-pipeline.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "alphapanda_events_processed_total",
        "alphapanda_handler_seconds_bucket",
        "alphapanda_dead_lettered_total",
        "alphapanda_pnl_rupees",
        "kafka_consumergroup_lag",
    ):
        assert metric in exprs, metric
    for label in ("function", "broker", "outcome", "topic", "strategy"):
        assert label in exprs, label
    for panel in panels:
        assert panel["datasource"]["uid"] in datasources
        assert all(t["datasource"]["uid"] in datasources for t in panel["targets"])
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["broker"]


def test_read_when_cluster_manifests_then_they_describe_kind_and_a_strimzi_kraft_kafka() -> None:
    kind = load_yaml(MANIFESTS / "kind-cluster.yaml")
    assert kind["kind"] == "Cluster" and kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert kind["name"] == "alphapanda"  # kube-context kind-alphapanda: skaffold loads images into kind
    kafka = list(yaml.safe_load_all((MANIFESTS / "kafka" / "kafka.yaml").read_text()))
    assert {(o["apiVersion"], o["kind"]) for o in kafka} == {
        ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
        ("kafka.strimzi.io/v1beta2", "Kafka"),
    }
    (cluster,) = [o for o in kafka if o["kind"] == "Kafka"]
    assert "kafkaExporter" in cluster["spec"], "the dashboard's consumer lag comes from the Kafka Exporter"
    chart_default = load_yaml(CHART / "values.yaml")["kafka"]["bootstrapServers"]
    meta = cluster["metadata"]
    assert chart_default.startswith(f"{meta['name']}-kafka-bootstrap.{meta['namespace']}.")
    readme = (MANIFESTS / "README.md").read_text()
    for step in (
        "kind create cluster",
        "serving-core.yaml",
        "eventing-core.yaml",
        "eventing-kafka-source.yaml",
        "eventing-kafka-sink.yaml",
        "strimzi-cluster-operator",
        "kubectl apply -k manifests/observability",
        "skaffold dev -p dev",
    ):
        assert step in readme, step


def test_read_when_dockerfile_then_it_builds_the_one_image_the_chart_expects() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, flags=re.MULTILINE)
    assert "pip wheel --wheel-dir /wheels ." in dockerfile
    assert "COPY functions/ functions/" in dockerfile
    uid = re.search(r"^USER (\d+)$", dockerfile, flags=re.MULTILINE)
    assert uid, "the image must run as a numeric non-root user"
    assert int(uid.group(1)) == load_yaml(CHART / "values.yaml")["securityContext"]["runAsUser"]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".tools", "tests", "charts"} <= set(ignored)
    assert "shared" not in ignored and "functions" not in ignored


def test_run_when_helm_already_installed_then_install_script_keeps_it(
    helm_bin: Path, kubectl_bin: Path, tmp_path: Path
) -> None:
    (tmp_path / "helm").symlink_to(helm_bin)
    (tmp_path / "kubectl").symlink_to(kubectl_bin)
    env = {**os.environ, "ALPHAPANDA_TOOLS_DIR": str(tmp_path)}
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "scripts" / "install-helm.sh")], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "helm")
    assert time.monotonic() - started < 10, "a working helm is kept, not downloaded again"


def test_read_when_dashboard_queries_metrics_then_each_is_one_the_code_exports() -> None:
    from prometheus_client import REGISTRY

    import alphapanda.metrics  # noqa: F401  (registers the metrics)

    dashboard = (MANIFESTS / "observability" / "grafana" / "alphapanda-pipeline.json").read_text()
    queried = set(re.findall(r"\b(alphapanda_[a-z_]+|kafka_[a-z_]+)", dashboard))
    # The series names each metric family exposes, whether or not it has been observed yet.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {m.name + sfx for m in REGISTRY.collect() for sfx in suffixes.get(m.type, ("",))}
    # kafka_* series come from Strimzi's Kafka Exporter, not from this code.
    assert queried - exported <= {"kafka_consumergroup_lag"}, queried - exported
    assert {q for q in queried if q.startswith("alphapanda_")}, "the dashboard queries the pipeline"
