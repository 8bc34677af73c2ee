"""The training data of an influence job, and the rankings it reports: top proponents and opponents per
query and the self-influence ranking, as JSON-ready records.

A score that is not finite (NaN from a zero curvature left undamped) is null in the records, as metrics.json
has it: bare NaN is not JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from xaibench.data.prepare import Prepared


@dataclass(frozen=True)
class TrainData:
    """Training examples in model space with their labels and identity."""

    prepared: Prepared
    labels: torch.Tensor
    spec: dict[str, Any]




def _example(data: TrainData, position: int, score: float, key: str = "score") -> dict[str, Any]:
    classes = data.prepared.meta.class_names
    label = int(data.labels[position])
    return {"index": int(data.prepared.data.indices[position]), "label": classes[label],
            "prediction": classes[int(data.prepared.predictions[position])],
            key: score if math.isfinite(score) else None}


def query_rankings(scores: torch.Tensor, queries: Prepared, data: TrainData, top_k: int) -> dict[str, Any]:
    """Per query (rows of ``scores`` (Q, N)): its top_k proponents (highest) and opponents (lowest)."""
    k = min(top_k, scores.shape[1])
    high, low = scores.topk(k, dim=1), scores.topk(k, dim=1, largest=False)
    classes = queries.meta.class_names
    out = []
    for q in range(scores.shape[0]):
        label = None if queries.data.y is None else classes[int(queries.data.y[q])]
        out.append({
            "index": int(queries.data.indices[q]), "label": label,
            "prediction": classes[int(queries.predictions[q])], "target": classes[int(queries.targets[q])],
            "proponents": [_example(data, int(i), float(v)) for v, i in zip(high.values[q], high.indices[q])],
            "opponents": [_example(data, int(i), float(v)) for v, i in zip(low.values[q], low.indices[q])],
        })
    return {"queries": out}


def self_ranking(values: torch.Tensor, data: TrainData, top_k: int) -> dict[str, Any]:
    """The training examples with the highest self-influence first (likely mislabelled or atypical)."""
    top = values.topk(min(top_k, values.shape[0]))
    ranked = [_example(data, int(i), float(v), "self_influence") for v, i in zip(top.values, top.indices)]
    return {"ranking": ranked, "samples": int(values.shape[0])}
