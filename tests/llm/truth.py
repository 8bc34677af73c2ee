"""The ground-truth feature order of the bundled logistic regression, as the LLM's neighbourhood shows it."""

from __future__ import annotations

from pathlib import Path

from xaibench.data import load_data
from xaibench.data.prepare import normalise
from xaibench.models import ModelSource

LOGREG = ModelSource(str(Path(__file__).resolve().parents[2] / "sample_models" / "breast_cancer_logreg.pt"))


def logreg_order() -> list[int]:
    """Features by |W_1 - W_0| x training range, largest first (for either target of this binary model):
    computed here from the weights and the data, independently of the coefficients method."""
    loaded = LOGREG.load()
    weight = loaded.module.fc.weight.detach()
    train = normalise(load_data("breast_cancer:train").x, loaded.meta)
    span = train.amax(dim=0) - train.amin(dim=0)
    return ((weight[1] - weight[0]) * span).abs().argsort(descending=True, stable=True).tolist()
