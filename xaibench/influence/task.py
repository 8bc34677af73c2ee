"""The task adapter: what influence differentiates. A training loss, a query measurement, Fisher labels.

Grosse et al. (2023) need three things from a model's task: the training loss (its per-example
gradients are the training gradients), the measurement f of a query whose change is explained, and
labels drawn from the model's own predictive distribution for the "true" Fisher. Classification and
regression are built in and chosen from the model's metadata (``task_for``); a custom model passes any
object with the same three methods.

Every method works on a batch and returns a sum over it (not a mean): per-example gradients of a sum
are the gradients of each example's own loss, which is what the factors and scores need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from xaibench.core.errors import InputError

MEASUREMENTS = ("loss", "margin")


class Task(Protocol):
    """What influence needs to know about a model's objective."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss summed over the batch."""

    def measurement(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The query measurement summed over the batch; lower means a better prediction (loss-like)."""

    def sample_targets(self, outputs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Targets drawn from the model's predictive distribution, from uniforms (B, outputs) in [0, 1)."""

    def fisher_outcomes(self, outputs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(targets, weights (B,)) whose weighted per-example gradient outer products sum to the exact
        Fisher (Gauss-Newton) matrix of each example; the exact strategy's true Fisher."""


@dataclass(frozen=True)
class ClassificationTask:
    """Cross-entropy on logits (B, C) and integer labels (B,).

    Attributes:
        measurement_name: "loss" (the query's cross-entropy) or "margin". The margin measurement is
            minus the margin, logsumexp of the other logits minus the target logit, so that both
            measurements are loss-like: a positive score always means the training example helps the
            query's prediction (as kronfluence's examples do).
    """

    measurement_name: str = "loss"

    def __post_init__(self) -> None:
        if self.measurement_name not in MEASUREMENTS:
            raise InputError(f"measurement must be one of {', '.join(MEASUREMENTS)}, "
                             f"got {self.measurement_name!r}")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, reduction="sum")

    def measurement(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.measurement_name == "loss":
            return self.loss(outputs, targets)
        target_logit = outputs.gather(1, targets[:, None])[:, 0]
        others = outputs.scatter(1, targets[:, None], float("-inf"))
        return (others.logsumexp(dim=1) - target_logit).sum()

    def sample_targets(self, outputs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        cdf = outputs.detach().softmax(dim=1).cumsum(dim=1)
        drawn = torch.searchsorted(cdf, uniforms[:, :1].to(cdf.dtype) * cdf[:, -1:])[:, 0]
        return drawn.clamp_(max=outputs.shape[1] - 1)

    def fisher_outcomes(self, outputs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        probabilities = outputs.detach().softmax(dim=1)
        rows = outputs.shape[0]
        return [(torch.full((rows,), c, dtype=torch.long, device=outputs.device), probabilities[:, c])
                for c in range(outputs.shape[1])]


@dataclass(frozen=True)
class RegressionTask:
    """Summed squared error on outputs (B, K) and float targets (B, K) (kronfluence's regression loss).

    The Fisher of this loss is that of a Gaussian likelihood with variance 1/2, so true-Fisher targets
    are the outputs plus N(0, 1/2) noise and the exact Fisher is 2 J^T J (the Gauss-Newton matrix).
    The measurement is the query's squared error.
    """

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs - targets.reshape(outputs.shape)).pow(2).sum()

    def measurement(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, targets)

    def sample_targets(self, outputs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        noise = torch.special.ndtri(uniforms.to(outputs.dtype).clamp(1e-7, 1 - 1e-7))
        return outputs.detach() + noise * 0.5**0.5

    def fisher_outcomes(self, outputs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # target = output - e_k / sqrt(2) gives the gradient sqrt(2) e_k^T J: summed over k, 2 J^T J.
        detached, ones = outputs.detach(), torch.ones(outputs.shape[0], dtype=outputs.dtype, device=outputs.device)
        basis = torch.eye(outputs.shape[1], dtype=outputs.dtype, device=outputs.device)
        return [(detached - basis[k] * 0.5**0.5, ones) for k in range(outputs.shape[1])]


def task_for(task: str, measurement: str = "loss") -> Task:
    """The built-in task named by a model's metadata ("classification" or "regression")."""
    if task == "classification":
        return ClassificationTask(measurement)
    if task == "regression":
        if measurement != "loss":
            raise InputError("regression supports only the loss measurement")
        return RegressionTask()
    raise InputError(f"unknown task {task!r}: use classification or regression")
