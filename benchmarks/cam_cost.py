"""Cost of the forward-pass CAMs (issue 19): Score-CAM and Ablation-CAM against their model-pass floors.

Model: ``xaibench.models.archs.resnet18(num_classes=5)``, seeded (``torch.manual_seed(0)``), eval mode,
at the default CAM layer (``layer4``, 512 channels). Inputs: N shapes images (seed 0) resized to the
image size (bilinear, antialiased), in [0, 1]; targets = the model's predictions. ``batch_size`` rows
per pass. Cases, each "ours" end to end through ``attribute`` against floors of the same rows:

  scorecam      floor: the masked rows Score-CAM sends through the model (one per sample and channel
                whose map is not constant: N x 512 at 224x224), through the model under ``no_grad`` in
                passes of ``batch_size``, the rows built before timing (one pass's worth, reused: the
                cost of a ResNet pass does not depend on the values), no work between the passes.
                Not in the floor: Score-CAM's pass that reads the layer (N rows) and the zero row of its
                baseline. Target 1.2.
  ablationcam   model floor: the ablated rows (one per sample and channel with a non-zero map) through
                the whole model in passes of ``batch_size``, what an implementation that runs every
                ablated row from the input needs. Design floor: what Ablation-CAM's shared prefix needs:
                the passes of the whole model it makes (the N rows that read the layer, one plain row, and
                one row per ablation pass: the prefix of each pass) and the rows of the rest of the model
                (``avgpool``, ``flatten``, ``fc``) on pre-built layer4 activations, one unablated row per
                sample and one per ablated channel, in passes of ``batch_size``.

Before the first round every case runs once untimed (warm-up). Rounds alternate the order of ours and
the floors. Reported per case: the best wall time of ``--repeats`` rounds for ours and each floor, their
ratio and, in brackets, the median of per-round ratios. On a small shared machine pass ``--threads 1``
(see benchmarks/scale.py for why).

    .venv/bin/python benchmarks/cam_cost.py [--quick] [--repeats 3] [--threads 1] [--device cpu|cuda]

``--quick`` runs 64x64 images (a 2x2 map at layer4). Writes benchmarks/results/cam_cost.json (its
"quick" field says which) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import xaibench
from xaibench.attribution import attribute
from xaibench.attribution.cam_layer import capture_layer
from xaibench.core.batches import row_slices
from xaibench.core.devices import resolve_device
from xaibench.data import shapes
from xaibench.models.archs import resnet18

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.2  # issue 19: Score-CAM within 1.2x of its model-pass floor


def images(n: int, size: int, device: torch.device) -> torch.Tensor:
    """``n`` shapes images (seed 0) resized to ``size`` x ``size``, in [0, 1], on ``device``."""
    x, _labels, _masks = shapes.generate(n, 0)
    resized = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized.clamp_(0, 1).contiguous().to(device)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    synchronise(device)
    start = time.perf_counter()
    run()
    synchronise(device)
    return time.perf_counter() - start


def passes(run: Callable[[torch.Tensor], object], rows: torch.Tensor, total: int, batch_size: int) -> None:
    """``run`` on ``total`` rows in passes of ``batch_size``, each pass a slice of the pre-built ``rows``."""
    with torch.no_grad():
        for chunk in row_slices(total, batch_size):
            run(rows[: chunk.stop - chunk.start])


def counts(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[int, int, list[int]]:
    """Rows of Score-CAM's masked passes (non-constant channel maps), rows of Ablation-CAM's ablated
    passes (non-zero channel maps), and per sample its ablation rows (the unablated one included)."""
    capture = capture_layer(model, None, x, target)
    flat = capture.activations.flatten(2)
    nonzero = flat.any(2).sum(1)
    return int((flat.amax(2) > flat.amin(2)).sum()), int(nonzero.sum()), (nonzero + 1).tolist()


def cases(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
          batch_size: int) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """The timed runs (ours and the floors) and what they count."""
    masked, ablated, per_sample = counts(model, x, target)
    rows = x[:1].expand(batch_size, *x.shape[1:]).contiguous()
    activations = capture_layer(model, None, x[:1], target[:1]).activations
    layer4 = activations.expand(batch_size, *activations.shape[1:]).contiguous()

    def suffix(a: torch.Tensor) -> torch.Tensor:
        return model.fc(model.flatten(model.avgpool(a)))

    prefix_passes = sum(math.ceil(r / batch_size) for r in per_sample)

    def design_floor() -> None:
        with torch.no_grad():
            model(x)  # the pass that reads the layer
            for _ in range(1 + prefix_passes):  # the plain row, then one prefix row per ablation pass
                model(x[:1])
        for r in per_sample:
            passes(suffix, layer4, r, batch_size)

    runs = {
        "scorecam": lambda: attribute("scorecam", model, x, target=target, batch_size=batch_size),
        "scorecam floor": lambda: passes(model, rows, masked, batch_size),
        "ablationcam": lambda: attribute("ablationcam", model, x, target=target, batch_size=batch_size),
        "ablationcam model floor": lambda: passes(model, rows, ablated, batch_size),
        "ablationcam design floor": design_floor,
    }
    counted = {"masked_rows": masked, "ablated_rows": ablated, "ablation_prefix_passes": prefix_passes,
               "layer": capture_layer(model, None, x[:1], target[:1]).layer[0],
               "layer_shape": list(activations.shape[1:])}
    return runs, counted


def measure(runs: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of every run, ``repeats`` rounds after one untimed warm-up, odd rounds in reverse order."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {key: [] for key in runs}
    for round_ in range(repeats):
        order = list(runs.items())
        for key, run in order if round_ % 2 == 0 else order[::-1]:
            times[key].append(timed(run, device))
    return times


def ratio(times: dict[str, list[float]], ours: str, floor: str) -> dict[str, float]:
    best = min(times[ours]) / min(times[floor])
    median = statistics.median(o / f for o, f in zip(times[ours], times[floor]))
    return {"ratio": best, "median_round_ratio": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--quick", action="store_true", help="64x64 images instead of 224x224")
    parser.add_argument("--n", type=int, default=2, help="images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = 64 if args.quick else 224
    tic = time.perf_counter()
    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval().to(device)
    x = images(args.n, size, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    runs, counted = cases(model, x, target, args.batch_size)
    times = measure(runs, args.repeats, device)
    score = ratio(times, "scorecam", "scorecam floor")
    report = {
        "benchmark": "cam_cost", "quick": args.quick, "n": args.n, "image_size": size,
        "batch_size": args.batch_size, "repeats": args.repeats, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        **counted,
        "scorecam": {**score, "target": TARGET, "meets_target": score["ratio"] <= TARGET},
        "ablationcam": {"model_floor": ratio(times, "ablationcam", "ablationcam model floor"),
                        "design_floor": ratio(times, "ablationcam", "ablationcam design floor")},
        "best_seconds": {key: min(value) for key, value in times.items()},
        "times": times, "wall_seconds": time.perf_counter() - tic,
    }
    out = args.out or ROOT / "benchmarks" / "results" / "cam_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    """Best seconds of ours and each floor, the ratio [median of per-round ratios]."""
    best = report["best_seconds"]
    print(f"\n{report['device']} ({report['device_name']}), torch {report['versions']['torch']}, "
          f"{report['threads']} threads, {report['n']} images {report['image_size']}x{report['image_size']}, "
          f"batch {report['batch_size']}, best of {report['repeats']}, layer {report['layer']} "
          f"{report['layer_shape']}, {report['wall_seconds']:.0f} s in all\n")
    print("| case | rows | ours s | floor s | ours / floor [median] | target |")
    print("|---|---|---|---|---|---|")
    score = report["scorecam"]
    print(f"| scorecam vs model floor | {report['masked_rows']} | {best['scorecam']:.3f} | "
          f"{best['scorecam floor']:.3f} | {score['ratio']:.3f} [{score['median_round_ratio']:.3f}] | "
          f"{TARGET} {'met' if score['meets_target'] else 'MISSED'} |")
    for floor in ("model", "design"):
        r = report["ablationcam"][f"{floor}_floor"]
        print(f"| ablationcam vs {floor} floor | {report['ablated_rows']} | {best['ablationcam']:.3f} | "
              f"{best[f'ablationcam {floor} floor']:.3f} | {r['ratio']:.3f} [{r['median_round_ratio']:.3f}] | - |")


if __name__ == "__main__":
    main()
