"""Compose, Kubernetes, the Dockerfile and systemd agree with lockoutd's settings and each other."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockoutd.connections import FILE_RESERVE
from lockoutd.durations import parse_duration
from lockoutd.errors import ConfigError
from lockoutd.preflight import window_bound_problems
from lockoutd.rules import load_rules
from lockoutd.settings import KafkaSettings, Settings, load_settings
from lockoutd.source.schedule_seal import schedule_seal, unsigned_temporary_locks

from .helpers import DEPLOY, REPO, load_yaml_documents, port_of, run, settings_from_text

KUBERNETES = DEPLOY / "kubernetes"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    return document


def _compose_settings() -> Settings:
    return load_settings(DEPLOY / "compose" / "lockoutd.yaml")


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for a compose service's volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        mounts[target] = source
    return mounts


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of the kustomization by ``(kind, name)``."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for document in load_yaml_documents(KUBERNETES / resource):
            metadata: dict[str, Any] = document["metadata"]  # type: ignore[assignment]
            objects[(str(document["kind"]), str(metadata["name"]))] = document
    return objects


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _kubernetes_settings(tmp_path: Path) -> Settings:
    config = _manifests()[("ConfigMap", "lockoutd-config")]
    return settings_from_text(config["data"]["lockoutd.yaml"], tmp_path)


# --- docker compose ---------------------------------------------------------------------------


def test_compose_runs_the_whole_stack_with_kafka_in_kraft_mode() -> None:
    """Kafka (KRaft, no ZooKeeper), ZITADEL with Postgres, lockoutd, Prometheus and Grafana."""
    services = _compose()["services"]
    assert {"kafka", "postgres", "zitadel", "lockoutd", "prometheus", "grafana"} <= set(services)
    assert not [name for name in services if "zookeeper" in name]
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert services["zitadel"]["environment"]["ZITADEL_DATABASE_POSTGRES_HOST"] == "postgres"


def test_compose_wires_lockoutd_to_kafka_and_zitadel_by_their_service_addresses() -> None:
    """The bootstrap servers are Kafka's advertised listener; ZITADEL is called by its domain."""
    services = _compose()["services"]
    settings = _compose_settings()
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert advertised == f"PLAINTEXT://{settings.kafka.bootstrap_servers}"
    zitadel = services["zitadel"]
    domain = zitadel["environment"]["ZITADEL_EXTERNALDOMAIN"]
    port = zitadel["environment"]["ZITADEL_EXTERNALPORT"]
    assert settings.zitadel.base_url == f"http://{domain}:{port}"
    assert domain in zitadel["networks"]["default"]["aliases"]
    assert f"{port}:8080" in zitadel["ports"]


def test_compose_hands_the_token_zitadel_writes_to_lockoutd() -> None:
    """ZITADEL writes the service account's token where ``zitadel.pat_file`` points."""
    services = _compose()["services"]
    settings = _compose_settings()
    pat_path = services["zitadel"]["environment"]["ZITADEL_FIRSTINSTANCE_PATPATH"]
    assert Path(pat_path) == settings.zitadel.pat_file
    folder = str(Path(pat_path).parent)
    assert _mounts(services["zitadel"])[folder] == _mounts(services["lockoutd"])[folder]


def test_compose_mounts_files_that_exist_where_the_settings_expect_them() -> None:
    """The configuration and rule mounts exist in the repository and match the settings."""
    services = _compose()["services"]
    settings = _compose_settings()
    lockoutd = _mounts(services["lockoutd"])
    assert (DEPLOY / lockoutd["/etc/lockoutd/lockoutd.yaml"]).resolve() == (
        DEPLOY / "compose" / "lockoutd.yaml"
    )
    [rules] = settings.engine.rule_paths
    assert (DEPLOY / lockoutd[str(rules)]).resolve() == REPO / "rules"
    for name in ("prometheus", "grafana"):
        for target, source in _mounts(services[name]).items():
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source} for {target}"
    command = services["lockoutd"]["command"]
    assert command == ["run", "-c", "/etc/lockoutd/lockoutd.yaml"]


def test_compose_hands_lockoutd_the_schedule_signing_key_as_a_secret() -> None:
    """The shipped rules lock temporarily, so lockoutd needs a key: a compose secret from a file
    that is kept out of git, mounted where ``kafka.schedule_signing_key_file`` points."""
    compose = _compose()
    settings = _compose_settings()
    [name] = compose["services"]["lockoutd"]["secrets"]
    source = DEPLOY / compose["secrets"][name]["file"]
    assert settings.kafka.schedule_signing_key_file == Path("/run/secrets") / name
    ignored = run("git", "check-ignore", "--no-index", "-q", str(source), cwd=REPO)
    assert ignored.returncode == 0, f"{source} is not ignored by git"
    assert "schedule" not in str(compose["services"]["lockoutd-ingest"].get("secrets", []))


def test_compose_publishes_the_ports_the_settings_listen_on() -> None:
    """Metrics on ``metrics.listen``, the ingest endpoint on ``ingest.listen``."""
    services = _compose()["services"]
    settings = _compose_settings()
    metrics, ingest = port_of(settings.metrics.listen), port_of(settings.ingest.listen)
    assert f"{metrics}:{metrics}" in services["lockoutd"]["ports"]
    assert f"{ingest}:{ingest}" in services["lockoutd-ingest"]["ports"]
    assert services["lockoutd-ingest"]["command"][0] == "ingest"


def test_compose_creates_every_topic_lockoutd_reads_and_writes() -> None:
    """The topic job creates the consumed, dead-letter, decisions, schedule, checkpoint and
    ingest topics, the schedule and checkpoint topics compacted."""
    script = "\n".join(_compose()["services"]["kafka-topics"]["command"])
    created = {
        words[words.index("--topic") + 1]
        for line in script.splitlines()
        if "--topic" in (words := shlex.split(line))
    }
    kafka = _compose_settings().kafka
    ingest = _compose_settings().ingest
    wanted = {*kafka.topics, kafka.dead_letter_topic, kafka.decisions_topic, kafka.schedule_topic}
    assert created == wanted | {kafka.checkpoint_topic, ingest.topic}
    for compacted in (kafka.schedule_topic, kafka.checkpoint_topic):
        assert compacted is not None
        assert "cleanup.policy=compact" in next(
            line for line in script.splitlines() if compacted in line
        )


def test_compose_gives_lockoutd_longer_than_its_drain_time_to_stop() -> None:
    """``stop_grace_period`` exceeds ``engine.drain_timeout``."""
    grace = parse_duration(_compose()["services"]["lockoutd"]["stop_grace_period"])
    assert grace > _compose_settings().engine.drain_timeout


# --- Kubernetes --------------------------------------------------------------------------------


def test_the_termination_grace_period_exceeds_the_drain_time(tmp_path: Path) -> None:
    """Kubernetes waits longer than ``engine.drain_timeout`` before it kills the daemon."""
    deployment = _manifests()[("Deployment", "lockoutd")]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > _kubernetes_settings(tmp_path).engine.drain_timeout


def test_the_memory_limit_leaves_the_daemon_room_beside_its_windows(tmp_path: Path) -> None:
    """The pod's memory limit passes the check ``lockoutd run`` makes of the windows' bound."""
    limit = _container(_manifests()[("Deployment", "lockoutd")])["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    settings = _kubernetes_settings(tmp_path)
    assert window_bound_problems(settings, int(limit.removesuffix("Mi")) << 20) == []


def test_the_probes_and_scrape_annotations_use_the_metrics_port(tmp_path: Path) -> None:
    """Liveness on /healthz, readiness on /readyz, scraping /metrics, all on ``metrics.listen``."""
    port = port_of(_kubernetes_settings(tmp_path).metrics.listen)
    for name in ("lockoutd", "lockoutd-ingest"):
        deployment = _manifests()[("Deployment", name)]
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }


def test_the_rules_config_map_holds_the_shipped_rules_where_the_settings_read_them(
    tmp_path: Path,
) -> None:
    """The ConfigMap is ``rules/*.yaml`` verbatim, mounted at ``engine.rule_paths``."""
    rules = _manifests()[("ConfigMap", "lockoutd-rules")]["data"]
    shipped = {path.name: path.read_text() for path in sorted((REPO / "rules").glob("*.yaml"))}
    assert rules == shipped
    deployment = _manifests()[("Deployment", "lockoutd")]
    mounts = {m["name"]: m["mountPath"] for m in _container(deployment)["volumeMounts"]}
    assert [Path(mounts["rules"])] == _kubernetes_settings(tmp_path).engine.rule_paths


def _secret_files(deployment: dict[str, Any]) -> dict[str, Path]:
    """The Secret's keys the daemon's container reads, by the path it reads each at."""
    spec = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "lockoutd-secrets"
    [mount] = [m for m in _container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
    return {
        item["key"]: Path(mount["mountPath"]) / item["path"] for item in volume["secret"]["items"]
    }


def test_the_token_comes_from_the_secret_at_the_configured_path(tmp_path: Path) -> None:
    """The Secret's token is mounted as the file ``zitadel.pat_file`` names, and only read there."""
    manifests = _manifests()
    secret = manifests[("Secret", "lockoutd-secrets")]
    files = _secret_files(manifests[("Deployment", "lockoutd")])
    assert files["zitadel-pat"] == _kubernetes_settings(tmp_path).zitadel.pat_file
    assert set(files) <= set(secret["stringData"])
    ingest_env = _container(manifests[("Deployment", "lockoutd-ingest")])["env"]
    [key] = [e for e in ingest_env if e["name"] == "LOCKOUTD_INGEST__SIGNING_KEY"]
    assert key["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]


def test_the_schedule_signing_key_comes_from_the_secret_and_its_placeholder_is_refused(
    tmp_path: Path,
) -> None:
    """The rules ConfigMap locks temporarily, so the daemon reads a schedule signing key from the
    Secret; the Secret's placeholder is too short to be used, so it cannot run unreplaced."""
    manifests = _manifests()
    settings = _kubernetes_settings(tmp_path)
    files = _secret_files(manifests[("Deployment", "lockoutd")])
    assert files["schedule-signing-key"] == settings.kafka.schedule_signing_key_file
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in manifests[("ConfigMap", "lockoutd-rules")]["data"].items():
        (rules / name).write_text(text)
    assert unsigned_temporary_locks(load_rules([rules]).rules, schedule_seal(KafkaSettings()))
    placeholder = tmp_path / "schedule-signing-key"
    placeholder.write_text(
        manifests[("Secret", "lockoutd-secrets")]["stringData"]["schedule-signing-key"]
    )
    with pytest.raises(ConfigError, match="use at least 16"):
        schedule_seal(KafkaSettings(schedule_signing_key_file=placeholder))


def test_the_containers_run_unprivileged() -> None:
    """Non-root, no privilege escalation, a read-only root file system, no capabilities."""
    for name in ("lockoutd", "lockoutd-ingest"):
        deployment = _manifests()[("Deployment", name)]
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        context = _container(deployment)["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]


def test_the_daemon_reads_the_mounted_configuration(tmp_path: Path) -> None:
    """``-c`` names the ConfigMap's file where the ConfigMap is mounted."""
    deployment = _manifests()[("Deployment", "lockoutd")]
    container = _container(deployment)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"] == ["run", "-c", f"{mounts['config']}/lockoutd.yaml"]
    ingest = _container(_manifests()[("Deployment", "lockoutd-ingest")])
    ports = {p["name"]: p["containerPort"] for p in ingest["ports"]}
    assert ports["ingest"] == port_of(_kubernetes_settings(tmp_path).ingest.listen)


def test_kustomize_renders_the_manifests() -> None:
    """``kubectl kustomize`` builds every object into the lockoutd namespace."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = run(kubectl, "kustomize", str(KUBERNETES))
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    namespaced = [doc for doc in rendered if doc["kind"] != "Namespace"]
    assert {doc["metadata"].get("namespace") for doc in namespaced} == {"lockoutd"}
    assert len(rendered) == len(_manifests())


# --- Dockerfile --------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """``(instruction, arguments)`` of the Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_is_slim_runs_unprivileged_and_checks_its_health() -> None:
    """A slim base, a numeric non-root user, and a health check on /healthz of the metrics port."""
    instructions = _dockerfile()
    bases = [args for op, args in instructions if op == "FROM"]
    assert all("slim" in base for base in bases)
    [user] = [args for op, args in instructions if op == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    [health] = [args for op, args in instructions if op == "HEALTHCHECK"]
    port = port_of(_compose_settings().metrics.listen)
    assert f"http://127.0.0.1:{port}/healthz" in health
    exposed = {int(p) for op, args in instructions if op == "EXPOSE" for p in args.split()}
    assert exposed == {port, port_of(_compose_settings().ingest.listen)}


def test_the_image_copies_files_that_exist() -> None:
    """Every ``COPY`` from the build context names a path in the repository."""
    for op, args in _dockerfile():
        if op == "COPY" and "--from=" not in args:
            sources = [word for word in args.split()[:-1] if not word.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), source


def _locked() -> dict[str, list[str]]:
    """``requirements.lock``: each pinned ``name==version`` with its hashes."""
    pins: dict[str, list[str]] = {}
    current = ""
    for line in (REPO / "requirements.lock").read_text().splitlines():
        words = line.strip().rstrip("\\").split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith("--hash=sha256:"):
            pins[current].append(words[0])
        else:
            current = words[0]
            pins[current] = []
    return pins


def test_the_image_installs_pinned_and_hashed_dependencies_from_the_lock_file() -> None:
    """Every dependency of the package is pinned to one version with its hashes, and the image
    installs them from the lock file with ``--require-hashes``, lockoutd itself without deps."""
    pins = _locked()
    assert all("==" in pin for pin in pins)
    assert all(hashes for hashes in pins.values())
    pinned = {pin.split("==")[0].lower() for pin in pins}
    with (REPO / "pyproject.toml").open("rb") as project:
        dependencies = tomllib.load(project)["project"]["dependencies"]
    for dependency in dependencies:
        name = re.split(r"[\[<>=!~; ]", dependency, maxsplit=1)[0].lower()
        assert name in pinned, dependency
    runs = [args for op, args in _dockerfile() if op == "RUN"]
    assert any("--require-hashes -r /tmp/requirements.lock" in args for args in runs)
    assert any("--no-deps" in args and "lockoutd-" in args for args in runs)
    assert "requirements.lock" in (DEPLOY / "Dockerfile").read_text().split("FROM")[0]


def test_the_image_ships_the_compiled_windows_without_a_compiler() -> None:
    """The build stage compiles the window core into the wheel (README, "Installing"); the
    image installs that wheel, has no compiler, and refuses to build if the core is missing."""
    stages: list[list[tuple[str, str]]] = []
    for op, args in _dockerfile():
        if op == "FROM":
            stages.append([])
        stages[-1].append((op, args))
    build, image = stages[0], stages[-1]
    build_runs = " ".join(args for op, args in build if op == "RUN")
    assert "gcc" in build_runs
    assert "pip wheel" in build_runs
    assert ("COPY", "pyproject.toml setup.py README.md ./") in build
    image_runs = " ".join(args for op, args in image if op == "RUN")
    assert "gcc" not in image_runs
    assert 'grep -q "(windows: compiled, decoder: compiled)"' in image_runs


# --- systemd -----------------------------------------------------------------------------------


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize("name", ["lockoutd.service", "lockoutd-ingest.service"])
def test_the_systemd_units_are_sandboxed(name: str) -> None:
    """Each unit runs as a dynamic user with the usual hardening switched on."""
    service = _unit(name)["Service"]
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == value, key
    assert "LoadCredential" in service


def test_the_daemon_units_memory_limit_leaves_the_daemon_room_beside_its_windows() -> None:
    """``MemoryMax`` passes the check ``lockoutd run`` makes of the default windows' bound."""
    memory = _unit("lockoutd.service")["Service"]["MemoryMax"]
    assert memory.endswith("M")
    assert window_bound_problems(Settings(), int(memory.removesuffix("M")) << 20) == []


def test_the_daemon_unit_waits_longer_than_the_drain_time_and_reloads_with_sighup() -> None:
    """``TimeoutStopSec`` exceeds the default drain time; ``reload`` sends SIGHUP."""
    service = _unit("lockoutd.service")["Service"]
    assert parse_duration(service["TimeoutStopSec"]) > Settings().engine.drain_timeout
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


def _directives(name: str, key: str) -> list[str]:
    """Every value of a directive that may be given more than once (``LoadCredential``)."""
    prefix = f"{key}="
    lines = (DEPLOY / "systemd" / name).read_text().splitlines()
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def test_the_daemon_unit_hands_the_token_and_the_schedule_signing_key_over_as_credentials() -> None:
    """Each secret is a credential only the service reads; the environment names where it lands,
    which overrides the file's setting."""
    credentials = dict(c.split(":", 1) for c in _directives("lockoutd.service", "LoadCredential"))
    environment = dict(
        assignment.split("=", 1)
        for line in _directives("lockoutd.service", "Environment")
        for assignment in shlex.split(line)
    )
    assert environment == {
        "LOCKOUTD_ZITADEL__PAT_FILE": "%d/zitadel-pat",
        "LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY_FILE": "%d/schedule-signing-key",
    }
    for path in environment.values():
        assert path.removeprefix("%d/") in credentials


@pytest.mark.parametrize("name", ["lockoutd.service", "lockoutd-ingest.service"])
def test_the_units_allow_the_open_files_the_settings_need(name: str) -> None:
    """The ingest unit's ``LimitNOFILE`` holds the default connection cap and its reserve (below
    it, ``lockoutd ingest`` refuses to start); both units state a limit of their own."""
    service = _unit(name)["Service"]
    limit = int(service["LimitNOFILE"])
    assert limit >= Settings().ingest.max_connections + FILE_RESERVE
    assert limit >= Settings().zitadel.max_concurrency + FILE_RESERVE


def test_the_daemon_unit_says_how_to_install_from_a_clone() -> None:
    """lockoutd is not on PyPI: the unit's comment installs the lock file and the clone."""
    text = (DEPLOY / "systemd" / "lockoutd.service").read_text()
    assert "pip install lockoutd" not in text
    assert "--require-hashes -r requirements.lock" in text
    assert "pip install --no-deps ." in text


def test_no_reload_advice_needs_a_kill_binary_in_the_image() -> None:
    """The slim image has no ``kill``: a rules reload inside a container uses Python."""
    for path in [REPO / "README.md", *sorted((DEPLOY / "kubernetes").glob("*.yaml"))]:
        assert "-- kill" not in " ".join(path.read_text().split()), path


@pytest.mark.parametrize("name", ["lockoutd.service", "lockoutd-ingest.service"])
def test_systemd_analyze_finds_nothing_wrong_with_the_units(name: str, tmp_path: Path) -> None:
    """``systemd-analyze verify`` knows every directive (the binary path is made to exist)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "systemd" / name).read_text()
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/lockoutd/bin/lockoutd", sys.executable))
    result = run(analyze, "verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
