"""The percentile bootstrap behind every "ci95" of metrics.json: its level, against the percentile interval
computed by hand from the same resamples and by its coverage of a known mean."""

from __future__ import annotations

import numpy as np
import torch
from xaibench.metrics import MetricResult
from xaibench.metrics.stats import bootstrap_band, bootstrap_interval
from xaibench.metrics.summary import BOOTSTRAP_RESAMPLES, summarise


def percentile_interval(values: torch.Tensor, seed: int, resamples: int) -> list[float]:
    """The 2.5th and 97.5th percentiles of ``resamples`` means of n values drawn with replacement, the
    rows drawn as one (resamples, n) randint from a generator seeded ``seed`` (numpy's linear rule)."""
    picks = torch.randint(0, values.numel(), (resamples, values.numel()),
                          generator=torch.Generator().manual_seed(seed))
    means = values.double()[picks].mean(dim=1).numpy()
    return np.percentile(means, [2.5, 97.5]).tolist()


def test_the_interval_is_the_95_percent_percentile_interval() -> None:
    values = torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3
    found = bootstrap_interval(values, torch.Generator().manual_seed(7))
    np.testing.assert_allclose(found, percentile_interval(values, 7, 1000), rtol=1e-12)
    with_nan = torch.cat([values[:20], torch.tensor([float("nan")]), values[20:]])  # NaN is left out
    np.testing.assert_allclose(bootstrap_interval(with_nan, torch.Generator().manual_seed(7)), found, rtol=1e-12)


def test_summary_ci95_is_the_95_percent_interval_of_its_resamples() -> None:
    scores = torch.rand(25, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    summary = summarise(MetricResult(scores), torch.Generator().manual_seed(3))
    np.testing.assert_allclose(summary["ci95"], percentile_interval(scores, 3, BOOTSTRAP_RESAMPLES), rtol=1e-12)


def test_coverage_of_a_known_mean_is_95_percent() -> None:
    """1000 samples of 30 standard normal values: the interval holds the true mean 0 about 95% of the
    time (the binomial standard error is 0.007); a 90% interval, about 90%, falls below the band."""
    data = torch.randn(1000, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    covered = 0
    for row in data:
        low, high = bootstrap_interval(row, generator)
        covered += low <= 0.0 <= high
    assert 930 <= covered <= 970, covered


def test_the_curve_band_is_the_pointwise_percentile_interval_of_resampled_mean_curves() -> None:
    rows = torch.rand(12, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    low, high = bootstrap_band(rows, torch.Generator().manual_seed(4), resamples=500)
    picks = torch.randint(0, 12, (500, 12), generator=torch.Generator().manual_seed(4))
    means = rows[picks].mean(dim=1).numpy()  # (500, 5): one mean curve per resample
    expected = np.percentile(means, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(low.numpy(), expected[0], rtol=1e-12)
    np.testing.assert_allclose(high.numpy(), expected[1], rtol=1e-12)


def test_the_curve_band_of_probabilities_stays_in_zero_one_where_a_normal_band_does_not() -> None:
    """Three of 16 samples keep probability 1, the others fall to 0: mean 3/16 with a normal half width
    of 1.96 * 0.40 / 4 = 0.20, so mean - 1.96 se < 0; the percentile band cannot leave [0, 1]."""
    rows = torch.zeros(16, 2, dtype=torch.float64)
    rows[:, 0] = 1.0
    rows[:3, 1] = 1.0
    normal_low = rows[:, 1].mean() - 1.96 * rows[:, 1].std() / 4
    assert normal_low < 0
    summary = summarise(MetricResult(rows[:, 1], rows, torch.tensor([0.0, 1.0])), torch.Generator().manual_seed(0))
    band = summary["curve"]
    assert band["low"][0] == band["high"][0] == 1.0  # every sample at 1: no spread
    assert 0.0 <= band["low"][1] < 3 / 16 < band["high"][1] <= 1.0
