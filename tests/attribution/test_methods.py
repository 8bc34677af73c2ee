"""The contract every registered method must pass, driven by ``METHODS.list()``.

A method registered anywhere is picked up here: for each modality it declares, on the small
non-linear toy nets, it must return a finite map of the input's shape, reproduce itself for a seed,
give the same result for every batch size (within assert_close), keep each forward pass within
``batch_size`` rows, report progress for every sample, leave no hook behind, and draw randomness
exactly when it says it is stochastic.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import SHAPES, make_inputs, make_linear, make_net, model_for
from xaibench.attribution import METHODS, attribute
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.progress import reporting

# Small sample counts and 2-wide feature groups keep the sampling methods fast. lime also gets a tiny
# Lasso penalty: the toy nets' logits move by ~0.01, and the default alpha 0.01 would zero every
# coefficient (see Lime).
FAST: dict[str, dict[str, Any]] = {
    "bee": {"rounds": 2, "n_steps": 4},
    "integrated_gradients": {"n_steps": 8},
    "path_integrated_gradients": {"n_steps": 8},
    "blur_ig": {"n_steps": 8},
    "guided_ig": {"n_steps": 8},
    "rise": {"n_masks": 16, "grid": 3},
    "shapley_value_sampling": {"n_samples": 2, "patch": 2},
    "lime": {"n_samples": 30, "patch": 2, "alpha": 1e-5},
    "kernel_shap": {"n_samples": 30, "patch": 2},
    "smoothgrad": {"n_samples": 4},
    "vargrad": {"n_samples": 4},
    "gradient_shap": {"n_samples": 4},
    "expected_gradients": {"n_samples": 4},
    # the llm asks a scripted server (llm_server below) and bypasses the user's response cache
    "llm": {"llm_model": "scripted", "n_samples": 200, "k": 3, "cache": False},
}
#: methods checked on the linear toy model: coefficients are a ground truth of linear models only
LINEAR_ONLY = {"coefficients"}
TARGET = torch.tensor([0, 1, 2, 1])
CASES = [(name, modality) for name, cls in METHODS.items() for modality in cls.modalities]
REFUSED = [
    (name, modality) for name, cls in METHODS.items() for modality in SHAPES if modality not in cls.modalities
]


LLM_URL: list[str] = []  # set by the llm_server fixture


@pytest.fixture(scope="module", autouse=True)
def llm_server():
    """A chat-completions server whose answer, a ranking of the toy's six features A..F, depends on
    the prompt: another neighbourhood (another seed) gets another answer. Started for every test here,
    so that no llm call can ever reach a real endpoint."""
    import hashlib

    from tests.llm.server import Answer, serving

    def answer(body: dict) -> Answer:
        digest = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()
        order = sorted("ABCDEF", key=lambda label: digest["ABCDEF".index(label)])
        return Answer(text="Answer: " + ", ".join(order))

    with serving(answer) as server:
        LLM_URL[:] = [server.url]
        yield server


def params_for(name: str, modality: str) -> dict[str, Any]:
    """FAST settings, plus a reference set for methods that declare ``needs_references``."""
    params = dict(FAST.get(name, {}))
    if name == "llm":
        params["base_url"] = LLM_URL[0]
    if getattr(METHODS.get(name), "needs_references", False):
        params["references"] = make_inputs(modality, n=5, seed=1)
    return params


def run(name: str, model: nn.Module, x: torch.Tensor, seed: int = 0, **kwargs: Any) -> torch.Tensor:
    by_rank = {len(shape) + 1: m for m, shape in SHAPES.items() if m != "text"}  # text is shaped like sequences
    modality = getattr(model, "input_modality", None) or by_rank[x.ndim]
    generator = torch.Generator().manual_seed(seed)
    params = params_for(name, modality) | kwargs
    return attribute(name, model, x, target=TARGET[: len(x)], generator=generator, **params)


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def test_registry_lists_the_standard_methods() -> None:
    standard = {
        "saliency", "input_x_gradient", "integrated_gradients", "deeplift", "guided_backprop",
        "deconvolution", "gradcam", "guided_gradcam", "occlusion", "feature_ablation",
        "shapley_value_sampling", "lime", "kernel_shap", "random", "path_integrated_gradients",
        "blur_ig", "smoothgrad", "vargrad", "gradient_shap", "expected_gradients",
    }  # fmt: skip
    assert standard <= set(METHODS.list())


@pytest.mark.parametrize(("name", "modality"), CASES)
def test_method_contract(name: str, modality: str) -> None:
    model = make_linear(modality) if name in LINEAR_ONLY else model_for(name, modality)
    x = make_inputs(modality)
    reported: list[int] = []
    with reporting(reported.append):
        full = run(name, model, x)
    assert sum(reported) == len(x)
    assert full.shape == x.shape and full.dtype == x.dtype
    assert torch.isfinite(full).all()
    assert torch.equal(run(name, model, x), full)

    rows: list[int] = []  # rows reaching the first layer (DeepLift's own pre-hook repacks the model's input)
    first = next(m for m in model.modules() if not list(m.children()))  # the first leaf: model[0], fc, conv_proj
    handle = first.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    try:
        chunked = run(name, model, x, batch_size=2)
    finally:
        handle.remove()
    torch.testing.assert_close(chunked, full)
    assert max(rows, default=0) <= 2
    assert hooks_left(model) == 0

    other_seed = run(name, model, x, seed=1)
    assert torch.equal(other_seed, full) != METHODS.get(name).stochastic


def test_unknown_parameter_names_the_closest() -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    with pytest.raises(UnknownNameError, match="did you mean 'n_steps'"):
        attribute("integrated_gradients", model, x, target=0, n_step=8)


def test_parameter_strings_convert() -> None:
    model, x = make_net("image"), make_inputs("image")
    as_text = attribute("integrated_gradients", model, x, target=1, n_steps="8", baseline="mean")
    typed = attribute("integrated_gradients", model, x, target=1, n_steps=8, baseline="mean")
    assert torch.equal(as_text, typed)
    signed = attribute("saliency", model, x, target=1, abs="false")
    assert torch.equal(signed, attribute("saliency", model, x, target=1, abs=False))
    assert (signed < 0).any()
    default_window = attribute("occlusion", model, x, target=1, window="none")
    assert torch.equal(default_window, attribute("occlusion", model, x, target=1))


def test_listing_methods_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from xaibench.attribution import METHODS, describe_params\n"
        "for name, cls in METHODS.items():\n"
        "    meta = (cls.modalities, cls.category, cls.signed, cls.needs_gradients, cls.stochastic)\n"
        "    assert cls.description and meta and describe_params(cls.Params) is not None, name\n"
        "assert len(METHODS.list()) >= 14\n"
        "assert 'torch._C' not in sys.modules, 'torch was imported'\n"
        "assert 'captum.attr' not in sys.modules, 'captum was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


class NoGradients(nn.Module):
    """A model whose output carries no graph, like one run under torch.no_grad or exported without it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)


@pytest.mark.parametrize("name", METHODS.list())
def test_model_without_gradients(name: str) -> None:
    modality = METHODS.get(name).modalities[0]
    model, x = NoGradients(model_for(name, modality)), make_inputs(modality)
    if METHODS.get(name).needs_gradients:
        with pytest.raises(IncompatibleError, match="gives no gradients"):
            run(name, model, x)
    else:
        assert torch.isfinite(run(name, model, x)).all()


@pytest.mark.parametrize(("name", "passes"), [("saliency", [4]), ("integrated_gradients", [32]), ("gradcam", [4])])
def test_gradient_methods_make_no_probe_pass(name: str, passes: list[int]) -> None:
    """The gradient check runs only when a method fails: on a model with gradients the forward passes
    are the method's own (a probe pass was a fifth of Grad-CAM's time on 8 ViT images)."""
    model, x = make_net("image"), make_inputs("image")
    rows: list[int] = []
    handle = model[0].register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    try:
        run(name, model, x)
    finally:
        handle.remove()
    assert rows == passes


@pytest.mark.parametrize(("name", "modality"), REFUSED)
def test_modality_outside_the_method_is_refused(name: str, modality: str) -> None:
    with pytest.raises(IncompatibleError, match=f"{name} does not apply to {modality} inputs"):
        run(name, make_net(modality), make_inputs(modality))


def test_gradcam_refuses_tabular() -> None:
    assert ("gradcam", "tabular") in REFUSED


@pytest.mark.parametrize("name", METHODS.list())
def test_nan_input_is_refused(name: str) -> None:
    modality = METHODS.get(name).modalities[0]
    x = make_inputs(modality)
    x[1].view(-1)[3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        run(name, make_net(modality), x)
