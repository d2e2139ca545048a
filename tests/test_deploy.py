"""The shipped deployment files are valid for the libraries that read them."""

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_k8s_executor_config_validates_against_dagster_k8s():
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    config = yaml.safe_load((DEPLOY / "k8s/run_config.yaml").read_text())["execution"]["config"]
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    for step in ("optimized_poses", "rendered_views"):
        step_config = UserDefinedDagsterK8sConfig.from_dict(config["per_step_k8s_config"][step])
        limits = step_config.container_config["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert step_config.pod_spec_config["node_selector"]
    assert not process_config(k8s_job_executor.config_schema.config_type, dict(config, max_concurent=3)).success


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
    assert values["postgresql"]["postgresqlDatabase"] == instance["storage"]["postgres"]["postgres_db"]["db_name"]
    assert values["global"]["postgresqlSecretName"] == instance["run_launcher"]["config"]["postgres_password_secret"]
