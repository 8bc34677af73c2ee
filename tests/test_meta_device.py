"""Every tensor the library creates lands on the device of the model or data it meets (issue 18).

Without a GPU: the models and the data live on the CPU and the test body runs with
``torch.set_default_device("meta")``, so any tensor created without an explicit device (``torch.zeros(n)``
instead of ``torch.zeros(n, device=x.device)``, a kernel built as an ``nn.Module`` inside a method) lands on
"meta" and the computation fails, or gives meta tensors. Random draws are made on CPU generators with an
explicit ``device="cpu"`` and moved, so a seed gives the same draws on any device: each result under the
meta default must be on the CPU and equal (within 1e-6) to the one computed with the default device "cpu".

Covered: every registered method (llm through a scripted local server), every registered metric (the
concept metrics on a real concept extraction), the baseline families, other substrates, baselines and
modalities as variants, concept extraction with every decomposition, importance estimator and activation
mode, and data read from the built-in sets and from files.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics import METRICS, MetricResult, compute
from xaibench.metrics.base import spatial_shape
from xaibench.metrics.concept import ConceptInputs, compute_concepts
from xaibench.metrics.stats import bootstrap_band, bootstrap_interval

from tests.conftest import make_inputs, make_text_model
from xaibench.attribution import METHODS, attribute
from xaibench.attribution.baselines import BASELINES, baseline_family
from xaibench.concepts.base import DECOMPOSITIONS, IMPORTANCES
from xaibench.concepts.extract import (
    Extraction,
    Settings,
    concept_head,
    concept_maps,
    extract,
)
from xaibench.concepts.split import MODES, Split, split_model
from xaibench.data.builtin import DATASETS
from xaibench.data.spec import load_data, select
from xaibench.models.vit import vit

SHAPES = {"image": (3, 8, 8), "sequence": (2, 16), "tabular": (6,)}
N = 2
TARGET = torch.tensor([0, 2])
SEED = 3


def image_net() -> nn.Module:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(4, 4, 3, padding=1),
        relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(), fc=nn.Linear(16, 3)))


def sequence_net() -> nn.Module:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv1d(2, 4, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv1d(4, 4, 3, padding=1),
        relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool1d(4), flatten=nn.Flatten(), fc=nn.Linear(16, 3)))


def tabular_net() -> nn.Module:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(6, 8), relu1=nn.ReLU(), fc2=nn.Linear(8, 3)))


def linear_net(shape: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(math.prod(shape), 3)))


# built at import, on the CPU, before any test switches the default device (the global RNG left as found)
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    MODELS = {"image": image_net().eval(), "sequence": sequence_net().eval(), "tabular": tabular_net().eval()}
    LINEAR = {modality: linear_net(shape).eval() for modality, shape in SHAPES.items()}
    #: the model of each kind a method may need (its ``model_kind``), per modality
    MODEL_KINDS = {"attention": {"image": vit(image_size=8, patch_size=2, num_layers=2, num_heads=2, hidden_dim=8,
                                               mlp_dim=16, num_classes=3, in_channels=3).eval()}}
    MODELS["text"] = make_text_model(0)  # tests/conftest.py's text transformer over token embeddings
    MODEL_KINDS["attention"]["text"] = MODELS["text"]
INPUTS = {m: torch.rand((N, *s), generator=torch.Generator().manual_seed(1)) for m, s in SHAPES.items()}
INPUTS["text"] = make_inputs("text", n=N)
REFERENCES = {m: torch.rand((5, *s), generator=torch.Generator().manual_seed(2)) for m, s in SHAPES.items()}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Hundreds of tiny ops: a second intra-op thread only waits for them, and on a busy 2-core machine
    that wait made this file 8x slower. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def on_meta() -> Iterator[Callable[..., Any]]:
    """``on_meta(fn, *args, **kwargs)`` calls fn with "meta" as the default device; the default is
    back to the CPU afterwards, even when fn (or the test) fails."""

    def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        torch.set_default_device("meta")
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_default_device(None)  # the initial state (the CPU), without a device mode left on

    try:
        yield call
    finally:
        torch.set_default_device(None)


def assert_same(got: torch.Tensor | None, expected: torch.Tensor | None) -> None:
    """``got`` (computed under the meta default) is on the CPU and equals ``expected`` within 1e-6."""
    if expected is None:
        assert got is None
        return
    assert got.device.type == "cpu", f"a result on {got.device}"
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6, equal_nan=True), (got, expected)


def assert_same_result(got: MetricResult, expected: MetricResult) -> None:
    for field in ("scores", "curve", "curve_x"):
        assert_same(getattr(got, field), getattr(expected, field))


def test_meta_default_catches_a_tensor_created_without_a_device(on_meta: Callable[..., Any]) -> None:
    """The premise: a factory without a device makes a meta tensor (no values), one with the data's
    device does not, and the default is the CPU again after a call, even one that fails."""
    x = INPUTS["tabular"]
    assert on_meta(torch.ones, 3).device.type == "meta"
    assert on_meta(lambda: x + torch.ones(x.shape[1:], device=x.device)).device.type == "cpu"

    def fails() -> None:
        assert torch.ones(1).device.type == "meta"
        raise ValueError("a failing call")

    with pytest.raises(ValueError, match="a failing call"):
        on_meta(fails)
    assert torch.zeros(1).device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# data: read onto the CPU (a job moves it to the model's device)


def test_data_is_read_onto_the_cpu(on_meta: Callable[..., Any], tmp_path: Path) -> None:
    rows = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    np.savez(tmp_path / "rows.npz", x=rows, y=np.arange(6) % 2)
    torch.save({"x": torch.from_numpy(rows), "y": torch.arange(6) % 2}, tmp_path / "rows.pt")
    (tmp_path / "rows.csv").write_text("a,b,target\n" + "".join(f"{i},{i / 2},{i % 2}\n" for i in range(5)))

    def read() -> list[torch.Tensor]:
        DATASETS.get("wine").cache_clear()  # built again, not handed back from the cache
        tensors = []
        for spec in ("wine:all", *(str(tmp_path / f"rows.{suffix}") for suffix in ("npz", "pt", "csv"))):
            data = select(load_data(spec), indices="0,2-3", n=2)
            tensors += [data.x, data.y, data.indices]
        return tensors

    for got, expected in zip(on_meta(read), read(), strict=True):
        assert_same(got, expected)


# ---------------------------------------------------------------------------------------------
# methods

FAST: dict[str, dict[str, Any]] = {
    "bee": {"rounds": 2, "n_steps": 4},
    "integrated_gradients": {"n_steps": 4},
    "path_integrated_gradients": {"n_steps": 4},
    "blur_ig": {"n_steps": 4},
    "guided_ig": {"n_steps": 4},
    "rise": {"n_masks": 8, "grid": 3},
    "shapley_value_sampling": {"n_samples": 2, "patch": 2},
    "lime": {"n_samples": 10, "patch": 2, "alpha": 1e-5},
    "kernel_shap": {"n_samples": 10, "patch": 2},
    "occlusion": {"window": 2},
    "feature_ablation": {"patch": 2},
    "smoothgrad": {"n_samples": 3},
    "vargrad": {"n_samples": 3},
    "gradient_shap": {"n_samples": 3},
    "expected_gradients": {"n_samples": 3},
    "llm": {"llm_model": "scripted", "n_samples": 64, "k": 3, "cache": False, "concurrency": 1},
}
#: other code paths of some methods: baselines, quadratures, BEE's arms and policy
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("integrated_gradients", "image", {"baseline": "mean", "method": "riemann_trapezoid"}),
    ("path_integrated_gradients", "image", {"baseline": "uniform", "method": "riemann_middle"}),
    ("path_integrated_gradients", "image", {"baseline": "blur"}),
    ("path_integrated_gradients", "image", {"baseline": "train_sample"}),
    ("path_integrated_gradients", "tabular", {"baseline": "gaussian"}),
    ("path_integrated_gradients", "tabular", {"baseline": "train_mean"}),
    ("feature_ablation", "image", {"baseline": "white", "patch": 3}),
    ("blur_ig", "sequence", {}),
    ("rise", "sequence", {"baseline": "mean"}),
    ("gradcam", "sequence", {}),
    ("occlusion", "image", {"baseline": "black", "window": 3}),
    ("gradient_shap", "image", {"baselines": "black", "stdev": 0.1}),
    ("bee", "image", {"arms": "zero,constant,uniform,gaussian,blur,train_sample", "adaptive": False}),
    ("bee", "tabular", {"metric": "insertion"}),
    ("llm", "tabular", {"strategy": "e-icl", "examples": 2, "shots": 4}),
    ("integrated_gradients", "text", {}),
    ("occlusion", "text", {}),
    ("lime", "text", {}),
    ("attention_rollout", "text", {}),
    ("attention_relevance", "text", {}),
    ("bee", "text", {}),
]
#: every method on images and tabular rows (the sequence paths of the blur and CAM methods are variants)
CASES = [(name, modality, {}) for name, cls in sorted(METHODS.items()) for modality in ("image", "tabular")
         if modality in cls.modalities] + VARIANTS


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    """A scripted chat-completions server whose ranking depends on the prompt (the neighbourhood)."""
    import hashlib

    from tests.llm.server import Answer, serving

    def answer(body: dict) -> Answer:
        digest = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()
        return Answer(text="Answer: " + ", ".join(sorted("ABCDEF", key=lambda c: digest["ABCDEF".index(c)])))

    with serving(answer) as server:
        yield server.url


def placed(module: nn.Module, device: str) -> nn.Module:
    """``module`` itself on the CPU, else a copy on ``device`` (tests/test_device_agreement.py)."""
    return module if device == "cpu" else copy.deepcopy(module).to(device)


def explained(name: str, modality: str, params: dict[str, Any], device: str = "cpu") -> torch.Tensor:
    kind = METHODS.get(name).model_kind  # the kind of model a method needs, if any
    if name == "coefficients":
        model = LINEAR[modality]  # a ground truth of linear models
    else:
        model = MODELS[modality] if kind is None else MODEL_KINDS[kind][modality]
    params = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in params.items()}
    return attribute(name, placed(model, device), INPUTS[modality].to(device), target=TARGET.to(device),
                     batch_size=3, generator=torch.Generator().manual_seed(SEED), **params)


@pytest.mark.parametrize(("name", "modality", "variant"), CASES,
                         ids=[f"{n}-{m}" + ("-" + ",".join(v) if v else "") for n, m, v in CASES])
def test_method_creates_tensors_on_the_inputs_device(name: str, modality: str, variant: dict[str, Any],
                                                     on_meta: Callable[..., Any], request: pytest.FixtureRequest,
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    params = FAST.get(name, {}) | variant
    if name == "llm":
        monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(tmp_path / "cache"))
        params["base_url"] = request.getfixturevalue("llm_url")
    if METHODS.get(name).needs_references or "train" in str(params.get("baseline", "")) \
            or "train" in str(params.get("arms", "")):
        params["references"] = REFERENCES[modality]
    expected = explained(name, modality, params)
    assert_same(on_meta(explained, name, modality, params), expected)


def test_baseline_families_draw_on_the_cpu_and_move(on_meta: Callable[..., Any]) -> None:
    generator_seed = 5
    for name, cls in sorted(BASELINES.items()):
        for modality in sorted(set(cls.modalities) & set(SHAPES)):
            family = baseline_family(name, REFERENCES[modality])

            def draw(family: Any = family, modality: str = modality) -> torch.Tensor:
                return family.sample(INPUTS[modality], torch.Generator().manual_seed(generator_seed), 2)

            assert_same(on_meta(draw), draw())


# ---------------------------------------------------------------------------------------------
# attribution metrics

#: the cheapest settings: few samples, runs, perturbations, segments, steps
CHEAP: dict[str, dict[str, Any]] = {
    "avg_sensitivity": {"samples": 2},
    "max_sensitivity": {"samples": 2},
    "local_lipschitz": {"samples": 2},
    "relative_input_stability": {"samples": 2},
    "relative_output_stability": {"samples": 2},
    "relative_representation_stability": {"samples": 2},
    "faithfulness_correlation": {"runs": 4},
    "monotonicity_correlation": {"samples": 2},
    "infidelity": {"samples": 2},
    "pgi": {"samples": 2},
    "pgu": {"samples": 2},
    "sensitivity_n": {"runs": 4, "n_sizes": 2},
    "irof": {"n_segments": 4},
    "region_perturbation": {"regions": 4},
    "road": {"percentages": "10:100:40"},
}
METRIC_VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("deletion", "tabular", {}),
    ("deletion", "image", {"substrate": "uniform"}),
    ("deletion", "image", {"substrate": "mean", "patch": 2}),
    ("insertion", "sequence", {"substrate": "blur"}),
    ("infidelity", "image", {"samples": 2, "perturbation": "patch", "patch_size": 2}),
    ("random_logit", "image", {"similarity": "pearson"}),
    ("irof", "image", {"n_segments": 4, "substrate": "blur"}),
    ("road", "sequence", {"percentages": "10:100:40", "order": "lerf"}),
    ("infidelity", "tabular", {"samples": 2}),
    ("random_logit", "tabular", {}),
    ("monotonicity", "tabular", {"substrate": "uniform"}),
    ("faithfulness_correlation", "image", {"runs": 4, "output": "top1"}),
    ("deletion", "text", {}),
    ("comprehensiveness", "text", {}),
    ("substitution_sensitivity", "text", {"samples": 2}),
]
ATTRIBUTION = [name for name in sorted(METRICS.list()) if not METRICS.get(name).concept]
#: every metric on images (all but the text-only ones take them), other modalities and parameters as variants
METRIC_CASES = [(name, "image", {}) for name in ATTRIBUTION if "image" in METRICS.get(name).modalities] + METRIC_VARIANTS


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return attribute("saliency", model, x, target=target)


def scored(name: str, modality: str, params: dict[str, Any], device: str = "cpu") -> MetricResult:
    x, model, target = INPUTS[modality].to(device), placed(MODELS[modality], device), TARGET.to(device)
    attributions = attribute("input_x_gradient", model, x, target=target)
    masks = torch.zeros((N, *spatial_shape(x)), dtype=torch.bool, device=x.device)
    masks.view(N, -1)[:, : masks[0].numel() // 3] = True
    reference = attribute("saliency", model, x, target=target)
    return compute(name, model, x, attributions, target=target, masks=masks, explainer=saliency,
                   reference=reference, batch_size=3, generator=torch.Generator().manual_seed(SEED), **params)


@pytest.mark.parametrize(("name", "modality", "variant"), METRIC_CASES,
                         ids=[f"{n}-{m}" + ("-" + ",".join(v) if v else "") for n, m, v in METRIC_CASES])
def test_metric_creates_tensors_on_the_inputs_device(name: str, modality: str, variant: dict[str, Any],
                                                     on_meta: Callable[..., Any]) -> None:
    params = CHEAP.get(name, {}) | variant
    assert_same_result(on_meta(scored, name, modality, params), scored(name, modality, params))


def test_bootstrap_intervals_draw_on_the_cpu(on_meta: Callable[..., Any]) -> None:
    """The reports' bootstrap intervals and bands of metric scores."""
    rows = torch.rand((6, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def intervals() -> list[torch.Tensor]:
        low, high = bootstrap_interval(rows[:, 0], torch.Generator().manual_seed(SEED), resamples=50)
        band = bootstrap_band(rows, torch.Generator().manual_seed(SEED), resamples=50)
        return [torch.tensor([low, high], dtype=torch.float64, device="cpu"), *band]

    for got, expected in zip(on_meta(intervals), intervals(), strict=True):
        assert_same(got, expected)


# ---------------------------------------------------------------------------------------------
# concept extraction and the concept metrics

CONCEPT_CHEAP: dict[str, dict[str, Any]] = {"stability": {"n_bootstrap": 2}, "c_mufidelity": {"n_subsets": 4}}
IMAGES = torch.rand((4, *SHAPES["image"]), generator=torch.Generator().manual_seed(4))
IMAGE_TARGET = torch.tensor([0, 1, 2, 0])


def split() -> Split:
    return split_model(MODELS["image"], "relu2", IMAGES[:2])


def extracted(settings: Settings) -> tuple[Extraction, Split]:
    at = split()
    return extract(at, IMAGES, IMAGE_TARGET, settings), at


def extraction_tensors(settings: Settings) -> list[torch.Tensor]:
    found, at = extracted(settings)
    return [found.bank.dictionary, found.bank.offset, found.activations, found.codes, found.maps,
            found.image_codes, found.local, found.importance, concept_maps(at, found.bank, IMAGES[:2])]


#: every decomposition, importance estimator and activation mode; crops of half the image side keep the
#: patches mode at 9 crops per image
EXTRACTIONS = [Settings(method=m, n_concepts=3, importance="gradient_input", patch_size=0.5)
               for m in sorted(DECOMPOSITIONS.list()) if m != "nmf"] \
    + [Settings(n_concepts=3, importance=i, patch_size=0.5) for i in sorted(IMPORTANCES.list())] \
    + [Settings(method="pca", n_concepts=3, mode=mode, importance="occlusion") for mode in MODES if mode != "patches"]


@pytest.mark.parametrize("settings", EXTRACTIONS, ids=[f"{s.method}-{s.importance}-{s.mode}" for s in EXTRACTIONS])
def test_concept_extraction_creates_tensors_on_the_inputs_device(settings: Settings,
                                                                  on_meta: Callable[..., Any]) -> None:
    for got, expected in zip(on_meta(extraction_tensors, settings), extraction_tensors(settings), strict=True):
        assert_same(got, expected)


def concept_scored(name: str) -> MetricResult:
    found, at = extracted(Settings(method="pca", n_concepts=3, importance="occlusion", patch_size=0.5))
    inputs = ConceptInputs(activations=found.activations, codes=found.codes, bank=found.bank,
                           head=concept_head(at, found.bank), image_codes=found.image_codes,
                           importances=found.local, target=IMAGE_TARGET, batch_size=3)
    return compute_concepts(name, inputs, generator=torch.Generator().manual_seed(SEED),
                            **CONCEPT_CHEAP.get(name, {}))


@pytest.mark.parametrize("name", [name for name in sorted(METRICS.list()) if METRICS.get(name).concept])
def test_concept_metric_creates_tensors_on_the_inputs_device(name: str, on_meta: Callable[..., Any]) -> None:
    assert_same_result(on_meta(concept_scored, name), concept_scored(name))
