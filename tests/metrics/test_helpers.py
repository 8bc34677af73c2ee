"""The shared pieces of the metrics package: statistics, metric selection and result summaries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from xaibench.metrics import METRICS, MetricResult
from xaibench.metrics.selection import Chosen, choose_metrics
from xaibench.metrics.stats import normalised_auc, pearson, ranks, spearman
from xaibench.metrics.summary import summarise

from xaibench.core.errors import InputError, UnknownNameError


def test_ranks_and_correlations_equal_scipy_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 20), generator=generator).double()  # many ties
    b = torch.randn((6, 20), generator=generator, dtype=torch.float64)
    for i in range(6):
        np.testing.assert_allclose(ranks(a)[i].numpy(), scipy.stats.rankdata(a[i].numpy()))
        np.testing.assert_allclose(float(spearman(a, b)[i]), scipy.stats.spearmanr(a[i], b[i])[0], rtol=1e-12)
        np.testing.assert_allclose(float(pearson(a, b)[i]), scipy.stats.pearsonr(a[i], b[i])[0], rtol=1e-12)
    assert torch.isnan(pearson(torch.ones(1, 5), torch.arange(5.0)[None])).all()


def test_normalised_auc_is_the_trapezoid_over_unit_x() -> None:
    curve = torch.tensor([[1.0, 0.5, 0.0]])  # x = 0, 0.5, 1: area 0.5
    assert float(normalised_auc(curve)) == 0.5


def test_metric_selection() -> None:
    assert choose_metrics("complexity") == [Chosen("complexity", True)]
    category = [c.name for c in choose_metrics("category:complexity")]
    assert sorted(category) == ["complexity", "effective_complexity", "sparseness"]
    assert len(choose_metrics("all")) == len([name for name in METRICS if not METRICS.get(name).concept])
    faithfulness = choose_metrics("faithfulness")
    assert {METRICS.get(c.name).category for c in faithfulness} == {"faithfulness"}
    assert not any(c.explicit for c in faithfulness)
    both = choose_metrics("localisation,pointing_game")  # named again: it must run
    assert [c for c in both if c.name == "pointing_game"] == [Chosen("pointing_game", True)]
    assert [c.name for c in choose_metrics("*_sensitivity")] == ["avg_sensitivity", "max_sensitivity", "non_sensitivity",
                                                                   "substitution_sensitivity"]
    with pytest.raises(UnknownNameError, match="deletion"):
        choose_metrics("delection")
    with pytest.raises(UnknownNameError, match="category"):
        choose_metrics("category:faithfullness")
    with pytest.raises(InputError):
        choose_metrics(" , ")
    with pytest.raises(InputError):
        choose_metrics("zzz*")


def test_summary_statistics() -> None:
    scores = torch.tensor([1.0, 2.0, float("nan"), 4.0, 8.0], dtype=torch.float64)
    curve = torch.tensor([[1.0, 0.0], [3.0, 2.0], [float("nan"), 1.0], [5.0, 4.0], [7.0, 6.0]])
    summary = summarise(MetricResult(scores, curve, torch.tensor([0.0, 1.0])), torch.Generator().manual_seed(0))
    finite = np.array([1.0, 2.0, 4.0, 8.0])
    assert summary["mean"] == pytest.approx(finite.mean()) and summary["std"] == pytest.approx(finite.std(ddof=1))
    assert summary["n"] == 4 and summary["nan"] == 1 and summary["values"][2] is None
    low, high = summary["ci95"]
    assert finite.min() <= low < summary["mean"] < high <= finite.max()
    band = summary["curve"]
    assert band["x"] == [0.0, 1.0] and band["mean"] == pytest.approx([4.0, 3.0])  # the NaN row is left out
    # the band is a percentile bootstrap band of the mean curve: inside the finite rows' range
    assert 1.0 <= band["low"][0] < 4.0 < band["high"][0] <= 7.0
    assert 0.0 <= band["low"][1] < 3.0 < band["high"][1] <= 6.0
