"""Meta-evaluation of metrics: which metric can be trusted on this model and data (Hedström et al., 2023,
"The Meta-Evaluation Problem in Explainable AI: Identifying Reliable Estimators with MetaQuantus", TMLR).

A reliable metric is resilient to noise and reactive to adversaries. Four perturbation tests, each drawn
``perturbations`` (K) times:

- model resilience / adversary: every parameter multiplied by noise drawn from N(1, std^2) (std 0.001 /
  2.0); each method re-explains the perturbed model, and the metric scores that explanation on it;
- input resilience / adversary: every input value shifted by noise drawn from U(-noise, noise) (0.001 /
  5.0); the explanations of the unperturbed inputs are scored on the perturbed inputs.

Only samples whose prediction the perturbation keeps (resilience) or changes (adversary) count. With the
unperturbed scores q (per method and sample) and the perturbed ones q^:

- intra-consistency (IAC): per method and draw, the p-value of a two-sided Wilcoxon signed-rank test
  between q and q^ (zero differences split, scipy's zsplit): high when the scores did not move. IAC_NR is
  its mean under resilience tests; IAC_AR the mean of 1 - p under adversary tests.
- inter-consistency (IEC): IEC_NR is the share of (sample, rank position) at which the methods' order by
  score is the same before and after a resilience perturbation; IEC_AR the share of (method, sample)
  whose score got worse (in the metric's direction) under an adversary perturbation.

The meta-consistency score (MC) of a perturbation type is the mean of its four values, in [0, 1];
resilience is the mean of IAC_NR and IEC_NR, reactivity the mean of IAC_AR and IEC_AR.

Deviations from MetaQuantus 0.0.5, each for a reason:
- Noise comes from ``torch.Generator`` seeded per draw (CPU, float32, then moved to the data's device),
  so a seed gives the same draws on every device; MetaQuantus uses numpy's and torch's global state.
- Perturbed inputs are clipped to ``value_range`` (the meta-evaluate job passes the clean batch's [min, max]
  in model space); MetaQuantus clips to [min of the clean batch, max of the perturbed batch], which only
  ever bounds from below.
- A draw in which no sample qualifies (no prediction changed under an adversary) gives no IAC / IEC value
  (left out of the means; ``kept`` counts the samples per draw); MetaQuantus fails on an empty test. When q and q^ are identical
  the Wilcoxon p-value is 1 (scipy refuses the test).
- Each draw is one perturbation; MetaQuantus's outer "iterations" only repeat draws and are folded into K.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import Explainer

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

TESTS = ("model_resilience", "model_adversary", "input_resilience", "input_adversary")
# (model, inputs, maps, target, method name) -> (N,) scores; the name lets a metric re-explain with the method
Scorer = Callable[["torch.nn.Module", "torch.Tensor", "torch.Tensor", "torch.Tensor", str], "torch.Tensor"]


@dataclasses.dataclass(frozen=True)
class MetaParams:
    """perturbations: draws per test (K); model_resilience / model_adversary: std of the multiplicative
    weight noise; input_resilience / input_adversary: half-width of the uniform input noise."""

    perturbations: int = 5
    model_resilience: float = 0.001
    model_adversary: float = 2.0
    input_resilience: float = 0.001
    input_adversary: float = 5.0


@dataclasses.dataclass(frozen=True)
class MetricUnderTest:
    """A metric as the meta-evaluation calls it: scores (N,) of explanations on a model and inputs."""

    score: Scorer
    higher_is_better: bool


def perturbed_model(model: torch.nn.Module, std: float, generator: torch.Generator) -> torch.nn.Module:
    """A copy of ``model`` with every parameter multiplied by noise from N(1, std^2) (drawn on the CPU in
    float32, parameter by parameter in ``named_parameters`` order)."""
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in noisy.parameters():
            noise = 1.0 + std * torch.randn(parameter.shape, generator=generator, dtype=torch.float32, device="cpu")
            parameter.mul_(noise.to(parameter))
    return noisy


def perturbed_inputs(inputs: torch.Tensor, noise: float, generator: torch.Generator,
                     value_range: tuple[float, float] | None) -> torch.Tensor:
    """``inputs`` plus noise from U(-noise, noise), clipped to ``value_range`` when there is one."""
    shift = (torch.rand(inputs.shape, generator=generator, dtype=torch.float32, device="cpu") * 2 - 1) * noise
    moved = inputs + shift.to(inputs)
    return moved if value_range is None else moved.clamp(*value_range)


def wilcoxon_p(q: torch.Tensor, q_hat: torch.Tensor) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired scores (zero differences split); 1.0 when every
    difference is zero, NaN with fewer than one pair."""
    from scipy.stats import wilcoxon

    if q.numel() == 0:
        return math.nan
    if torch.equal(q, q_hat):
        return 1.0
    with warnings.catch_warnings():  # scipy notes when it falls back to the normal approximation
        warnings.simplefilter("ignore")
        return float(wilcoxon(q.double().numpy(), q_hat.double().numpy(), zero_method="zsplit",
                              alternative="two-sided").pvalue)


def intra_consistency(q: torch.Tensor, q_hat: torch.Tensor, kept: torch.Tensor, adversary: bool) -> float:
    """IAC of one method and draw on the samples ``kept``: p (resilience) or 1 - p (adversary)."""
    p = wilcoxon_p(q[kept], q_hat[kept])
    return 1.0 - p if adversary else p


def inter_consistency(scores: torch.Tensor, scores_hat: torch.Tensor, kept: torch.Tensor, adversary: bool,
                      higher_is_better: bool) -> float:
    """IEC of one draw from (methods, N) scores before and after it, on the samples ``kept``."""
    if not bool(kept.any()):
        return math.nan
    q, q_hat = scores[:, kept], scores_hat[:, kept]
    if adversary:
        worse = q_hat < q if higher_is_better else q_hat > q
        return float(worse.double().mean())
    order = torch.argsort(q, dim=0, stable=True)
    order_hat = torch.argsort(q_hat, dim=0, stable=True)
    return float((order == order_hat).double().mean())


def _draws(test: str, params: MetaParams, model: torch.nn.Module, inputs: torch.Tensor,
           value_range: tuple[float, float] | None, seed: int) -> Iterator[tuple[torch.nn.Module, torch.Tensor]]:
    """The K (model, inputs) pairs of one test; draw k of a test uses a generator of its own."""
    strength = getattr(params, test)
    for k in range(params.perturbations):
        digest = hashlib.blake2b(f"{seed}:{test}:{k}".encode(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        if test.startswith("model"):
            yield perturbed_model(model, strength, generator), inputs
        else:
            yield model, perturbed_inputs(inputs, strength, generator, value_range)


def _predictions(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(rows).argmax(dim=1) for rows in inputs.split(batch_size)]).cpu()


def meta_evaluate(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  explainers: dict[str, Explainer], metrics: dict[str, MetricUnderTest], *,
                  params: MetaParams = MetaParams(), seed: int = 0, batch_size: int = 64,
                  value_range: tuple[float, float] | None = None,
                  on_step: Callable[[], Any] = lambda: None) -> dict[str, Any]:
    """Run the four tests for every metric (explanations shared across metrics) and summarise them.

    Args:
        model: the model, in eval mode; never modified (perturbations act on copies).
        inputs, targets: the samples and the classes explained (the model's predictions, as MetaQuantus).
        explainers: method name -> explainer(model, inputs, target).
        metrics: metric name -> scorer and direction.
        params: noise strengths and draws; seed: the draws' seed; batch_size: rows per prediction pass.
        value_range: bounds to clip perturbed inputs to, or None.
        on_step: called once per (test, draw, method).

    Returns:
        ``{"tests": {test: {metric: {"iac": [K x methods], "iec": [K], "kept": [K]}}}, "scores": {metric:
        {"model": {...}, "input": {...}, "mc": float, "resilience": float, "reactivity": float}}}`` with
        each perturbation type's IAC_NR, IAC_AR, IEC_NR, IEC_AR and MC; NaN-free means (None when empty).
    """
    predicted = _predictions(model, inputs, batch_size)
    clean = {name: explain(model, inputs, targets) for name, explain in explainers.items()}
    base = {metric: torch.stack([m.score(model, inputs, clean[name], targets, name).double().cpu()
                                 for name in explainers]) for metric, m in metrics.items()}
    tests: dict[str, dict[str, Any]] = {}
    for test in TESTS:
        adversary = test.endswith("adversary")
        found = {metric: {"iac": [], "iec": [], "kept": []} for metric in metrics}
        for noisy_model, noisy_inputs in _draws(test, params, model, inputs, value_range, seed):
            changed = _predictions(noisy_model, noisy_inputs, batch_size) != predicted
            kept = changed if adversary else ~changed
            perturbed = {metric: [] for metric in metrics}
            for name, explain in explainers.items():
                # the model tests re-explain the perturbed model; the input tests score the clean explanations
                maps = explain(noisy_model, inputs, targets) if test.startswith("model") else clean[name]
                for metric, m in metrics.items():
                    perturbed[metric].append(m.score(noisy_model, noisy_inputs, maps, targets, name).double().cpu())
                on_step()
            for metric, m in metrics.items():
                scores_hat = torch.stack(perturbed[metric])
                found[metric]["iac"].append([intra_consistency(base[metric][i], scores_hat[i], kept, adversary)
                                             for i in range(len(explainers))])
                found[metric]["iec"].append(inter_consistency(base[metric], scores_hat, kept, adversary,
                                                              m.higher_is_better))
                found[metric]["kept"].append(int(kept.sum()))
        tests[test] = found
    return {"tests": tests, "scores": {metric: consistency_scores(tests, metric) for metric in metrics}}


def _mean(values: list[Any]) -> float | None:
    flat = [v for v in _flatten(values) if not math.isnan(v)]
    return sum(flat) / len(flat) if flat else None


def _flatten(values: Any) -> Iterator[float]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield float(value)


def consistency_scores(tests: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """IAC_NR, IAC_AR, IEC_NR, IEC_AR and MC per perturbation type, and over both: MC (the mean of the two
    types' MC), resilience and reactivity."""
    out: dict[str, Any] = {}
    for kind in ("model", "input"):
        res, adv = tests[f"{kind}_resilience"][metric], tests[f"{kind}_adversary"][metric]
        parts = {"IAC_NR": _mean(res["iac"]), "IAC_AR": _mean(adv["iac"]),
                 "IEC_NR": _mean(res["iec"]), "IEC_AR": _mean(adv["iec"])}
        parts["MC"] = _mean([v for v in parts.values() if v is not None]) if None not in parts.values() else None
        out[kind] = parts
    kinds = [out["model"], out["input"]]
    out["mc"] = _mean([k["MC"] for k in kinds if k["MC"] is not None])
    out["resilience"] = _mean([k[p] for k in kinds for p in ("IAC_NR", "IEC_NR") if k[p] is not None])
    out["reactivity"] = _mean([k[p] for k in kinds for p in ("IAC_AR", "IEC_AR") if k[p] is not None])
    return out
