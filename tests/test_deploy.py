"""The deployment examples (configs/deploy/) are valid: the `ray up` cluster YAML against the schema Ray ships,
the KubeRay RayJob with the fields KubeRay requires; both run a real rollout command and keep keys out of files."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import ray
import yaml

from rollout.cli import rollout_parser
from rollout.config import RolloutConfig

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "configs" / "deploy"


def _rollout_command(command: str) -> tuple:
    """The arguments of a `python -m rollout ...` command line, checked the way the CLI parses them."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "rollout"], command
    args = rollout_parser().parse_intermixed_args(words[3:])
    RolloutConfig.from_yaml(REPO / args.config).with_overrides(args.overrides)  # a shipped config, valid
    return args


def test_the_ray_up_cluster_yaml_is_valid_by_rays_own_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cluster = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    jsonschema.validate(cluster, schema)
    assert cluster["head_node_type"] in cluster["available_node_types"]
    assert cluster["available_node_types"][cluster["head_node_type"]]["resources"] == {"CPU": 0}
    starts = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    assert starts.count("OPENAI_API_KEY=") == 2 and "secretsmanager" in starts  # the key from a secret store
    submit = next(line for line in (DEPLOY / "ray-cluster.yaml").read_text().splitlines() if "ray job submit" in line)
    assert "-- python -m rollout" in submit


def test_the_kuberay_rayjob_has_what_kuberay_requires_and_keys_only_from_secrets():
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    args = _rollout_command(spec["entrypoint"])
    assert args.out.startswith("s3://")  # object storage, not the pod's disk
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__  # the Ray TauGym installs, as in the image
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert all("rayStartParams" in group for group in groups)
    images = set()
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            images.add(container["image"])
            env = {e["name"]: e for e in container["env"]}
            for name in ("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]
    assert len(images) == 1  # every node runs the same TauGym image
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-" in dockerfile and "pip install --no-cache-dir ." in dockerfile
