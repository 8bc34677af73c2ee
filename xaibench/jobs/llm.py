"""``xaibench llm-explain``: the explain job with the llm method, read back next to the ground truth.

The run directory is explain's (run.json, attributions, heatmaps, transcript.jsonl). On a linear model
the ground truth is its coefficients times each feature's training range (``coefficients -p
scale=range``: what the neighbourhood, perturbing by a share of each range, can reveal); each sample's
top-k is compared with the LLM's by feature_agreement and rank_agreement at the same k. On another model
there is no ground truth to show, and the comparison is left out rather than made against a stand-in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import torch
from safetensors.torch import load_file

from xaibench.attribution import METHODS
from xaibench.core import runs
from xaibench.core.distributed import world
from xaibench.core.errors import IncompatibleError
from xaibench.data.prepare import prepare
from xaibench.jobs.explain import ExplainConfig, ExplainResult, explain, supplied_params
from xaibench.metrics import compute


@dataclass(frozen=True)
class LLMExplainResult:
    run: ExplainResult
    details: dict[str, Any]  # the llm method's notes: strategy, model, account, per-sample replies
    samples: list[dict[str, Any]]  # per sample: index, the LLM's ranking, the ground truth, FA, RA


def llm_explain(config: ExplainConfig, argv: list[str], on_progress: Any = None) -> LLMExplainResult | None:
    """The explain run with the llm method and its comparison; None on the other processes of a torchrun
    launch (rank 0 writes and reads back the run)."""
    run = explain(replace(config, method="llm"), argv, on_progress)
    if not world().main:
        return None
    record = json.loads((run.run_dir / runs.RUN_FILE).read_text())
    details = record["method"]["details"]["llm"]
    tensors = load_file(str(run.run_dir / runs.ATTRIBUTIONS_FILE))
    truth = _ground_truth(config, tensors, int(details["k"]))
    names = record["model"]["meta"].get("feature_names") or [f"x{j}" for j in range(tensors["inputs"].shape[1])]
    samples = []
    for i, noted in enumerate(details["samples"]):
        entry = {"index": int(tensors["indices"][i]), **noted, "ground_truth": None,
                 "feature_agreement": None, "rank_agreement": None}
        if truth is not None:
            entry["ground_truth"] = [names[j] for j in truth["top"][i]]
            if noted["ok"]:
                entry["feature_agreement"] = float(truth["feature_agreement"][i])
                entry["rank_agreement"] = float(truth["rank_agreement"][i])
        samples.append(entry)
    return LLMExplainResult(run, details, samples)


def _ground_truth(config: ExplainConfig, tensors: dict[str, torch.Tensor], k: int) -> dict[str, Any] | None:
    """The coefficients' top-k and the agreement of the LLM's rank scores with them; None when the model
    is not linear."""
    loaded = config.source.load()
    inputs, targets = tensors["inputs"], tensors["targets"]
    method = METHODS.get("coefficients")()
    one = prepare(loaded, replace(config.selection, n=1, indices=None), config.batch_size)  # data and meta
    extra = supplied_params(method, one, torch.Generator().manual_seed(config.seed), {"scale": "range"})
    try:
        coefficients = method.attribute(loaded.module, inputs, target=targets, scale="range", **extra)
    except IncompatibleError:
        return None
    k = min(k, inputs.shape[1])
    scores = tensors["attributions"]
    agreement = {name: compute(name, None, inputs, scores, target=targets, reference=coefficients, k=k).scores
                 for name in ("feature_agreement", "rank_agreement")}
    top = coefficients.abs().argsort(dim=1, descending=True, stable=True)[:, :k].tolist()
    return {"top": top, **agreement}
