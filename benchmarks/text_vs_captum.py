"""Integrated gradients in a text model's embedding space against captum's LayerIntegratedGradients (issue 22).

For three text classifiers (tests/conftest.py's toy transformer, a 2-layer Hugging Face BERT built offline
by tests/text_models.py, and sample_models/planted_text_transformer.pt), eight texts of six random words:
xaibench's integrated gradients on the content-token embeddings from zero (the mask token) against
captum's LayerIntegratedGradients on the token-embedding layer with mask-token ids as the baseline (the
special tokens the same in both ends), 50 steps, both quadrature rules; token scores summed over the
embedding.

    .venv/bin/python benchmarks/text_vs_captum.py

Prints the largest absolute difference of the token scores and the largest score, and writes
benchmarks/results/text_vs_captum.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import captum.attr
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_text_model
from tests.text_models import hf_model_dir
from xaibench.attribution import METHODS
from xaibench.models import load_model


def compare(wrapper: torch.nn.Module, rule: str) -> dict[str, float]:
    words = wrapper.substitutes()
    words = words[words != wrapper.tokenizer.substrate_id]
    content = words[torch.randint(words.numel(), (8, 6), generator=torch.Generator().manual_seed(0))]
    target = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))
    forward = (lambda ids: wrapper.model(input_ids=ids).logits) if wrapper.huggingface else wrapper.model

    def full(ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([wrapper.prefix.expand(len(ids), -1), ids, wrapper.suffix.expand(len(ids), -1)], dim=1)

    ours = METHODS.get("integrated_gradients")().attribute(wrapper, wrapper.embed(content), target=target,
                                                           n_steps=50, method=rule).sum(dim=1)
    baseline = torch.full_like(content, wrapper.tokenizer.substrate_id)
    theirs = captum.attr.LayerIntegratedGradients(forward, wrapper.embedding).attribute(
        full(content), baselines=full(baseline), target=target, n_steps=50, method=rule).sum(dim=-1)
    start = wrapper.prefix.numel()
    theirs = theirs[:, start:start + content.shape[1]]
    return {"max_abs_difference": float((ours - theirs).abs().max()), "max_abs_score": float(theirs.abs().max())}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        models = {"toy": make_text_model(0), "bert": load_model(hf_model_dir(Path(folder) / "bert")).module,
                  "planted_text_transformer": load_model(ROOT / "sample_models" / "planted_text_transformer.pt").module}
        results = {f"{name} {rule}": compare(model, rule) for name, model in models.items()
                   for rule in ("gausslegendre", "riemann_trapezoid")}
    for case, result in results.items():
        print(f"{case}: max |difference| {result['max_abs_difference']:.2e}, max |score| {result['max_abs_score']:.3f}")
    (ROOT / "benchmarks" / "results" / "text_vs_captum.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
