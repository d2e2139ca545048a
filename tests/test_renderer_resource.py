"""How many render workers a step starts, and with how many threads each (resources/renderer.py)."""

from resources.renderer import cpu_cores, render_workers, threads_per_worker, visible_gpus
from resources.settings import PipelineSettings


def test_visible_gpus_follow_cuda_visible_devices_else_the_device_nodes(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert visible_gpus({}, tmp_path) == ["0", "1", "10"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}, tmp_path) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, tmp_path) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, tmp_path) == []
    assert visible_gpus({}, tmp_path / "no-such-folder") == []


def test_workers_default_to_one_per_gpu_else_half_the_cores():
    auto = PipelineSettings.from_preset("test")
    assert render_workers(auto, gpus=["0", "1", "2", "3"], cores=64) == 4
    assert render_workers(auto, gpus=[], cores=16) == 8
    assert render_workers(auto, gpus=[], cores=1) == 1
    assert render_workers(PipelineSettings.from_preset("test", render_workers=3), gpus=["0"], cores=2) == 3
    assert threads_per_worker(4, cores=16) == 4 and threads_per_worker(8, cores=2) == 1


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")            # a Kubernetes limit of 1.5 CPUs
    assert cpu_cores(quota) == min(2, cpu_cores(tmp_path / "absent"))
    quota.write_text("max 100000\n")
    assert cpu_cores(quota) == cpu_cores(tmp_path / "absent")
