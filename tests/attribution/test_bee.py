"""BEE: the best of T path-integrated maps with baselines chosen by a Thompson-sampling policy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from xaibench.metrics import compute

from tests.conftest import make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.attribution.policy import ThompsonPolicy
from xaibench.core.errors import InputError

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
