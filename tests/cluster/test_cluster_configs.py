"""The cluster recipes in cluster/ parse and validate against the schemas of the tools that consume them.

- ``aws-48gpu.yaml``: Ray's own cluster-config schema (``ray/autoscaler/ray-schema.json``) after Ray merges its
  AWS defaults (``prepare_config`` + ``validate_config``, what ``ray up`` runs first), plus the sizing and
  security properties the recipe promises (48 GPUs, CPU-only head, no public dashboard, token auth).
- ``kuberay/*.yaml``: the fields of KubeRay's ``ray.io/v1`` API types (RayJob, RayService, RayClusterSpec,
  HeadGroupSpec, WorkerGroupSpec); ``serveConfigV2`` with ``ray.serve.schema.ServeDeploySchema``; every
  ``runtimeEnvYAML`` with ``ray.runtime_env.RuntimeEnv``.
- ``runtime_env.yaml``: keys are runtime_env fields and ``RuntimeEnv`` accepts the values.
- ``submit.sh``: every job expands to ``ray job submit --working-dir <repo> --runtime-env ... -- python -m ...``
  on the S3 layout of cluster/README.md, and bad input is one line and a non-zero exit.
- The recipes' python commands use the flags of the real CLIs (slow: runs ``--help`` of each module).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "aws-48gpu.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
SUBMIT = CLUSTER / "submit.sh"
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))
RAY_MANIFESTS = [p for p in KUBERAY if p.name.startswith(("rayjob-", "rayservice-"))]
JOBS = ["synth", "tokenize", "train-tokenizer", "pretrain-1b", "pretrain-3b", "eval", "generate", "serve"]
TOTAL_GPUS = 48
IMAGE_PREFIX = "/home/ray/lumos/"

# The entry points of DESIGN §4.2: every recipe must run one of these.
CLI_MODULES = {
    "tokenize_jobs.synth", "tokenize_jobs.video", "workflows.train_tokenizer", "workflows.pretrain",
    "workflows.generate", "workflows.serve", "workflows.eval", "workflows.ablate", "workflows.demo",
}

# Fields of KubeRay's ray.io/v1 API (ray-operator/apis/ray/v1/*_types.go, KubeRay 1.5): a misspelt field is
# silently pruned by the API server, so the tests reject anything outside these sets.
RAYJOB_SPEC = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
    "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
    "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule",
}
RAYSERVICE_SPEC = {
    "serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy", "excludeHeadPodFromServeSvc",
    "rayClusterDeletionDelaySeconds", "serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold",
}
RAYCLUSTER_SPEC = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations", "enableInTreeAutoscaling",
    "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion", "workerGroupSpecs", "authOptions",
}
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams",
    "template", "scaleStrategy", "numOfHosts",
}
AUTOSCALER_OPTIONS = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds", "upscalingMode", "env",
    "envFrom", "volumeMounts", "version",
}
# Kubernetes resource.Quantity (decimal or binary suffix).
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def ray_version() -> str:
    return importlib.metadata.version("ray")


# --------------------------------------------------------------------------------------------------------
# Ray cluster launcher (AWS)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher() -> dict:
    return load(LAUNCHER)


@pytest.fixture(scope="module")
def launcher_full(launcher) -> dict:
    """The config as ``ray up`` sees it: merged with Ray's AWS defaults and validated by Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(launcher))
    validate_config(full)
    return full


def test_launcher_passes_ray_schema_validation(launcher_full):
    assert launcher_full["provider"]["type"] == "aws"
    assert launcher_full["head_node_type"] in launcher_full["available_node_types"]


def test_launcher_schema_rejects_a_misspelt_field(launcher):
    """Guards the guard: Ray's schema really is strict about unknown top-level keys."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = copy.deepcopy(launcher)
    bad["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def _gpu_types(cfg: dict) -> dict[str, dict]:
    return {k: v for k, v in cfg["available_node_types"].items() if v["resources"].get("GPU", 0) > 0}


def test_launcher_gpu_pool_is_48_gpus_on_8_gpu_nodes(launcher_full):
    gpu_types = _gpu_types(launcher_full)
    assert gpu_types, "no GPU node type"
    total = 0
    for name, t in gpu_types.items():
        assert t["resources"]["GPU"] == 8, name
        assert t["node_config"]["InstanceType"] in {"p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge"}
        assert 0 <= t["min_workers"] <= t["max_workers"]
        total += t["max_workers"] * t["resources"]["GPU"]
    assert total == TOTAL_GPUS


def test_launcher_head_runs_no_work_and_cpu_pool_autoscales(launcher_full):
    head = launcher_full["available_node_types"][launcher_full["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("GPU", 0) == 0
    cpu_types = {k: v for k, v in launcher_full["available_node_types"].items()
                 if k != launcher_full["head_node_type"] and v["resources"].get("GPU", 0) == 0}
    assert cpu_types, "no CPU worker type for the tokenization job"
    for name, t in cpu_types.items():
        assert t["min_workers"] == 0 and t["max_workers"] >= 4, name
        assert t["resources"]["CPU"] >= 8, name
    workers = sum(t["max_workers"] for k, t in launcher_full["available_node_types"].items()
                  if k != launcher_full["head_node_type"])
    assert launcher_full["max_workers"] >= workers


def test_launcher_keeps_dashboard_and_job_api_private(launcher_full):
    """Own security groups on every node type (Ray's auto-created group opens SSH to 0.0.0.0/0), the dashboard
    bound to loopback, token auth on every node, and no published container ports."""
    from ray.autoscaler._private.aws.config import _configure_security_group

    for name, t in launcher_full["available_node_types"].items():
        nc = t["node_config"]
        assert nc.get("SecurityGroupIds"), f"{name}: Ray would create a group with SSH open to 0.0.0.0/0"
        assert nc.get("SubnetIds"), f"{name}: subnet must be pinned next to the security group"
    # Ray's own AWS bootstrap step leaves user-provided groups alone (it returns before any AWS call).
    before = copy.deepcopy(launcher_full)
    assert _configure_security_group(copy.deepcopy(launcher_full)) == before

    head_start = " ".join(launcher_full["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    for cmd in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(launcher_full[cmd]), cmd
    assert launcher_full["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    docker = launcher_full["docker"]
    for opt in docker.get("run_options", []) + docker.get("head_run_options", []) + docker.get("worker_run_options", []):
        assert not re.match(r"^(-p|--publish)\b", opt), opt


def test_launcher_instance_profiles_and_iam_policies(launcher_full):
    head_type = launcher_full["head_node_type"]
    arns = {k: t["node_config"]["IamInstanceProfile"]["Arn"] for k, t in launcher_full["available_node_types"].items()}
    for name, arn in arns.items():
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", arn), (name, arn)
    worker_arns = {arn for k, arn in arns.items() if k != head_type}
    assert arns[head_type] not in worker_arns, "workers must not get the head's EC2 rights"

    head_policy = json.loads((CLUSTER / "iam/head-policy.json").read_text())
    worker_policy = json.loads((CLUSTER / "iam/worker-policy.json").read_text())
    json.loads((CLUSTER / "iam/ec2-trust-policy.json").read_text())
    worker_actions = {a for s in worker_policy["Statement"] for a in _as_list(s["Action"])}
    assert all(a.startswith("s3:") for a in worker_actions), worker_actions
    pass_role = [s for s in head_policy["Statement"] if "iam:PassRole" in _as_list(s["Action"])]
    assert pass_role, "the head must be allowed to pass the worker role"
    passable = {r for s in pass_role for r in _as_list(s["Resource"])}
    for arn in worker_arns:
        assert arn in passable, f"head cannot launch workers with {arn}"
    head_actions = {a for s in head_policy["Statement"] for a in _as_list(s["Action"])}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "s3:GetObject", "s3:PutObject"} <= head_actions


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def test_launcher_installs_this_project_with_pinned_cuda_torch(launcher_full):
    setup = "\n".join(launcher_full["setup_commands"])
    assert "torch==2.13.0" in setup
    assert '-e "/home/ray/lumos[gpu]"' in setup
    assert launcher_full["file_mounts"]["/home/ray/lumos"] == "."
    for skip in (".venv", ".cache", "runs", ".git"):
        assert skip in launcher_full["rsync_exclude"], skip
    # The containers run the Ray version this repo pins (pyproject: ray==...).
    images = [launcher_full["docker"]["image"], launcher_full["docker"]["head_image"]] + [
        t["docker"]["worker_image"] for t in launcher_full["available_node_types"].values() if "docker" in t]
    for image in images:
        assert image.startswith(f"rayproject/ray:{ray_version()}-py311"), image


def test_launcher_placeholders_are_documented():
    readme = (CLUSTER / "README.md").read_text()
    # Values only (comments mention placeholders in general terms).
    docs = [load(LAUNCHER)] + [d for p in KUBERAY for d in load_all(p)]
    docs += [json.loads(p.read_text()) for p in (CLUSTER / "iam").glob("*.json")]
    text = json.dumps(docs)
    tokens = set(re.findall(r"[\w-]*REPLACE_ME[\w-]*", text)) | set(re.findall(r"\b123456789012\b", text))
    assert tokens, "expected placeholders"
    for token in tokens:
        assert f"`{token}`" in readme, f"placeholder {token} is not explained in cluster/README.md"


def run_aws_setup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLUSTER / "aws_setup.py"), *args], capture_output=True, text=True,
                          timeout=120)


def _load_aws_setup():
    """cluster/aws_setup.py as a module (cluster/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lumos_cluster_aws_setup", CLUSTER / "aws_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args,message", [
    (["--admin-cidr", "0.0.0.0/0"], "must not be the whole internet"),
    (["--admin-cidr", "office"], "is not a CIDR block"),
    (["--ami", "ubuntu"], "is not an AMI id"),
])
def test_aws_setup_rejects_bad_arguments(args, message):
    base = {"--region": "us-west-2", "--subnet-id": "subnet-1", "--admin-cidr": "203.0.113.0/24",
            "--bucket": "my-bucket", "--ami": "ami-0123456789abcdef0"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    r = run_aws_setup(*[x for kv in base.items() for x in kv])
    assert r.returncode == 2 and message in r.stderr.strip().splitlines()[-1], r.stderr


@pytest.mark.slow
def test_aws_setup_then_ray_bootstrap_on_moto(s3_server, tmp_path, monkeypatch):
    """cluster/aws_setup.py against an EC2/IAM API (moto on 127.0.0.1), then the AWS bootstrap step of
    ``ray up`` (``bootstrap_aws``) on the filled config: the subnet/zone/security group/instance profiles it
    names exist and fit together, and Ray adds no inbound rule (no SSH from 0.0.0.0/0)."""
    import boto3
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.util import prepare_config, validate_config

    ec2 = boto3.client("ec2", region_name="us-west-2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-west-2b")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    out = tmp_path / "aws-48gpu.local.yaml"
    args = ["--region", "us-west-2", "--subnet-id", subnet, "--admin-cidr", "203.0.113.0/24", "--bucket", "my-bucket",
            "--ami", "ami-0123456789abcdef0", "--placement-group", "none", "--out", str(out)]
    aws_setup = _load_aws_setup()
    for _ in range(2):  # the second run reuses everything
        assert aws_setup.main(args) == 0

    text = out.read_text()
    assert "REPLACE_ME" not in json.dumps(yaml.safe_load(text)) and "Placement:" not in text
    full = prepare_config(yaml.safe_load(text))
    validate_config(full)
    assert full["provider"]["availability_zone"] == "us-west-2b"

    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the generated SSH key under ~/.ssh
    booted = bootstrap_aws(full)
    (sg_id,) = {g for t in booted["available_node_types"].values() for g in t["node_config"]["SecurityGroupIds"]}
    assert {s for t in booted["available_node_types"].values() for s in t["node_config"]["SubnetIds"]} == {subnet}
    (sg,) = ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"]
    assert sg["VpcId"] == vpc
    rules = {(p["IpProtocol"], p.get("FromPort"), tuple(r["CidrIp"] for r in p["IpRanges"]),
              tuple(g["GroupId"] for g in p["UserIdGroupPairs"])) for p in sg["IpPermissions"]}
    assert rules == {("tcp", 22, ("203.0.113.0/24",), ()), ("-1", None, (), (sg_id,))}

    iam = boto3.client("iam", region_name="us-west-2")
    for t in booted["available_node_types"].values():
        arn = t["node_config"]["IamInstanceProfile"]["Arn"]
        profile = iam.get_instance_profile(InstanceProfileName=arn.rsplit("/", 1)[1])["InstanceProfile"]
        assert profile["Arn"] == arn and profile["Roles"]
    head_policy = iam.get_role_policy(RoleName="lumos-ray-head", PolicyName="lumos")["PolicyDocument"]
    assert "arn:aws:s3:::my-bucket/lumos/*" in json.dumps(head_policy)


# --------------------------------------------------------------------------------------------------------
# runtime_env.yaml
# --------------------------------------------------------------------------------------------------------


def test_runtime_env_fields_are_valid():
    from ray.runtime_env import RuntimeEnv

    cfg = load(RUNTIME_ENV)
    unknown = set(cfg) - RuntimeEnv.known_fields
    assert not unknown, f"not runtime_env fields: {unknown}"
    env = RuntimeEnv(**cfg)
    assert env["working_dir"] == "."
    assert {".venv", ".cache", "runs", ".git"} <= set(cfg["excludes"])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in cfg["env_vars"].items())


def test_runtime_env_leaves_deepspeed_to_detect_cuda_and_holds_no_secrets():
    env_vars = load(RUNTIME_ENV)["env_vars"]
    assert "DS_ACCELERATOR" not in env_vars
    assert env_vars["AWS_REGION"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env_vars)
    assert env_vars["NCCL_SOCKET_IFNAME"].startswith("^lo")
    assert env_vars["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


# --------------------------------------------------------------------------------------------------------
# KubeRay manifests
# --------------------------------------------------------------------------------------------------------


def _ray_objects() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in RAY_MANIFESTS for d in load_all(p)]


def _cluster_spec(obj: dict) -> dict:
    return obj["spec"]["rayClusterSpec" if obj["kind"] == "RayJob" else "rayClusterConfig"]


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _gpus(container: dict) -> int:
    return int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))


def test_kuberay_files_present_and_parse():
    names = {p.name for p in KUBERAY}
    assert {"rayjob-tokenize.yaml", "rayjob-pretrain.yaml", "rayservice-sampler.yaml"} <= names
    for p in KUBERAY:
        for doc in load_all(p):
            assert doc.get("apiVersion") and doc.get("kind"), p.name
            assert DNS1123.match(doc["metadata"]["name"]), (p.name, doc["metadata"]["name"])


@pytest.mark.parametrize("name,obj", _ray_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_kuberay_object_fields(name, obj):
    assert obj["apiVersion"] == "ray.io/v1"
    assert obj["kind"] in {"RayJob", "RayService"}
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
    allowed = RAYJOB_SPEC if obj["kind"] == "RayJob" else RAYSERVICE_SPEC
    assert set(obj["spec"]) <= allowed, set(obj["spec"]) - allowed
    cluster = _cluster_spec(obj)
    assert set(cluster) <= RAYCLUSTER_SPEC, set(cluster) - RAYCLUSTER_SPEC
    assert set(cluster.get("autoscalerOptions", {})) <= AUTOSCALER_OPTIONS
    assert cluster["rayVersion"] == ray_version()
    assert cluster.get("authOptions", {}).get("mode") == "token", "Ray token auth must stay on"

    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP, set(head) - HEAD_GROUP
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the head (dashboard, job API) must not be public"
    _check_group(head, name)
    assert head["rayStartParams"].get("num-cpus") == "0", "no work on the head"
    assert all(_gpus(c) == 0 for c in _containers(head))

    groups = cluster["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        assert set(g) <= WORKER_GROUP, set(g) - WORKER_GROUP
        assert DNS1123.match(g["groupName"])
        for key in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(g[key], int) and g[key] >= 0, (g["groupName"], key)
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        _check_group(g, name)


def _check_group(group: dict, where: str) -> None:
    """rayStartParams is map[string]string; every container has an image and cpu/memory/GPU quantities."""
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in group["rayStartParams"].items()), where
    containers = _containers(group)
    assert containers, where
    for c in containers:
        assert c["name"] and c["image"], where
        res = c["resources"]
        assert res.get("limits"), f"{where}/{c['name']}: resources.limits"
        for kind in ("requests", "limits"):
            for key in ("cpu", "memory"):
                assert QUANTITY.match(str(res[kind][key])), (where, kind, key, res[kind][key])
        if "nvidia.com/gpu" in res.get("requests", {}):
            # Kubernetes: extended resources need limits, and requests must equal them.
            assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"], where
        if _gpus(c):
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), f"{where}: GPU taint toleration"


def test_kuberay_pretrain_has_exactly_48_gpus_fixed_size():
    job = load(CLUSTER / "kuberay/rayjob-pretrain.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is False
    total = 0
    for g in cluster["workerGroupSpecs"]:
        gpus = sum(_gpus(c) for c in _containers(g))
        if gpus:
            assert g["minReplicas"] == g["replicas"] == g["maxReplicas"], "training needs all GPUs at once"
            assert gpus == 8
        total += g["replicas"] * gpus
    assert total == TOTAL_GPUS


def test_kuberay_tokenize_autoscales_cpu_pool():
    job = load(CLUSTER / "kuberay/rayjob-tokenize.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    cpu_groups = [g for g in cluster["workerGroupSpecs"] if not any(_gpus(c) for c in _containers(g))]
    assert cpu_groups and all(g["minReplicas"] == 0 and g["maxReplicas"] > 1 for g in cpu_groups)
    assert job["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("path", [p for p in RAY_MANIFESTS if p.name.startswith("rayjob-")], ids=lambda p: p.name)
def test_kuberay_rayjob_entrypoint_and_runtime_env(path):
    from ray.runtime_env import RuntimeEnv

    spec = load(path)["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2] in CLI_MODULES, argv[:3]
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(env) <= RuntimeEnv.known_fields
    RuntimeEnv(**env)
    assert "DS_ACCELERATOR" not in env.get("env_vars", {})
    for arg in argv:
        if arg.endswith(".yaml"):
            assert arg.startswith(IMAGE_PREFIX), f"{arg}: use the image path, the pod's cwd is not the repo"
            assert (REPO / arg[len(IMAGE_PREFIX):]).parent.is_dir(), arg


def test_kuberay_pretrain_overrides_load_with_the_recipe():
    """The entrypoint's key=value overrides are valid keys of the pre-training config, and the recipe asks Ray
    Train for as many GPU workers as the manifest provides."""
    argv = shlex.split(load(CLUSTER / "kuberay/rayjob-pretrain.yaml")["spec"]["entrypoint"])
    recipe = argv[argv.index("--config") + 1][len(IMAGE_PREFIX):]
    if not (REPO / recipe).exists():
        pytest.skip(f"{recipe} not written yet")
    from workflows.training.train_config import load_pretrain_config

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    cfg = load_pretrain_config(str(REPO / recipe), overrides)
    assert cfg.ray.use_gpu is True
    assert cfg.ray.num_workers == TOTAL_GPUS
    assert cfg.checkpoint.storage.startswith("s3://") and cfg.data.shards.startswith("s3://")


def test_kuberay_rayservice_serve_config():
    from ray.serve.schema import ServeDeploySchema

    svc = load(CLUSTER / "kuberay/rayservice-sampler.yaml")
    raw = svc["spec"]["serveConfigV2"]
    assert isinstance(raw, str), "serveConfigV2 is a YAML string, not a mapping"
    serve_cfg = yaml.safe_load(raw)
    schema = ServeDeploySchema.model_validate(serve_cfg)
    apps = serve_cfg["applications"]
    assert [a["import_path"] for a in apps] == ["workflows.serve:build_app"]
    assert apps[0]["args"]["checkpoint"].startswith("s3://")
    assert schema.http_options.port == 8000
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**apps[0].get("runtime_env", {}))
    # The builder's own config (workflows/serving/config.py) accepts the args: unknown keys are errors there.
    from workflows.serving.config import serve_config_from_args

    serve = serve_config_from_args(apps[0]["args"])
    max_gpus = sum(g["maxReplicas"] * sum(_gpus(c) for c in _containers(g))
                   for g in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"])
    assert serve.scaling.max_replicas * (serve.scaling.num_gpus or 1) <= max_gpus
    gpu_groups = [g for g in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
                  if any(_gpus(c) for c in _containers(g))]
    assert gpu_groups and all(g["minReplicas"] >= 1 for g in gpu_groups), "keep one sampler warm"
    for g in [svc["spec"]["rayClusterConfig"]["headGroupSpec"], *gpu_groups]:
        env = {e["name"]: e for c in _containers(g) for e in c.get("env", [])}
        assert "secretKeyRef" in env["LUMOS_API_TOKEN"]["valueFrom"], "the API token comes from a Secret"


def test_kuberay_serve_config_has_no_unknown_fields():
    """ServeDeploySchema ignores unknown keys silently, so a typo (``import_paht``) is caught here."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    serve_cfg = yaml.safe_load(load(CLUSTER / "kuberay/rayservice-sampler.yaml")["spec"]["serveConfigV2"])
    assert set(serve_cfg) <= set(ServeDeploySchema.model_fields), set(serve_cfg) - set(ServeDeploySchema.model_fields)
    for app in serve_cfg["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields), set(app) - set(ServeApplicationSchema.model_fields)


def test_kuberay_service_account_annotates_an_iam_role():
    (sa,) = load_all(CLUSTER / "kuberay/service-account.yaml")
    assert sa["kind"] == "ServiceAccount" and sa["apiVersion"] == "v1"
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    for name, obj in _ray_objects():
        cluster = _cluster_spec(obj)
        for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            assert g["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"], name


def test_dockerfile_matches_pins_and_copies_existing_paths():
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"ARG BASE=rayproject/ray:{ray_version()}-py311-gpu" in text
    assert '"torch==2.13.0"' in text and '".[gpu]"' in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                if not src.startswith("--"):
                    assert (REPO / src).exists(), src


# --------------------------------------------------------------------------------------------------------
# submit.sh
# --------------------------------------------------------------------------------------------------------


def submit(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    return subprocess.run(["bash", str(SUBMIT), *args], capture_output=True, text=True, env={**base, **env},
                          timeout=30)


def dry_run(job: str, *args: str, **env: str) -> list[str]:
    env = {"BUCKET": "my-bucket", "CHECKPOINT": "s3://my-bucket/lumos/checkpoints/r/ckpt", **env}
    r = submit("--dry-run", job, *args, **env)
    assert r.returncode == 0, r.stderr
    return shlex.split(r.stdout)


def python_command(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1:]


def test_submit_help():
    r = submit("--help")
    assert r.returncode == 0
    for job in JOBS:
        assert job in r.stdout


@pytest.mark.parametrize("job", JOBS)
def test_submit_wraps_every_job_in_ray_job_submit(job):
    argv = dry_run(job)
    assert argv[:3] == ["ray", "job", "submit"]
    assert argv[argv.index("--working-dir") + 1] == str(REPO)
    assert argv[argv.index("--runtime-env") + 1] == str(RUNTIME_ENV)
    assert argv[argv.index("--address") + 1] == "http://127.0.0.1:8265"
    cmd = python_command(argv)
    assert cmd[:2] == ["python", "-m"] and cmd[2] in CLI_MODULES
    uris = [a.split("=", 1)[-1] for a in cmd if "s3://" in a]
    assert uris and all(u.startswith("s3://my-bucket/lumos/") for u in uris), uris
    if job == "serve":
        assert "--no-wait" in argv
    # Sampling runs in the driver process: it must land on a GPU node, not on the CPU-only head.
    head = argv[:argv.index("--")]
    assert ("--entrypoint-num-gpus" in head) == (job in {"eval", "generate"})


def test_submit_follows_the_s3_layout():
    assert python_command(dry_run("synth", VIDEOS="8", SEED="3"))[3:] == [
        "--out", "s3://my-bucket/lumos/raw/corpus", "--videos", "8", "--seed", "3"]
    tok = python_command(dry_run("tokenize", CORPUS="c1"))
    assert tok[tok.index("--manifest") + 1] == "s3://my-bucket/lumos/raw/c1/manifest.jsonl"
    assert tok[tok.index("--out") + 1] == "s3://my-bucket/lumos/shards/c1"
    pre = python_command(dry_run("pretrain-3b", "optim.lr=1e-4"))
    assert pre[pre.index("--config") + 1] == "workflows/configs/pretrain_3b_48gpu.yaml"
    assert "data.shards=s3://my-bucket/lumos/shards/corpus" in pre
    assert "checkpoint.storage=s3://my-bucket/lumos/checkpoints" in pre
    assert "checkpoint.name=lumos-3b-48gpu" in pre
    assert pre[-1] == "optim.lr=1e-4"
    ev = python_command(dry_run("eval", RUN="r1"))
    assert ev[ev.index("--out") + 1] == "s3://my-bucket/lumos/eval/r1"
    local = python_command(dry_run("synth", LUMOS_ROOT="/data/lumos/", BUCKET=""))
    assert local[local.index("--out") + 1] == "/data/lumos/raw/corpus"


@pytest.mark.parametrize("args,env,message", [
    (["bogus"], {"BUCKET": "b"}, "unknown job 'bogus'"),
    (["--frobnicate", "synth"], {"BUCKET": "b"}, "unknown option --frobnicate"),
    (["synth"], {}, "set BUCKET"),
    (["eval"], {"BUCKET": "b"}, "eval needs CHECKPOINT"),
])
def test_submit_rejects_bad_input_with_one_line(args, env, message):
    r = submit(*args, **env)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_submit_pretrain_overrides_load_with_the_recipes():
    from workflows.training.train_config import load_pretrain_config

    for size in ("1b", "3b"):
        cmd = python_command(dry_run(f"pretrain-{size}"))
        recipe = REPO / cmd[cmd.index("--config") + 1]
        if not recipe.exists():
            pytest.skip(f"{recipe.name} not written yet")
        cfg = load_pretrain_config(str(recipe), [a for a in cmd if "=" in a])
        assert cfg.ray.num_workers == TOTAL_GPUS and cfg.ray.use_gpu is True, size
        assert cfg.checkpoint.name == f"lumos-{size}-48gpu"


def test_submit_train_tokenizer_overrides_load_with_the_recipe():
    """train-tokenizer: the cluster recipe + the overrides submit.sh adds load, train on GPUs and write to the
    run layout."""
    cmd = python_command(dry_run("train-tokenizer"))
    recipe = REPO / cmd[cmd.index("--config") + 1]
    if not recipe.exists():
        pytest.skip(f"{recipe.name} not written yet")
    from workflows.config_io import load_config
    from workflows.train_tokenizer import TrainTokenizerConfig

    cfg = load_config(TrainTokenizerConfig, str(recipe), [a for a in cmd if "=" in a])
    assert cfg.out == "s3://my-bucket/lumos/checkpoints/video_tokenizer"
    assert cfg.data.manifest == "s3://my-bucket/lumos/raw/corpus/manifest.jsonl"
    assert cfg.ray.use_gpu is True


def test_readme_submit_recipes_are_valid_jobs():
    readme = (CLUSTER / "README.md").read_text()
    jobs = re.findall(r'^(?:[A-Z_]+=(?:"[^"]*"|\S+) )*cluster/submit\.sh (\S+)', readme, flags=re.M)
    assert set(jobs) == set(JOBS), set(JOBS) ^ set(jobs)
    main_readme = (REPO / "README.md").read_text()
    assert "## Cluster" in main_readme and "cluster/README.md" in main_readme


# --------------------------------------------------------------------------------------------------------
# The recipes' python commands against the real CLIs
# --------------------------------------------------------------------------------------------------------


def _recipe_commands() -> list[list[str]]:
    cmds = [python_command(dry_run(job)) for job in JOBS]
    for path in RAY_MANIFESTS:
        spec = load(path)["spec"]
        if "entrypoint" in spec:
            cmds.append(shlex.split(spec["entrypoint"]))
    return cmds


@pytest.mark.slow
def test_recipes_use_flags_the_clis_accept():
    """``python -m MODULE --help`` of each recipe's module lists every ``--flag`` the recipe passes."""
    by_module: dict[str, set[str]] = {}
    for cmd in _recipe_commands():
        by_module.setdefault(cmd[2], set()).update(a for a in cmd[3:] if a.startswith("--"))
    checked = 0
    for module, flags in sorted(by_module.items()):
        if not (REPO / (module.replace(".", "/") + ".py")).exists():
            continue  # written by another part; checked once it exists
        r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"{module} --help: {r.stderr[-500:]}"
        for flag in flags:
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}(?![\w-])", r.stdout), f"{module} has no {flag}"
        checked += 1
    if not checked:
        pytest.skip("no recipe module exists yet")
