"""RISE's cost against its model-pass floor (issue 19): the masked rows through the model, nothing else.

Model: ``xaibench.models.archs.resnet18(num_classes=5)`` (seeded random weights, ``torch.manual_seed(0)``,
eval mode). Inputs: N images ``torch.rand`` (seed 0) of 3 x S x S; targets = the model's predictions.
  rise    ``attribute("rise", ..., n_masks, batch_size)`` end to end (drawing the grids, building the
          masks, masking, the forward passes, softmax and the weighted sums);
  floor   forward passes only, under ``torch.no_grad``, of the same rows in the same passes
          (``row_slices(N * n_masks, batch_size)``: full passes of batch_size, filled across samples,
          and one partial pass), on one block of batch_size masked images built before timing.
Rounds alternate the order of rise and floor, after a warm-up (one floor pass and one rise call of one
pass). Reported: the best wall time of ``--repeats`` rounds of each, their ratio and, in brackets, the
median of per-round ratios; and the same ratio in CPU seconds of the process (``time.process_time``;
not on CUDA, where the times are synchronised). Target: at most 1.2. On a small shared machine pass
``--threads 1`` (default): two torch threads on two busy cores wait for each other unpredictably.

    .venv/bin/python benchmarks/rise_cost.py [--quick] [--repeats 2] [--threads 1] [--device cpu|cuda]

Full: 2 images of 224 x 224, n_masks 500, batch_size 64 (1000 rows in 16 passes). ``--quick``: the same
at 64 x 64. Writes benchmarks/results/rise_cost.json (rise_cost_quick.json with --quick) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import xaibench
from xaibench.attribution import attribute
from xaibench.core.batches import row_slices
from xaibench.models.archs import resnet18

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.2


def timed(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) of one call, synchronised on CUDA."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(n: int, side: int, n_masks: int, batch_size: int, repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval().to(device)
    x = torch.rand((n, 3, side, side), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    block = (x[:1] * 0.5).expand(batch_size, -1, -1, -1).contiguous()  # one pass of masked rows
    passes = [rows.stop - rows.start for rows in row_slices(n * n_masks, batch_size)]

    def floor() -> None:
        with torch.no_grad():
            for rows in passes:
                model(block[:rows])

    def ours(masks: int = n_masks) -> torch.Tensor:
        return attribute("rise", model, x, target=target, n_masks=masks, batch_size=batch_size,
                         generator=torch.Generator().manual_seed(0))

    with torch.no_grad():  # warm-up: kernels, caches, lazy imports
        model(block)
    ours(max(1, batch_size // n))
    runs = {"rise": ours, "floor": floor}
    times: dict[str, list[tuple[float, float]]] = {key: [] for key in runs}
    for round_ in range(repeats):
        for key in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            times[key].append(timed(runs[key], device))
    wall = {key: [t[0] for t in values] for key, values in times.items()}
    cpu = {key: [t[1] for t in values] for key, values in times.items()}
    ratio = min(wall["rise"]) / min(wall["floor"])
    return {
        "n": n, "image": side, "n_masks": n_masks, "batch_size": batch_size, "rows": n * n_masks,
        "passes": len(passes), "device": str(device),
        "rise_seconds": min(wall["rise"]), "floor_seconds": min(wall["floor"]), "ratio": ratio,
        "median_round_ratio": statistics.median(r / f for r, f in zip(wall["rise"], wall["floor"])),
        "cpu_ratio": None if device.type == "cuda" else min(cpu["rise"]) / min(cpu["floor"]),
        "target": TARGET, "meets_target": ratio <= TARGET,
        "all_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 x 64 images instead of 224 x 224")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=2, help="images")
    parser.add_argument("--n-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    side = 64 if args.quick else 224
    result = measure(args.n, side, args.n_masks, args.batch_size, args.repeats, device)
    report = {
        "benchmark": "rise_cost", "quick": args.quick, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "machine": platform.machine(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        "results": [result],
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"rise_cost{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    """One markdown row per measured case: best seconds, the ratio and whether it meets the target."""
    print(f"threads {report['threads']}, best of {report['repeats']} rounds; floor = the same rows' forward passes")
    print()
    print("| model | images | n_masks | batch | passes | device | rise s | floor s | ratio (median) | cpu ratio "
          f"| <= {TARGET} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        cpu = "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.3f}"
        print(f"| resnet18 | {r['n']} x {r['image']}px | {r['n_masks']} | {r['batch_size']} | {r['passes']} "
              f"| {r['device']} | {r['rise_seconds']:.3f} | {r['floor_seconds']:.3f} "
              f"| {r['ratio']:.3f} ({r['median_round_ratio']:.3f}) | {cpu} "
              f"| {'yes' if r['meets_target'] else 'NO'} |")


if __name__ == "__main__":
    main()
