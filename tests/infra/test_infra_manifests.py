"""Every deployment file under infra/ loads and carries the fields its tool documents.

- Ray cluster launcher YAML: validated against Ray's own schema (`ray/autoscaler/ray-schema.json`) and
  through `prepare_config`, the defaults-filling step `ray up` runs.
- KubeRay RayCluster/RayJob: the ray.io/v1 fields of the KubeRay CRD reference
  (https://docs.ray.io/en/latest/cluster/kubernetes/references/api.html), GPU worker groups, the sweep
  entrypoint, token authentication.
- Compose file, images and .env.example: loopback-only ports, secrets only from the environment.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from infra_servers import INFRA, REPO_ROOT

LAUNCHER = INFRA / "ray" / "cluster-aws-gpu.yaml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob-sweep.yaml"
COMPOSE = INFRA / "mlflow" / "compose.yaml"
WORKER_DOCKERFILE = INFRA / "docker" / "worker.Dockerfile"
START_SERVER = INFRA / "mlflow" / "start-server.sh"
ENV_EXAMPLE = INFRA / ".env.example"

# Field names of the ray.io/v1 types (KubeRay CRD API reference, v1.5-v1.7).
RAYCLUSTER_SPEC_FIELDS = {"authOptions", "suspend", "managedBy", "autoscalerOptions",
                          "headServiceAnnotations", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                          "headGroupSpec", "rayVersion", "workerGroupSpecs", "upgradeStrategy"}
HEAD_GROUP_FIELDS = {"template", "headService", "enableIngress", "resources", "labels", "rayStartParams",
                     "serviceType"}
WORKER_GROUP_FIELDS = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                       "resources", "labels", "rayStartParams", "template", "scaleStrategy", "numOfHosts"}
AUTOSCALER_FIELDS = {"resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
                     "upscalingMode", "version", "env", "envFrom", "volumeMounts"}
RAYJOB_SPEC_FIELDS = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
                      "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
                      "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
                      "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
                      "shutdownAfterJobFinishes", "suspend", "schedule"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)


def load(path: Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def test_every_yaml_file_under_infra_loads_and_is_covered_here():
    covered = {LAUNCHER, RAYCLUSTER, RAYJOB, COMPOSE}
    found = set(INFRA.rglob("*.yaml")) | set(INFRA.rglob("*.yml"))
    assert found == covered, "a new manifest needs its checks in this file"
    for path in found:
        assert isinstance(load(path), dict), path


# ------------------------------------------------------------------------------------ cluster launcher
def test_launcher_config_passes_rays_schema_and_defaults():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(LAUNCHER)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_launcher_config_has_autoscaled_gpu_workers_and_token_auth():
    config = load(LAUNCHER)
    assert config["cluster_name"] and config["provider"]["type"]
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    gpu_types = [name for name, spec in node_types.items()
                 if name != config["head_node_type"] and spec["resources"].get("GPU", 0) >= 1]
    assert gpu_types
    for name in gpu_types:
        spec = node_types[name]
        assert 0 <= spec.get("min_workers", 0) <= spec["max_workers"] <= config["max_workers"]
        assert spec["node_config"]
    assert sum(node_types[n].get("min_workers", 0) for n in gpu_types) <= config["max_workers"]
    # Simulations go to GPU workers; the head only drives the sweep.
    assert node_types[config["head_node_type"]]["resources"].get("CPU") == 0
    start = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in start if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]
    assert any("auth_token" in remote for remote in config["file_mounts"])


# ---------------------------------------------------------------------------------------------- KubeRay
def _check_raycluster_spec(spec: dict) -> None:
    import ray

    assert set(spec) <= RAYCLUSTER_SPEC_FIELDS, set(spec) - RAYCLUSTER_SPEC_FIELDS
    assert spec["rayVersion"] == ray.__version__  # the image, the cluster and the submitting CLI agree
    assert spec["authOptions"] == {"mode": "token"}
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_FIELDS
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS, set(head) - HEAD_GROUP_FIELDS
    groups = [("head", head)] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    for _, group in groups:
        # KubeRay passes rayStartParams to `ray start` as strings; a YAML number is rejected by the CRD.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        containers = group["template"]["spec"]["containers"]
        assert containers[0]["image"] == _worker_image()
        resources = containers[0]["resources"]
        assert resources["limits"] and resources["requests"]
    gpu_groups = 0
    for name, group in groups[1:]:
        assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            gpu_groups += 1
            # Kubernetes requires requests == limits for extended resources such as GPUs.
            assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
    assert gpu_groups >= 1
    for _, group in groups:
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0].get("env", [])}
        for name, entry in env.items():
            if SECRET_NAME.search(name):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name} must come from a Secret"


def _worker_image() -> str:
    return load(LAUNCHER)["docker"]["image"]


def test_raycluster_manifest():
    manifest = load(RAYCLUSTER)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_raycluster_spec(manifest["spec"])


def test_rayjob_manifest_runs_the_sweep_on_the_same_cluster_spec():
    manifest = load(RAYJOB)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, set(spec) - RAYJOB_SPEC_FIELDS
    assert shlex.split(spec["entrypoint"])[:2] == ["chemoscreen", "sweep"]
    assert spec.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "InteractiveMode"}
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    _check_raycluster_spec(spec["rayClusterSpec"])
    assert spec["rayClusterSpec"] == load(RAYCLUSTER)["spec"]


def test_sweep_entrypoint_parses_with_the_cli():
    from screening.cli import build_parser

    args = build_parser().parse_args(shlex.split(load(RAYJOB)["spec"]["entrypoint"])[1:])
    assert args.command == "sweep"


# ------------------------------------------------------------------------------------- images, compose
def test_worker_image_has_cuda_torch_the_same_ray_and_a_non_root_user():
    import ray

    text = WORKER_DOCKERFILE.read_text()
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", text)
    assert f"ARG RAY_VERSION={ray.__version__}" in text
    assert re.search(r"^USER 1000$", text, re.MULTILINE)
    assert "wget" in text  # KubeRay's health probes call it
    spec = load(RAYCLUSTER)["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    runs_as = {c["securityContext"]["runAsUser"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert runs_as == {1000}
    ignore_file = WORKER_DOCKERFILE.parent / (WORKER_DOCKERFILE.name + ".dockerignore")
    ignore = [line for line in ignore_file.read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "**"  # deny by default: no .venv, stores or .env files in the build context


def _compose_default(value: str) -> str:
    """Resolve `${NAME:-default}` to its default and `${NAME}` to '' (the unset case)."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def test_compose_tracking_server_postgres_s3_basic_auth():
    compose = load(COMPOSE)
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    dockerfile = INFRA / "mlflow" / services["mlflow"]["build"]["dockerfile"]
    assert "start-server.sh" in dockerfile.read_text()
    script = START_SERVER.read_text()
    assert "--app-name basic-auth" in script and "--serve-artifacts" in script
    assert 'MLFLOW_HOST:-127.0.0.1' in script


def test_compose_publishes_ports_on_loopback_only():
    compose = load(COMPOSE)
    published = [(name, port) for name, svc in compose["services"].items() for port in svc.get("ports", [])]
    assert published  # the tracking server is reachable from the host
    for name, port in published:
        host_ip = _compose_default(str(port)).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name} publishes {port}"


def test_secrets_come_only_from_the_environment():
    compose = load(COMPOSE)
    referenced = set()
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            referenced |= set(re.findall(r"\$\{(\w+)", str(value)))
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), f"{name}.{key} is not from the env"
            if "://" in str(value) and "@" in str(value):
                credentials = str(value).split("://", 1)[1].split("@", 1)[0]
                assert re.fullmatch(r"(\$\{\w+\}:?)+", credentials), f"{name}.{key} embeds credentials"
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line and not line.startswith("#"))
    assert referenced <= set(example), f"not in .env.example: {referenced - set(example)}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value.startswith("CHANGE_ME"), f"{key} in .env.example must be a placeholder"


@pytest.mark.skipif(not (REPO_ROOT / ".git").exists(), reason="needs a git checkout (asks git check-ignore)")
def test_the_mlflow_env_file_is_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", str(INFRA / "mlflow" / ".env")], cwd=REPO_ROOT)
    assert ignored.returncode == 0, "infra/mlflow/.env must be ignored by git"


def test_start_server_refuses_to_run_without_its_secrets(tmp_path: Path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@127.0.0.1:1/db"}
    done = subprocess.run(["sh", str(START_SERVER)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "MLFLOW_AUTH_DATABASE_URI is not set" in done.stderr


def test_cluster_docs_name_files_that_exist():
    docs = (REPO_ROOT / "docs" / "cluster.md").read_text()
    user_made = {"infra/mlflow/.env"}
    paths = set(re.findall(r"(?<![\w/])((?:infra|tests)/[\w./-]+\w)", docs)) - user_made
    assert "infra/ray/cluster-aws-gpu.yaml" in paths
    missing = [p for p in paths if not (REPO_ROOT / p).exists()]
    assert missing == []
