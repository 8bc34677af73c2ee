"""BEE: metric-adapted path integration by baseline exploration-exploitation.

Barkan, Elisha, Weill & Koenigstein, AAAI 2025, "Metric-Adapted Explanations via Baseline
Exploration-Exploitation". Different evaluation metrics prefer maps integrated from different
baselines; BEE keeps, per metric, a contextual Thompson-sampling policy over baseline families
(``xaibench.attribution.baselines``) and, per input, runs T rounds: choose a family for every input from
the policy given the input's context (``xaibench.attribution.context``), draw a baseline, integrate the
straight path on the batched engine, score the map with the chosen registry metric, reward the choice
by the percentile rank of its score among the scores seen for that input, update the policy, and keep
the best-scoring map. All inputs of a round go through one path integral and one metric call.

Deliberate differences from the authors' code (which does not run as released, REFERENCES.md): the
paths are the textbook integrated gradients in input space ((x - b) times the mean gradient over
``n_steps`` quadrature points) rather than 3-4 steps of gradient x point on a layer's activation; the
context is the explained model's own penultimate features, not a separate ResNet18; and by default
(``cycle``) each input takes its arms in cycles: every arm once before any arm twice, the policy choosing
the order within a cycle. BEE keeps the best of T maps, so what a round is worth is its chance to beat
the maps before it; a policy that concentrates on the arm with the best typical map (which the
percentile reward teaches) keeps redrawing it and, from T of about 8 on, loses to uniform choice, whose
best of T comes from several families. In the design study (benchmarks/RESULTS.md, bee_design) the
cycles kept the pretrained policy's gains at T = 1-4 and removed its losses at T = 8-16; the reward,
posterior and context variants tried there did not.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.attribution.base import METHODS, Method, input_modality, modality_of
from xaibench.attribution.baselines import names_need_references
from xaibench.attribution.draws import (
    sample_generators,
    sample_seeds,
    sampled_shard,
    shard_of,
    shared_seed,
)
from xaibench.attribution.layer_path import (
    layer_activations,
    layer_path_integral,
    upsampled,
)
from xaibench.attribution.layers import find_layer
from xaibench.attribution.path import quadrature, straight_path_integral
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.method_notes import note
from xaibench.core.progress import advance, reporting

if TYPE_CHECKING:
    import torch

    from xaibench.attribution.policy import ThompsonPolicy
else:
    torch = lazy_import("torch")

DEFAULT_ARMS = ("zero", "constant", "uniform", "gaussian", "blur")  # "auto": those that fit the modality


@dataclasses.dataclass(frozen=True)
class BeeParams:
    """metric: the registry metric the maps are adapted to (one score per map); metric_params: its
    settings, "key=value" pairs separated by ";" (e.g. "substrate=blur"; default: the registry's
    defaults), the same the metric takes in ``evaluate -p METRIC.KEY=VALUE``; rounds: T maps per
    input; n_steps / method: the quadrature of each path; arms: comma-separated baseline families
    ("auto": zero, constant, uniform, gaussian and, for images and sequences, blur);
    adaptive: choose arms by the policy (False: uniformly at random, the paper's non-adaptive control);
    cycle: each input takes every arm once before any arm twice, and so on (the choice, by the policy or
    at random, is among the arms the input has taken least often); False: any arm every round, as in
    the paper;
    policy: a policy file from ``xaibench bee pretrain`` (default: start from the prior);
    policy_any_model: use a policy trained for another model file (refused otherwise); finetune:
    keep updating the policy while explaining; context_dim / context_layer: the context (see
    ``xaibench.attribution.context``); layer: integrate in this layer's activation space and upsample
    the map like Grad-CAM (``xaibench.attribution.layer_path``; default: input space); references:
    training samples for the train_* families; model_file: the explained model file (its ``path`` and
    ``sha256``; xaibench supplies its LoadedModel) against which a policy's recorded model is checked."""

    metric: str = "deletion"
    metric_params: str = ""
    rounds: int = 8
    n_steps: int = 16
    method: str = "gausslegendre"
    arms: str = "auto"
    adaptive: bool = True
    cycle: bool = True
    policy: str | None = None
    policy_any_model: bool = False
    finetune: bool = True
    context_dim: int = 16
    context_layer: str | None = None
    layer: str | None = None
    references: object = None
    model_file: object = None


@METHODS.register("bee")
class Bee(Method):
    """BEE (Barkan et al., AAAI 2025): the best of T integrated-gradients maps whose baselines a
    contextual Thompson-sampling policy draws from a mixture of baseline families, adapted to a metric.
    See the module docstring for the algorithm and the deliberate differences from the authors' code."""

    category = "path"
    stochastic = True
    description = "metric-adapted integrated gradients, baselines chosen by Thompson sampling (BEE)"
    Params = BeeParams

    def wants_references(self, params: dict[str, Any]) -> bool:
        """Training samples are needed when an arm draws from them (``-p arms=zero,train_sample``)."""
        return names_need_references(params.get("arms"))

    def _attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                   params: BeeParams, batch_size: int | None, generator: torch.Generator) -> torch.Tensor:
        outcome = explore(model, inputs, target, params, batch_size, generator)
        _note(outcome, params, generator)
        return outcome.maps


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a BEE run gives: the best map per input, the arm (family index) it came from, the policy
    after the run, the family names and the inputs' contexts. In a batch spread over processes the
    maps are this process's block; arms, contexts and the policy cover the whole batch (every process
    learns from every input, so the policy is the one a single process learns)."""

    maps: torch.Tensor
    arms: torch.Tensor
    policy: ThompsonPolicy
    families: tuple[str, ...]
    contexts: torch.Tensor


def explore(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, params: BeeParams,
            batch_size: int | None, generator: torch.Generator,
            policy: ThompsonPolicy | None = None) -> Outcome:
    """T rounds of BEE over ``inputs``, starting from ``policy`` (default: params.policy or the prior)."""
    from xaibench.attribution.context import embed

    metric, settings = _metric(params)
    layer = None if params.layer is None else find_layer(model, params.layer)[1]
    space = inputs if layer is None else layer_activations(model, layer, inputs, batch_size)
    families = _families(params, space, modality_of(space) if layer is not None else input_modality(model, inputs))
    names = tuple(name for name, _ in families)
    policy = policy if policy is not None else _policy(params, list(names), params.context_dim)
    rows, total = shard_of(inputs.shape[0])  # a block of a batch spread over processes: learn from all
    contexts = _whole(embed(model, inputs, params.context_layer, params.context_dim, batch_size), total)
    generators = sample_generators(sample_seeds(generator, inputs.shape[0]), slice(None))
    alphas, weights = quadrature(params.method, params.n_steps)
    # scores, arms and contexts live on the CPU (metric results, policy draws); the maps on the inputs' device
    history = torch.full((total, params.rounds), float("nan"), dtype=torch.float64, device="cpu")
    best, best_arm = torch.zeros_like(inputs), torch.full((inputs.shape[0],), -1, dtype=torch.long, device="cpu")
    taken = torch.zeros((total, len(families)), dtype=torch.long, device="cpu")  # draws per input and arm
    for round_index in range(params.rounds):
        with reporting(lambda _: None):  # progress counts rounds, not the engine's chunks
            allowed = taken == taken.amin(dim=1, keepdim=True) if params.cycle else None
            every_arm = _choose(policy, contexts, len(families), params.adaptive, generator, allowed)
            taken[torch.arange(total, device="cpu"), every_arm] += 1
            arms = every_arm[rows]
            baselines = _draw(families, arms, space, generators)
            if layer is None:
                maps = straight_path_integral(model, inputs, baselines, target, alphas, weights, batch_size)
            else:
                maps = upsampled(layer_path_integral(model, layer, inputs, space, baselines, target, alphas,
                                                     weights, batch_size), inputs)
            seed = shared_seed(generator)
            scores = _whole(metric.compute(model, inputs, maps, target=target, batch_size=batch_size,
                                           generator=torch.Generator().manual_seed(seed), **settings).scores,
                            total)
        policy = _learn(policy, params, contexts, every_arm, scores, history, metric.higher_is_better, generator)
        better = _better(scores, history[:, :round_index], metric.higher_is_better)[rows]
        history[:, round_index] = scores
        best[better], best_arm[better] = maps[better], arms[better]
        advance(_share(inputs.shape[0], round_index, params.rounds))
    return Outcome(best, _whole(best_arm, total), policy, names, contexts)


def _whole(local: torch.Tensor, total: int) -> torch.Tensor:
    """Rows of every process's block, when this batch is one block of ``total`` samples."""
    if local.shape[0] == total:
        return local
    from xaibench.core.distributed import gather_rows

    return gather_rows(local, total)


def _note(outcome: Outcome, params: BeeParams, generator: torch.Generator) -> None:
    """For run.json: the family each kept map came from and the policy's family distribution."""
    draws = torch.Generator().manual_seed(shared_seed(generator))
    shares = outcome.policy.choice_probabilities(outcome.contexts, draws).mean(0)
    note("bee", {"metric": params.metric, "metric_params": params.metric_params, "rounds": params.rounds,
                 "chosen": [outcome.families[i] if i >= 0 else None for i in outcome.arms.tolist()],
                 "distribution": {f: round(float(p), 4) for f, p in zip(outcome.families, shares)}})


def _metric(params: BeeParams) -> tuple[object, dict[str, str]]:
    """The metric BEE adapts to and its settings (checked here, before any model pass)."""
    from xaibench.attribution.base import parse_params
    from xaibench.metrics import METRICS

    if params.rounds < 1:
        raise InputError(f"bee needs rounds >= 1, got {params.rounds}")
    metric = METRICS.get(params.metric)()
    if metric.needs_explainer or metric.needs_masks or metric.needs_reference or not metric.needs_model:
        raise InputError(f"bee adapts to metrics that score a map with the model alone; "
                         f"{params.metric} is not one")
    settings = metric_settings(params.metric_params)
    parse_params(metric.Params, settings, owner=f"metric {params.metric!r} (bee's metric_params)")
    return metric, settings


def metric_settings(text: str) -> dict[str, str]:
    """``"key=value;key=value"`` as a dict; empty text gives no settings.

    Raises:
        InputError: for an item without "=" or with an empty key, or a key given twice.
    """
    settings: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.strip() in settings:
            raise InputError(f"bee's metric_params takes distinct key=value pairs separated by ';', got {item!r}")
        settings[key.strip()] = value.strip()
    return settings


def default_arms(modality: str) -> list[str]:
    """bee's arms for ``arms=auto``: the default families that apply to ``modality``."""
    from xaibench.attribution.baselines import BASELINES

    return [name for name in DEFAULT_ARMS if modality in BASELINES.get(name).modalities]


def _families(params: BeeParams, inputs: torch.Tensor, modality: str) -> list[tuple[str, object]]:
    """The baseline families of ``params.arms``; "auto" takes those that apply to ``modality`` (on text:
    the mask token (zero), constant, uniform and gaussian embeddings; blurring across tokens makes none)."""
    from xaibench.attribution.baselines import baseline_family

    if params.arms == "auto":
        names = default_arms(modality)
    else:
        names = [name.strip() for name in params.arms.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"bee needs distinct baseline families in arms, got {params.arms!r}")
    return [(name, baseline_family(name, params.references)) for name in names]


def _policy(params: BeeParams, arms: list[str], dim: int) -> ThompsonPolicy:
    from xaibench.attribution.policy import ThompsonPolicy

    if params.policy is None:
        return ThompsonPolicy.prior(tuple(arms), dim)
    policy, meta = ThompsonPolicy.load(params.policy)
    if list(policy.arms) != arms or policy.mean.shape[1] != dim:
        raise InputError(f"policy {params.policy} has arms {','.join(policy.arms)} and context dim "
                         f"{policy.mean.shape[1]}; pass -p arms=... -p context_dim=... to match")
    if meta.get("metric") not in (None, params.metric):
        raise InputError(f"policy {params.policy} was trained for metric {meta['metric']}, not {params.metric}")
    trained = metric_settings(meta.get("metric_params", ""))
    if trained != metric_settings(params.metric_params):
        shown = ";".join(f"{k}={v}" for k, v in trained.items()) or "its defaults"
        raise InputError(f"policy {params.policy} was trained for {params.metric} with {shown}; "
                         f"pass -p metric_params=... to match")
    _check_model(params, meta.get("model_sha256"))
    return policy


def _check_model(params: BeeParams, trained_for: str | None) -> None:
    """Refuse a policy whose recorded model file differs from the explained one (as ``bee report`` does):
    its contexts and rewards came from another network. Unknown on either side: nothing to compare."""
    sha256 = getattr(params.model_file, "sha256", None)
    if params.policy_any_model or trained_for is None or sha256 is None or trained_for == sha256:
        return
    raise InputError(f"policy {params.policy} was trained for another model file than "
                     f"{getattr(params.model_file, 'path', 'this one')} (sha256 {trained_for[:12]}, not "
                     f"{str(sha256)[:12]}); pass -p policy_any_model=true to use it anyway")


def _choose(policy: ThompsonPolicy, contexts: torch.Tensor, n_arms: int, adaptive: bool,
            generator: torch.Generator, allowed: torch.Tensor | None) -> torch.Tensor:
    """Each input's arm for this round, among its ``allowed`` arms (None: any)."""
    if adaptive:
        return policy.choose(contexts, generator, allowed)
    if allowed is None:
        return torch.randint(0, n_arms, (contexts.shape[0],), generator=generator, device="cpu")
    order = torch.rand(allowed.shape, generator=generator, dtype=torch.float64, device="cpu")
    return order.masked_fill(~allowed, -1.0).argmax(dim=1)  # uniform among the allowed arms


def _draw(families: list[tuple[str, object]], arms: torch.Tensor, inputs: torch.Tensor,
          generators: list[torch.Generator]) -> torch.Tensor:
    """One baseline per input from its chosen family; each input draws from its own generator."""
    baselines = torch.empty_like(inputs)
    for index, (_, family) in enumerate(families):  # a loop over families, not inputs
        rows = (arms == index).nonzero().flatten()
        if rows.numel():
            chosen = [generators[i] for i in rows.tolist()]
            baselines[rows] = family.draw(inputs[rows], chosen, 1)[:, 0].to(inputs)
    return baselines


def _learn(policy: ThompsonPolicy, params: BeeParams, contexts: torch.Tensor, arms: torch.Tensor,
           scores: torch.Tensor, history: torch.Tensor, higher: bool,
           generator: torch.Generator) -> ThompsonPolicy:
    """The policy after rewarding this round's choices (unchanged with a fixed, non-finetuned policy)."""
    from xaibench.attribution.policy import percentile_reward

    if not params.adaptive or (params.policy is not None and not params.finetune):
        return policy
    finite = torch.isfinite(scores)
    if not finite.any():
        return policy
    rewards = percentile_reward(scores, history, higher)
    return policy.updated(contexts[finite], arms[finite], rewards[finite], generator)


def _better(scores: torch.Tensor, earlier: torch.Tensor, higher: bool) -> torch.Tensor:
    """Where this round's score beats every earlier finite one (NaN never wins; the first finite does)."""
    finite = torch.isfinite(scores)
    if earlier.shape[1] == 0:
        return finite
    sentinel = torch.full_like(earlier, -float("inf") if higher else float("inf"))
    previous = torch.where(torch.isfinite(earlier), earlier, sentinel)
    return finite & ((scores > previous.amax(dim=1)) if higher else (scores < previous.amin(dim=1)))


def _share(n: int, round_index: int, rounds: int) -> int:
    """Samples' worth of progress for one round, adding up to n over all rounds."""
    return (round_index + 1) * n // rounds - round_index * n // rounds


def pretrain(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, params: BeeParams,
             batch_size: int | None, generator: torch.Generator, chunk: int = 64) -> Outcome:
    """Learn a policy over a training set, as the paper's pretraining: chunks of ``chunk`` inputs run
    ``params.rounds`` rounds each with policy updates, the policy carried from chunk to chunk.

    Returns the last chunk's outcome (its ``policy`` has seen every input). Under torchrun each chunk is
    spread over the processes, which learn the same policy (a chunk smaller than the number of
    processes runs whole on each).
    """
    from xaibench.core.distributed import shard_rows, world

    learning = dataclasses.replace(params, adaptive=True, finetune=True)
    policy = None
    outcome = None
    for rows in row_slices(inputs.shape[0], chunk):
        size = rows.stop - rows.start
        block = shard_rows(size) if size >= world().size else slice(0, size)
        with sampled_shard(block, size):
            outcome = explore(model, inputs[rows][block], target[rows][block], learning, batch_size, generator,
                              policy)
        policy = outcome.policy
    assert outcome is not None  # inputs is a non-empty batch
    return outcome
