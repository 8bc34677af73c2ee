"""Randomisation metrics: MPRT against Quantus on the same randomised models, SSIM against skimage,
random_logit against Quantus, and exact values for explanations whose dependence on the model or the
class is known."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics.base import compute
from xaibench.metrics.randomisation import cascading_randomisation, parameterised_layers, ssim

from tests.conftest import make_inputs, make_linear, make_net
from tests.metrics.test_robustness import signed_saliency


def quantus_explainer(explainer):
    def explain_func(model, inputs, targets, **_):
        return explainer(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    return explain_func


def identity(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return inputs.clone()


# ---------------------------------------------------------------------------------------------
# mprt


def test_mprt_matches_quantus_on_the_same_randomised_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import quantus
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, x = make_net("image"), make_inputs("image", 3)
    t = model(x).argmax(1)
    a = signed_saliency(model, x, t)
    ours = compute("mprt", model, x, a, target=t, explainer=signed_saliency, abs=False,
                   generator=torch.Generator().manual_seed(5))

    def same_models(self: PyTorchModel, order: str, seed: int):
        return cascading_randomisation(self.model, torch.Generator().manual_seed(5))

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", same_models)
    data = dict(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(),
                explain_func=quantus_explainer(signed_saliency), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.MPRT(abs=False, normalise=False, disable_warnings=True)(**data)
        average = quantus.MPRT(abs=False, normalise=False, disable_warnings=True,
                               return_average_correlation=True)(**data)

    layers = [name for name, _ in reversed(parameterised_layers(model))]
    assert list(theirs) == ["original", *layers]
    per_layer = np.array([theirs[name] for name in layers]).T
    np.testing.assert_allclose(ours.curve.numpy(), per_layer, rtol=1e-4)
    np.testing.assert_allclose(ours.scores.numpy(), ours.curve.mean(1).numpy(), rtol=1e-12)
    # Quantus's average also counts the unrandomised model (its "original" key is not skipped)
    counted = np.array([theirs[name] for name in theirs]).mean(0)
    np.testing.assert_allclose(average, counted, rtol=1e-6)
    assert not np.allclose(average, ours.scores.numpy(), rtol=1e-3)


def test_mprt_randomises_the_layers_quantus_does_in_the_same_order() -> None:
    from quantus.helpers.model.pytorch_model import PyTorchModel

    for model in (make_net("image"), make_net("tabular")):
        wrapped = PyTorchModel(model, channel_first=True, softmax=False, device="cpu")
        theirs = [name for name, _ in wrapped.get_random_layer_generator(order="top_down")]
        assert [name for name, _ in cascading_randomisation(model, torch.Generator())] == theirs


def test_cascading_randomisation_leaves_the_model_and_torchs_rng_alone() -> None:
    model = make_net("sequence")
    before = copy.deepcopy(model.state_dict())
    rng = torch.random.get_rng_state()
    steps = [copy.deepcopy(randomised.state_dict())
             for _, randomised in cascading_randomisation(model, torch.Generator().manual_seed(1))]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state())
    # cumulative from the output: after step i the last i + 1 layers differ from the model
    layers = [name for name, _ in parameterised_layers(model)]
    for i, state in enumerate(steps):
        changed = {k.rsplit(".", 1)[0] for k in state if not torch.equal(state[k], before[k])}
        assert changed == set(layers[len(layers) - 1 - i:])


def test_mprt_of_a_model_independent_explanation_is_one_at_every_layer(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, 3)
    result = compute("mprt", model, x, x.clone(), target=0, explainer=identity)
    layers = len(parameterised_layers(model))
    torch.testing.assert_close(result.curve, torch.ones(3, layers, dtype=torch.float64))
    assert torch.equal(result.curve_x, torch.arange(1.0, result.curve.shape[1] + 1, dtype=torch.float64))


def test_mprt_saliency_decorrelates() -> None:
    model, x = make_linear("image"), make_inputs("image", 2)
    a = signed_saliency(model, x, torch.zeros(2, dtype=torch.long))  # the weight row of class 0
    for seed in range(5):
        result = compute("mprt", model, x, a, target=0, explainer=signed_saliency, abs=False,
                         generator=torch.Generator().manual_seed(seed))
        # its only layer redrawn: the new weight row is independent of the old one; over 128 features
        # a rank correlation has a standard deviation of about 0.09
        assert result.scores.abs().max() < 0.3


# ---------------------------------------------------------------------------------------------
# SSIM and random logit


def test_ssim_equals_skimage() -> None:
    from skimage.metrics import structural_similarity

    generator = torch.Generator().manual_seed(0)
    a = torch.rand((3, 2, 9, 11), generator=generator, dtype=torch.float64)
    b = a + 0.3 * torch.randn((3, 2, 9, 11), generator=generator, dtype=torch.float64)
    b[2] = a[2]
    expected = []
    for one, two in zip(a.numpy(), b.numpy()):
        data_range = max(one.max(), two.max()) - min(one.min(), two.min())
        expected.append(structural_similarity(one, two, data_range=data_range, channel_axis=0))
    np.testing.assert_allclose(ssim(a, b).numpy(), expected, rtol=1e-10)
    assert ssim(a, b)[2] == pytest.approx(1.0)


class TwoClassNet(nn.Module):
    """A small conv net with two classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(3 * 64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def quantus_random_logit(model, x, t, a, **kwargs) -> np.ndarray:
    import quantus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.RandomLogit(num_classes=2, abs=False, normalise=False, disable_warnings=True,
                                     **kwargs)
        return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(),
                                 explain_func=quantus_explainer(signed_saliency), device="cpu"))


def test_random_logit_matches_quantus_with_pearson() -> None:
    from quantus.functions.similarity_func import correlation_pearson

    model, x = TwoClassNet().eval(), torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 0])  # two classes: the other class is the only one left
    a = signed_saliency(model, x, t)
    ours = compute("random_logit", model, x, a, target=t, explainer=signed_saliency, similarity="pearson")
    theirs = quantus_random_logit(model, x, t, a, similarity_func=correlation_pearson)
    np.testing.assert_allclose(ours.scores.numpy(), theirs, rtol=1e-4)


def test_random_logit_ssim_is_over_the_image_where_quantus_flattens_it() -> None:
    from skimage.metrics import structural_similarity

    model, x = TwoClassNet().eval(), torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 0])
    a = signed_saliency(model, x, t)
    other = signed_saliency(model, x, 1 - t)
    ours = compute("random_logit", model, x, a, target=t, explainer=signed_saliency).scores.numpy()
    theirs = quantus_random_logit(model, x, t, a)

    def skimage_ssim(one: np.ndarray, two: np.ndarray) -> float:
        data_range = max(one.max(), two.max()) - min(one.min(), two.min())
        return structural_similarity(one, two, data_range=float(data_range))

    over_images = [skimage_ssim(p[0], q[0]) for p, q in zip(a.double().numpy(), other.double().numpy())]
    over_rows = [skimage_ssim(p.ravel(), q.ravel()) for p, q in zip(a.numpy(), other.numpy())]
    np.testing.assert_allclose(ours, over_images, rtol=1e-4)
    np.testing.assert_allclose(theirs, over_rows, rtol=1e-4)
    assert not np.allclose(ours, theirs, rtol=1e-2)


def orthogonal_linear(modality: str, classes: int) -> nn.Module:
    """A linear model whose class weight rows are orthogonal and have zero mean."""
    model = make_linear(modality)
    features = model.fc.in_features
    rows = torch.randn((classes, features), generator=torch.Generator().manual_seed(0))
    rows -= rows.mean(1, keepdim=True)
    basis, _ = torch.linalg.qr(torch.cat([torch.ones(features, 1), rows.T], dim=1))
    model.fc = nn.Linear(features, classes)
    with torch.no_grad():
        model.fc.weight.copy_(basis[:, 1:].T)  # orthogonal to each other and to the constant vector
    return model.eval()


@pytest.mark.parametrize("modality", ["sequence", "tabular"])
def test_random_logit_of_orthogonal_class_weights_is_uncorrelated(modality: str) -> None:
    model, x = orthogonal_linear(modality, 3), make_inputs(modality, 6)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    a = signed_saliency(model, x, target)  # the target's weight row
    scores = compute("random_logit", model, x, a, target=target, explainer=signed_saliency).scores
    torch.testing.assert_close(scores, torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-6)


def test_random_logit_of_an_image_is_the_ssim_of_the_class_weights() -> None:
    from skimage.metrics import structural_similarity

    model, x = orthogonal_linear("image", 2), make_inputs("image", 2)
    target = torch.tensor([0, 1])
    a = signed_saliency(model, x, target)
    weights = [model.weight(c).double().numpy() for c in (0, 1)]
    data_range = float(max(w.max() for w in weights) - min(w.min() for w in weights))
    expected = structural_similarity(*weights, data_range=data_range, channel_axis=0)
    scores = compute("random_logit", model, x, a, target=target, explainer=signed_saliency).scores
    torch.testing.assert_close(scores, torch.full((2,), expected, dtype=torch.float64), rtol=1e-4, atol=0)


def test_random_logit_of_a_class_independent_explanation_is_one(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, 3)
    scores = compute("random_logit", model, x, x.clone(), target=0, explainer=identity).scores
    torch.testing.assert_close(scores, torch.ones(3, dtype=torch.float64))


def test_random_logit_draws_another_class_uniformly_whatever_the_batch_size() -> None:
    model, x = make_net("tabular"), make_inputs("tabular", 300)
    target = torch.arange(300) % 3
    drawn = {}
    for batch_size in (None, 7):
        targets: list[torch.Tensor] = []

        def explainer(m: nn.Module, inputs: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
            assert batch_size is None or len(inputs) <= batch_size
            targets.append(other)
            return inputs.clone()

        compute("random_logit", model, x, x, target=target, explainer=explainer, batch_size=batch_size)
        drawn[batch_size] = torch.cat(targets)
    assert torch.equal(drawn[None], drawn[7])
    other = drawn[None]
    assert (other != target).all()
    for c in range(3):  # both other classes drawn about equally often (50 of 100 expected)
        assert 30 < (other[target == c] == (c + 1) % 3).sum() < 70
