"""Everything in examples/ (and the Dockerfile) parses, validates and does what it says:
alert rules under promtool, Kubernetes manifests against the API schema, every regverify
command line against the real CLI parser, the systemd units under systemd-analyze, and the
systemd scan itself on a real registry's storage."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, validate
from typer.main import get_command

from tests.support.cli import RunCli
from tests.support.images import push_image
from tests.support.promtool import check_metrics, run_promtool
from tests.support.registry import RegistryServer, blob_data_path
from tests.test_prometheus import value
from verifier.cli.main import app
from verifier.cli.plugin import parse_images, settings_from_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
K8S = EXAMPLES / "kubernetes"
PROMETHEUS = EXAMPLES / "prometheus"
SYSTEMD = EXAMPLES / "systemd"
# The oldest Kubernetes with everything the manifests use (backoffLimitPerIndex: 1.29) and the
# newest schema the validator ships.
K8S_VERSIONS = ("1.29.0", "1.37.0")
ALERTS = {"RegistryImageIntegrityFailure", "RegistryIntegrityProbeStale",
          "RegistryIntegrityProbeMissing", "RegistryCatalogInaccessible",
          "RegistryStorageDamage"}


def yaml_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yml", ".yaml"))


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, doc) for p in sorted(K8S.glob("*.yaml"))
            for doc in yaml.safe_load_all(p.read_text()) if doc]


def kind(name: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == name]


def parse_cli(args: list[str]) -> dict[str, Any]:
    """Parse a regverify command line exactly as the CLI would, without running it."""
    # Typer ships its own click, so groups are recognised by what they do, not their class.
    command: Any = get_command(app)
    name = "regverify"
    while hasattr(command, "list_commands"):
        name, args = args[0], args[1:]
        sub = command.get_command(command.context_class(command), name)
        assert sub is not None, f"no command {name!r}"
        command = sub
    ctx = command.make_context(name, list(args))
    params = dict(ctx.params)
    ctx.close()
    return params


def test_parse_cli_refuses_what_the_cli_refuses() -> None:
    assert parse_cli(["scan", "r.example.com", "--shard", "auto/4"])["shard"] == "auto/4"
    for bad in (["scan", "r.example.com", "--no-such-option"],
                ["scan", "r.example.com", "--concurrency", "0"], ["nosuchcommand"]):
        with pytest.raises(Exception):  # noqa: B017 - typer's own click raises its own classes
            parse_cli(bad)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


# --- YAML ----------------------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 7
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, path


# --- Prometheus rules ----------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = run_promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout


def test_every_alert_is_documented_and_tested() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])}
    firing = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])
              if t["exp_alerts"]}
    silent = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])
              if not t["exp_alerts"]}
    for rule in rules:
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= notes.keys(), rule["alert"]
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url.endswith("/docs/runbook.md") and anchor in anchors, notes["runbook_url"]
        assert rule["labels"]["severity"] in ("critical", "warning")
    assert tested == firing == ALERTS
    assert silent >= ALERTS - {"RegistryStorageDamage"}
    integrity = next(r for r in rules if r["alert"] == "RegistryImageIntegrityFailure")
    assert integrity["labels"]["severity"] == "critical"
    assert "regverify_image_broken" in integrity["annotations"]["description"]


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_schema(version: str) -> None:
    checked = 0
    for name, doc in k8s_docs():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked by the next test
        try:
            validate(doc, version, strict=True)
        except (ValidationError, SchemaNotFoundError) as exc:
            pytest.fail(f"{name} {doc['kind']}: {exc}")
        checked += 1
    assert checked == 7


def test_the_validator_catches_a_misspelt_field() -> None:
    doc = kind("CronJob")[0]
    broken = {**doc, "spec": {**doc["spec"], "concurencyPolicy": "Forbid"}}
    with pytest.raises(ValidationError):
        validate(broken, K8S_VERSIONS[-1], strict=True)


def test_service_monitor_scrapes_the_exporter_service() -> None:
    [monitor], [service], [deployment] = kind("ServiceMonitor"), kind("Service"), kind("Deployment")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] and monitor["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    [endpoint] = monitor["spec"]["endpoints"]
    [port] = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        pod["metadata"]["labels"].items())
    [container] = pod["spec"]["containers"]
    [container_port] = container["ports"]
    assert port["targetPort"] == container_port["name"]
    params = parse_cli(container["args"])
    assert params["listen"].endswith(f":{container_port['containerPort']}")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["replicas"] == 1  # two exporters would scan twice as often


def test_cronjobs_scan_every_15_minutes_into_the_pushgateway() -> None:
    cronjobs = kind("CronJob")
    assert len(cronjobs) == 3
    for doc in cronjobs:
        assert doc["spec"]["schedule"] == "*/15 * * * *"
        assert doc["spec"]["concurrencyPolicy"] == "Forbid"
        [container] = pod_spec(doc)["containers"]
        params = parse_cli(container["args"])
        assert params["pushgateway"].startswith("http://")


def test_indexed_job_shards_by_job_completion_index() -> None:
    [doc] = [d for d in kind("CronJob") if "completionMode" in d["spec"]["jobTemplate"]["spec"]]
    job = doc["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    [container] = job["template"]["spec"]["containers"]
    params = parse_cli(container["args"])
    index, _, count = params["shard"].partition("/")
    # auto/N takes the index from $JOB_COMPLETION_INDEX, which Kubernetes sets in each pod.
    assert index == "auto" and int(count) == job["completions"] == job["parallelism"]


def test_pods_run_as_the_image_user_with_credentials_from_the_secret() -> None:
    [secret] = kind("Secret")
    uid = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert uid is not None
    for doc in kind("CronJob") + kind("Deployment"):
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(uid.group(1))
        [container] = spec["containers"]
        if container["args"][0] == "fs":
            continue  # storage mode reads a bucket with a role, not registry credentials
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert set(refs) == {"REGVERIFY_USERNAME", "REGVERIFY_PASSWORD"}
        for ref in refs.values():
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]


def test_s3_storage_cronjob_reads_with_a_read_only_role() -> None:
    [doc] = [d for d in kind("CronJob") if pod_spec(d)["containers"][0]["args"][0] == "fs"]
    spec = pod_spec(doc)
    [account] = kind("ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["namespace"] == doc["metadata"]["namespace"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith("/regverify-s3-read-only")
    [container] = spec["containers"]
    params = parse_cli(container["args"])
    assert params["path"].startswith("s3://")
    bucket, _, prefix = params["path"].removeprefix("s3://").partition("/")
    # The role's policy is examples/iam/regverify-s3-read-only.json: list and read, nothing more.
    policy = json.loads((EXAMPLES / "iam" / "regverify-s3-read-only.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetObject"}
    resources = {st["Resource"] for st in policy["Statement"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix}/*"}
    assert not any(e.get("valueFrom") for e in container.get("env", []))  # no stored secrets


def test_s3_repair_policy_covers_fix_and_restore_only() -> None:
    policy = json.loads((EXAMPLES / "iam" / "regverify-s3-repair.json").read_text())
    writes = [st for st in policy["Statement"] if "s3:DeleteObject" in st["Action"]]
    # Deletes reach layer links and the quarantine, never blobs or manifests.
    assert sorted(st["Resource"].split(":::", 1)[1] for st in writes) == [
        "registry-data/registry-regverify-quarantine/*",
        "registry-data/registry/docker/registry/v2/repositories/*/_layers/*",
    ]


# --- Woodpecker ----------------------------------------------------------------------------------


def _plugin_env(settings: dict[str, Any]) -> dict[str, str]:
    """What Woodpecker passes a plugin: PLUGIN_<KEY>, lists comma-joined, secrets resolved."""
    env = {}
    for key, raw in settings.items():
        if isinstance(raw, dict) and "from_secret" in raw:
            raw = f"secret-{raw['from_secret']}"
        text = ",".join(map(str, raw)) if isinstance(raw, list) else str(raw)
        env[f"PLUGIN_{key.upper()}"] = text.replace("${CI_COMMIT_SHA}", "0" * 40)
    return env


def test_woodpecker_builds_pushes_then_verifies() -> None:
    pipeline = yaml.safe_load((EXAMPLES / "woodpecker" / "verify-after-push.yml").read_text())
    build, verify = pipeline["steps"]
    assert "buildx" in build["image"]
    settings = settings_from_env(_plugin_env(verify["settings"]))
    for key in ("username", "password"):
        assert set(verify["settings"][key]) == {"from_secret"}  # never a literal credential
    refs = parse_images(settings.images)
    pushed = {f"{build['settings']['repo']}:{t}" for t in build["settings"]["tags"]}
    assert {s.replace("${CI_COMMIT_SHA}", "0" * 40) for s in pushed} == {str(r) for r in refs}
    assert settings.settle > 0


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["regverify"\]$', text, re.M)
    assert re.search(r'^CMD \["plugin"\]$', text, re.M)  # Woodpecker runs plugins bare
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert all("slim" in line for line in re.findall(r"^FROM .*$", text, re.M))


def test_dockerfile_build_context_is_enough_for_a_wheel(tmp_path: Path) -> None:
    # No Docker daemon here: rebuild the wheel from exactly what the Dockerfile copies.
    text = (ROOT / "Dockerfile").read_text()
    context = tmp_path / "context"
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _dest = line.split()
        for source in sources:
            target = context / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "out"),
                          str(context)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()][0].startswith("registry_verifier-")


# --- systemd -------------------------------------------------------------------------------------


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def _exec_start() -> list[str]:
    return shlex.split(_unit("regverify-fs-scan.service")["Service"]["ExecStart"])


def test_systemd_units_parse_and_fit_together() -> None:
    timer = _unit("regverify-fs-scan.timer")
    service = _unit("regverify-fs-scan.service")
    assert timer["Timer"]["OnCalendar"] == "*:0/15"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert service["Service"]["Type"] == "oneshot"
    argv = _exec_start()
    assert Path(argv[0]).name == "regverify"
    params = parse_cli(argv[1:])
    textfile = Path(params["textfile"])
    assert str(textfile.parent) in service["Service"]["ReadWritePaths"]
    assert textfile.suffix == ".prom"  # node_exporter's textfile collector reads only *.prom
    assert str(Path(params["output"]).parent) in service["Service"]["ReadWritePaths"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    # The script installed beside this interpreter first: a venv's bin need not be on PATH.
    beside = Path(sys.executable).parent / "regverify"
    regverify = str(beside) if beside.is_file() else shutil.which("regverify")
    if analyze is None or regverify is None:
        reason = "systemd-analyze and an installed regverify are needed"
        if os.environ.get("REGVERIFY_ALLOW_SKIP") == "1":
            pytest.skip(reason)
        pytest.fail(reason)
    for name in ("regverify-fs-scan.service", "regverify-fs-scan.timer"):
        text = (SYSTEMD / name).read_text().replace("/usr/local/bin/regverify", regverify)
        (tmp_path / name).write_text(text)
    run = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "regverify-fs-scan.timer"),
                          str(tmp_path / "regverify-fs-scan.service")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


@pytest.mark.registry
def test_systemd_scan_command_on_real_storage(registry: RegistryServer, tmp_path: Path,
                                             run_cli: RunCli) -> None:
    web = push_image(registry, "app/web", "v1")
    push_image(registry, "team/api", "1.0")
    blob_data_path(registry.v2, web.layers[0].digest).unlink()
    argv = _exec_start()
    textfile = tmp_path / "node-exporter" / "regverify-fs.prom"
    (tmp_path / "node-exporter").mkdir()
    args = [str(registry.root) if a == "/var/lib/docker-registry" else
            str(textfile) if a.endswith(".prom") else
            str(tmp_path / "fs-scan.json") if a.endswith(".json") else a for a in argv[1:]]
    run = run_cli(*args)
    # 1 = defects found, which the unit treats as success (SuccessExitStatus=1).
    assert run.exit_code == 1, run.stderr
    assert _unit("regverify-fs-scan.service")["Service"]["SuccessExitStatus"] == "1"
    text = textfile.read_text()
    check_metrics(text)
    labels = {"registry": str(registry.root), "mode": "fs-scan"}
    assert value(text, "regverify_fs_orphan_layer_links", **labels) == 1
    assert value(text, "regverify_fs_orphan_index_children", **labels) == 0
    assert value(text, "regverify_catalog_accessible", **labels) == 1


# --- docs ----------------------------------------------------------------------------------------


def test_docs_mention_every_example() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    doc = "\n".join(p.read_text() for p in pages)
    for path in sorted(p for p in EXAMPLES.rglob("*") if p.is_file()
                       and p.parent != EXAMPLES):
        assert str(path.relative_to(ROOT)) in doc, path
