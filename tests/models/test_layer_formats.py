"""Layer methods on every format: a .pt2 program has the eager model's layers, hooks and results;
TorchScript, which runs no Python hooks, is refused in one line that names the formats to use instead."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.export.unflatten import InterpreterModule
from xaibench.metrics import compute

from tests.conftest import make_inputs
from xaibench.attribution import attribute
from xaibench.concepts.split import default_layer, split_model
from xaibench.core.errors import IncompatibleError
from xaibench.influence.tracking import capture, select_modules
from xaibench.models import ModelMeta, ModelSource
from xaibench.models.formats import LoadedModel
from xaibench.models.layers import TORCHSCRIPT_HOOKS
from xaibench.models.summary import summarize

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
SHAPE = (2, 8, 8)
EXACT = {"rtol": 1e-6, "atol": 1e-10}  # the same operations on the same tensors: equal up to rounding


def make_net() -> torch.nn.Module:
    """A CNN with the layers captum recognises by class (ReLU, MaxPool2d) and some it does not."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16, 3),
    ).eval()


class FixedBatch(torch.nn.Module):
    """Reshapes to the example's batch size of 2: its export cannot run at any other size."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(2, *SHAPE))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder, model, example = tmp_path_factory.mktemp("formats"), make_net(), make_inputs("image", n=2)
    paths = {name: folder / f"{name}.pt2" for name in ("static", "dynamic", "fixed")}
    torch.export.save(torch.export.export(model, (example,)), paths["static"])
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      paths["dynamic"])
    torch.export.save(torch.export.export(FixedBatch(model), (example,)), paths["fixed"])
    paths["torchscript"] = folder / "model.ts"
    torch.jit.script(model).save(str(paths["torchscript"]))
    return paths


def _load(path: Path) -> torch.nn.Module:
    return ModelSource(str(path), trust_model=True).load().module


@pytest.fixture(scope="module", params=["static", "dynamic"])
def exported(request: pytest.FixtureRequest, files: dict[str, Path]) -> torch.nn.Module:
    return _load(files[request.param])


def test_exported_layers_are_the_eager_layers_and_inspect_shows_them(files):
    model = make_net()
    eager = summarize(_eager(model), SHAPE)
    for kind in ("static", "dynamic"):
        loaded = ModelSource(str(files[kind]), trust_model=True).load()
        assert [n for n, _ in loaded.module.named_modules()] == [n for n, _ in model.named_modules()]
        assert [type(m) for m in loaded.module.children()] == [  # the pooling and flatten keep their graph
            type(m) for m in model.children()][:5] + [InterpreterModule] * 2 + [torch.nn.Linear]
        assert summarize(loaded, SHAPE)["layers"] == eager["layers"]  # names, types, shapes, params


def _eager(model: torch.nn.Module) -> LoadedModel:
    return LoadedModel(model, ModelMeta(), "checkpoint", "model.pt", "0" * 64)


def test_a_static_program_runs_batches_of_any_size_as_the_eager_model(exported):
    model, x = make_net(), make_inputs("image", n=5)
    assert exported.batch_size is None
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), **EXACT)
        with pytest.raises(RuntimeError, match="shape"):  # only the batch size is free
            exported(torch.zeros(5, 2, 7, 8))


@pytest.mark.parametrize(("method", "params"), [
    ("gradcam", {}), ("gradcam", {"layer": "0"}), ("guided_gradcam", {}),
    ("guided_backprop", {}), ("deeplift", {}),  # captum changes the gradients of nn.ReLU, nn.MaxPool2d
    ("bee", {"layer": "3", "rounds": 1, "n_steps": 4}),
])
def test_layer_methods_give_the_eager_models_maps(exported, method, params):
    model, x = make_net(), make_inputs("image", n=3)
    target = torch.tensor([0, 1, 2])
    maps = [attribute(method, m, x, target=target, generator=torch.Generator().manual_seed(0), **params)
            for m in (exported, model)]
    assert maps[1].abs().max() > 0
    torch.testing.assert_close(maps[0], maps[1], **EXACT)


def test_concepts_and_influence_see_the_eager_layers(exported):
    model, x = make_net(), make_inputs("image", n=4)
    assert default_layer(exported) == default_layer(model) == "4"
    activations = [split_model(m, "4", x).g(x) for m in (exported, model)]
    torch.testing.assert_close(activations[0], activations[1], **EXACT)
    modules = [select_modules(m) for m in (exported, model)]
    assert list(modules[0]) == list(modules[1]) == ["0", "3", "7"]
    target = torch.tensor([0, 1, 2, 0])
    captured = [capture(m, mods, x, lambda out: out.gather(1, target[:, None]).sum())[0]
                for m, mods in zip((exported, model), modules)]
    for name in modules[1]:
        torch.testing.assert_close(captured[0][name].activations, captured[1][name].activations, **EXACT)
        torch.testing.assert_close(captured[0][name].gradients, captured[1][name].gradients, **EXACT)


def test_a_copy_of_an_exported_model_has_its_own_weights(files):
    model, x = _load(files["dynamic"]), make_inputs("image", n=3)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        before = model(x)
        clone.get_submodule("7").weight.zero_()
        torch.testing.assert_close(model(x), before)
        assert not torch.allclose(clone(x), before)


def test_a_program_fixed_to_its_batch_size_runs_in_chunks_and_refuses_hooks(files):
    model, fixed, x = make_net(), _load(files["fixed"]), make_inputs("image", n=5)
    target = torch.tensor([0, 1, 2, 0, 1])
    assert fixed.batch_size == 2
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), model(x))  # 5 rows: 2 + 2 + 1 padded
    torch.testing.assert_close(attribute("saliency", fixed, x, target=target),
                               attribute("saliency", model, x, target=target))
    with pytest.raises(IncompatibleError, match="exactly 2 rows.*dynamic batch dimension"):
        attribute("gradcam", fixed, x, target=target)


def _torchscript_refusals(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict[str, object]:
    maps = attribute("saliency", model, x, target=target)
    return {
        "gradcam": lambda: attribute("gradcam", model, x, target=target),
        "gradcam layer": lambda: attribute("gradcam", model, x, target=target, layer="3"),
        "guided_gradcam": lambda: attribute("guided_gradcam", model, x, target=target),
        "bee": lambda: attribute("bee", model, x, target=target, rounds=1, n_steps=4),  # its context hooks
        "concepts": lambda: split_model(model, default_layer(model), x),
        "influence": lambda: select_modules(model),
        "rrs": lambda: compute("relative_representation_stability", model, x, maps, target=target,
                               explainer=lambda m, xs, t: attribute("saliency", m, xs, target=t),
                               generator=torch.Generator().manual_seed(0)),
    }


def test_torchscript_layer_methods_refuse_in_one_line_naming_other_formats(files):
    model, x = _load(files["torchscript"]), make_inputs("image", n=3)
    target = torch.tensor([0, 1, 2])
    assert default_layer(model) == "4"  # its layers are recognised by their original class names
    for name, run in _torchscript_refusals(model, x, target).items():
        with pytest.raises(IncompatibleError) as error:
            run()
        assert str(error.value) == TORCHSCRIPT_HOOKS, name
    assert "\n" not in TORCHSCRIPT_HOOKS and ".pt2" in TORCHSCRIPT_HOOKS and "--arch" in TORCHSCRIPT_HOOKS
    eager = make_net()
    for method in ("saliency", "integrated_gradients"):  # methods without layers work
        torch.testing.assert_close(attribute(method, model, x, target=target),
                                   attribute(method, eager, x, target=target))


def test_the_cli_explains_a_pt2_with_gradcam_and_refuses_torchscript_in_one_line(tmp_path):
    from tests.cli.conftest import SAMPLES, run_main
    from xaibench.models import load_model

    model = load_model(SAMPLES / "digits_cnn.pt").module
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 32, 32),)), tmp_path / "digits.pt2")
    torch.jit.trace(model, torch.zeros(1, 1, 32, 32)).save(str(tmp_path / "digits.ts"))
    common = ("--trust-model", "--method", "gradcam", "--data", "digits", "-n", "2", "--json")
    done = run_main("explain", str(tmp_path / "digits.pt2"), *common, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.code == 0, done.stderr
    refused = run_main("explain", str(tmp_path / "digits.ts"), *common, cwd=tmp_path)
    assert (refused.code, refused.stderr.strip()) == (2, f"error: {TORCHSCRIPT_HOOKS}")
