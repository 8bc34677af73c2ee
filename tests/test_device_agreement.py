"""Every method, metric and concept extraction on another device gives the CPU's result (issue 18).

Runs only where ``XAIBENCH_TEST_DEVICE`` names a device (``cuda``, ``cuda:1``, ``mps``);
benchmarks/device_check.py sets it on a machine with a GPU. The cases are tests/test_meta_device.py's.
The model and the inputs are moved to the device, the same CPU generator seeds the run, and the result
must come back equal to the CPU's within float tolerance: draws are made on the CPU and moved, so only
rounding may differ (other kernels and summation orders, TF32 convolutions). ``XAIBENCH_TEST_DEVICE=cpu``
runs the comparison on the CPU against itself, a smoke test of this file.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from tests.test_meta_device import CASES, CHEAP, FAST, METRIC_CASES, REFERENCES, explained, scored
from xaibench.attribution import METHODS

DEVICE = os.environ.get("XAIBENCH_TEST_DEVICE", "")
pytestmark = pytest.mark.skipif(not DEVICE, reason="set XAIBENCH_TEST_DEVICE to a device to compare with the CPU")
RTOL = 1e-3  # of the largest CPU value: float32 in other orders, TF32 convolutions on recent NVIDIA GPUs


def _close(got: torch.Tensor | None, expected: torch.Tensor | None, on_device: bool = True) -> None:
    """``got`` equals ``expected`` (the CPU's) within RTOL of its scale; maps must be on the device."""
    if expected is None:
        assert got is None
        return
    if on_device:
        assert got.device.type == torch.device(DEVICE).type, f"a result on {got.device}, not {DEVICE}"
    got = got.cpu()
    finite = expected[torch.isfinite(expected)]  # NaN scores (a constant curve) must be NaN on both
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    assert torch.allclose(got, expected, rtol=RTOL, atol=RTOL * scale + 1e-6, equal_nan=True), \
        float((got - expected).abs().max())


ON_DEVICE = [case for case in CASES if case[0] != "llm"]  # llm's model runs are its neighbourhood: covered by jobs


@pytest.mark.parametrize(("name", "modality", "variant"), ON_DEVICE,
                         ids=[f"{n}-{m}" + ("-" + ",".join(v) if v else "") for n, m, v in ON_DEVICE])
def test_a_method_on_the_device_gives_the_cpus_result(name: str, modality: str, variant: dict[str, Any]) -> None:
    params = FAST.get(name, {}) | variant
    if METHODS.get(name).needs_references or "train" in str(params.get("baseline", "")) \
            or "train" in str(params.get("arms", "")):
        params["references"] = REFERENCES[modality]
    _close(explained(name, modality, params, DEVICE), explained(name, modality, params, "cpu"))


@pytest.mark.parametrize(("name", "modality", "variant"), METRIC_CASES,
                         ids=[f"{n}-{m}" + ("-" + ",".join(v) if v else "") for n, m, v in METRIC_CASES])
def test_a_metric_on_the_device_gives_the_cpus_result(name: str, modality: str, variant: dict[str, Any]) -> None:
    params = CHEAP.get(name, {}) | variant
    got, expected = scored(name, modality, params, DEVICE), scored(name, modality, params, "cpu")
    for field in ("scores", "curve", "curve_x"):
        _close(getattr(got, field), getattr(expected, field), on_device=False)
