"""How close the perturbation metrics run to the floor: one batched forward pass over the same rows.

A perturbation metric's unavoidable cost is the forward passes over its perturbed inputs. For each
metric in ``CASES``, on N=64 ``shapes:test`` images (3x64x64) and the shapes CNN
(sample_models/shapes_cnn.pt) with saliency attributions:
  rows      a counting wrapper around the model records the size of every forward pass the metric
            makes (the metric's timed runs go through it);
  floor     the same sequence of forward passes over a pre-built tensor, under ``torch.no_grad``:
            chunk sizes replayed exactly, no perturbation, no scoring;
  metric    ``xaibench.metrics.compute`` end to end (parameter parsing, validation, orderings,
            building the perturbed inputs, scoring, the score itself), same ``--batch-size``.
Reported: the best of ``--repeats`` rounds for each (metric and floor interleaved; the first round also
warms up), the ratio of the best times metric / floor and, in brackets, the median over rounds of the
ratio within a round (on a shared machine both can move with the load). Target: at most 1.5.

    .venv/bin/python benchmarks/metrics_model_bound.py [--threads 2] [--repeats 3] [--only NAME,...]

Writes benchmarks/results/metrics_model_bound.json and prints a table. The parameters (``CASES``) are
coarser than the metrics' defaults so that the whole run takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from xaibench.metrics import compute

import xaibench
from xaibench.attribution import attribute
from xaibench.data import load_data
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
N = 64

#: metric -> parameters: coarser than the defaults (which send up to tens of thousands of rows), so that
#: each metric sends about 500-1,100 rows (64 samples x 8-17 perturbations) and a run takes minutes
CASES: dict[str, dict[str, Any]] = {
    "deletion": {"per_step": 256},
    "insertion": {"per_step": 256},
    "pixel_flipping": {"features_in_step": 256},
    "lerf": {"features_in_step": 256},
    "region_perturbation": {"patch": 16},
    "selectivity": {"patch": 16},
    "faithfulness_correlation": {"runs": 16},
    "faithfulness_estimate": {"features_in_step": 256},
    "monotonicity": {"features_in_step": 256},
    "monotonicity_correlation": {"features_in_step": 1024, "samples": 4},
    "sensitivity_n": {"runs": 8, "n_sizes": 2},
    "infidelity": {"samples": 16},
    "infidelity_patch": {"perturbation": "patch", "patch_size": 16},
    "pgi": {"samples": 16},
    "pgu": {"samples": 16},
    "pos": {},
    "neg": {},
    "road": {"percentages": "5:100:10"},
    "irof": {"n_segments": 16},
    "average_drop": {},
    "increase_in_confidence": {},
    "non_sensitivity": {"patch": 16},
    "completeness": {},
}
#: benchmark entries that run a registered metric under another name
ALIASES = {"infidelity_patch": "infidelity"}


class CountingModel(torch.nn.Module):
    """Wraps a model and records every forward pass: (rows, whether autograd was recording)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.passes: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append((int(x.shape[0]), torch.is_grad_enabled()))
        return self.inner(x)


def replay(model: torch.nn.Module, rows: torch.Tensor, passes: list[tuple[int, bool]]) -> None:
    """The recorded forward passes on pre-built ``rows`` (at least as many as the largest pass): under
    ``torch.no_grad``, or, for passes autograd recorded (an explainer's), forward plus the gradient of
    one output with respect to the input, the least a gradient explanation costs."""
    for size, grad in passes:
        if grad:
            x = rows[:size].detach().requires_grad_(True)
            torch.autograd.grad(model(x)[:, 0].sum(), x)
        else:
            with torch.no_grad():
                model(rows[:size])


def prebuilt(x: torch.Tensor, passes: list[tuple[int, bool]]) -> torch.Tensor:
    """The floor's rows: the inputs ``x`` repeated up to the largest pass."""
    largest = max(size for size, _ in passes)
    return x.repeat((largest + x.shape[0] - 1) // x.shape[0], *(1,) * (x.ndim - 1))[:largest].contiguous()


def run_metric(name: str, model: torch.nn.Module, x: torch.Tensor, a: torch.Tensor, y: torch.Tensor,
               masks: torch.Tensor, batch_size: int) -> None:
    compute(ALIASES.get(name, name), model, x, a, target=y, masks=masks, batch_size=batch_size,
            generator=torch.Generator().manual_seed(0), **CASES[name])


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, model: torch.nn.Module, x: torch.Tensor, a: torch.Tensor, y: torch.Tensor,
            masks: torch.Tensor, batch_size: int, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` seconds of the metric (through the counting wrapper) and of its floor.

    The first round's passes define the floor; the wrapper's cost, one Python call per forward pass,
    is a few microseconds per pass.
    """
    counting = CountingModel(model).eval()
    times: dict[str, list[float]] = {"metric": [], "floor": []}
    passes: list[tuple[int, bool]] = []
    rows = x
    for round_ in range(repeats):
        counting.passes = []
        times["metric"].append(timed(lambda: run_metric(name, counting, x, a, y, masks, batch_size)))
        if round_ == 0:
            passes, rows = counting.passes, prebuilt(x, counting.passes)
        times["floor"].append(timed(lambda: replay(model, rows, passes)))
    best = {key: min(values) for key, values in times.items()}
    per_round = statistics.median(m / f for m, f in zip(times["metric"], times["floor"]))
    return {
        "metric": name, "params": CASES[name], "rows": sum(size for size, _ in passes),
        "forward_passes": len(passes), "largest_pass": max(size for size, _ in passes),
        "metric_seconds": best["metric"], "floor_seconds": best["floor"],
        "ratio": best["metric"] / best["floor"], "median_round_ratio": per_round, "all_seconds": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best is reported")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per forward pass")
    parser.add_argument("--method", default="saliency", help="attribution method scored")
    parser.add_argument("--only", default="", help="comma-separated metric names (default: all)")
    default_out = ROOT / "benchmarks" / "results" / "metrics_model_bound.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(ROOT / "sample_models" / "shapes_cnn.pt").module.eval()
    data = load_data("shapes:test")
    x, y, masks = data.x[:N].contiguous(), data.y[:N], data.masks[:N]
    a = attribute(args.method, model, x, target=y, batch_size=args.batch_size)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(CASES)
    load_before = os.getloadavg()
    results = []
    for name in chosen:
        results.append(measure(name, model, x, a, y, masks, args.batch_size, args.repeats))
        r = results[-1]
        print(f"  {name}: {r['rows']} rows, {r['metric_seconds']:.3f} s / {r['floor_seconds']:.3f} s = "
              f"{r['ratio']:.2f}", flush=True)
    report = {
        "benchmark": "metrics_model_bound", "model": "shapes_cnn", "input_shape": list(x.shape[1:]), "n": N,
        "method": args.method, "threads": args.threads, "repeats": args.repeats,
        "batch_size": args.batch_size,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    print(f"shapes_cnn, N={report['n']}, {report['method']}, threads {report['threads']}, batch_size "
          f"{report['batch_size']}, best of {report['repeats']}, load average "
          f"{report['load_average']['before'][0]:.2f} -> {report['load_average']['after'][0]:.2f}; "
          "target metric / floor <= 1.5")
    print(f"{'metric':<24} {'rows':>6} {'passes':>6} {'floor s':>8} {'metric s':>9} {'ratio':>6} "
          f"{'[median]':>8}")
    for r in report["results"]:
        flag = "" if r["ratio"] <= 1.5 else "  > 1.5"
        print(f"{r['metric']:<24} {r['rows']:>6} {r['forward_passes']:>6} {r['floor_seconds']:8.3f} "
              f"{r['metric_seconds']:9.3f} {r['ratio']:6.2f} [{r['median_round_ratio']:6.2f}]{flag}")


if __name__ == "__main__":
    main()
