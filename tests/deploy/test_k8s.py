"""Every manifest kustomize builds (base and the DOKS overlay) validates against the
Kubernetes schemas (strict: unknown fields refused) and says what the deployment needs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_checks import ROOT

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # a DOKS release; the schemas come from kubernetes-validate
SERVICEMONITOR_SCHEMA = Path(__file__).parent / "schemas" / "servicemonitor-monitoring-v1.json"
TARGETS = ["base", "overlays/doks"]


def build(tools: dict[str, str], target: str) -> list[dict]:
    done = subprocess.run(
        [tools["kustomize"], "build", str(K8S / target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"kustomize build {target}:\n{done.stderr}"
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert docs, f"kustomize build {target} produced nothing"
    return docs


@pytest.fixture(scope="module", params=TARGETS)
def manifests(request: pytest.FixtureRequest, tools: dict[str, str]) -> list[dict]:
    return build(tools, request.param)


def _validate(doc: dict) -> None:
    if doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "ServiceMonitor":
        schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
        jsonschema.Draft7Validator(schema).validate(doc)
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_manifest_validates(manifests: list[dict]) -> None:
    problems = []
    for doc in manifests:
        try:
            _validate(doc)
        except Exception as exc:  # every schema failure, reported together
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not problems, "\n\n".join(problems)


def test_validation_has_teeth() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"endpoints": [{"port": 9100}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor)


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_deployments_probe_limit_and_are_covered(manifests: list[dict]) -> None:
    deployments = _by_kind(manifests, "Deployment")
    assert {
        "collector-binance",
        "collector-bybit",
        "features",
        "strategy",
        "executor",
        "api",
    } <= set(deployments)
    pdbs = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in _by_kind(manifests, "PodDisruptionBudget").values()
    }
    services = _by_kind(manifests, "Service")
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        [container] = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert container["args"][0] in ("collector", "strategy", "executor", "api", "features")
        assert name in pdbs, f"{name}: no PodDisruptionBudget"
        assert name in services, f"{name}: no Service"
    monitors = _by_kind(manifests, "ServiceMonitor")
    ports = {ep["port"] for m in monitors.values() for ep in m["spec"]["endpoints"]}
    assert ports == {"metrics", "http"}


def test_secrets_are_referenced_never_committed(manifests: list[dict]) -> None:
    assert not _by_kind(manifests, "Secret"), "a Secret is committed"
    for dep in [*_by_kind(manifests, "Deployment").values(), *_by_kind(manifests, "Job").values()]:
        [container] = dep["spec"]["template"]["spec"]["containers"]
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert refs == ["depthflow-secrets"]
    [config] = _by_kind(manifests, "ConfigMap").values()
    for key in config["data"]:
        assert not any(s in key for s in ("PASSWORD", "SECRET", "DSN")), key


def test_migration_job_runs_depthflow_migrate(manifests: list[dict]) -> None:
    [job] = _by_kind(manifests, "Job").values()
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]


def test_doks_overlay_uses_managed_services_over_tls(tools: dict[str, str]) -> None:
    docs = build(tools, "overlays/doks")
    [config] = _by_kind(docs, "ConfigMap").values()
    data = config["data"]
    assert data["POSTGRES_STATEMENT_CACHE_SIZE"] == "0"  # PgBouncer transaction mode
    assert data["POSTGRES_SSL_ROOTCERT"].endswith("ca-certificate.crt")
    assert data["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["KAFKA_SSL_CAFILE"].endswith("ca-certificate.crt")
    for dep in [*_by_kind(docs, "Deployment").values(), *_by_kind(docs, "Job").values()]:
        pod = dep["spec"]["template"]["spec"]
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/etc/depthflow/pg-ca", "/etc/depthflow/kafka-ca"} <= mounts
        assert data["POSTGRES_SSL_ROOTCERT"].startswith("/etc/depthflow/pg-ca/")
        assert pod["containers"][0]["image"].startswith("registry.digitalocean.com/")
    [job] = _by_kind(docs, "Job").values()
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_DSN"]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_DIRECT_DSN"


def test_configmap_keys_are_documented_settings(manifests: list[dict]) -> None:
    from deploy_checks import cli_env_names, documented_env_names, settings_env_names

    real = settings_env_names() | cli_env_names()
    documented = documented_env_names()
    [config] = _by_kind(manifests, "ConfigMap").values()
    env_keys = set(config["data"])
    for dep in _by_kind(manifests, "Deployment").values():
        env_keys |= {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    bad = sorted(k for k in env_keys if k not in real or k not in documented)
    assert not bad, f"not real, documented settings: {bad}"
