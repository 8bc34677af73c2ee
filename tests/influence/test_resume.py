"""Interrupted fits and scores resume from their last completed chunk with identical results."""

from __future__ import annotations

import pytest
import torch

from tests.influence.helpers import tiny_cnn
from xaibench.core.errors import InputError
from xaibench.influence import (
    ClassificationTask,
    FitConfig,
    Influence,
    ScoreConfig,
    fit_factors,
)
from xaibench.influence import factors as factors_module
from xaibench.influence import scores as scores_module
from xaibench.influence.storage import PartialWork, load_factors, save_factors

TASK = ClassificationTask()
CONFIG = FitConfig(strategy="ekfac", batch_size=2, chunk_size=4)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(13, 2, 7, 7, generator=gen, dtype=torch.float64), torch.randint(0, 3, (13,), generator=gen)


def counted(module, monkeypatch, kill_at: int | None = None) -> list[int]:
    """Count ``module.capture`` calls (forward/backward passes); raise KeyboardInterrupt at ``kill_at``."""
    real, count = module.capture, [0]

    def capture(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "capture", capture)
    return count


def test_a_killed_fit_resumes_to_the_same_factors(tmp_path, monkeypatch):
    model, (x, y) = tiny_cnn(), data()
    expected = fit_factors(model, TASK, x, y, CONFIG)
    partial = PartialWork.beside(tmp_path / "factors", {"fit": 1})
    counted(factors_module, monkeypatch, kill_at=7 + 5)  # 7 covariance batches, then into the lambda pass
    with pytest.raises(KeyboardInterrupt):
        fit_factors(model, TASK, x, y, CONFIG, partial)
    assert partial.load("covariance")[1] == 13 and partial.load("lambda")[1] == 8
    monkeypatch.undo()
    passes = counted(factors_module, monkeypatch)
    resumed = fit_factors(model, TASK, x, y, CONFIG, partial)
    assert passes == [3]  # only the lambda batches of rows 8-12 were redone
    assert resumed.tensors.keys() == expected.tensors.keys()
    for key, value in expected.tensors.items():
        assert torch.equal(resumed.tensors[key], value), key


def test_a_killed_score_resumes_to_the_same_scores(tmp_path, monkeypatch):
    model, (x, y) = tiny_cnn(), data()
    factors = fit_factors(model, TASK, x, y, CONFIG)
    influence = Influence(model, TASK, factors, ScoreConfig(batch_size=2, chunk_size=4))
    expected = influence.pairwise(x[:3], y[:3], x, y)
    partial = PartialWork.beside(tmp_path / "run", {"score": 1})
    counted(scores_module, monkeypatch, kill_at=2 + 5)  # 2 query batches, then 5 training batches
    with pytest.raises(KeyboardInterrupt):
        influence.pairwise(x[:3], y[:3], x, y, partial)
    assert partial.load("pairwise")[1] == 8
    monkeypatch.undo()
    passes = counted(scores_module, monkeypatch)
    assert torch.equal(influence.pairwise(x[:3], y[:3], x, y, partial), expected)
    assert passes == [2 + 3]  # the queries again, then only the training rows 8-12


def test_partial_work_of_other_arguments_is_refused(tmp_path):
    PartialWork.beside(tmp_path / "out", {"strategy": "ekfac"}).save("lambda", {"x": torch.zeros(1)}, 4)
    with pytest.raises(InputError, match="other arguments"):
        PartialWork.beside(tmp_path / "out", {"strategy": "kfac"})


def test_factors_round_trip_through_safetensors(tmp_path):
    model, (x, y) = tiny_cnn(), data()
    factors = fit_factors(model, TASK, x, y, CONFIG)
    save_factors(tmp_path, factors, {"seed": 0})
    loaded, arguments = load_factors(tmp_path)
    assert arguments == {"seed": 0} and loaded.strategy == "ekfac" and loaded.shapes == factors.shapes
    assert all(torch.equal(loaded.tensors[k], v) for k, v in factors.tensors.items())
    with pytest.raises(InputError, match="no influence factors"):
        load_factors(tmp_path / "missing")
