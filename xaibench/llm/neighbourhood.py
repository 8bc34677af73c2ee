"""The perturbation samples an LLM sees: a model-labelled Gaussian neighbourhood of one tabular input.

Kroeger et al. (2023), section 3: min-max scale the features (with the training data's range), add
Gaussian noise (std 0.1) to the scaled test point, many times (10,000); label every sample with the
model; keep the ``n_low`` samples with the lowest and the ``n_high`` with the highest probability of the
explained class (8 and 8: 16 shots), shuffled; values rounded to 3 decimals; outputs as hard 0/1 (is
the explained class predicted); shown raw or as changes from the test point. Prediction-based ICL also
shows one more sample, drawn at random from the rest, with its output hidden (``query``). Batched: one
model call per ``batch_size`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError


@dataclass(frozen=True)
class Neighbourhood:
    """The samples shown for one input, in the order shown.

    Attributes:
        point: (F,) the input, min-max scaled and rounded.
        samples: (S, F) scaled, rounded perturbations.
        outputs: (S,) int64, 1 where the model predicts the explained class, else 0.
        probabilities: (S,) the model's probability of the explained class.
        point_output: 1 where the model predicts the explained class at the input itself, else 0.
        query: (F,) one more scaled sample, not among ``samples``, for prediction-based ICL.
        query_output: the model's hard output at ``query``.
    """

    point: torch.Tensor
    samples: torch.Tensor
    outputs: torch.Tensor
    probabilities: torch.Tensor
    point_output: int
    query: torch.Tensor
    query_output: int


def neighbourhood(model: torch.nn.Module, x: torch.Tensor, target: int, low: torch.Tensor, high: torch.Tensor,
                  generator: torch.Generator, *, n_samples: int = 10_000, std: float = 0.1, n_low: int = 8,
                  n_high: int = 8, batch_size: int | None = None) -> Neighbourhood:
    """The labelled neighbourhood of one tabular input ``x`` (F,), in model space.

    Args:
        low, high: (F,) the features' minimum and maximum over the training data (model space); the
            model is called on ``low + scaled * (high - low)``.
        target: the explained class.
    """
    if x.ndim != 1:
        raise InputError("LLM explanations take tabular inputs (one row of features)")
    if n_low < 0 or n_high < 0 or n_low + n_high + 1 > n_samples:
        raise InputError(f"cannot keep {n_low} + {n_high} samples and a query out of {n_samples}")
    span = (high - low).clamp(min=1e-12)
    point = ((x - low) / span).round(decimals=3)
    noise = torch.randn(n_samples, x.shape[0], generator=generator, device="cpu").to(point)  # CPU draws, moved
    scaled = (point + std * noise).round(decimals=3)
    probabilities = torch.empty(n_samples, device=x.device)
    hits = torch.empty(n_samples, dtype=torch.long, device=x.device)  # 1 where the explained class is predicted
    with torch.no_grad():
        for rows in row_slices(n_samples, batch_size):
            logits = model(low + scaled[rows] * span).float()
            probabilities[rows] = logits.softmax(dim=1)[:, target]
            hits[rows] = (logits.argmax(dim=1) == target).long()
        point_output = int(model((low + point * span)[None]).argmax(dim=1)[0] == target)
    order = probabilities.argsort()
    kept = torch.cat([order[:n_low], order[n_samples - n_high:]])
    kept = kept[torch.randperm(kept.numel(), generator=generator, device="cpu").to(kept.device)]
    rest = order[n_low:n_samples - n_high]
    query = int(rest[torch.randint(0, rest.numel(), (1,), generator=generator, device="cpu").to(rest.device)])
    return Neighbourhood(point, scaled[kept], hits[kept], probabilities[kept], point_output, scaled[query],
                         int(hits[query]))
