"""Integrated gradients on one model saved in different formats: a .pt2 must run as fast as a state_dict.

For the digits and shapes CNNs (sample_models/*.pt), the same weights are saved to a temporary folder as
  state_dict     ``torch.save(model.state_dict())``, loaded with ``arch`` (the eager module),
  pt2_dynamic    ``torch.export`` with a dynamic batch dimension,
  pt2_static     ``torch.export`` of a batch of 1 without dynamic shapes (the batch size is fixed in the
                 program; xaibench shows it runs at any batch size, ``exported.runs_any_batch``),
and each is loaded through ``load_model``. Timed: ``attribute("integrated_gradients", ...)`` with its
defaults (50 steps) on N inputs, all points in one pass and in chunks of ``--batch-size`` rows, rounds
interleaved after a warm-up round. Reported: the minimum seconds, and the ratios to state_dict of the
minima and (in brackets) the median per-round ratio. Target: every .pt2 within 1.3x of the state_dict.
Once, after the rounds, the static program is also run the way it was before it was shown to run at
any batch size (``--chunked``: in chunks of its fixed batch size of 1), for comparison.

    .venv/bin/python benchmarks/model_formats.py [--threads T] [--repeats R] [--chunked]

Writes benchmarks/results/model_formats.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import xaibench
from xaibench.attribution import attribute
from xaibench.models import load_model
from xaibench.models.exported import ExportedModule

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits_cnn", "shapes_cnn")
FORMATS = ("state_dict", "pt2_dynamic", "pt2_static")
TARGET = 1.3


def saved_formats(name: str, folder: Path) -> tuple[dict[str, torch.nn.Module], tuple[int, ...], dict[str, float]]:
    """The sample model ``name`` saved in every format and loaded back; its input shape; load seconds."""
    checkpoint = torch.load(ROOT / "sample_models" / f"{name}.pt", weights_only=True)
    model = load_model(ROOT / "sample_models" / f"{name}.pt").module
    shape = tuple(checkpoint["meta"]["input_shape"])
    torch.save(model.state_dict(), folder / f"{name}.pt")
    example = torch.zeros((2, *shape))
    dynamic = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(dynamic, folder / f"{name}_dynamic.pt2")
    torch.export.save(torch.export.export(model, (example[:1],)), folder / f"{name}_static.pt2")
    files = {"state_dict": f"{name}.pt", "pt2_dynamic": f"{name}_dynamic.pt2", "pt2_static": f"{name}_static.pt2"}
    modules, seconds = {}, {}
    for key, file in files.items():
        start = time.perf_counter()
        modules[key] = load_model(folder / file, trust_model=True, arch=checkpoint["arch"],
                                  arch_kwargs=checkpoint["arch_kwargs"]).module
        seconds[key] = time.perf_counter() - start
    return modules, shape, seconds


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, n: int, batch_size: int | None, repeats: int, chunked: bool) -> dict[str, object]:
    """Seconds per format, interleaved after one warm-up round, and the same maps from every format."""
    with tempfile.TemporaryDirectory() as folder:
        modules, shape, load_seconds = saved_formats(name, Path(folder))
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = modules["state_dict"](x).argmax(1)

    def ig(module: torch.nn.Module) -> torch.Tensor:
        return attribute("integrated_gradients", module, x, target=target, batch_size=batch_size)

    maps = {key: ig(module) for key, module in modules.items()}  # also the warm-up round
    times: dict[str, list[float]] = {key: [] for key in modules}
    for _ in range(repeats):
        for key, module in modules.items():
            times[key].append(timed(lambda module=module: ig(module)))

    def ratio(key: str) -> dict[str, float]:
        per_round = statistics.median(a / b for a, b in zip(times[key], times["state_dict"]))
        return {"of_minimum": min(times[key]) / min(times["state_dict"]), "median_per_round": per_round}

    result = {
        "model": name, "n": n, "batch_size": batch_size, "load_seconds": load_seconds,
        "minimum_seconds": {key: min(values) for key, values in times.items()},
        "all_seconds": times,
        "over_state_dict": {key: ratio(key) for key in FORMATS[1:]},
        "max_abs_difference": {key: float((maps[key] - maps["state_dict"]).abs().max()) for key in FORMATS[1:]},
    }
    if chunked:  # the static program as it ran before: chunks of its fixed batch size
        static = modules["pt2_static"]
        result["pt2_static_chunked_seconds"] = timed(lambda: ig(ExportedModule(static.root, 1)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=16, help="inputs explained")
    parser.add_argument("--batch-size", type=int, default=200, help="the finite batch size measured")
    parser.add_argument("--chunked", action="store_true", help="also time the static program in chunks of 1")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model_formats.json")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = [measure(name, args.n, batch_size, args.repeats, args.chunked)
               for name in MODELS for batch_size in (None, args.batch_size)]
    report = {
        "benchmark": "model_formats", "threads": torch.get_num_threads(), "repeats": args.repeats,
        "target": TARGET,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, object]) -> None:
    """Minimum seconds per format, ratios of minima to state_dict [median per-round ratio]."""
    print(f"threads {report['threads']}, {report['repeats']} rounds; minimum seconds; ratio of minima to "
          "state_dict [median per-round ratio]")
    print(f"{'model':<11} {'batch':>5} {'state_dict':>10} {'pt2_dyn':>8} {'pt2_static':>10} "
          f"{'dynamic/sd':>15} {'static/sd':>15} {'chunked':>8}")
    for r in report["results"]:  # type: ignore[attr-defined]
        s, over = r["minimum_seconds"], r["over_state_dict"]
        cells = [f"{over[k]['of_minimum']:5.3f} [{over[k]['median_per_round']:5.3f}]" for k in FORMATS[1:]]
        chunked = r.get("pt2_static_chunked_seconds")
        print(f"{r['model']:<11} {r['batch_size'] or 'all'!s:>5} {s['state_dict']:10.3f} "
              f"{s['pt2_dynamic']:8.3f} {s['pt2_static']:10.3f} {cells[0]:>15} {cells[1]:>15} "
              f"{'' if chunked is None else f'{chunked:8.2f}':>8}")


if __name__ == "__main__":
    main()
