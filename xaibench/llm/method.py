"""The ``llm`` attribution method: an LLM ranks a tabular model's features from perturbation samples.

Kroeger et al. (2023), "Are Large Language Models Post Hoc Explainers?". Per input: the labelled
neighbourhood (``neighbourhood``), a prompt from the chosen strategy (``strategies``), one request
(``client``: concurrent, cached, transcribed), the reply parsed into a top-k ranking (``parse``). The
attribution is the rank score of the paper: the feature at rank i (0 first) scores F - i, features left
out score 0. A reply with fewer than k valid features is not guessed at: its row is NaN, which the
metrics score as NaN and the summaries leave out and count (the paper drops such replies).

The neighbourhood perturbs features by a share of their training range, so what the samples reveal is
importance per range; on a linear model trained on inputs already min-max scaled (the paper's setting)
that is the coefficients' order, on standardised inputs it is |coefficient| x range.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.draws import sample_generators, sample_seeds, sampled_shard, shard_of, shared_seed
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.method_notes import attach, note
from xaibench.core.progress import reporting
from xaibench.llm.parse import letters, parse_ranking

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

TRANSCRIPT_FILE = "transcript.jsonl"


@METHODS.register("llm")
class LLMExplainer(Method):
    """Rank scores from an LLM's top-k answer; see the module docstring."""

    modalities = ("tabular",)
    category = "llm"
    signed = False
    needs_gradients = False
    stochastic = True
    needs_references = True
    remote = True
    reference_count = None  # min-max scaling wants the whole training range
    description = "an LLM names the top-k features from perturbation samples (Kroeger et al. 2023)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """strategy: p-icl, pg-icl, i-icl or e-icl; backend: openai, replay or transformers; llm_model:
        the LLM's name (a directory for transformers; replay defaults to the recorded one); base_url:
        the server's /v1 URL; api_key_env: the variable holding the key (default OPENAI_API_KEY, for
        OpenAI's own server only: another server gets no key unless named); transcript: what replay
        reads; k: features asked for; names: letters (A, B, ...) or real; format: change or raw;
        n_samples, std: the neighbourhood; shots: samples shown (half least, half most confident);
        examples, explainer: E-ICL's explained examples; temperature, max_tokens: sampling; timeout
        (s per attempt), retries, concurrency: the requests; cache: use the response cache;
        prompt_price, completion_price: US dollars per million tokens, for the cost account."""

        strategy: str = "p-icl"
        backend: str = "openai"
        llm_model: str | None = None
        base_url: str | None = None
        api_key_env: str | None = None
        transcript: str | None = None
        k: int = 5
        names: str = "letters"
        format: str = "change"
        n_samples: int = 10_000
        std: float = 0.1
        shots: int = 16
        examples: int = 4
        explainer: str = "lime"
        temperature: float = 0.0
        max_tokens: int = 1024
        timeout: float = 120.0
        retries: int = 2
        concurrency: int = 4
        cache: bool = True
        prompt_price: float = 0.0
        completion_price: float = 0.0
        references: object = None
        feature_names: object = None
        class_names: object = None

    def _attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, params: Any,
                   batch_size: int | None, generator: torch.Generator) -> torch.Tensor:
        from xaibench.llm.backends import BACKENDS, Request, Settings
        from xaibench.llm.cache import ResponseCache
        from xaibench.llm.client import Client, Prices
        from xaibench.llm.strategies import STRATEGIES

        strategy = STRATEGIES.get(params.strategy)()
        _check(params, inputs.shape[1])
        backend = BACKENDS.get(params.backend)(Settings(params.base_url, params.api_key_env, params.timeout,
                                                        params.retries, params.transcript))
        llm_model = params.llm_model or backend.default_model
        if not llm_model:
            raise InputError("name the LLM: -p llm_model=NAME (e.g. llama3.1:8b on Ollama)")
        features, labels = _names(params, inputs.shape[1])
        cases = _cases(model, inputs, target, params, labels, strategy.uses_examples, batch_size, generator)
        requests = [Request(llm_model, strategy.messages(case), params.temperature, params.max_tokens)
                    for case in cases]
        cache = ResponseCache() if params.cache else None
        client = Client(backend, cache=cache, concurrency=params.concurrency,
                        prices=Prices(params.prompt_price, params.completion_price))
        rows, total = shard_of(inputs.shape[0])  # under torchrun: this process's block of the batch
        metas = [{"sample": rows.start + i, "strategy": strategy.name,
                  **({"hidden_output": case.hood.query_output} if strategy.name == "pg-icl" else {})}
                 for i, case in enumerate(cases)]
        try:
            exchanges = client.ask(requests, metas)
        finally:
            if cache is not None:
                cache.close()
        parsed = [parse_ranking(e.reply.text, features, min(params.k, len(features)),
                                None if params.names == "real" else labels) for e in exchanges]
        samples = [{"prompt_chars": sum(len(text) for _, text in e.request.messages),
                    "prompt_tokens": e.reply.prompt_tokens, "reply": e.reply.text, "cached": e.cached,
                    "ok": p.ok, "ranking": list(p.ranking), "invalid": list(p.invalid), "reason": p.reason}
                   for e, p in zip(exchanges, parsed, strict=True)]
        account, transcript = client.summary(), client.transcript()
        if total != inputs.shape[0]:  # every process's share, in sample order
            account, samples, transcript = _whole(account, samples, transcript)
        attach(TRANSCRIPT_FILE, transcript)
        note("llm", {"strategy": strategy.name, "model": llm_model, "k": params.k, "account": account,
                     "samples": samples})
        return rank_scores([p.ranking if p.ok else None for p in parsed], features).to(inputs)


def _whole(account: dict[str, Any], samples: list[Any], transcript: str) -> tuple[dict[str, Any], list[Any], str]:
    """The account summed, the samples and the transcript joined over the processes of a sharded run."""
    from xaibench.core.distributed import gather_objects

    parts = gather_objects((account, samples, transcript))
    summed = dict(parts[0][0])
    for key in ("requests", "sent", "cached", "prompt_tokens", "completion_tokens", "cost_usd"):
        summed[key] = sum(part[0][key] for part in parts)
    summed["cost_usd"] = round(summed["cost_usd"], 6)
    return summed, [s for part in parts for s in part[1]], "".join(part[2] for part in parts)


def rank_scores(rankings: list[tuple[str, ...] | None], features: list[str]) -> torch.Tensor:
    """(N, F) rank scores: F - i for the feature at rank i, 0 for the unranked, NaN rows for None."""
    count = len(features)
    scores = torch.zeros(len(rankings), count, device="cpu")
    position = {name: j for j, name in enumerate(features)}
    for row, ranking in enumerate(rankings):
        if ranking is None:
            scores[row] = float("nan")
            continue
        for i, name in enumerate(ranking):
            scores[row, position[name]] = count - i
    return scores


def _check(params: Any, count: int) -> None:
    if params.names not in ("letters", "real"):
        raise InputError(f"names must be letters or real, got {params.names!r}")
    if params.format not in ("change", "raw"):
        raise InputError(f"format must be change or raw, got {params.format!r}")
    if params.k < 1:
        raise InputError(f"k must be at least 1, got {params.k}")
    if params.shots < 2 or params.examples < 1 or params.explainer == "llm":
        raise InputError("shots must be at least 2, examples at least 1, and the explainer not llm")
    if params.std <= 0 or params.max_tokens < 1:
        raise InputError("std and max_tokens must be positive")
    if params.references is None:
        raise InputError("the llm method needs training samples for the features' range "
                         "(xaibench explain and evaluate supply them)")
    if params.references.shape[1:] != (count,):
        raise InputError("the training samples do not have the inputs' features")


def _names(params: Any, count: int) -> tuple[list[str], tuple[str, ...]]:
    """The features' real names and their prompt labels."""
    names = list(params.feature_names) if params.feature_names else [f"x{j}" for j in range(count)]
    if len(names) != count:
        raise InputError(f"{len(names)} feature names for {count} features")
    return names, tuple(names if params.names == "real" else letters(count))


def _cases(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, params: Any,
           labels: tuple[str, ...], with_examples: bool, batch_size: int | None,
           generator: torch.Generator) -> list[Any]:
    from xaibench.llm.neighbourhood import neighbourhood
    from xaibench.llm.strategies import Case

    references = params.references.to(inputs)
    low, high = references.min(dim=0).values, references.max(dim=0).values
    class_names = list(params.class_names or [])
    # each input's neighbourhood from a generator of its own: the same whatever the batch or process
    generators = sample_generators(sample_seeds(generator, inputs.shape[0]), slice(None))
    hoods = [neighbourhood(model, x, int(t), low, high, g, n_samples=params.n_samples, std=params.std,
                           n_low=params.shots // 2, n_high=params.shots - params.shots // 2,
                           batch_size=batch_size) for x, t, g in zip(inputs, target, generators, strict=True)]
    examples = _examples(model, hoods, target, low, high, params, labels, batch_size, generator) \
        if with_examples else [() for _ in hoods]
    return [Case(labels, hood, min(params.k, len(labels)),
                 class_names[int(t)] if int(t) < len(class_names) else f"class {int(t)}",
                 params.format == "change", tuple(ex), params.explainer)
            for hood, t, ex in zip(hoods, target, examples, strict=True)]


def _examples(model: torch.nn.Module, hoods: list[Any], target: torch.Tensor, low: torch.Tensor,
              high: torch.Tensor, params: Any, labels: tuple[str, ...], batch_size: int | None,
              generator: torch.Generator) -> list[list[Any]]:
    """E-ICL's examples: the first neighbourhood samples of every input, explained in one batched call."""
    from xaibench.llm.strategies import Example

    explainer = METHODS.get(params.explainer)()
    if explainer.needs_references:
        raise InputError(f"E-ICL's explainer {explainer.name} needs references; use lime or kernel_shap")
    per = min(params.examples, hoods[0].samples.shape[0])
    shown = torch.cat([hood.samples[:per] for hood in hoods])
    targets = target.repeat_interleave(per)
    rows, total = shard_of(len(hoods))  # the examples lie sample by sample: a shard's are a block too
    with reporting(lambda _: None), sampled_shard(slice(rows.start * per, rows.stop * per), total * per):
        explained = explainer.attribute(model, low + shown * (high - low).clamp(min=1e-12), target=targets,
                                        batch_size=batch_size,
                                        generator=torch.Generator().manual_seed(shared_seed(generator)))
    k = min(params.k, len(labels))
    order = explained.abs().argsort(dim=1, descending=True, stable=True)[:, :k]
    out = []
    for i, hood in enumerate(hoods):
        rows = range(i * per, (i + 1) * per)
        out.append([Example(hood.samples[r - i * per], int(hood.outputs[r - i * per]),
                            tuple(labels[j] for j in order[r].tolist())) for r in rows])
    return out
