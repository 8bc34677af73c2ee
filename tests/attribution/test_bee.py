"""BEE: the best of T path-integrated maps with baselines chosen by a Thompson-sampling policy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from xaibench.metrics import compute

from tests.conftest import make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.attribution.policy import ThompsonPolicy
from xaibench.core.errors import InputError, UnknownNameError

TARGET = torch.tensor([0, 1, 2, 1])


def bee(model, x, seed=0, **params):
    return attribute("bee", model, x, target=TARGET, generator=torch.Generator().manual_seed(seed), **params)


@pytest.mark.parametrize("modality", ["image", "sequence", "tabular"])
def test_one_round_of_the_zero_arm_is_integrated_gradients(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality)
    expected = attribute("path_integrated_gradients", model, x, target=TARGET, n_steps=8)
    torch.testing.assert_close(bee(model, x, arms="zero", rounds=1, n_steps=8), expected)


def test_more_rounds_keep_the_best_map_for_the_metric() -> None:
    """The first round is the same draw whatever T, so the best of 6 rounds scores at least as well."""
    model, x = make_net("image"), make_inputs("image")
    one = bee(model, x, rounds=1, n_steps=4)
    six = bee(model, x, rounds=6, n_steps=4)

    def deletion(maps):
        return compute("deletion", model, x, maps, target=TARGET).scores

    assert (deletion(six) <= deletion(one) + 1e-12).all()
    assert not torch.equal(one, six)
    higher = bee(model, x, rounds=6, n_steps=4, metric="insertion")
    insertion = compute("insertion", model, x, higher, target=TARGET).scores
    assert (insertion >= compute("insertion", model, x, one, target=TARGET).scores - 1e-12).all()


def test_seeded_and_stochastic() -> None:
    model, x = make_net("sequence"), make_inputs("sequence")
    first = bee(model, x, rounds=3, n_steps=4)
    torch.testing.assert_close(bee(model, x, rounds=3, n_steps=4), first)
    assert not torch.equal(bee(model, x, seed=1, rounds=3, n_steps=4), first)
    uniform = bee(model, x, rounds=3, n_steps=4, adaptive=False)
    assert uniform.shape == x.shape and torch.isfinite(uniform).all()


def test_policy_files_must_match(tmp_path) -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    path = tmp_path / "policy.safetensors"
    ThompsonPolicy.prior(("zero", "uniform"), 16).save(path, {"metric": "deletion"})
    fixed = bee(model, x, rounds=2, n_steps=4, arms="zero,uniform", policy=str(path), finetune=False)
    assert fixed.shape == x.shape
    with pytest.raises(InputError, match="insertion"):
        bee(model, x, rounds=2, arms="zero,uniform", policy=str(path), metric="insertion")
    with pytest.raises(InputError, match="arms"):
        bee(model, x, rounds=2, arms="zero,constant", policy=str(path))


def test_a_policy_for_another_model_file_is_refused_unless_meant(tmp_path) -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    path = tmp_path / "policy.safetensors"
    ThompsonPolicy.prior(("zero", "uniform"), 16).save(path, {"metric": "deletion", "model_sha256": "a" * 64})
    common = {"rounds": 1, "n_steps": 2, "arms": "zero,uniform", "policy": str(path)}
    other = SimpleNamespace(path="other.pt", sha256="b" * 64)  # what xaibench supplies: the LoadedModel
    with pytest.raises(InputError, match=r"trained for another model file than other\.pt \(sha256 a{12}, not b{12}\)"):
        bee(model, x, model_file=other, **common)
    assert bee(model, x, model_file=other, policy_any_model="true", **common).shape == x.shape
    assert bee(model, x, model_file=SimpleNamespace(path="m.pt", sha256="a" * 64), **common).shape == x.shape
    assert bee(model, x, **common).shape == x.shape  # no model file known (the Python API): nothing to compare
    with pytest.raises(InputError, match="supplied by xaibench"):
        bee(model, x, model_file="b" * 64, **common)  # never set as text


def test_bad_parameters() -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    with pytest.raises(InputError, match="model alone"):
        bee(model, x, metric="max_sensitivity")
    with pytest.raises(InputError, match="rounds"):
        bee(model, x, rounds=0)
    with pytest.raises(InputError, match="distinct"):
        bee(model, x, arms="zero,zero")


def test_metric_params_set_the_metric_bee_adapts_to(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from xaibench.metrics import METRICS

    model, x = make_net("image"), make_inputs("image")
    deletion = METRICS.get("deletion")
    seen: list[dict] = []
    real = deletion.compute
    monkeypatch.setattr(deletion, "compute", lambda self, *a, **kw: seen.append(kw) or real(self, *a, **kw))
    kept = bee(model, x, rounds=4, n_steps=4, metric_params="substrate=zero; patch=2")
    assert [(kw["substrate"], kw["patch"]) for kw in seen] == [("zero", "2")] * 4  # every round's scoring
    # the kept map is the best of the four under those settings, not under the defaults
    one = bee(model, x, rounds=1, n_steps=4, metric_params="substrate=zero;patch=2")
    assert (real(deletion(), model, x, kept, target=TARGET, substrate="zero", patch=2).scores
            <= real(deletion(), model, x, one, target=TARGET, substrate="zero", patch=2).scores + 1e-12).all()
    with pytest.raises(InputError, match="substrate"):
        bee(model, x, metric_params="substrate=nonsense")
    with pytest.raises(InputError, match="key=value"):
        bee(model, x, metric_params="substrate")
    with pytest.raises(UnknownNameError, match="blur_sigma"):
        bee(model, x, metric_params="sigma=3")  # not a parameter of deletion: the closest name is offered
    path = tmp_path / "policy.safetensors"
    ThompsonPolicy.prior(("zero", "uniform"), 16).save(path, {"metric": "deletion", "metric_params": "patch=2"})
    common = {"rounds": 1, "n_steps": 2, "arms": "zero,uniform", "policy": str(path)}
    assert bee(model, x, metric_params=" patch = 2 ", **common).shape == x.shape
    with pytest.raises(InputError, match="trained for deletion with patch=2"):
        bee(model, x, **common)


def _rounds_of_arms(monkeypatch: pytest.MonkeyPatch, **params) -> torch.Tensor:
    """(rounds, N) the arm each input took in each round of a bee run."""
    import xaibench.attribution.bee as bee_module

    taken: list[torch.Tensor] = []
    real = bee_module._draw
    monkeypatch.setattr(bee_module, "_draw", lambda families, arms, *a: taken.append(arms.clone()) or real(families, arms, *a))
    model, x = make_net("image"), make_inputs("image")
    bee(model, x, n_steps=2, **params)
    return torch.stack(taken)


@pytest.mark.parametrize("adaptive", [True, False])
def test_each_input_takes_its_arms_in_cycles(monkeypatch: pytest.MonkeyPatch, adaptive: bool) -> None:
    arms = 5  # image inputs: zero, constant, uniform, gaussian, blur
    rounds = _rounds_of_arms(monkeypatch, rounds=2 * arms + 2, adaptive=adaptive)
    for cycle in range(2):
        block = rounds[cycle * arms:(cycle + 1) * arms]
        assert (block.sort(dim=0).values == torch.arange(arms)[:, None]).all()  # every arm once per cycle
    third = rounds[2 * arms:]
    assert (third[0] != third[1]).all()  # a third cycle begins: no arm twice
    assert not (rounds[:arms] == rounds[:arms, :1]).all(dim=1).all()  # the order differs between inputs


def test_without_cycles_an_arm_can_repeat_before_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds = _rounds_of_arms(monkeypatch, rounds=5, cycle="false")
    distinct = [len(set(rounds[:, i].tolist())) for i in range(rounds.shape[1])]
    assert min(distinct) < 5
