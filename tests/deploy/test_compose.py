"""docker-compose.yml against the Compose specification and against the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from deploy_checks import (
    ROOT,
    cli_env_names,
    documented_env_names,
    load_yaml,
    settings_env_names,
)

from depthflow.common import runner

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
INFRA = {"kafka", "postgres", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict:
    doc = load_yaml(COMPOSE)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def depthflow_services(compose: dict) -> dict[str, dict]:
    """The services that run the depthflow image."""
    found = {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith("depthflow:")
    }
    assert found, "no service runs the depthflow image"
    return found


def test_compose_matches_the_compose_specification(compose: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20]
    )


def test_schema_rejects_a_broken_file(compose: dict) -> None:
    """The schema check has teeth: an unknown key and a bad depends_on condition fail."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["healtcheck"] = {}
    broken["services"]["api"]["depends_on"]["kafka"]["condition"] = "service_up"
    assert len(list(validator.iter_errors(broken))) >= 2


def _subcommands() -> set[str]:
    import typer

    from depthflow.common.cli import build_app

    return set(typer.main.get_command(build_app()).commands)  # type: ignore[attr-defined]


def test_every_command_is_a_real_depthflow_subcommand(depthflow_services: dict) -> None:
    import typer
    from click.testing import CliRunner

    from depthflow.common.cli import build_app

    real = _subcommands()
    command = typer.main.get_command(build_app())
    for name, svc in depthflow_services.items():
        args = svc.get("command")
        assert isinstance(args, list) and args, f"{name}: command must be an exec-form list"
        assert args[0] in real, f"{name}: `depthflow {args[0]}` does not exist ({sorted(real)})"
        # the options parse: `depthflow <args> --help` exits 0 (it never starts the service)
        result = CliRunner().invoke(command, [*args, "--help"])
        assert result.exit_code == 0, f"{name}: `depthflow {' '.join(args)}`: {result.output}"


def test_every_environment_variable_is_a_documented_setting(depthflow_services: dict) -> None:
    real = settings_env_names() | cli_env_names()
    documented = documented_env_names()
    problems = []
    for name, svc in depthflow_services.items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment must be a mapping"
        for var in env:
            if var not in real:
                problems.append(f"{name}: {var} is not a setting any depthflow model reads")
            if var not in documented:
                problems.append(f"{name}: {var} is not documented in .env.example")
    assert not problems, "\n".join(problems)


def test_services_read_dotenv_and_wait_for_healthy_dependencies(compose: dict) -> None:
    services = compose["services"]
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name}: no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}: {cond['condition']}"
            if want == "service_healthy":
                assert not services[dep]["healthcheck"].get("disable"), dep
        if str(svc.get("image", "")).startswith("depthflow:"):
            assert {"path": ".env", "required": False} in svc["env_file"], name
            if name != "migrate":
                assert "migrate" in (svc.get("depends_on") or {}) or name == "sim", (
                    f"{name} must start after the migration job"
                )
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"


def test_kafka_is_single_node_kraft_with_two_listeners(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:29092" in advertised and "localhost:9092" in advertised
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert env[key] == "1", key
    # every depthflow service talks to the in-network listener
    anchor = compose["x-depthflow"]["environment"]
    assert anchor["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
    postgres = compose["services"]["postgres"]["image"]
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg\d+", postgres), postgres


def test_images_are_pinned_and_data_lives_in_named_volumes(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        if image.startswith("depthflow:"):
            continue
        tag = image.rpartition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned {image}"
    volumes = set(compose["volumes"])
    for name in ("kafka", "postgres", "prometheus", "grafana"):
        mounts = [str(v).split(":")[0] for v in compose["services"][name].get("volumes", [])]
        assert any(m in volumes for m in mounts), f"{name}: data not in a named volume"


def _runner_topology() -> set[str]:
    """`make run`'s process names for the services installed now."""
    return {name for name, module, _cmd in runner.PROCESSES if runner._exists(module)}


def test_same_topology_as_make_run(depthflow_services: dict) -> None:
    """Compose runs exactly the processes `make run` runs (plus the migration job)."""
    in_compose = set(depthflow_services) - {"migrate"}
    assert in_compose == _runner_topology(), (
        "docker-compose.yml and depthflow.common.runner disagree: "
        f"only in compose {sorted(in_compose - _runner_topology())}, "
        f"only in make run {sorted(_runner_topology() - in_compose)}"
    )


def test_prometheus_scrapes_every_service_with_metrics(depthflow_services: dict) -> None:
    prom = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    assert isinstance(prom, dict)
    targets = {
        target.split(":")[0]
        for job in prom["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    # the simulator is a test double without /metrics; migrate is a one-shot job
    wanted = set(depthflow_services) - {"sim", "migrate"}
    assert targets - {"localhost"} == wanted
    assert set(load_yaml(COMPOSE)["services"]) >= INFRA  # type: ignore[index]


def test_dockerfile_is_multistage_pinned_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1)), base
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "pip install -c constraints.txt ." in text
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    assert 'ENTRYPOINT ["depthflow"]' in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert ".env" in ignored.splitlines()
