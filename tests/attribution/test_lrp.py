"""Layer-wise relevance propagation: its rules by hand, its conservation, its canonization, and equality
with captum's LRP where the definitions coincide."""

from __future__ import annotations

import copy

import captum.attr
import pytest
import torch
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule
from torch import nn

from tests.conftest import make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.attribution.canonize import canonical_copy
from xaibench.attribution.lrp import (
    COMPOSITES,
    LRP,
    STABILIZER,
    Epsilon,
    Flat,
    Gamma,
    ZBox,
    ZPlus,
    layer_rules,
    passing,
    relevance,
    rule_hook,
)
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.models.resnet import resnet18
from xaibench.models.vit import vit

TARGET = torch.tensor([0, 1, 2, 1])


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int = TARGET, **params) -> torch.Tensor:
    return attribute("lrp", model, x, target=target, **params)


def linear(weight: list[list[float]], bias: list[float] | None = None) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def two_layer_net() -> nn.Module:
    """x (2) -> W1 (3 x 2) -> ReLU -> W2 (2 x 3), no biases."""
    return nn.Sequential(linear([[1, -1], [2, 1], [-1, 3]]), nn.ReLU(), linear([[1, -2, 0.5], [1, 2, -3]])).eval()


def without_biases(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None and not isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.bias.zero_()
    return model


def summed(relevance_map: torch.Tensor) -> torch.Tensor:
    return relevance_map.flatten(1).sum(1)


def picked_logits(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


# ---------------------------------------------------------------------------------------------
# the rules by hand


def test_lrp_0_and_epsilon_by_hand_on_a_two_layer_relu_net() -> None:
    """x = (1, 2): z1 = (-1, 4, 5), a = (0, 4, 5); logit 0 = 0 - 8 + 2.5 = -5.5. LRP-0 hands the output
    layer's contributions (0, -8, 2.5) down; unit 2 (z 4, inputs 2 and 2) gives (-4, -4), unit 3 (z 5,
    inputs -1 and 6) gives (-0.5, 3): (-4.5, -1), which is gradient x input and sums to the logit."""
    model, x = two_layer_net(), torch.tensor([[1.0, 2.0]])
    exact = lrp(model, x, 0, composite="epsilon", epsilon=0.0)
    torch.testing.assert_close(exact, torch.tensor([[-4.5, -1.0]]))
    torch.testing.assert_close(exact, attribute("input_x_gradient", model, x, target=0))
    # epsilon 0.5: the output layer hands down (0, -8, 2.5) * -5.5 / -6, each hidden unit its share of
    # that over z + 0.5: 4.5 and 5.5
    stabilised = lrp(model, x, 0, composite="epsilon", epsilon=0.5)
    hidden = (-8 * 5.5 / 6, 2.5 * 5.5 / 6)
    expected = [2 / 4.5 * hidden[0] - 1 / 5.5 * hidden[1], 2 / 4.5 * hidden[0] + 6 / 5.5 * hidden[1]]
    torch.testing.assert_close(stabilised, torch.tensor([expected]))


def test_alpha1beta0_by_hand_keeps_positive_contributions_of_signed_inputs() -> None:
    """x = (1, -1): a = (2, 1, 0); logit 1 = 2 + 2 - 0 = 4, all contributions positive: (2, 2) to units 1
    and 2. Unit 1's contributions (1, 1) are both positive (-1 x -1 counts), unit 2's are (2, -1): its 2
    goes to x_1 alone. Input relevance (1 + 2, 1) = (3, 1)."""
    model, x = two_layer_net(), torch.tensor([[1.0, -1.0]])
    torch.testing.assert_close(lrp(model, x, 1, composite="alpha1beta0"), torch.tensor([[3.0, 1.0]]))


def test_z_plus_bias_absorbs_its_positive_part_only() -> None:
    """z = 2 - 1 + b. A bias +1 joins the positive contributions (z+ = 3): x_1 gets 2/3 of the logit 2; a
    bias -0.5 stays out of the denominator: x_1 gets the whole logit 0.5."""
    x, relevance_out = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0]])
    (absorbed,) = ZPlus()(linear([[2, -1]], [1.0]), (x,), relevance_out)
    torch.testing.assert_close(absorbed, torch.tensor([[4 / 3, 0.0]]))
    (kept,) = ZPlus()(linear([[2, -1]], [-0.5]), (x,), torch.tensor([[0.5]]))
    torch.testing.assert_close(kept, torch.tensor([[0.5, 0.0]]))


def test_gamma_rule_by_hand() -> None:
    """W = ((1, -1), (-1, 0.5)), b = (0.5, -1), x = (2, 1): z = (1.5, -2.5). gamma 0.5: output 1 (z > 0)
    boosts its positive parts: (3, -1) and bias 0.75 over 2.75; output 2 (z < 0) its negative ones:
    (-3, 0.5) and bias -1.5 over -4."""
    layer, x = linear([[1, -1], [-1, 0.5]], [0.5, -1.0]), torch.tensor([[2.0, 1.0]])
    (relevance_in,) = Gamma(0.5)(layer, (x,), torch.tensor([[1.1, 2.0]]))
    expected = [3 / 2.75 * 1.1 + -3 / -4 * 2.0, -1 / 2.75 * 1.1 + 0.5 / -4 * 2.0]
    torch.testing.assert_close(relevance_in, torch.tensor([expected]))


def test_flat_rule_spreads_each_output_over_its_receptive_field() -> None:
    """A 3-wide convolution with padding 1 over 4 positions: the edge outputs read 2 inputs, the inner
    ones 3, whatever the weights and the input values."""
    conv = nn.Conv1d(1, 1, 3, padding=1)
    (relevance_in,) = Flat()(conv, (torch.tensor([[[5.0, -2.0, 0.0, 7.0]]]),), torch.tensor([[[1.0, 2, 3, 4]]]))
    expected = [1 / 2 + 2 / 3, 1 / 2 + 2 / 3 + 3 / 3, 2 / 3 + 3 / 3 + 4 / 2, 3 / 3 + 4 / 2]
    torch.testing.assert_close(relevance_in, torch.tensor([[expected]]))
    assert relevance_in.sum() == pytest.approx(10.0)


def test_z_box_rule_by_hand() -> None:
    """w = (2, -1, 0.5), x = (0.5, 0.25, 0.75), the bias 3 left out. In [0.1, 0.9]: numerators
    x w - l w+ - h w- = (1 - 0.2, -0.25 + 0.9, 0.375 - 0.05) = (0.8, 0.65, 0.325), sum 1.775. In the
    sample's own range [0.25, 0.75]: (1 - 0.5, -0.25 + 0.75, 0.375 - 0.125) = (0.5, 0.5, 0.25), sum 1.25.
    Both bounds are non-zero and the terms are not proportional to x w: giving the low bound w- and the
    high bound w+ would give (-0.8, -0.15, -0.075)."""
    layer, x = linear([[2, -1, 0.5]], [3.0]), torch.tensor([[0.5, 0.25, 0.75]])
    (boxed,) = ZBox(0.1, 0.9)(layer, (x,), torch.tensor([[3.55]]))
    torch.testing.assert_close(boxed, torch.tensor([[1.6, 1.3, 0.65]]))
    (ranged,) = ZBox(None, None)(layer, (x.clone(),), torch.tensor([[2.5]]))
    torch.testing.assert_close(ranged, torch.tensor([[1.0, 1.0, 0.5]]))


def test_residual_sum_splits_relevance_in_proportion() -> None:
    """relu(2x + 3x) with x = 1: the sum's relevance 5 goes 2 and 3 to the branches and back to x as 5;
    a plain gradient through ``+`` would hand both branches all 5 and give x 10."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right, self.relu = linear([[2.0]]), linear([[3.0]]), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.left(x) + self.right(x))

    torch.testing.assert_close(lrp(Residual(), torch.tensor([[1.0]]), 0, composite="epsilon"),
                               torch.tensor([[5.0]]))
    a, b = torch.tensor([[2.0, -1.0]]), torch.tensor([[3.0, 4.0]])
    canonical = canonical_copy(Residual())
    merge = next(m for name, m in canonical.model.named_modules() if name.startswith("lrp_sum"))
    shares = Epsilon(1e-9)(merge, (a.clone(), b.clone()), torch.tensor([[10.0, 6.0]]))
    torch.testing.assert_close(shares, (torch.tensor([[4.0, -2.0]]), torch.tensor([[6.0, 8.0]])))


# ---------------------------------------------------------------------------------------------
# composites: which rule each layer gets, and what that gives by hand


def conv_then_dense() -> nn.Module:
    """A first convolution, a later one, and two dense layers (pooling, flattening and ReLUs between)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


PARAMS = LRP.Params(epsilon=0.125, gamma=0.5, low=-1.0, high=2.0)
EPS, GAMMA, BOX = Epsilon(0.125), Gamma(0.5), ZBox(-1.0, 2.0)
#: the rule of each weighted layer per composite: conv_then_dense's first conv "0", later conv "2",
#: dense "6" and "8"; the tabular net's first dense "0", later dense "2" and "4"
ASSIGNED = {
    "epsilon": ({"0": EPS, "2": EPS, "6": EPS, "8": EPS}, {"0": EPS, "2": EPS, "4": EPS}),
    "alpha1beta0": ({"0": ZPlus(), "2": ZPlus(), "6": ZPlus(), "8": ZPlus()},
                    {"0": ZPlus(), "2": ZPlus(), "4": ZPlus()}),
    "epsilon_plus": ({"0": ZPlus(), "2": ZPlus(), "6": EPS, "8": EPS}, {"0": EPS, "2": EPS, "4": EPS}),
    "epsilon_plus_flat": ({"0": Flat(), "2": ZPlus(), "6": EPS, "8": EPS}, {"0": Flat(), "2": EPS, "4": EPS}),
    "epsilon_gamma_box": ({"0": BOX, "2": GAMMA, "6": EPS, "8": EPS}, {"0": BOX, "2": EPS, "4": EPS}),
}


@pytest.mark.parametrize("composite", COMPOSITES)
def test_each_composite_gives_each_layer_its_rule(composite: str) -> None:
    """By layer type and position, with the parameters passed on; ReLUs pass relevance and pooling splits
    it in proportion, whatever the composite."""
    assert set(ASSIGNED) == set(COMPOSITES)
    image, tabular = ASSIGNED[composite]
    routing = {"1": passing, "3": passing, "4": Epsilon(STABILIZER), "7": passing}
    assert layer_rules(canonical_copy(conv_then_dense()), composite, PARAMS) == {**image, **routing}
    assert layer_rules(canonical_copy(make_net("tabular")), composite, PARAMS) == {**tabular, "1": passing,
                                                                                   "3": passing}


def test_tabular_composites_by_hand() -> None:
    """two_layer_net at x = (1, 2): the output layer's contributions (0, -8, 2.5), logit -5.5.

    epsilon_plus has no convolution here: LRP-0's (-4.5, -1) (test above). epsilon_plus_flat: the dense
    first layer reads both inputs from every unit, so each gets half of (0 - 8 + 2.5): (-2.75, -2.75).
    epsilon_gamma_box in [0.5, 2.5], epsilon on the output layer: unit 2 (w = (2, 1)) has numerators
    (2 - 1, 2 - 0.5) = (1, 1.5) for its -8: (-3.2, -4.8); unit 3 (w = (-1, 3)) (-1 + 2.5, 6 - 1.5) =
    (1.5, 4.5) for its 2.5: (0.625, 1.875). Gamma on the output layer would give unit 2 -22/3, not -8."""
    model, x = two_layer_net(), torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(lrp(model, x, 0, composite="epsilon_plus", epsilon=0.0), torch.tensor([[-4.5, -1.0]]))
    torch.testing.assert_close(lrp(model, x, 0, composite="epsilon_plus_flat", epsilon=0.0),
                               torch.tensor([[-2.75, -2.75]]))
    torch.testing.assert_close(lrp(model, x, 0, composite="epsilon_gamma_box", epsilon=0.0, low=0.5, high=2.5),
                               torch.tensor([[-3.2 + 0.625, -4.8 + 1.875]]))


def conv_chain() -> nn.Module:
    """x (1 channel, length 3) -> conv 3 wide, padding 1, kernel (0, 1, 0) (the identity) -> ReLU -> conv 2
    wide, no padding, kernel (2, -0.5) -> ReLU -> dense (1, 1), no biases."""
    first, second, dense = nn.Conv1d(1, 1, 3, padding=1, bias=False), nn.Conv1d(1, 1, 2, bias=False), linear([[1, 1]])
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[[0.0, 1.0, 0.0]]]))
        second.weight.copy_(torch.tensor([[[2.0, -0.5]]]))
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), nn.Flatten(), dense).eval()


def test_convolutional_composites_by_hand() -> None:
    """x = a = (1, 2, 3): the second conv gives z = (2 - 1, 4 - 1.5) = (1, 2.5), the logit 3.5, and the
    dense layer hands down (1, 2.5).

    epsilon (0): the second conv gives a (2, -1 + 4, -1.5) = (2, 3, -1.5); the identity conv passes it on.
    z+ on the second conv (epsilon_plus, alpha1beta0) keeps its positive contributions: (1, 2.5, 0), again
    passed on by the first conv under z+. epsilon_plus_flat: z+'s (1, 2.5, 0) spread flat over the first
    conv's receptive fields, which hold 2, 3 and 2 inputs: (1/2 + 2.5/3, 1/2 + 2.5/3, 2.5/3)."""
    model, x = conv_chain(), torch.tensor([[[1.0, 2.0, 3.0]]])
    by_composite = {
        "epsilon": [2.0, 3.0, -1.5],
        "epsilon_plus": [1.0, 2.5, 0.0],
        "alpha1beta0": [1.0, 2.5, 0.0],
        "epsilon_plus_flat": [1 / 2 + 2.5 / 3, 1 / 2 + 2.5 / 3, 2.5 / 3],
    }
    for composite, expected in by_composite.items():
        torch.testing.assert_close(lrp(model, x, 0, composite=composite, epsilon=0.0), torch.tensor([[expected]]),
                                   msg=composite)


# ---------------------------------------------------------------------------------------------
# properties: gradient x input, conservation, every composite on every toy net


@pytest.mark.parametrize("modality", ["image", "sequence", "tabular"])
def test_lrp_0_equals_gradient_times_input_on_relu_nets(modality: str) -> None:
    """Biases included: LRP-0's messages R_k / z_k are the gradient on every ReLU network."""
    model, x = make_net(modality), make_inputs(modality)
    torch.testing.assert_close(lrp(model, x, composite="epsilon", epsilon=0.0),
                               attribute("input_x_gradient", model, x, target=TARGET), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("modality", ["image", "sequence", "tabular"])
def test_every_composite_conserves_the_logit_on_bias_free_nets(modality: str, composite: str) -> None:
    """Without biases nothing absorbs relevance but the stabilisers (epsilon 1e-9 here): the input
    relevances sum to the target logit. With the toy nets' biases they do not (a bias keeps b_k / z_k
    of its unit's relevance), yet every composite still gives a finite map."""
    model, x = make_net(modality), make_inputs(modality)
    bias_free = without_biases(model)
    sums = summed(lrp(bias_free, x, composite=composite, epsilon=1e-9))
    torch.testing.assert_close(sums, picked_logits(bias_free, x, TARGET), rtol=1e-4, atol=1e-7)
    with_biases = lrp(model, x, composite=composite)
    assert with_biases.shape == x.shape and torch.isfinite(with_biases).all() and with_biases.abs().sum() > 0
    assert not torch.allclose(summed(with_biases), picked_logits(model, x, TARGET), rtol=1e-3)


def test_box_bounds_default_to_each_samples_range_and_can_be_set() -> None:
    model, x = without_biases(make_net("image")), make_inputs("image")
    own = lrp(model, x, composite="epsilon_gamma_box")
    domain = lrp(model, x, composite="epsilon_gamma_box", low=0.0, high=1.0)
    assert not torch.allclose(own, domain)
    torch.testing.assert_close(summed(domain), picked_logits(model, x, TARGET), rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="above the inputs' smallest value"):
        lrp(model, x, low=0.5)
    with pytest.raises(UnknownNameError, match="did you mean 'epsilon_plus'"):
        lrp(model, x, composite="epsilon_pluss")


# ---------------------------------------------------------------------------------------------
# captum, where the definitions coincide


class SmallConvNet(nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> pool -> fc, flattened in forward (captum has no rule for Flatten)."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(2), nn.Linear(16, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


def captum_lrp(model: nn.Module, x: torch.Tensor, rules: dict[str, object]) -> torch.Tensor:
    model = copy.deepcopy(model)
    for name, rule in rules.items():
        model.get_submodule(name).rule = rule
    return captum.attr.LRP(model).attribute(x, target=TARGET)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_epsilon_rule_equals_captum() -> None:
    tabular, x = make_net("tabular"), make_inputs("tabular")
    torch.testing.assert_close(lrp(tabular, x, composite="epsilon", epsilon=1e-9),
                               captum_lrp(tabular, x, {}), rtol=1e-5, atol=1e-9)
    torch.manual_seed(0)
    image, x = SmallConvNet(bias=True).eval(), make_inputs("image")
    torch.testing.assert_close(lrp(image, x, composite="epsilon", epsilon=1e-9),
                               captum_lrp(image, x, {}), rtol=1e-5, atol=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gamma_and_alpha1beta0_equal_captum_on_bias_free_layers_with_non_negative_inputs() -> None:
    """captum's GammaRule leaves biases alone and its Alpha1_Beta0_Rule clamps only the weights: the same
    rules as here for bias-free layers whose inputs are not negative (inputs in [0, 1], then ReLUs)."""
    torch.manual_seed(0)
    model, x = SmallConvNet(bias=False).eval(), make_inputs("image")
    plus = {name: Alpha1_Beta0_Rule() for name in ("conv1", "conv2", "fc")}
    torch.testing.assert_close(lrp(model, x, composite="alpha1beta0"), captum_lrp(model, x, plus),
                               rtol=1e-5, atol=1e-9)

    canonical = canonical_copy(model)
    ours = {"conv1": Epsilon(1e-9), "relu1": passing, "conv2": Gamma(0.25), "relu2": passing,
            "pool": Epsilon(1e-9), "fc": Epsilon(1e-9)}
    handles = [canonical.model.get_submodule(name).register_forward_hook(rule_hook(rule))
               for name, rule in ours.items()]
    try:
        gamma = relevance(canonical.model, x, TARGET)
    finally:
        for handle in handles:
            handle.remove()
    theirs = {"conv1": EpsilonRule(), "conv2": GammaRule(gamma=0.25), "fc": EpsilonRule()}
    torch.testing.assert_close(gamma, captum_lrp(model, x, theirs), rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# canonization


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()


def hand_folded(layer: nn.Module, norm: nn.Module) -> nn.Module:
    """``layer`` followed by ``norm``, written as one layer by hand: W g / s, (b - mean) g / s + beta."""
    folded = copy.deepcopy(layer)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    with torch.no_grad():
        folded.weight.copy_(layer.weight * scale.reshape(-1, *[1] * (layer.weight.ndim - 1)))
        folded.bias.copy_((layer.bias - norm.running_mean) * scale + norm.bias)
    return folded


@pytest.mark.parametrize("composite", COMPOSITES)
def test_batch_norm_folding_equals_a_hand_folded_net(composite: str) -> None:
    torch.manual_seed(0)
    with_norms = randomise_batch_norms(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5),
        nn.ReLU(), nn.Linear(5, 3)))
    by_hand = nn.Sequential(
        hand_folded(with_norms[0], with_norms[1]), nn.ReLU(), hand_folded(with_norms[3], with_norms[4]), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), hand_folded(with_norms[8], with_norms[9]), nn.ReLU(),
        copy.deepcopy(with_norms[11])).eval()
    x = make_inputs("image")
    torch.testing.assert_close(canonical_copy(with_norms).model(x), with_norms(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lrp(with_norms, x, composite=composite), lrp(by_hand, x, composite=composite),
                               rtol=1e-4, atol=1e-7)


def model_snapshot(model: nn.Module) -> list[object]:
    """Everything LRP might leave changed: values, attribute names, modes, gradient flags, hooks."""
    state = {name: value.clone() for name, value in model.state_dict().items()}
    modules = [(name, type(module), sorted(vars(module)), module.training, len(module._forward_hooks),
                len(module._forward_pre_hooks), len(module._backward_hooks), getattr(module, "inplace", None))
               for name, module in model.named_modules()]
    return [state, modules, [p.requires_grad for p in model.parameters()]]


def test_resnet18_folded_logits_and_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = randomise_batch_norms(resnet18(num_classes=3))
    x = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    canonical = canonical_copy(model)
    torch.testing.assert_close(canonical.model(x), model(x), rtol=1e-4, atol=1e-5)
    assert canonical.first == frozenset({"conv1"})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in canonical.model.modules())
    assert sum(name.startswith("lrp_sum") for name in canonical.modules) == 8  # one per basic block

    before = model_snapshot(model)
    result = lrp(model, x, TARGET[:2], batch_size=1)
    after = model_snapshot(model)
    assert torch.isfinite(result).all()
    assert before[1:] == after[1:]
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][name], after[0][name]) for name in before[0])


@pytest.mark.parametrize("composite", COMPOSITES)
def test_resnet18_conserves_relevance_through_the_residual_blocks(composite: str) -> None:
    """At initialisation the folded batch norms have no bias; with the head's bias zeroed nothing absorbs
    relevance but the 1e-9 stabilisers. Tolerance 1e-3 relative: float32 rounding of sums of up to 4608
    terms per unit through 20 layers (4e-5 measured). A ``+`` left as a gradient would double the
    relevance at each of the 8 blocks."""
    torch.manual_seed(0)
    model = resnet18(num_classes=3).eval()
    with torch.no_grad():
        model.fc.bias.zero_()
    x = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    sums = summed(lrp(model, x, TARGET[:2], composite=composite, epsilon=1e-9))
    torch.testing.assert_close(sums, picked_logits(model, x, TARGET[:2]), rtol=1e-3, atol=1e-8)


def test_a_relu_called_twice_is_one_relu_per_call() -> None:
    torch.manual_seed(0)
    shared = nn.ReLU()
    reused = nn.Sequential(nn.Linear(6, 8), shared, nn.Linear(8, 8), shared, nn.Linear(8, 3)).eval()
    separate = nn.Sequential(reused[0], nn.ReLU(), reused[2], nn.ReLU(), reused[4]).eval()
    x = make_inputs("tabular")
    for composite in COMPOSITES:
        torch.testing.assert_close(lrp(reused, x, composite=composite), lrp(separate, x, composite=composite))


# ---------------------------------------------------------------------------------------------
# refusals


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x * 2)


class Offset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.offset = nn.Linear(6, 3), nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.offset


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


@pytest.mark.parametrize(("model", "message"), [
    (Branching(), "could not trace the model's forward"),
    (nn.Sequential(nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 3)), r"no rule for layer '1' \(Sigmoid\)"),
    (Scaled(), "through 'mul'"),
    (Offset(), "adds a constant"),
    (nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3)).eval(), "folds batch norm '0' into the Linear"),
])
def test_models_without_an_lrp_rule_are_refused_in_one_line(model: nn.Module, message: str) -> None:
    with pytest.raises(IncompatibleError, match=message) as refused:
        lrp(model, make_inputs("tabular"))
    assert "\n" not in str(refused.value)


def test_batch_norm_in_training_mode_is_refused_and_left_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).train()
    before = model_snapshot(model)
    with pytest.raises(InputError, match=r"running statistics; put the model in eval mode \(model.eval\(\)\)"):
        lrp(model, make_inputs("tabular"))
    after = model_snapshot(model)
    assert all(torch.equal(before[0][name], after[0][name]) for name in before[0]) and before[1:] == after[1:]


def test_dropout_in_training_mode_is_refused() -> None:
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)).train()
    with pytest.raises(InputError, match=r"dropout '2' off; put the model in eval mode"):
        lrp(model, make_inputs("tabular"))
    assert model.training  # the user's model keeps its mode
    lrp(model.eval(), make_inputs("tabular"))  # in eval mode dropout is the identity: it runs


def test_vision_transformer_is_pointed_to_the_attention_methods() -> None:
    model = vit(image_size=8, patch_size=4, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8, num_classes=3,
                in_channels=2).eval()
    with pytest.raises(IncompatibleError, match="attention.*attention_rollout or attention_relevance"):
        lrp(model, make_inputs("image"))
