"""Guided IG: a path traced by hand, a plain per-sample loop of the paper's Algorithm 1, equality with
integrated gradients where the paper's construction reduces to it (linear models, fraction 1,
max_dist 0), completeness within the left Riemann sum's error bound, and batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import xaibench.attribution.guided_ig as guided_ig_module
from tests.conftest import make_inputs, make_linear, make_net
from xaibench.attribution import attribute
from xaibench.core.devices import accumulation_dtype
from xaibench.core.errors import InputError
from xaibench.core.progress import reporting

TARGET = torch.tensor([0, 1, 2, 1])


class Logit(nn.Module):
    """Two logits: ``score(x)`` for class 0 and a constant 0 for class 1."""

    def __init__(self, score) -> None:
        super().__init__()
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.score(x.flatten(1))
        return torch.stack([value, torch.zeros_like(value)], dim=1)


def product_model() -> Logit:
    """f(x) = x1 x2 + x2 on two features: gradient (x2, x1 + 1)."""
    return Logit(lambda x: x[:, 0] * x[:, 1] + x[:, 1])


def guided(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, **params) -> torch.Tensor:
    return attribute("guided_ig", model, x, target=target, **params)


def test_unbounded_path_by_hand() -> None:
    """From 0 to (1, 1) in 2 steps, one feature per selection (fraction 0.25 of 2 features): step 1 has
    gradient (0, 1) and moves x1, the smaller, all the way (L1 distance 2 -> 1); step 2 at (1, 0) has
    gradient (0, 2) and moves x2. Attributions (0, 2), exactly f(1, 1) - f(0, 0) = 2; integrated
    gradients would give (1/2, 3/2)."""
    ours = guided(product_model(), torch.ones(1, 2), 0, n_steps=2, max_dist=1.0)
    torch.testing.assert_close(ours, torch.tensor([[0.0, 2.0]]), rtol=0, atol=1e-7)


def test_bounded_path_by_hand() -> None:
    """max_dist 0.25, 2 steps. Step 1 (gradient (0, 1) at 0): both features lag 0.5 - 0.25, so both
    go to 0.25 (distance 1.5), then x1 moves to the bound 0.75 (distance 1): attributions (0, 0.25).
    Step 2 (gradient (0.25, 1.75) at (0.75, 0.25)): x1 is pulled to 1, then x2 (distance 0):
    + (0.25 * 0.25, 1.75 * 0.75). Sum 1.625: a left Riemann sum, short of f(1, 1) - f(0, 0) = 2."""
    ours = guided(product_model(), torch.ones(1, 2), 0, n_steps=2, max_dist=0.25)
    torch.testing.assert_close(ours, torch.tensor([[0.0625, 1.5625]]), rtol=0, atol=1e-7)


def algorithm_1(model: nn.Module, x: torch.Tensor, target: int, n_steps: int, fraction: float,
                max_dist: float) -> np.ndarray:
    """The paper's Algorithm 1 with bounds, one sample, in the points' own coordinates (float64 numpy):
    a plain loop written from the paper's description, the oracle for the batched version."""
    end = x.double().numpy().ravel()
    start = np.zeros_like(end)
    point, attribution = start.copy(), np.zeros_like(end)
    total = np.abs(end - start).sum()

    def gradient(at: np.ndarray) -> np.ndarray:
        probe = torch.tensor(at, dtype=torch.float32).view(1, *x.shape).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(probe)[0, target], probe)
        return grad.double().numpy().ravel()

    for step in range(n_steps):
        grad = gradient(point)
        alpha = (step + 1) / n_steps
        lowest = start + (end - start) * max(alpha - max_dist, 0.0)
        highest = start + (end - start) * min(alpha + max_dist, 1.0)
        before = point.copy()
        behind = np.abs(point - start) < np.abs(lowest - start)
        point[behind] = lowest[behind]
        goal = total * (1 - alpha)
        while True:
            distance = np.abs(point - end).sum()
            if math.isclose(distance, goal, rel_tol=1e-9, abs_tol=1e-9):
                break
            keys = np.where(point == highest, np.inf, np.abs(grad))
            chosen = (keys <= np.quantile(keys, fraction, method="lower")) & np.isfinite(keys)
            room = (np.abs(highest - point) * chosen).sum()
            share = (distance - goal) / room
            if share > 1:
                point[chosen] = highest[chosen]
                continue
            point[chosen] += share * (highest - point)[chosen]
            break
        attribution += (point - before) * grad
    return attribution.reshape(x.shape)


@pytest.mark.parametrize("max_dist", [0.02, 0.1, 1.0])
@pytest.mark.parametrize("modality", ["image", "tabular"])
def test_batched_path_equals_a_plain_loop_of_algorithm_1(modality: str, max_dist: float) -> None:
    model, x = make_net(modality), make_inputs(modality)
    ours = guided(model, x, TARGET, n_steps=20, max_dist=max_dist, batch_size=3)
    loops = torch.stack([torch.from_numpy(algorithm_1(model, x[i], int(TARGET[i]), 20, 0.25, max_dist))
                         for i in range(len(x))]).float()
    tolerance = 1e-5 * float(loops.abs().max())
    torch.testing.assert_close(ours, loops, rtol=0, atol=tolerance)
    # not the straight line: integrated gradients on it differ by far more than that tolerance
    ig = attribute("path_integrated_gradients", model, x, target=TARGET, n_steps=20, method="riemann_left")
    assert (ours - ig).abs().max() > 100 * tolerance


@pytest.mark.parametrize("params", [{}, {"max_dist": 1.0, "fraction": 0.1}, {"baseline": "mean"}])
def test_linear_model_equals_integrated_gradients(modality: str, params: dict) -> None:
    """The gradient of a linear model is the same everywhere, so every path from b to x gives
    w * (x - b), as integrated gradients does."""
    model, x = make_linear(modality), make_inputs(modality)
    baseline = params.get("baseline", "zero")
    ig = attribute("integrated_gradients", model, x, target=TARGET, baseline=baseline)
    ours = guided(model, x, TARGET, n_steps=16, **params)
    torch.testing.assert_close(ours, ig, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("params", [{"fraction": 1.0}, {"max_dist": 0.0}])
def test_straight_line_settings_equal_left_riemann_integrated_gradients(modality: str, params: dict) -> None:
    """fraction 1 moves all features together and max_dist 0 allows no lead or lag: both walk the
    straight line, so Guided IG is integrated gradients with the left Riemann rule on n_steps points."""
    model, x = make_net(modality), make_inputs(modality)
    ig = attribute("path_integrated_gradients", model, x, target=TARGET, n_steps=12, method="riemann_left")
    ours = guided(model, x, TARGET, n_steps=12, **params)
    torch.testing.assert_close(ours, ig, rtol=0, atol=1e-6 * float(ig.abs().max()))


@pytest.mark.parametrize(("n_steps", "max_dist"), [(10, 0.02), (40, 0.02), (40, 0.2)])
def test_completeness_within_the_riemann_error_bound(n_steps: int, max_dist: float) -> None:
    """On f(x) = sum_i w_i x_i^2 a left Riemann step Delta along any path misses exactly
    sum_i w_i Delta_i^2. The path is monotone (features only move towards x: sum |Delta| = ||x - b||_1)
    and a feature moves at most (1/K + 2 max_dist) |x_i - b_i| in a step (it starts it at least at
    the previous lower bound and ends at most at the upper bound), so
    |sum attributions - (f(x) - f(b))| <= max|w| max|x - b| (1/K + 2 max_dist) ||x - b||_1."""
    weights = torch.linspace(-1.0, 2.0, 6)
    model = Logit(lambda x: (weights * x**2).sum(1))
    x = make_inputs("tabular") * 2 - 0.5
    ours = guided(model, x, 0, n_steps=n_steps, max_dist=max_dist)
    with torch.no_grad():
        gap = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    way = x.abs()
    bound = weights.abs().max() * way.amax(1) * (1 / n_steps + 2 * max_dist) * way.sum(1)
    error = (ours.sum(1) - gap).abs()
    assert (error <= bound + 1e-5).all(), (error, bound)
    assert (error > 0).any()  # a real Riemann sum, not a model the bound cannot test


class Float64Devices(TorchFunctionMode):
    """Records the device type of every float64 tensor that a torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor) and value.dtype == torch.float64:
                self.devices.add(value.device.type)
        return out


def test_the_path_state_is_float64_where_the_device_has_it() -> None:
    assert accumulation_dtype(torch.device("cpu")) == torch.float64
    assert accumulation_dtype(torch.device("cuda", 0)) == torch.float64
    assert accumulation_dtype(torch.device("mps")) == torch.float32  # no float64 on Apple's MPS


def test_float32_path_state_as_on_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the state in float32 (what MPS gets) no float64 tensor is made, and the path is the float64
    one up to float32 rounding."""
    model, x = make_net("image"), make_inputs("image")
    wide = guided(model, x, TARGET, n_steps=20)
    monkeypatch.setattr(guided_ig_module, "accumulation_dtype", lambda device: torch.float32)
    with Float64Devices() as recorded:
        narrow = guided(model, x, TARGET, n_steps=20)
    assert recorded.devices == set()
    torch.testing.assert_close(narrow, wide, rtol=0, atol=1e-4 * float(wide.abs().max()))
    assert not torch.equal(narrow, wide)


def test_input_at_the_baseline_gets_zero() -> None:
    """With x equal to its baseline (a constant input and the black baseline, its minimum) there is
    no path."""
    model, x = make_net("image"), torch.full((2, 2, 8, 8), 0.3)
    assert torch.equal(guided(model, x, 1, n_steps=5, baseline="black"), torch.zeros_like(x))


def test_batches_rows_and_progress() -> None:
    """One gradient pass of at most batch_size rows per step; the same maps for every batch size; one
    progress report per finished chunk of samples."""
    model, x = make_net("image"), make_inputs("image", n=5)
    target = torch.tensor([0, 1, 2, 1, 0])
    rows: list[int] = []
    handle = model[0].register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    reported: list[int] = []
    try:
        with reporting(reported.append):
            chunked = guided(model, x, target, n_steps=6, batch_size=2)
    finally:
        handle.remove()
    assert rows == [2] * 6 + [2] * 6 + [1] * 6 and reported == [2, 2, 1]
    for batch_size in (None, 1, 3):
        torch.testing.assert_close(guided(model, x, target, n_steps=6, batch_size=batch_size), chunked)


@pytest.mark.parametrize("params", [{"n_steps": 0}, {"fraction": 1.5}, {"fraction": -0.1}, {"max_dist": -1.0}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(InputError, match="guided_ig needs"):
        guided(make_net("tabular"), make_inputs("tabular"), TARGET, **params)
