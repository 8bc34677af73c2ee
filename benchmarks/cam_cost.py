"""Cost of the CAMs (issue 19): Score-CAM and Ablation-CAM against their model-pass floors, and the
gradient CAMs against one forward + backward pass.

Model: ``xaibench.models.archs.resnet18(num_classes=5)``, seeded (``torch.manual_seed(0)``), eval mode,
at the default CAM layer (``layer4``, 512 channels). Inputs: shapes images (seed 0) resized to the
image size (bilinear, antialiased), in [0, 1]; targets = the model's predictions. Each "ours" runs end
to end through ``attribute`` with the default layer, against floors of the same rows.

Forward-pass CAMs: ``--n`` images (default 2: Score-CAM sends N x 512 rows through the model),
``--batch-size`` rows per pass (default 64).

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

Gradient CAMs: ``--gradient-n`` images (default 8), rows per pass from the default memory budget
(``RowPlan.of(None, None, device)`` measured on the model, as every job does, ``XAIBENCH_MAX_MEMORY``
cleared for this process; ResNet-18 at 224 on a CPU: 17 rows, so the 8 images go in one pass).

  gradcam, gradcam_plus_plus, xgradcam, layercam, hirescam
                floor: one forward pass with a forward hook on the default layer (resolved once before
                timing) keeping its output, and ``torch.autograd.grad`` of the summed target logits
                with respect to that output, in chunks of the same rows. Target 1.2.
  fullgrad      floor: the same, the gradient taken with respect to the input (which requires grad)
                and the output of every layer with a bias parameter (every batch norm and the head, in
                ResNet-18: the layers FullGrad reads), in one ``autograd.grad`` call per chunk.
                Target 1.2.

Before the first round every run executes once untimed (warm-up). Rounds alternate the order of ours and
the floors (each gradient CAM is timed next to its own run of the floor). Reported per case: the best
wall time of ``--repeats`` rounds for ours and each floor, their ratio and, in brackets, the median of
per-round ratios; for the gradient CAMs also the ratio in CPU seconds of the process
(``time.process_time``, not on CUDA), which other processes on a shared machine move less than wall
time. The target is checked on the wall ratio. On a small shared machine pass ``--threads 1`` (see
benchmarks/scale.py for why).

    .venv/bin/python benchmarks/cam_cost.py [--quick] [--repeats 3] [--threads 1] [--device cpu|cuda]
        [--only scorecam,ablationcam,gradcam,gradcam_plus_plus,xgradcam,layercam,hirescam,fullgrad]
        [--out PATH]

``--quick`` runs 64x64 images (a 2x2 map at layer4). Writes benchmarks/results/cam_cost.json
(cam_cost_quick.json with --quick; ``--out`` for another file) and prints markdown tables. The JSON keeps
the forward-pass CAMs' fields (``scorecam``, ``ablationcam``, ``masked_rows``, ...) when they run; every
gradient CAM is one record of its ``results`` list (fields as in scale.json); ``times`` and
``best_seconds`` hold the wall seconds of every run, ``cpu_times`` the CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from xaibench.core.memory import ENV_VAR, RowPlan
from xaibench.data import shapes
from xaibench.models.archs import resnet18

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.2  # issue 19: Score-CAM within 1.2x of its model-pass floor
GRADIENT_TARGET = 1.2  # issue 19: the gradient CAMs within 1.2x of one forward + backward
FORWARD_CAMS = ("scorecam", "ablationcam")
GRADIENT_CAMS = ("gradcam", "gradcam_plus_plus", "xgradcam", "layercam", "hirescam", "fullgrad")
CASES = FORWARD_CAMS + GRADIENT_CAMS


def images(n: int, size: int, device: torch.device) -> torch.Tensor:
    """``n`` shapes images (seed 0) resized to ``size`` x ``size``, in [0, 1], on ``device``."""
    x, _labels, _masks = shapes.generate(n, 0)
    resized = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized.clamp_(0, 1).contiguous().to(device)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall and CPU seconds of ``run()`` (CPU seconds of the process: all its threads)."""
    synchronise(device)
    start, cpu = time.perf_counter(), time.process_time()
    run()
    synchronise(device)
    return time.perf_counter() - start, time.process_time() - cpu


def passes(run: Callable[[torch.Tensor], object], rows: torch.Tensor, total: int, batch_size: int) -> None:
    """``run`` on ``total`` rows in passes of ``batch_size``, each pass a slice of the pre-built ``rows``."""
    with torch.no_grad():
        for chunk in row_slices(total, batch_size):
            run(rows[: chunk.stop - chunk.start])


# ---------------------------------------------------------------------------------------------
# forward-pass CAMs


def counts(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[int, int, list[int]]:
    """Rows of Score-CAM's masked passes (non-constant channel maps), rows of Ablation-CAM's ablated
    passes (non-zero channel maps), and per sample its ablation rows (the unablated one included)."""
    capture = capture_layer(model, None, x, target)
    flat = capture.activations.flatten(2)
    nonzero = flat.any(2).sum(1)
    return int((flat.amax(2) > flat.amin(2)).sum()), int(nonzero.sum()), (nonzero + 1).tolist()


def cases(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
          batch_size: int) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """The timed runs of the forward-pass CAMs (ours and the floors) and what they count."""
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


# ---------------------------------------------------------------------------------------------
# gradient CAMs


def gradient_floor(model: torch.nn.Module, modules: list[torch.nn.Module], x: torch.Tensor,
                   target: torch.Tensor, rows: int, with_input: bool) -> None:
    """One forward pass per chunk of ``rows`` with hooks keeping the outputs of ``modules``, and one
    ``autograd.grad`` of the summed target logits with respect to them (and the input)."""
    kept: list[torch.Tensor] = []
    handles = [module.register_forward_hook(lambda _module, _args, output: kept.append(output))
               for module in modules]
    try:
        for chunk in row_slices(x.shape[0], rows):
            inputs = x[chunk].detach().requires_grad_(with_input)
            picked = model(inputs).gather(1, target[chunk, None]).sum()
            torch.autograd.grad(picked, [inputs, *kept] if with_input else kept)
            kept.clear()
    finally:
        for handle in handles:
            handle.remove()


def gradient_cases(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, rows: int,
                   chosen: list[str]) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """The timed runs of the chosen gradient CAMs, each followed by its floor, and the layers read."""
    name, layer = capture_layer(model, None, x[:1], target[:1]).layer
    biased = [module for module in model.modules() if isinstance(getattr(module, "bias", None), torch.nn.Parameter)]
    runs: dict[str, Callable[[], object]] = {}
    for method in chosen:
        runs[method] = lambda method=method: attribute(method, model, x, target=target, batch_size=rows)
        if method == "fullgrad":
            runs[f"{method} floor"] = lambda: gradient_floor(model, biased, x, target, rows, True)
        else:
            runs[f"{method} floor"] = lambda: gradient_floor(model, [layer], x, target, rows, False)
    return runs, {"layer": name, "fullgrad_layers": len(biased)}


def gradient_record(method: str, times: dict[str, list[float]], cpu_times: dict[str, list[float]],
                    x: torch.Tensor, rows: int, plan: RowPlan, layers: dict[str, Any]) -> dict[str, Any]:
    """One gradient CAM's record, fields as in scale.json (no memory)."""
    floor = f"{method} floor"
    seconds, floor_seconds = min(times[method]), min(times[floor])
    on_cpu = x.device.type != "cuda"
    cpu, floor_cpu = (min(cpu_times[method]), min(cpu_times[floor])) if on_cpu else (None, None)
    ratio_ = seconds / floor_seconds
    return {
        "case": method, "model": "resnet18", "n": x.shape[0], "input_shape": list(x.shape[1:]),
        "rows_per_pass": rows, "budget_bytes": plan.budget.bytes if plan.budget is not None else None,
        "layer": "input + every biased layer's output" if method == "fullgrad" else layers["layer"],
        "floor_gradients": layers["fullgrad_layers"] + 1 if method == "fullgrad" else 1,
        "seconds": seconds, "floor_seconds": floor_seconds, "ratio": ratio_,
        "median_round_ratio": statistics.median(o / f for o, f in zip(times[method], times[floor])),
        "cpu_seconds": cpu, "floor_cpu_seconds": floor_cpu,
        "cpu_ratio": None if cpu is None else cpu / floor_cpu,
        "target": GRADIENT_TARGET, "meets_target": ratio_ <= GRADIENT_TARGET,
        "times": {"ours": {"seconds": times[method], "cpu_seconds": cpu_times[method] if on_cpu else None},
                  "floor": {"seconds": times[floor], "cpu_seconds": cpu_times[floor] if on_cpu else None}},
    }


# ---------------------------------------------------------------------------------------------
# measuring


def measure(runs: dict[str, Callable[[], object]], repeats: int,
            device: torch.device) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of every run, ``repeats`` rounds after one untimed warm-up, odd rounds in
    reverse order."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {key: [] for key in runs}
    cpu_times: dict[str, list[float]] = {key: [] for key in runs}
    for round_ in range(repeats):
        order = list(runs.items())
        for key, run in order if round_ % 2 == 0 else order[::-1]:
            wall, cpu = timed(run, device)
            times[key].append(wall)
            cpu_times[key].append(cpu)
    return times, cpu_times


def ratio(times: dict[str, list[float]], ours: str, floor: str) -> dict[str, float]:
    best = min(times[ours]) / min(times[floor])
    median = statistics.median(o / f for o, f in zip(times[ours], times[floor]))
    return {"ratio": best, "median_round_ratio": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--quick", action="store_true", help="64x64 images instead of 224x224")
    parser.add_argument("--n", type=int, default=2, help="images of the forward-pass CAMs")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per pass of the forward-pass CAMs")
    parser.add_argument("--gradient-n", type=int, default=8, help="images of the gradient CAMs")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated of {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    chosen = [case.strip() for case in args.only.split(",") if case.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown or not chosen:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    os.environ.pop(ENV_VAR, None)  # the gradient CAMs' rows come from the default budget
    device = resolve_device(args.device)
    size = 64 if args.quick else 224
    tic = time.perf_counter()
    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval().to(device)
    report: dict[str, Any] = {
        "benchmark": "cam_cost", "quick": args.quick, "cases": chosen, "image_size": size,
        "repeats": args.repeats, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        "load_average": {"start": os.getloadavg()},
    }
    times: dict[str, list[float]] = {}
    cpu_times: dict[str, list[float]] = {}
    forward = [case for case in chosen if case in FORWARD_CAMS]
    if forward:
        x = images(args.n, size, device)
        with torch.no_grad():
            target = model(x).argmax(1)
        runs, counted = cases(model, x, target, args.batch_size)
        runs = {key: run for key, run in runs.items() if key.split()[0] in forward}
        forward_times, forward_cpu = measure(runs, args.repeats, device)
        times |= forward_times
        cpu_times |= forward_cpu
        report |= {"n": args.n, "batch_size": args.batch_size, **counted}
        if "scorecam" in forward:
            score = ratio(times, "scorecam", "scorecam floor")
            report["scorecam"] = {**score, "target": TARGET, "meets_target": score["ratio"] <= TARGET}
        if "ablationcam" in forward:
            report["ablationcam"] = {"model_floor": ratio(times, "ablationcam", "ablationcam model floor"),
                                     "design_floor": ratio(times, "ablationcam", "ablationcam design floor")}
    gradient = [case for case in chosen if case in GRADIENT_CAMS]
    if gradient:
        x = images(args.gradient_n, size, device)
        with torch.no_grad():
            target = model(x).argmax(1)
        plan = RowPlan.of(None, None, device)
        rows = plan.rows(model, x[:1])
        runs, layers = gradient_cases(model, x, target, rows, gradient)
        gradient_times, gradient_cpu = measure(runs, args.repeats, device)
        times |= gradient_times
        cpu_times |= gradient_cpu
        report["gradient"] = {"n": args.gradient_n, "rows_per_pass": rows, "plan": plan.record(), **layers}
        report["results"] = [gradient_record(method, times, cpu_times, x, rows, plan, layers)
                             for method in gradient]
    report |= {"best_seconds": {key: min(value) for key, value in times.items()}, "times": times,
               "cpu_times": cpu_times, "wall_seconds": time.perf_counter() - tic}
    report["load_average"]["end"] = os.getloadavg()
    out = args.out or ROOT / "benchmarks" / "results" / ("cam_cost_quick.json" if args.quick else "cam_cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def cpu_cell(record: dict[str, Any]) -> str:
    """``ours / floor = ratio`` in CPU seconds, or "-" on CUDA."""
    if record["cpu_ratio"] is None:
        return "-"
    return f"{record['cpu_seconds']:.3f} / {record['floor_cpu_seconds']:.3f} = {record['cpu_ratio']:.3f}"


def print_table(report: dict[str, Any]) -> None:
    """Best seconds of ours and each floor, the ratio [median of per-round ratios], and for the gradient
    CAMs the CPU seconds."""
    best = report["best_seconds"]
    load = report["load_average"]
    print(f"\n{report['device']} ({report['device_name']}), torch {report['versions']['torch']}, "
          f"{report['threads']} threads, {report['image_size']}x{report['image_size']}, best of "
          f"{report['repeats']}, load average {load['start'][0]:.2f} -> {load['end'][0]:.2f}, "
          f"{report['wall_seconds']:.0f} s in all\n")
    if "scorecam" in report or "ablationcam" in report:
        print(f"Forward-pass CAMs: {report['n']} images, batch {report['batch_size']}, layer {report['layer']} "
              f"{report['layer_shape']}\n")
        print("| case | rows | ours s | floor s | ours / floor [median] | target |")
        print("|---|---|---|---|---|---|")
    if "scorecam" in report:
        score = report["scorecam"]
        print(f"| scorecam vs model floor | {report['masked_rows']} | {best['scorecam']:.3f} | "
              f"{best['scorecam floor']:.3f} | {score['ratio']:.3f} [{score['median_round_ratio']:.3f}] | "
              f"{TARGET} {'met' if score['meets_target'] else 'MISSED'} |")
    if "ablationcam" in report:
        for floor in ("model", "design"):
            r = report["ablationcam"][f"{floor}_floor"]
            print(f"| ablationcam vs {floor} floor | {report['ablated_rows']} | {best['ablationcam']:.3f} | "
                  f"{best[f'ablationcam {floor} floor']:.3f} | {r['ratio']:.3f} [{r['median_round_ratio']:.3f}] "
                  "| - |")
    if "results" in report:
        gradient = report["gradient"]
        print(f"\nGradient CAMs: {gradient['n']} images, {gradient['rows_per_pass']} rows per pass (default "
              f"budget), layer {gradient['layer']}; fullgrad: the input + {gradient['fullgrad_layers']} "
              "biased layers\n")
        print("| case | ours s | floor s | ours / floor [median] | CPU s ours / floor | target |")
        print("|---|---|---|---|---|---|")
        for r in report["results"]:
            print(f"| {r['case']} | {r['seconds']:.3f} | {r['floor_seconds']:.3f} | {r['ratio']:.3f} "
                  f"[{r['median_round_ratio']:.3f}] | {cpu_cell(r)} | {r['target']} "
                  f"{'met' if r['meets_target'] else 'MISSED'} |")


if __name__ == "__main__":
    main()
