"""Which deletion / insertion settings separate attribution methods on the bundled shapes model.

Issue 17: with the former deletion default (zero substrate, single pixels, 32 steps) every method's
curve on sample_models/shapes_cnn.pt falls to about 0.13 after the first step (1/32 of the pixels),
so saliency, integrated gradients and a random map score alike. This script scores the five methods
saliency, integrated_gradients, gradcam, smoothgrad and random (their defaults, seed 0) on the first
``--n`` test images (target: the prediction, as ``evaluate``) with each candidate setting, and
reports how well the setting separates them:

  spread / CI   (largest - smallest method mean) / mean width of the methods' 95% bootstrap intervals
  pairs         of the 10 method pairs, how many have a paired 95% bootstrap interval of the mean
                difference that excludes 0 (the same samples score every method)
  random        random's rank among the five (5: worst, where a sanity check wants it)
  step 1        the curve's mean after the first step, over all methods and samples (deletion: how
                much of the probability survives the first removal; insertion: how much the first
                reveal restores)

    .venv/bin/python benchmarks/deletion_defaults.py [--n 50] [--threads 2] [--only deletion]

Writes benchmarks/results/deletion_defaults.json and prints a table per metric.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from xaibench.metrics import compute

import xaibench
from xaibench.attribution import attribute
from xaibench.data import load_data
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("saliency", "integrated_gradients", "gradcam", "smoothgrad", "random")
RESAMPLES = 2000
#: metric -> candidate settings (the metric's parameters); the first is the former default
CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "deletion": [{"substrate": s, "patch": p} for p in (1, 4, 8) for s in ("zero", "black", "mean", "blur")],
    "insertion": [{"substrate": s, "patch": p} for p in (1, 4, 8) for s in ("blur", "zero", "mean")],
}


def bootstrap_means(values: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Means of ``values`` (n, ...) over the resampled rows ``picks`` (R, n): (R, ...)."""
    return values[picks].mean(axis=1)


def separation(scores: dict[str, np.ndarray], higher_is_better: bool, seed: int) -> dict[str, Any]:
    """The separation statistics of one setting from per-sample scores per method (module docstring)."""
    n = len(next(iter(scores.values())))
    picks = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))
    means = {m: float(v.mean()) for m, v in scores.items()}
    widths = [float(np.diff(np.percentile(bootstrap_means(v, picks), [2.5, 97.5]))[0]) for v in scores.values()]
    separated = 0
    for a, b in itertools.combinations(scores, 2):
        low, high = np.percentile(bootstrap_means(scores[a] - scores[b], picks), [2.5, 97.5])
        separated += int(low > 0 or high < 0)
    ordered = sorted(means, key=lambda m: -means[m] if higher_is_better else means[m])
    return {"means": means, "spread_over_ci": (max(means.values()) - min(means.values())) / float(np.mean(widths)),
            "separated_pairs": separated, "random_rank": ordered.index("random") + 1, "order": ordered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="test images (the first n)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per forward pass")
    parser.add_argument("--only", default="", help="deletion, insertion or both (default)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deletion_defaults.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(ROOT / "sample_models" / "shapes_cnn.pt").module.eval()
    x = load_data("shapes:test").x[: args.n].contiguous()
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    maps = {m: attribute(m, model, x, target=target, batch_size=args.batch_size,
                         generator=torch.Generator().manual_seed(0)).detach() for m in METHODS}
    metrics = [name.strip() for name in args.only.split(",") if name.strip()] or list(CANDIDATES)
    results = []
    for metric in metrics:
        for params in CANDIDATES[metric]:
            started = time.perf_counter()
            outcome = {m: compute(metric, model, x, maps[m], target=target, batch_size=args.batch_size,
                                  generator=torch.Generator().manual_seed(0), **params) for m in METHODS}
            scores = {m: r.scores.double().numpy() for m, r in outcome.items()}
            step1 = float(np.mean([r.curve[:, 1].double().mean() for r in outcome.values()]))
            row = {"metric": metric, "params": params, "step1": step1,
                   **separation(scores, metric == "insertion", seed=0),
                   "seconds": round(time.perf_counter() - started, 1)}
            results.append(row)
            print(format_row(row), flush=True)
    report = {"benchmark": "deletion_defaults", "model": "shapes_cnn", "n": args.n, "methods": list(METHODS),
              "threads": args.threads, "resamples": RESAMPLES,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "xaibench": xaibench.__version__},
              "load_average": os.getloadavg(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def format_row(row: dict[str, Any]) -> str:
    means = " ".join(f"{row['means'][m]:.3f}" for m in METHODS)
    setting = f"{row['params']['substrate']}, patch {row['params']['patch']}"
    return (f"| {row['metric']:<9} | {setting:<15} | {row['spread_over_ci']:6.2f} | {row['separated_pairs']:>2} "
            f"| {row['random_rank']} | {row['step1']:.3f} | {means} |")


def print_table(report: dict[str, Any]) -> None:
    print(f"shapes_cnn, first {report['n']} test images, target: prediction; means in the order "
          f"{', '.join(report['methods'])}")
    print("| metric    | setting         | spread/CI | pairs | random | step 1 | means |")
    for row in report["results"]:
        print(format_row(row))


if __name__ == "__main__":
    main()
