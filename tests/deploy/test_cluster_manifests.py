"""deploy/: the Kubernetes and KubeRay manifests, the Prometheus rules and config, and the Grafana dashboard.

No cluster here, so the manifests are checked offline: every core object against Kubernetes' own OpenAPI schema
(kubernetes-validate, strict), the RayService's fields by reading them, and every sdlocal metric that a rule or a
panel names against the /metrics of a real sdlocal app. The readiness probe's script is run against a real server.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sdlocal.cluster.config import config_from_dict

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.31"
METRIC = re.compile(r"\bsdlocal_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
CLUSTER_KEYS = {"models_dir", "data_dir", "default_model", "generator", "cache", "rate_limit", "api_tokens"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def only(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def single() -> list[dict]:
    return documents(DEPLOY / "kubernetes" / "sdlocal.yaml")


def kuberay() -> list[dict]:
    return documents(DEPLOY / "kuberay" / "rayservice.yaml")


def container(pod_spec: dict) -> dict:
    assert len(pod_spec["containers"]) == 1
    return pod_spec["containers"][0]


def rules() -> list[dict]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "sdlocal-dashboard.json").read_text(encoding="utf-8"))


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


# ----- Kubernetes schemas ----------------------------------------------------------------------------------------

def test_the_schema_version_is_one_the_package_ships():
    assert K8S_VERSION in {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}


@pytest.mark.parametrize("doc", single(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_single_machine_object_validates_strictly(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("doc", [d for d in kuberay() if d["apiVersion"] != "ray.io/v1"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_core_object_of_the_kuberay_example_validates_strictly(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_is_live_it_rejects_a_misspelt_field():
    deployment = only(single(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# ----- one sdlocal --------------------------------------------------------------------------------------------------

def test_the_deployment_runs_one_gpu_pod_as_the_image_user_behind_the_secret_login():
    docs = single()
    spec = only(docs, "Deployment")["spec"]
    pod = spec["template"]["spec"]
    main = container(pod)
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert main["image"] == "sdlocal:cuda" and main["args"] == ["--api"]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["resources"]["requests"]["memory"] and main["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False  # else Kubernetes sets SDLOCAL_PORT=tcp://... for the Service

    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for path in ("/data", "/cache", "/models"):
        assert volumes[mounts[path]["name"]]["persistentVolumeClaim"]["claimName"] in claims
    assert mounts["/models"]["readOnly"] is True

    env = {e["name"]: e["value"] for e in main["env"]}
    secret_file = Path(env["SDLOCAL_AUTH_SECRET"])
    secret = only(docs, "Secret")
    secret_mount = mounts[str(secret_file.parent)]
    assert volumes[secret_mount["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret_file.name in secret["stringData"]
    assert ":" in secret["stringData"][secret_file.name]

    service = only(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["port"] == 7860
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()


def test_the_container_entry_point_reads_the_secret_the_manifest_names():
    from sdlocal.container import SECRET_VARIABLE

    env = {e["name"] for e in container(only(single(), "Deployment")["spec"]["template"]["spec"])["env"]}
    assert SECRET_VARIABLE in env


def test_liveness_and_startup_probe_the_open_health_route_and_readiness_waits_for_the_model():
    main = container(only(single(), "Deployment")["spec"]["template"]["spec"])
    assert main["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = main["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # the image's own start period
    ready = main["readinessProbe"]
    assert ready["exec"]["command"][:2] == ["python", "-c"] and "/ready" in ready["exec"]["command"][2]
    assert ready["initialDelaySeconds"] >= 30 and ready["periodSeconds"] * ready["failureThreshold"] >= 60


def readiness_script() -> str:
    return container(only(single(), "Deployment")["spec"]["template"]["spec"])["readinessProbe"]["exec"]["command"][2]


def run_probe(port: int, secret: Path) -> subprocess.CompletedProcess:
    env = {"SDLOCAL_PORT": str(port), "SDLOCAL_AUTH_SECRET": str(secret), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", readiness_script()], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    from tests.api.conftest import start_server

    yield from start_server(tmp_path_factory.mktemp("sdlocal-probe"), ["tiny-probe"], nowebui=True, api=True,
                            api_auth=[("admin", "s3cret")])


def test_the_readiness_probe_passes_with_the_secret_login_once_a_model_is_loaded(login_server, tmp_path):
    secret = tmp_path / "auth"
    secret.write_text("admin:s3cret\n", encoding="utf-8")
    port = int(login_server.url.rsplit(":", 1)[1])
    done = run_probe(port, secret)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HTTP 200" in done.stdout


def test_the_readiness_probe_fails_on_a_wrong_login(login_server, tmp_path):
    secret = tmp_path / "auth"
    secret.write_text("admin:wrong\n", encoding="utf-8")
    done = run_probe(int(login_server.url.rsplit(":", 1)[1]), secret)
    assert done.returncode == 1 and "HTTP 401" in done.stdout, done.stdout + done.stderr


def test_the_readiness_probe_fails_while_no_model_is_loaded(tmp_path):
    from tests.api.conftest import start_server

    secret = tmp_path / "auth"
    secret.write_text("admin:s3cret\n", encoding="utf-8")
    server = start_server(tmp_path / "data", [], nowebui=True, api=True, api_auth=[("admin", "s3cret")])
    running = next(server)
    try:
        done = run_probe(int(running.url.rsplit(":", 1)[1]), secret)
    finally:
        server.close()
    assert done.returncode == 1 and "HTTP 503" in done.stdout, done.stdout + done.stderr


# ----- KubeRay ------------------------------------------------------------------------------------------------------

def ray_service() -> dict:
    return only(kuberay(), "RayService")


def pod_specs() -> list[dict]:
    cluster = ray_service()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"],
            *(group["template"]["spec"] for group in cluster["workerGroupSpecs"])]


def mounted_configmap_key(pod_spec: dict, file: Path) -> tuple[str, str]:
    """(ConfigMap name, key) of the ConfigMap item that the pod's container sees at ``file``."""
    mount = next(m for m in container(pod_spec)["volumeMounts"] if m["mountPath"] == str(file.parent))
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    for source in sources:
        config_map = source.get("configMap")
        for item in (config_map or {}).get("items", []):
            if item["path"] == file.name:
                return config_map["name"], item["key"]
    raise AssertionError(f"no ConfigMap item is mounted at {file}")


def test_the_rayservice_deploys_the_sdlocal_app_builder_with_the_mounted_cluster_config():
    docs = kuberay()
    service = ray_service()
    assert service["apiVersion"] == "ray.io/v1"
    apps = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    app = next(a for a in apps if a["name"] == "sdlocal")
    assert app["import_path"] == "sdlocal.cluster.app:build_app" and app["route_prefix"] == "/"
    module, _, function = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    config_file = Path(app["args"]["config"])
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for pod_spec in pod_specs():
        name, key = mounted_configmap_key(pod_spec, config_file)
        cluster = yaml.safe_load(config_maps[name]["data"][key])
        assert set(cluster) == CLUSTER_KEYS
        config_from_dict(cluster)  # the cluster's own reader takes it (unknown keys or bad values would raise)
        assert cluster["generator"]["num_gpus"] == 1
        assert cluster["generator"]["min_replicas"] <= cluster["generator"]["max_replicas"]


def test_every_ray_pod_mounts_the_shared_store_and_the_models_read_only():
    claims = {d["metadata"]["name"]: d for d in kuberay() if d["kind"] == "PersistentVolumeClaim"}
    for pod_spec in pod_specs():
        mounts = {m["mountPath"]: m for m in container(pod_spec)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        data = claims[volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]["claimName"]]
        assert data["spec"]["accessModes"] == ["ReadWriteMany"]
        assert mounts["/models"]["readOnly"] is True
        assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] in claims
        assert container(pod_spec)["image"] == "sdlocal:cluster"
        assert pod_spec["securityContext"]["runAsNonRoot"] is True and pod_spec["enableServiceLinks"] is False


def test_the_head_has_no_gpu_and_the_workers_ask_for_one_each():
    cluster = ray_service()["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert "nvidia.com/gpu" not in container(head["template"]["spec"])["resources"].get("limits", {})
    for group in cluster["workerGroupSpecs"]:
        assert container(group["template"]["spec"])["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_ray_version_is_the_one_the_cluster_lock_pins():
    lock = (ROOT / "requirements-cluster.lock").read_text(encoding="utf-8")
    pinned = re.search(r"^ray==([\w.]+)", lock, re.MULTILINE)
    assert pinned, "requirements-cluster.lock pins no ray"
    assert ray_service()["spec"]["rayClusterConfig"]["rayVersion"] == pinned.group(1)


def test_the_workers_readiness_is_the_apps_ready_route_on_the_serve_port():
    cluster = ray_service()["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        probe = container(group["template"]["spec"])["readinessProbe"]["httpGet"]
        assert probe["path"] == "/ready" and probe["port"] == 8000
    # the head keeps KubeRay's probes: its readiness gates the Service the workers join through
    assert "readinessProbe" not in container(cluster["headGroupSpec"]["template"]["spec"])


def test_the_ingress_service_sends_port_8000_to_serving_ray_pods_and_redis_is_there():
    docs = kuberay()
    ingress = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "sdlocal-ingress")
    assert ingress["spec"]["ports"][0]["port"] == 8000 and ingress["spec"]["selector"]["ray.io/serve"] == "true"
    labels = ray_service()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert {k: v for k, v in ingress["spec"]["selector"].items() if k != "ray.io/serve"}.items() <= labels.items()
    cluster = yaml.safe_load(only(docs, "ConfigMap")["data"]["cluster.yaml"])
    redis = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "redis")
    for url in (cluster["cache"]["redis_url"], cluster["rate_limit"]["redis_url"]):
        assert url.startswith(f"redis://redis:{redis['spec']['ports'][0]['port']}/")


# ----- Prometheus and Grafana ---------------------------------------------------------------------------------------

def test_every_alert_rule_is_complete():
    assert rules()
    for rule in rules():
        assert rule["alert"].startswith("Sdlocal")
        assert rule["expr"].strip() and re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


@pytest.mark.parametrize(("kind", "needle"), [
    ("latency", r"sdlocal_(generation_seconds|http_request_seconds)_bucket"),
    ("queue full", r"sdlocal_queue_full_total|sdlocal_queue_capacity"),
    ("model load failing", r'sdlocal_model_loads_total\{outcome="failed"\}'),
    ("gpu hot", r"sdlocal_gpu_temperature_celsius\) > 8\d"),
])
def test_the_alerts_cover(kind, needle):
    assert any(re.search(needle, rule["expr"]) for rule in rules()), kind


def test_the_gpu_alert_waits_five_minutes_and_every_rule_aggregates():
    hot = next(r for r in rules() if "sdlocal_gpu_temperature_celsius" in r["expr"])
    assert hot["for"] == "5m"
    for rule in rules():
        if METRIC.search(rule["expr"]):
            assert re.search(r"\b(sum|max) by \(", rule["expr"]), rule["alert"]


def test_prometheus_config_loads_the_rules_and_scrapes_both_targets():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert "alerts.yml" in config["rule_files"]
    assert (DEPLOY / "prometheus" / config["rule_files"][0]).is_file()
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["sdlocal"] == ["localhost:7860"] and targets["sdlocal-cluster"][0].endswith(":8000")
    assert all(job["job_name"].startswith("sdlocal") for job in config["scrape_configs"])  # SdlocalDown's match


def test_the_dashboard_has_panels_each_with_the_datasource_and_queries():
    board = dashboard()
    assert 38 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert len(board["panels"]) >= 10
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for word in ("requests", "latency", "queue", "images", "model loads", "cache", "rate-limited", "token",
                 "gpu utilisation", "gpu memory", "gpu temperature"):
        assert word in titles, word


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> set[str]:
    """Every name a PromQL query may use for the metrics of a real sdlocal app's /metrics."""
    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("sdlocal-metrics"), device="cpu", precision="fp32",
                        api=True, nowebui=True)
    services = build_services(settings)
    try:
        response = TestClient(create_app(services, settings)).get("/metrics")
    finally:
        services.close()
    assert response.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
        names.update(sample.name for sample in family.samples)
    return names


def referenced(exprs: list[str]) -> set[str]:
    found = set()
    for name in (n for expr in exprs for n in METRIC.findall(expr)):
        for suffix in HISTOGRAM_SUFFIXES:
            name = name.removesuffix(suffix)
        found.add(name)
    return found


def test_the_rules_and_the_dashboard_name_sdlocal_metrics():
    assert len(referenced([r["expr"] for r in rules()])) >= 6
    assert len(referenced(dashboard_exprs())) >= 15


@pytest.mark.parametrize("source", ["alerts.yml", "sdlocal-dashboard.json"])
def test_every_metric_named_is_in_a_real_apps_metrics(exposed, source):
    exprs = [r["expr"] for r in rules()] if source == "alerts.yml" else dashboard_exprs()
    missing = sorted(name for name in referenced(exprs) if name not in exposed)
    assert not missing, f"{source} names metrics that /metrics does not expose: {missing}"
