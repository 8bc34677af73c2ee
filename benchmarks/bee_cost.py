"""BEE's wall time against the sum of its parts: T path integrals plus T metric evaluations.

BEE (``xaibench.attribution.bee``) runs T rounds; each integrates the straight path once for all inputs
(``straight_path_integral``) and scores the maps once (the metric's ``compute``). Everything else it
does (the context embedding, choosing and drawing baselines, the Thompson-sampling policy updates,
keeping the best map) is overhead. On N ``shapes:test`` images (3x64x64, normalised for the shapes
CNN, sample_models/shapes_cnn.pt), targets = the model's predictions, for each metric and T:
  bee       ``attribute("bee", ..., rounds=T, n_steps, metric)`` end to end (``batch_size``);
  path      one ``straight_path_integral`` over the N inputs from zero baselines with BEE's
            quadrature (Gauss-Legendre, ``n_steps``), same ``batch_size``;
  metric    one ``xaibench.metrics.compute(metric, ...)`` with default parameters (as BEE calls it) on
            integrated-gradients maps, same ``batch_size``;
  parts     T x (best path + best metric).
Rounds are interleaved (in each round: every T's BEE run, then one path and one metric call), after a
warm-up (BEE at the smallest T, one path and one metric call: every kernel the timed runs use).
Reported: the best BEE time of ``--repeats`` rounds, the parts from the best single path and metric
calls of all rounds (a best single call times T can only understate the parts, so the ratio errs
high), and the ratio bee / parts. Target: at most 1.3.

    .venv/bin/python benchmarks/bee_cost.py [--threads 2] [--repeats 3] [--metrics deletion,insertion]

Writes benchmarks/results/bee_cost.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from xaibench.metrics import compute

import xaibench
from xaibench.attribution import attribute
from xaibench.attribution.path import quadrature, straight_path_integral
from xaibench.data import load_data
from xaibench.data.prepare import normalise
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def workload(n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The shapes CNN, the first ``n`` normalised shapes:test images and their predicted classes."""
    loaded = load_model(ROOT / "sample_models" / "shapes_cnn.pt")
    model = loaded.module.eval()
    x = normalise(load_data("shapes:test").x[:n].float(), loaded.meta)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


def measure(metric: str, rounds: list[int], n: int, n_steps: int, batch_size: int,
            repeats: int) -> list[dict[str, object]]:
    """BEE for every T in ``rounds`` and its parts for ``metric``, interleaved, after a warm-up."""
    model, x, target = workload(n)
    alphas, weights = quadrature("gausslegendre", n_steps)
    zeros = torch.zeros_like(x)
    maps = straight_path_integral(model, x, zeros, target, alphas, weights, batch_size)
    runs: dict[str, Callable[[], object]] = {
        f"bee_T{t}": (lambda t=t: attribute("bee", model, x, target=target, batch_size=batch_size,
                                            generator=torch.Generator().manual_seed(0),
                                            rounds=t, n_steps=n_steps, metric=metric))
        for t in rounds
    }
    runs["path"] = lambda: straight_path_integral(model, x, zeros, target, alphas, weights, batch_size)
    runs["metric"] = lambda: compute(metric, model, x, maps, target=target, batch_size=batch_size,
                                     generator=torch.Generator().manual_seed(0))
    for key in (f"bee_T{min(rounds)}", "path", "metric"):  # warm-up: caches, kernels, lazy imports
        runs[key]()
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(timed(run))
    path, metric_s = min(times["path"]), min(times["metric"])
    results = []
    for t in rounds:
        bee = min(times[f"bee_T{t}"])
        parts = t * (path + metric_s)
        results.append({
            "metric": metric, "rounds": t, "n": n, "n_steps": n_steps, "batch_size": batch_size,
            "bee_seconds": bee, "path_seconds": path, "metric_seconds": metric_s,
            "parts_seconds": parts, "ratio": bee / parts, "meets_target": bee / parts <= TARGET,
            "all_seconds": {"bee": times[f"bee_T{t}"], "path": times["path"], "metric": times["metric"]},
        })
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=16, help="inputs")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", default="1,4,16", help="the values of T, comma-separated")
    parser.add_argument("--metrics", default="deletion,insertion", help="comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bee_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = [int(t) for t in args.rounds.split(",")]
    results = [
        row
        for metric in args.metrics.split(",")
        for row in measure(metric.strip(), rounds, args.n, args.n_steps, args.batch_size, args.repeats)
    ]
    report = {
        "benchmark": "bee_cost", "threads": torch.get_num_threads(), "repeats": args.repeats,
        "target": TARGET,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, object]) -> None:
    """Best seconds per T and metric, parts = T x (path + metric), and the ratio against the target."""
    print(f"threads {report['threads']}, best of {report['repeats']} rounds; parts = T x (path + metric)")
    print(f"{'T':>3} {'metric':<10} {'bee s':>8} {'path s':>7} {'metric s':>8} {'parts s':>8} "
          f"{'ratio':>6} {'<= ' + str(TARGET):>7}")
    for r in report["results"]:  # type: ignore[attr-defined]
        print(f"{r['rounds']:>3} {r['metric']:<10} {r['bee_seconds']:8.3f} {r['path_seconds']:7.3f} "
              f"{r['metric_seconds']:8.3f} {r['parts_seconds']:8.3f} {r['ratio']:6.3f} "
              f"{'yes' if r['meets_target'] else 'NO':>7}")


if __name__ == "__main__":
    main()
