"""Cost at scale (issue 18, point 5): methods and metrics on ResNet-18 and ViT-Tiny/16 at 3x224x224
against their floors, with the rows per pass the default memory budget gives.

Models: ``xaibench.models.archs.resnet18()`` (11.7M parameters) and ``vit()`` (ViT-Tiny/16, 5.7M),
seeded random weights (``torch.manual_seed(0)``), eval mode. Inputs: N images of xaibench's shapes
generator (seed 0) resized to the model's input size (bilinear, antialiased), in [0, 1]; targets =
the model's predictions. Rows per pass: ``RowPlan.of(None, None, device)``, the default memory budget
(``XAIBENCH_MAX_MEMORY`` is cleared for this process), measured on the model as every job measures it.
Cases, each "ours" against its floor, interleaved round by round:

  integrated_gradients  ``Method.attribute`` with n_steps (default 50) and the plan's rows; floor: one
                        forward + backward over the same N * n_steps path points (built before timing,
                        inputs require grad, sum of the target logits, ``torch.autograd.grad``) in
                        chunks of the same rows per pass (``attribution_floor.floor``). Target 1.15.
  bee                   ``attribute("bee", rounds=T, n_steps=16, metric=deletion)``; parts as in
                        bee_cost.py: T x (one ``straight_path_integral`` from zero baselines with BEE's
                        quadrature + one ``compute("deletion")`` on integrated-gradients maps), the
                        path and the metric each timed in the same round. Target 1.3.
  metric:<name>         ``xaibench.metrics.compute`` with default parameters on saliency maps, the
                        saliency method as the explainer of max_sensitivity; floor: the forward passes
                        the metric made (recorded by a counting wrapper in the same round), replayed on
                        pre-built rows (forward only, or forward + input gradient for the explainer's
                        passes; ``metrics_model_bound.replay``). Target 1.5.
  gradcam               Grad-CAM on the ViT at ``encoder.layers.encoder_layer_11.ln_1``, the patch
                        tokens the last block reads (read as their grid); floor: one forward pass with
                        a hook on that layer + the gradient of the target logits with respect to its
                        output, in chunks of the plan's rows. Target 1.15.

Peak memory of each call, of ours and of the floor's runs: on CUDA ``torch.cuda.max_memory_allocated``
minus the memory allocated before the call (peak statistics reset before it). On the CPU, by
``--memory``: "tensors" (default), the most bytes of tensors allocated during the call and alive at
once, from the "[memory]" events torch's CPU allocator reports to ``torch.profiler``
(``profile_memory=True``; every timed call, ours and floor alike, runs under the profiler, which after
its first start costs no measurable time; it prints two lines per call on stderr); or "rss", the
process's peak resident set (VmHWM, reset by writing 5 to /proc/self/clear_refs) minus its resident set
before the call, after ``gc.collect`` and glibc's ``malloc_trim``: what the operating system sees,
tensors plus the heap glibc keeps after frees (a ResNet-18 pass of 17 rows: about 400 MiB of tensors,
530-590 MiB of RSS growth). The profiler itself raises the resident set (by 150-300 MiB on that
pass), so the two are never measured in the same run. "under budget" compares the peak with the
budget the rows per pass came from.

Reported per case: the best wall time of ``--repeats`` rounds for ours and the floor, their ratio and, in
brackets, the median of per-round ratios; and the same ratio in CPU seconds of the process (all its
threads, ``time.process_time``; not on CUDA). Other processes on a shared machine move CPU time less
than wall time (they deschedule us rather than add to our time), though not by nothing: shared caches
and torch's threads waiting for each other still make it vary. The target is checked on the wall
ratio. On a small shared machine pass ``--threads 1``: with two threads on two busy cores, every
parallel region waits for a descheduled partner thread, and the same call ran 2-6x slower from one
moment to the next (ViT-Tiny, 80 path points: 11-37 s with two threads, 6.2-6.5 s with one), which no
ratio of single rounds survives. Rounds alternate the order of ours and the floor. Before the first
round each model gets a light warm-up (one forward and one forward + backward pass at the plan's rows),
not a full round: a ResNet-18 IG call takes minutes on two shared CPU cores.

    .venv/bin/python benchmarks/scale.py [--device cpu|cuda] [--quick] [--repeats 1] [--memory tensors|rss]
        [--only resnet_ig,resnet_bee,resnet_metrics,vit_ig,vit_gradcam] [--metrics deletion,...]

``--quick`` is a smoke test (2 images of 64x64, ViT at image_size 64, 8 path steps, BEE T=1 with 4
steps). Writes benchmarks/results/scale.json (scale_quick.json with --quick) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from attribution_floor import floor as path_floor
from metrics_model_bound import CountingModel, prebuilt, replay
from torch.profiler import ProfilerActivity, profile
from xaibench.metrics import compute

import xaibench
from xaibench.attribution import attribute
from xaibench.attribution.layers import find_layer
from xaibench.attribution.path import quadrature, straight_path_integral
from xaibench.core.batches import row_slices
from xaibench.core.devices import resolve_device
from xaibench.core.memory import ENV_VAR, RowPlan
from xaibench.data import shapes
from xaibench.models.archs import resnet18, vit

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("deletion", "insertion", "faithfulness_correlation", "infidelity", "max_sensitivity", "sparseness")
TARGETS = {"integrated_gradients": 1.15, "bee": 1.3, "metric": 1.5, "gradcam": 1.15}
CASES = ("resnet_ig", "resnet_bee", "resnet_metrics", "vit_ig", "vit_gradcam")
#: the patch tokens the last block reads: the layer of pytorch-grad-cam's ViT recipe (the block's own
#: output feeds the head only through the class token)
VIT_LAYER = "encoder.layers.encoder_layer_11.ln_1"


@dataclass(frozen=True)
class Sizes:
    n: int
    image: int
    n_steps: int
    bee_rounds: int
    bee_steps: int


FULL = Sizes(n=8, image=224, n_steps=50, bee_rounds=2, bee_steps=16)
QUICK = Sizes(n=2, image=64, n_steps=8, bee_rounds=1, bee_steps=4)


@dataclass
class Workload:
    """A model on its device, its inputs and targets, and the rows per pass of the default budget."""

    name: str
    model: torch.nn.Module
    x: torch.Tensor
    target: torch.Tensor
    plan: RowPlan
    rows: int


# ---------------------------------------------------------------------------------------------
# measuring


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


@dataclass(frozen=True)
class Settings:
    """Where and how cases run: the device, timed rounds, and the memory measured on the CPU
    ("tensors" or "rss", see the module docstring)."""

    device: torch.device
    repeats: int
    memory: str


def measured(run: Callable[[], object], settings: Settings) -> tuple[float, float | None, int]:
    """(wall seconds, CPU seconds or None on CUDA, peak bytes) of ``run()``; see the module docstring."""
    gc.collect()
    device = settings.device
    if device.type == "cuda":
        synchronise(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        run()
        synchronise(device)
        return time.perf_counter() - start, None, torch.cuda.max_memory_allocated(device) - before
    if settings.memory == "tensors":
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiled:
            seconds, cpu = _timed(run)
        return seconds, cpu, tensor_peak(profiled)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    seconds, cpu = _timed(run)
    return seconds, cpu, _status_kib("VmHWM") * 1024 - before


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - cpu


def tensor_peak(profiled: profile) -> int:
    """The most bytes of tensors allocated during a profiled call and alive at once (torch's CPU
    allocator reports every allocation and free to the profiler as a "[memory]" event)."""
    events = sorted((event.start_ns(), event.nbytes()) for event in profiled.profiler.kineto_results.events()
                    if event.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def rounds(runs: dict[str, Callable[[], object]], settings: Settings,
           after_first: Callable[[], None] | None = None) -> dict[str, dict[str, list]]:
    """Wall and CPU seconds and peak bytes of every run, ``settings.repeats`` rounds, interleaved in
    the order given (reversed in odd rounds, so that neither side always runs first); ``after_first``
    runs (untimed) after the first run of the first round."""
    fields = ("seconds", "cpu_seconds", "peak_bytes")
    out: dict[str, dict[str, list]] = {key: {field: [] for field in fields} for key in runs}
    for round_ in range(settings.repeats):
        order = list(runs.items())
        for index, (key, run) in enumerate(order if round_ % 2 == 0 else order[::-1]):  # odd rounds reversed
            for field, value in zip(fields, measured(run, settings)):
                out[key][field].append(value)
            if round_ == 0 and index == 0 and after_first is not None:
                after_first()
    return out


def peak(*runs: dict[str, list]) -> int:
    """The largest peak over every round of ``runs``."""
    return max(value for run in runs for value in run["peak_bytes"])


def summary(case: str, kind: str, work: Workload, ours: dict[str, list], floor: dict[str, list],
            floor_runs: list[dict[str, list]], floor_best: dict[str, float] | None = None,
            **extra: Any) -> dict[str, Any]:
    """One case's record: best wall and CPU times of ours and of the floor (per-round ``floor``
    times; ``floor_best`` replaces their minima where the floor is a sum of parts), their ratios, the
    median of per-round wall ratios, and the peaks of ours and of the floor's runs against the budget."""
    best = {key: min(floor[key]) if None not in floor[key] else None for key in ("seconds", "cpu_seconds")}
    best |= floor_best or {}
    seconds, cpu = min(ours["seconds"]), None if None in ours["cpu_seconds"] else min(ours["cpu_seconds"])
    ratio = seconds / best["seconds"]
    ours_peak = peak(ours)
    budget = work.plan.budget.bytes if work.plan.budget is not None else None
    return {
        "case": case, "model": work.name, "n": work.x.shape[0], "input_shape": list(work.x.shape[1:]),
        "rows_per_pass": work.rows, "budget_bytes": budget, "seconds": seconds,
        "floor_seconds": best["seconds"],
        "ratio": ratio, "median_round_ratio": statistics.median(
            o / f for o, f in zip(ours["seconds"], floor["seconds"])),
        "cpu_seconds": cpu, "floor_cpu_seconds": best["cpu_seconds"],
        "cpu_ratio": None if cpu is None else cpu / best["cpu_seconds"],
        "target": TARGETS[kind], "meets_target": ratio <= TARGETS[kind], "peak_bytes": ours_peak,
        "floor_peak_bytes": peak(*floor_runs),
        "peak_under_budget": None if budget is None else ours_peak <= budget,
        "times": {"ours": ours, "floor": floor}, **extra,
    }


# ---------------------------------------------------------------------------------------------
# workloads


def images(n: int, size: int, device: torch.device) -> torch.Tensor:
    """``n`` shapes images (seed 0) resized to ``size`` x ``size``, in [0, 1], on ``device``."""
    x, _labels, _masks = shapes.generate(n, 0)
    resized = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized.clamp_(0, 1).contiguous().to(device)


def workload(name: str, sizes: Sizes, device: torch.device) -> Workload:
    """The seeded model ``name`` (resnet18 or vit), inputs, predicted targets and the default plan."""
    torch.manual_seed(0)
    model = resnet18() if name == "resnet18" else vit(image_size=sizes.image)
    model = model.eval().to(device)
    x = images(sizes.n, sizes.image, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    plan = RowPlan.of(None, None, device)
    rows = plan.rows(model, x[:1])
    warm = x[:1].expand(min(rows, 64), *x.shape[1:]).contiguous()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True):
        model(warm)  # the first profiled call also starts the profiler (seconds)
    path_floor(model, warm, target[:1].expand(warm.shape[0]), warm.shape[0])
    synchronise(device)
    return Workload(name, model, x, target, plan, rows)


# ---------------------------------------------------------------------------------------------
# cases


def integrated_gradients(work: Workload, sizes: Sizes, settings: Settings) -> dict[str, Any]:
    """integrated_gradients end to end against one forward + backward over the same path points."""
    points = work.x.repeat_interleave(sizes.n_steps, 0)
    point_target = work.target.repeat_interleave(sizes.n_steps)
    runs = {
        "floor": lambda: path_floor(work.model, points, point_target, work.rows),
        "ours": lambda: attribute("integrated_gradients", work.model, work.x, target=work.target,
                                  batch_size=work.rows, n_steps=sizes.n_steps),
    }
    times = rounds(runs, settings)
    return summary(f"{work.name} integrated_gradients", "integrated_gradients", work, times["ours"],
                   times["floor"], [times["floor"]], n_steps=sizes.n_steps,
                   path_points=points.shape[0])


def bee(work: Workload, sizes: Sizes, settings: Settings) -> dict[str, Any]:
    """BEE with T rounds against T x (one path integral + one deletion call), as bee_cost.py."""
    alphas, weights = quadrature("gausslegendre", sizes.bee_steps)
    zeros = torch.zeros_like(work.x)
    maps = straight_path_integral(work.model, work.x, zeros, work.target, alphas, weights, work.rows)
    runs = {
        "path": lambda: straight_path_integral(work.model, work.x, zeros, work.target, alphas, weights,
                                               work.rows),
        "metric": lambda: compute("deletion", work.model, work.x, maps, target=work.target,
                                  batch_size=work.rows, generator=torch.Generator().manual_seed(0)),
        "ours": lambda: attribute("bee", work.model, work.x, target=work.target, batch_size=work.rows,
                                  generator=torch.Generator().manual_seed(0), rounds=sizes.bee_rounds,
                                  n_steps=sizes.bee_steps, metric="deletion"),
    }
    times = rounds(runs, settings)
    path, metric_s, t = times["path"], times["metric"], sizes.bee_rounds
    parts = {key: [t * (p + m) if p is not None else None for p, m in zip(path[key], metric_s[key])]
             for key in ("seconds", "cpu_seconds")}
    # parts = T x (best path + best metric): a sum of two minima can only understate the parts
    best = {key: t * (min(path[key]) + min(metric_s[key])) if None not in path[key] else None
            for key in ("seconds", "cpu_seconds")}
    return summary(f"{work.name} bee", "bee", work, times["ours"], parts, [path, metric_s], best, rounds=t,
                   n_steps=sizes.bee_steps, metric="deletion", path_seconds=min(path["seconds"]),
                   metric_seconds=min(metric_s["seconds"]))


def metric(name: str, work: Workload, maps: torch.Tensor, settings: Settings) -> dict[str, Any]:
    """One metric with default parameters against a replay of its forward passes."""
    counting = CountingModel(work.model).eval()

    def saliency(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attribute("saliency", model, x, target=target, batch_size=work.rows)

    def run() -> None:
        counting.passes = []
        compute(name, counting, work.x, maps, target=work.target, explainer=saliency, batch_size=work.rows,
                generator=torch.Generator().manual_seed(0))

    recorded: dict[str, Any] = {}

    def record_passes() -> None:  # the first round's passes define the floor
        recorded["passes"] = list(counting.passes)
        recorded["rows"] = prebuilt(work.x, recorded["passes"]) if recorded["passes"] else work.x

    runs = {"ours": run, "floor": lambda: replay(work.model, recorded["rows"], recorded["passes"])}
    times = rounds(runs, settings, after_first=record_passes)
    passes = recorded["passes"]
    if not passes:  # no model passes (sparseness): no floor to compare with
        return {"case": f"{work.name} {name}", "model": work.name, "n": work.x.shape[0],
                "rows_per_pass": work.rows, "seconds": min(times["ours"]["seconds"]), "forward_passes": 0,
                "rows": 0, "peak_bytes": peak(times["ours"]), "times": {"ours": times["ours"]}}
    return summary(f"{work.name} {name}", "metric", work, times["ours"], times["floor"],
                   [times["floor"]], forward_passes=len(passes), rows=sum(size for size, _ in passes),
                   gradient_passes=sum(grad for _, grad in passes), largest_pass=max(s for s, _ in passes))


def gradcam(work: Workload, settings: Settings) -> dict[str, Any]:
    """Grad-CAM on the ViT's last block against a forward + the gradient at the block's output."""
    _name, block = find_layer(work.model, VIT_LAYER)

    def floor() -> None:
        kept: list[torch.Tensor] = []
        handle = block.register_forward_hook(lambda _module, _args, output: kept.append(output))
        try:
            for rows in row_slices(work.x.shape[0], work.rows):
                picked = work.model(work.x[rows]).gather(1, work.target[rows, None]).sum()
                torch.autograd.grad(picked, kept.pop())
        finally:
            handle.remove()

    runs = {"floor": floor, "ours": lambda: attribute("gradcam", work.model, work.x, target=work.target,
                                                      batch_size=work.rows, layer=VIT_LAYER)}
    times = rounds(runs, settings)
    return summary(f"{work.name} gradcam ({VIT_LAYER})", "gradcam", work, times["ours"],
                   times["floor"], [times["floor"]], layer=VIT_LAYER)


# ---------------------------------------------------------------------------------------------
# the run


def run_cases(chosen: list[str], metrics: list[str], sizes: Sizes,
              settings: Settings) -> list[dict[str, Any]]:
    """The chosen cases, model by model; each result is printed as it comes."""
    results: list[dict[str, Any]] = []

    def done(record: dict[str, Any]) -> None:
        results.append(record)
        ratio = f"{record['ratio']:.3f} (CPU {cpu_cell(record)})" if "ratio" in record else "-"
        print(f"  {record['case']}: {record['seconds']:.2f} s, ratio {ratio}", flush=True)

    if any(case.startswith("resnet") for case in chosen):
        work = workload("resnet18", sizes, settings.device)
        if "resnet_ig" in chosen:
            done(integrated_gradients(work, sizes, settings))
        if "resnet_bee" in chosen:
            done(bee(work, sizes, settings))
        if "resnet_metrics" in chosen:
            maps = attribute("saliency", work.model, work.x, target=work.target, batch_size=work.rows)
            for name in metrics:
                done(metric(name, work, maps, settings))
    if any(case.startswith("vit") for case in chosen):
        work = workload("vit", sizes, settings.device)
        if "vit_ig" in chosen:
            done(integrated_gradients(work, sizes, settings))
        if "vit_gradcam" in chosen:
            done(gradcam(work, settings))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated of {', '.join(CASES)}")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help="metrics of resnet_metrics, comma-separated")
    parser.add_argument("--memory", choices=("tensors", "rss"), default="tensors",
                        help="peak memory measured on the CPU (see the docstring)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    os.environ.pop(ENV_VAR, None)  # the default budget, as with default flags
    chosen = [case.strip() for case in args.only.split(",") if case.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    device = resolve_device(args.device)
    sizes = QUICK if args.quick else FULL
    load_before, tic = os.getloadavg(), time.perf_counter()
    metrics = [name.strip() for name in args.metrics.split(",") if name.strip()]
    settings = Settings(device, args.repeats, "cuda allocator" if device.type == "cuda" else args.memory)
    results = run_cases(chosen, metrics, sizes, settings)
    report = {
        "benchmark": "scale", "quick": args.quick, "sizes": sizes.__dict__, "repeats": args.repeats,
        "memory": settings.memory, "device": str(device), "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "wall_seconds": time.perf_counter() - tic, "results": results,
    }
    name = "scale_quick.json" if args.quick else "scale.json"
    out = args.out or ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def cpu_cell(record: dict[str, Any]) -> str:
    """``ours / floor = ratio`` in CPU seconds, or "-" on CUDA."""
    if record["cpu_ratio"] is None:
        return "-"
    return f"{record['cpu_seconds']:.2f} / {record['floor_cpu_seconds']:.2f} = {record['cpu_ratio']:.3f}"


def mib(size: float | None) -> str:
    return "-" if size is None else f"{size / (1 << 20):.0f}"


def print_tables(report: dict[str, Any]) -> None:
    """One markdown table: seconds, floor, ratio [median per round], CPU seconds, target, and the peak
    memory of ours and (in brackets) of the floor's runs against the budget."""
    load = report["load_average"]
    print(f"\n{report['device']} ({report['device_name']}), torch {report['versions']['torch']}, "
          f"{report['threads']} threads, best of {report['repeats']}, load average "
          f"{load['start'][0]:.2f} -> {load['end'][0]:.2f}, {report['wall_seconds'] / 60:.1f} min, "
          f"peak memory: {report['memory']}\n")
    print("| case | rows/pass | ours s | floor s | ours / floor [median] | CPU s ours / floor | target "
          "| peak MiB [floor] | budget MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        if "ratio" not in r:
            print(f"| {r['case']} | {r['rows_per_pass']} | {r['seconds']:.3f} | - | no model pass | - | - | "
                  f"{mib(r['peak_bytes'])} | - |")
            continue
        met = "met" if r["meets_target"] else "MISSED"
        over = "" if r["peak_under_budget"] in (None, True) else " OVER"
        print(f"| {r['case']} | {r['rows_per_pass']} | {r['seconds']:.3f} | {r['floor_seconds']:.3f} | "
              f"{r['ratio']:.3f} [{r['median_round_ratio']:.3f}] | {cpu_cell(r)} | {r['target']} {met} | "
              f"{mib(r['peak_bytes'])}{over} [{mib(r['floor_peak_bytes'])}] | {mib(r['budget_bytes'])} |")


if __name__ == "__main__":
    main()
