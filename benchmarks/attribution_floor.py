"""How close the path engine runs to the floor: one forward + backward pass over all path points.

For the digits and shapes CNNs, on N inputs with K path steps (N * K points), this measures
  floor     one batched forward + backward over N * K points (inputs require grad, sum of the target
            logits, torch.autograd.grad), in chunks of batch_size rows; points built before timing,
  captum    captum.attr.IntegratedGradients (internal_batch_size = batch_size, or all points),
  xaibench  path_integrated_gradients (batch_size), end to end through Method.attribute,
both with all points in one pass and with a finite batch size. Runs are interleaved round by round.
Reported per variant: the median and the minimum wall time; ratios to the floor both as the ratio of
minimum times (contention from other processes only ever adds time, so the minimum is the cleanest
estimate of the cost on a shared machine) and as the median over rounds of each run's time divided by
the floor's time in the same round.

    .venv/bin/python benchmarks/attribution_floor.py [--threads T] [--repeats R]

Writes benchmarks/results/attribution_floor.json and prints a table. The models are the committed
sample models (sample_models/*.pt).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import captum
import torch
from captum.attr import IntegratedGradients

import xaibench
from xaibench.attribution.path import PathIntegratedGradients
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits_cnn", "shapes_cnn")


def load(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The sample model ``name`` and its input shape."""
    loaded = load_model(ROOT / "sample_models" / f"{name}.pt")
    return loaded.module.eval(), tuple(loaded.meta.input_shape)


def floor(model: torch.nn.Module, points: torch.Tensor, target: torch.Tensor, batch_size: int) -> None:
    """Forward + backward over ``points`` in chunks: the least any path method must do."""
    for start in range(0, points.shape[0], batch_size):
        x = points[start : start + batch_size].detach().requires_grad_(True)
        picked = model(x).gather(1, target[start : start + batch_size, None]).sum()
        torch.autograd.grad(picked, x)


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, n: int, n_steps: int, batch_size: int | None, repeats: int) -> dict[str, object]:
    """Median seconds of floor, captum and xaibench, interleaved, after one warm-up round each."""
    model, shape = load(name)
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = model(x).argmax(1)
    rows = n * n_steps
    chunk = rows if batch_size is None else batch_size
    points, point_target = x.repeat_interleave(n_steps, 0), target.repeat_interleave(n_steps)
    ig, ours = IntegratedGradients(model), PathIntegratedGradients()
    runs: dict[str, Callable[[], object]] = {
        "floor": lambda: floor(model, points, point_target, chunk),
        "captum": lambda: ig.attribute(x, target=target, n_steps=n_steps, internal_batch_size=chunk),
        "xaibench": lambda: ours.attribute(model, x, target=target, n_steps=n_steps, batch_size=batch_size),
    }
    times: dict[str, list[float]] = {key: [] for key in runs}
    for round_ in range(repeats + 1):
        for key, run in runs.items():
            seconds = timed(run)
            if round_:  # round 0 warms up caches and kernels
                times[key].append(seconds)
    def ratios(key: str, base: str) -> dict[str, float]:
        per_round = statistics.median(a / b for a, b in zip(times[key], times[base]))
        return {"of_minimum": min(times[key]) / min(times[base]), "median_per_round": per_round}

    return {
        "model": name, "input_shape": list(shape), "n": n, "n_steps": n_steps,
        "points": rows, "batch_size": batch_size,
        "median_seconds": {key: statistics.median(values) for key, values in times.items()},
        "minimum_seconds": {key: min(values) for key, values in times.items()},
        "all_seconds": times,
        "captum_over_floor": ratios("captum", "floor"),
        "xaibench_over_floor": ratios("xaibench", "floor"),
        "xaibench_over_captum": ratios("xaibench", "captum"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--n", type=int, default=16, help="inputs per batch")
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=200, help="the finite batch size measured")
    default_out = ROOT / "benchmarks" / "results" / "attribution_floor.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = [
        measure(name, args.n, args.n_steps, batch_size, args.repeats)
        for name in MODELS
        for batch_size in (None, args.batch_size)
    ]
    report = {
        "benchmark": "attribution_floor", "threads": torch.get_num_threads(), "repeats": args.repeats,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "captum": captum.__version__, "xaibench": xaibench.__version__},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, object]) -> None:
    """Minimum seconds, ratios of minima, and (in brackets) median per-round ratios."""
    print(f"threads {report['threads']}, {report['repeats']} rounds; minimum seconds; ratios of minima "
          "[median per-round ratio]")
    print(f"{'model':<11} {'batch':>5} {'floor':>7} {'captum':>7} {'ours':>7} "
          f"{'captum/floor':>14} {'ours/floor':>14} {'ours/captum':>14}")
    for r in report["results"]:  # type: ignore[attr-defined]
        s = r["minimum_seconds"]
        cells = [
            f"{r[key]['of_minimum']:5.3f} [{r[key]['median_per_round']:5.3f}]"
            for key in ("captum_over_floor", "xaibench_over_floor", "xaibench_over_captum")
        ]
        print(f"{r['model']:<11} {str(r['batch_size'] or 'all'):>5} {s['floor']:7.3f} {s['captum']:7.3f} "
              f"{s['xaibench']:7.3f} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}")


if __name__ == "__main__":
    main()
