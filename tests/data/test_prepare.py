"""``xaibench.data.prepare.prepare``: a model whose outputs are not finite on the selected samples is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_linear
from xaibench.core.errors import InputError
from xaibench.data.prepare import Selection, prepare
from xaibench.models import LoadedModel, ModelMeta


def _loaded(module: torch.nn.Module) -> LoadedModel:
    return LoadedModel(module.eval(), ModelMeta(), "checkpoint", "toy.pt", "0" * 64)


def _data(tmp_path: Path, x: np.ndarray) -> str:
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32))
    return str(tmp_path / "d.npz")


def test_nan_weights_name_every_selected_sample(tmp_path: Path) -> None:
    model = make_linear("tabular")
    with torch.no_grad():
        model.fc.weight[1, 0] = float("nan")
    spec = _data(tmp_path, np.ones((5, 6)))
    with pytest.raises(InputError) as info:
        prepare(_loaded(model), Selection(data=spec, indices="4,0,2"))
    assert str(info.value) == (f"the model's outputs are NaN or infinite for samples 4, 0, 2 of {spec} "
                               "(NaN weights, or inputs too large for it)")


def _summing_model() -> torch.nn.Module:
    """logits = sum of the features, for every class."""
    model = torch.nn.Linear(6, 3)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    return model


def test_inputs_near_float32_max_name_only_their_samples(tmp_path: Path) -> None:
    x = np.ones((4, 6))
    x[2] = 3e38  # finite in float32, but their sum is not
    spec = _data(tmp_path, x)
    with pytest.raises(InputError, match=r"for sample 2 of .*d\.npz \(NaN weights"):
        prepare(_loaded(_summing_model()), Selection(data=spec))
    prepared = prepare(_loaded(_summing_model()), Selection(data=spec, indices="0,1,3"))
    assert prepared.data.indices.tolist() == [0, 1, 3]


def test_a_long_list_of_samples_is_cut_short(tmp_path: Path) -> None:
    model = make_linear("tabular")
    with torch.no_grad():
        model.fc.bias[0] = float("inf")
    spec = _data(tmp_path, np.ones((12, 6)))
    with pytest.raises(InputError, match=r"for 12 samples \(0, 1, 2, 3, 4, 5, 6, 7 and 4 more\) of "):
        prepare(_loaded(model), Selection(data=spec))


@pytest.mark.parametrize(("mean", "std", "key", "count"), [((0.0, 0.0), None, "mean", 2),
                                                          (None, (1.0,) * 5, "std", 5)])
def test_normalisation_that_does_not_fit_the_channels(tmp_path: Path, mean: tuple[float, ...] | None,
                                                      std: tuple[float, ...] | None, key: str,
                                                      count: int) -> None:
    loaded = LoadedModel(make_linear("tabular"), ModelMeta(mean=mean, std=std), "checkpoint", "toy.pt",
                         "0" * 64)
    with pytest.raises(InputError) as info:
        prepare(loaded, Selection(data=_data(tmp_path, np.ones((2, 6)))))
    assert str(info.value) == (f"the model's {key} has {count} values, but the samples have 6 channels "
                               "(give 1 or 6)")
