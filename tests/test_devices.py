"""--device and --dtype: what a spec resolves to on a machine, and what a precision allows."""

from __future__ import annotations

import pytest
import torch

from xaibench.core import devices, distributed
from xaibench.core.errors import InputError
from xaibench.core.precision import autocast, check_precision
from xaibench.attribution import METHODS
from xaibench.metrics import METRICS


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine whose torch sees two CUDA GPUs (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_cpu_is_cpu_and_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device(None) == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(two_gpus, monkeypatch):
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")


def test_under_torchrun_each_process_takes_its_local_gpu(two_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve_device("auto") == torch.device("cuda", 1)
    assert devices.resolve_device("cuda") == torch.device("cuda", 1)
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept


def test_absent_devices_and_unknown_names_are_one_line_errors(two_gpus, monkeypatch):
    with pytest.raises(InputError, match=r"cuda:2: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        devices.resolve_device("cuda:2")
    with pytest.raises(InputError, match="must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        devices.resolve_device("gpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(InputError, match="no MPS device"):
        devices.resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        devices.resolve_device("cuda")


def test_the_process_group_backend_follows_the_device(two_gpus, monkeypatch):
    assert distributed.on_cuda(["explain", "m.pt"])  # auto on a GPU machine
    assert distributed.on_cuda(["explain", "m.pt", "--device", "cuda:1"])
    assert not distributed.on_cuda(["explain", "m.pt", "--device=cpu"])
    monkeypatch.setenv("LOCAL_RANK", "2")  # a third process on a two-GPU machine has none of its own
    assert not distributed.on_cuda(["explain", "m.pt"])


def test_a_cuda_session_joins_with_nccl_on_the_local_gpu_and_raises_on_timeouts(monkeypatch):
    joined, chosen = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "x"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kw: joined.append(backend))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: None)
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(1, 2))
    for cuda in (True, False):
        with distributed.session(cuda=cuda):
            pass
    assert joined == ["nccl", "gloo"] and chosen == [1]
    import os

    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "2"


def test_precision_names_and_float32_only_parts():
    assert check_precision("bfloat16", [METHODS.get("saliency"), METRICS.get("deletion")]) == "bfloat16"
    assert check_precision("float32", [METHODS.get("deeplift"), METRICS.get("completeness")]) == "float32"
    with pytest.raises(InputError, match="deeplift, completeness need float32"):
        check_precision("float16", [METHODS.get("deeplift"), METRICS.get("completeness")])
    with pytest.raises(InputError, match="--dtype must be one of float32, bfloat16, float16, got 'half'"):
        check_precision("half")


def test_autocast_lowers_only_the_passes_in_its_block():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    with autocast("bfloat16", torch.device("cpu")):
        assert layer(x).dtype == torch.bfloat16
    with autocast("float32", torch.device("cpu")):
        assert layer(x).dtype == torch.float32
    assert layer(x).dtype == torch.float32


def test_module_device_and_cpu_copies():
    assert devices.module_device(torch.nn.ReLU()) == torch.device("cpu")
    with torch.device("meta"):
        assert devices.module_device(torch.nn.Linear(2, 2)) == torch.device("meta")
    out = devices.on_cpu({"a": torch.arange(6).view(2, 3).T})
    assert out["a"].is_contiguous() and out["a"].device.type == "cpu"


def test_float64_work_refuses_mps_in_one_line(monkeypatch):
    assert devices.require_float64(torch.device("cpu"), "x") == torch.device("cpu")
    with pytest.raises(InputError, match="concept extraction computes in float64, which MPS does not have"):
        devices.require_float64(torch.device("mps"), "concept extraction")
