"""xaibench's metrics against Quantus 0.6.0 on one workload, in one process: seconds, ratio, agreement.

The workload: a small CNN (2 conv + linear, 10 classes) on 1x28x28 inputs, trained for a few seconds on
scikit-learn's digits upsampled to 28x28 (offline, fixed seeds); N=128 held-out digits; Saliency
attributions (xaibench's ``saliency``, the absolute gradient of the label's logit) computed once and fed
to both libraries. Metrics that recompute explanations use the same explanation function on both sides
(Quantus's ``explain_func`` wraps xaibench's saliency), so the timings compare the metric machinery.
The localisation metrics use one fixed mask, the centre 14x14 square, for every sample.

Quantus runs with like-for-like settings: ``normalise=False``, ``abs=False`` (``abs=True`` where the
definition takes magnitudes), warnings and progress bars off, the softmax switch matching the output
xaibench reads, and its best batching (``batch_size=N``: every model call takes the whole batch).
xaibench runs with ``--batch-size`` rows per forward pass (default N, as Quantus). The metric
parameters are in ``CASES``.

For each metric, after a warm-up round: the best of ``--repeats`` wall times on each side (rounds
interleaved), the ratio Quantus / xaibench, and whether the per-sample values agree:
  agree          deterministic metrics, every sample ``allclose`` (rtol 1e-4, atol 1e-6),
  agree (means)  random metrics (independent draws on each side): the mean of the paired per-sample
                 differences lies within 3 standard errors of 0,
  differs: why   the definitions differ on purpose (see the metric's docstring); the values are still
                 recorded in the JSON.
Also timed, as a yardstick: the floor, xaibench's model passes alone (a counting wrapper records the
rows of every pass in the warm-up run; they are replayed on pre-built inputs, forward only, or forward
plus the input gradient for explanations). Quantus / floor is the most any implementation that makes
the same model passes could gain over Quantus.

    .venv/bin/python benchmarks/metrics_vs_quantus.py [--threads 2] [--repeats 3] [--only NAME,...]

Writes benchmarks/results/metrics_vs_quantus.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Quantus 0.6.0 computes AUCs with numpy.trapz, which numpy 2.4 removed; give it the renamed function
# so that PixelFlipping (return_auc_per_sample) can run at all.
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid  # type: ignore[attr-defined]

import quantus  # noqa: E402
import torch  # noqa: E402
from metrics_model_bound import CountingModel, prebuilt, replay  # noqa: E402  (benchmarks/, on sys.path)
from xaibench.metrics import compute  # noqa: E402

import xaibench  # noqa: E402
from xaibench.attribution import attribute  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 128
SIDE = 28
CLASSES = 10
RTOL, ATOL = 1e-4, 1e-6


# ---------------------------------------------------------------------------------------------
# the workload


class SmallCNN(torch.nn.Module):
    """Two conv blocks (8 and 16 channels, ReLU, 2x2 max pool) and a linear layer: 1x28x28 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Linear(16 * 7 * 7, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def digits_28() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 digits in [0, 1], bilinearly upsampled from 8x8 to 1x28x28, and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images / 16.0).float()[:, None]
    x = torch.nn.functional.interpolate(small, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    return x, torch.from_numpy(bunch.target).long()


def trained_model(x: torch.Tensor, y: torch.Tensor, epochs: int = 8) -> torch.nn.Module:
    """SmallCNN trained with Adam on (x, y), fixed seed; a few seconds on two cores."""
    torch.manual_seed(0)
    model = SmallCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for rows in torch.randperm(x.shape[0], generator=order).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            optimiser.step()
    return model.eval()


@dataclasses.dataclass(frozen=True)
class Workload:
    """The model, N inputs with labels, their saliency maps and the fixed centre mask (N, H, W)."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    a: torch.Tensor
    masks: torch.Tensor
    accuracy: float


def workload() -> Workload:
    """Train on all but the last N digits, evaluate on those N."""
    x, y = digits_28()
    model = trained_model(x[:-N], y[:-N])
    x, y = x[-N:].contiguous(), y[-N:].contiguous()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    a = saliency(model, x, y)
    masks = torch.zeros((N, SIDE, SIDE), dtype=torch.bool)
    masks[:, SIDE // 4 : 3 * SIDE // 4, SIDE // 4 : 3 * SIDE // 4] = True
    return Workload(model, x, y, a, masks, accuracy)


def saliency(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The explanation both libraries use: xaibench's saliency (|gradient of the target logit|)."""
    return attribute("saliency", model, x, target=target)


def quantus_explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
    """Quantus's explain_func: the same saliency, numpy in and out."""
    return saliency(model, torch.from_numpy(np.asarray(inputs, dtype=np.float32)),
                    torch.as_tensor(targets).long()).numpy()


# ---------------------------------------------------------------------------------------------
# the metrics

LIKE_FOR_LIKE = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}


@dataclasses.dataclass(frozen=True)
class Case:
    """One metric on both sides.

    Attributes:
        name: the xaibench metric.
        params: xaibench's parameters.
        quantus: builds the configured Quantus metric.
        softmax: Quantus's softmax switch (xaibench reads probabilities when True, logits when False).
        check: "exact", "means", or "differs: <why>".
        from_quantus: turns Quantus's per-sample output into xaibench's per-sample score.
        required: one of the metrics the issue names (the others are extras with matching definitions).
    """

    name: str
    params: dict[str, Any]
    quantus: Callable[[], Any]
    softmax: bool
    check: str
    from_quantus: Callable[[Any], np.ndarray] = np.asarray
    required: bool = True


def q(metric: type, **kwargs: Any) -> Callable[[], Any]:
    """A factory of ``metric`` with the like-for-like settings and ``kwargs`` on top."""
    return lambda: metric(**{**LIKE_FOR_LIKE, **kwargs})


def aopc(curves: Any) -> np.ndarray:
    """Quantus RegionPerturbation's curves f(x) - f(x~_k), k = 1..L, to AOPC over k = 0..L."""
    curves = np.asarray(curves, dtype=np.float64)
    return curves.sum(axis=1) / (curves.shape[1] + 1)


TOP_K = round(0.05 * SIDE * SIDE)  # 39 of 784 pixels
CASES = (
    Case("pixel_flipping", {"features_in_step": 28, "substrate": "black"},
         q(quantus.PixelFlipping, features_in_step=28, perturb_baseline="black", return_auc_per_sample=True),
         softmax=True, check="exact"),
    Case("region_perturbation", {"patch": 4, "regions": 100, "order": "morf", "substrate": "black"},
         q(quantus.RegionPerturbation, patch_size=4, regions_evaluation=100, order="morf",
           perturb_baseline="black"),
         softmax=True, check="exact", from_quantus=aopc),
    Case("faithfulness_correlation",
         {"runs": 100, "subset_size": 56, "substrate": "black", "output": "logit"},
         q(quantus.FaithfulnessCorrelation, nr_runs=100, subset_size=56, perturb_baseline="black",
           return_aggregate=False),
         softmax=False, check="means"),
    Case("monotonicity_correlation", {"samples": 10, "features_in_step": 28, "substrate": "uniform",
                                      "output": "probability", "abs": True},
         q(quantus.MonotonicityCorrelation, nr_samples=10, features_in_step=28, perturb_baseline="uniform",
           abs=True),
         softmax=True,
         check="differs: Quantus fills a chunk with one U(0,1) value per perturbation, xaibench draws "
               "each element"),
    Case("infidelity", {"perturbation": "patch", "patch_size": 4, "substrate": "black", "output": "logit"},
         q(quantus.Infidelity, perturb_patch_sizes=[4], n_perturb_samples=10, perturb_baseline="black"),
         softmax=False, check="exact"),
    Case("max_sensitivity", {"samples": 10, "radius": 0.2},
         q(quantus.MaxSensitivity, nr_samples=10, lower_bound=0.2), softmax=False, check="means"),
    Case("avg_sensitivity", {"samples": 10, "radius": 0.2},
         q(quantus.AvgSensitivity, nr_samples=10, lower_bound=0.2), softmax=False, check="means"),
    Case("local_lipschitz", {"samples": 10, "std": 0.1},
         q(quantus.LocalLipschitzEstimate, nr_samples=10, perturb_std=0.1), softmax=False, check="means"),
    Case("sparseness", {}, q(quantus.Sparseness, abs=True), softmax=False,
         check="exact"),
    Case("complexity", {}, q(quantus.Complexity, abs=True), softmax=False, check="exact"),
    Case("random_logit", {"similarity": "ssim"},
         q(quantus.RandomLogit, num_classes=CLASSES, seed=42), softmax=False,
         check="differs: Quantus's SSIM runs on the flattened maps (1-D windows), xaibench's on the image"),
    Case("pointing_game", {}, q(quantus.PointingGame), softmax=False, check="exact"),
    Case("attribution_localisation", {"absolute": False},
         q(quantus.AttributionLocalisation, positive_attributions=True), softmax=False, check="exact"),
    Case("relevance_rank_accuracy", {}, q(quantus.RelevanceRankAccuracy), softmax=False, check="exact"),
    Case("top_k_intersection", {"k": TOP_K}, q(quantus.TopKIntersection, k=TOP_K), softmax=False,
         check="exact"),
    Case("mask_auc", {}, q(quantus.AUC), softmax=False, check="exact"),
    # extras: metrics of the same families whose definitions match Quantus's
    Case("faithfulness_estimate", {"features_in_step": 28, "substrate": "black", "output": "logit"},
         q(quantus.FaithfulnessEstimate, features_in_step=28, perturb_baseline="black"),
         softmax=False, check="exact", required=False),
    Case("selectivity", {"patch": 4, "substrate": "black"},
         q(quantus.Selectivity, patch_size=4, perturb_baseline="black"), softmax=True, check="exact",
         from_quantus=lambda curves: np.trapezoid(np.asarray(curves, dtype=np.float64), axis=1),
         required=False),
    Case("effective_complexity", {"eps": 1e-5, "relative": False},
         q(quantus.EffectiveComplexity, eps=1e-5, abs=True), softmax=False, check="exact", required=False),
)


# ---------------------------------------------------------------------------------------------
# running and comparing


def run_quantus(case: Case, work: Workload) -> np.ndarray:
    """Quantus on the workload (numpy in, numpy out), its global numpy RNG seeded first."""
    np.random.seed(0)
    metric = case.quantus()
    scores = metric(
        model=work.model, x_batch=work.x.numpy(), y_batch=work.y.numpy(), a_batch=work.a.numpy(),
        s_batch=work.masks[:, None].numpy(), explain_func=quantus_explain, explain_func_kwargs={},
        softmax=case.softmax, device="cpu", batch_size=N, channel_first=True,
    )
    return case.from_quantus(scores).astype(np.float64)


def run_xaibench(case: Case, work: Workload, batch_size: int | None,
                 model: torch.nn.Module | None = None) -> np.ndarray:
    """xaibench on the workload (``model`` instead of the workload's, e.g. to count), fixed generator."""
    result = compute(
        case.name, model or work.model, work.x, work.a, target=work.y, masks=work.masks,
        explainer=saliency, batch_size=batch_size,
        generator=torch.Generator().manual_seed(0), **case.params,
    )
    return result.scores.numpy()


def agreement(case: Case, ours: np.ndarray, theirs: np.ndarray) -> str:
    """The agreement verdict (see the module docstring) for per-sample scores of both sides."""
    if case.check.startswith("differs"):
        return case.check
    both = np.isfinite(ours) & np.isfinite(theirs)
    if case.check == "exact":
        same_nan = np.array_equal(np.isnan(ours), np.isnan(theirs))
        close = np.allclose(ours[both], theirs[both], rtol=RTOL, atol=ATOL)
        if same_nan and close:
            return "agree"
        return f"DISAGREE: max |diff| {np.abs(ours[both] - theirs[both]).max():.3g}"
    differences = ours[both] - theirs[both]
    error = differences.std(ddof=1) / np.sqrt(differences.size)
    within = abs(differences.mean()) <= 3 * error
    return "agree (means)" if within else f"DISAGREE (means): {differences.mean():.3g} +- {error:.3g}"


def timed(run: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = run()
    return time.perf_counter() - start, scores


def measure(case: Case, work: Workload, repeats: int, batch_size: int | None) -> dict[str, Any]:
    """Best-of-``repeats`` seconds of Quantus, xaibench and the floor (rounds interleaved, after one
    warm-up run of each; xaibench's counts the model passes), the ratio and the agreement."""
    seconds: dict[str, list[float]] = {"quantus": [], "xaibench": [], "floor": []}
    counting = CountingModel(work.model).eval()
    run_xaibench(case, work, batch_size, counting)  # warm-up (caches, kernels, lazy imports), counted
    passes = counting.passes
    rows = prebuilt(work.x, passes) if passes else work.x
    run_quantus(case, work)  # warm-ups
    replay(work.model, rows, passes)
    for _ in range(repeats):
        quantus_seconds, theirs = timed(lambda: run_quantus(case, work))
        our_seconds, ours = timed(lambda: run_xaibench(case, work, batch_size))
        floor_seconds, _ = timed(lambda: replay(work.model, rows, passes))
        seconds["quantus"].append(quantus_seconds)
        seconds["xaibench"].append(our_seconds)
        seconds["floor"].append(floor_seconds)
    best = {side: min(values) for side, values in seconds.items()}
    return {
        "metric": case.name, "required": case.required, "params": case.params,
        "quantus_seconds": best["quantus"], "xaibench_seconds": best["xaibench"],
        "floor_seconds": best["floor"] if passes else None,
        "model_rows": sum(size for size, _ in passes), "model_passes": len(passes),
        "ratio": best["quantus"] / best["xaibench"], "all_seconds": seconds,
        "agreement": agreement(case, ours, theirs),
        "quantus_mean": float(np.nanmean(theirs)), "xaibench_mean": float(np.nanmean(ours)),
        "nan": {"quantus": int(np.isnan(theirs).sum()), "xaibench": int(np.isnan(ours).sum())},
    }


# ---------------------------------------------------------------------------------------------
# the report


def totals(results: list[dict[str, Any]]) -> dict[str, float]:
    quantus_total = sum(r["quantus_seconds"] for r in results)
    ours_total = sum(r["xaibench_seconds"] for r in results)
    return {"quantus_seconds": quantus_total, "xaibench_seconds": ours_total,
            "ratio": quantus_total / ours_total, "min_ratio": min(r["ratio"] for r in results)}


def print_table(report: dict[str, Any]) -> None:
    print(f"N={N}, 1x{SIDE}x{SIDE}, threads {report['threads']}, best of {report['repeats']}, "
          f"xaibench batch_size {report['batch_size']}, model accuracy {report['accuracy']:.3f}, "
          f"load average {report['load_average']['before'][0]:.2f} -> "
          f"{report['load_average']['after'][0]:.2f}")
    print("floor: xaibench's model passes alone (same rows; forward + input gradient for explanations); "
          "quantus/floor bounds the ratio any implementation making those passes can reach")
    print(f"{'metric':<26} {'quantus s':>9} {'xaibench s':>10} {'floor s':>8} {'ratio':>6} "
          f"{'q/floor':>7} {'x/floor':>7}  agreement")
    for r in report["results"]:
        mark = "" if r["required"] else " *"
        floor = r["floor_seconds"]
        cells = ("-", "-", "-") if floor is None else (
            f"{floor:.3f}", f"{r['quantus_seconds'] / floor:.1f}", f"{r['xaibench_seconds'] / floor:.2f}")
        print(f"{r['metric'] + mark:<26} {r['quantus_seconds']:9.3f} {r['xaibench_seconds']:10.3f} "
              f"{cells[0]:>8} {r['ratio']:6.1f} {cells[1]:>7} {cells[2]:>7}  {r['agreement']}")
    for key, label in (("required_totals", "total (required)"), ("totals", "total (all)")):
        t = report[key]
        print(f"{label:<26} {t['quantus_seconds']:9.3f} {t['xaibench_seconds']:10.3f} {'':>8} "
              f"{t['ratio']:6.1f}  lowest ratio {t['min_ratio']:.1f}")
    print("* extra metric, not in the issue's list")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both libraries)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best is reported")
    parser.add_argument("--batch-size", type=int, default=N,
                        help="xaibench rows per forward pass (Quantus: N)")
    parser.add_argument("--only", default="", help="comma-separated metric names (default: all)")
    default_out = ROOT / "benchmarks" / "results" / "metrics_vs_quantus.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    cases = [case for case in CASES if not chosen or case.name in chosen]
    work = workload()
    load_before = os.getloadavg()
    results = []
    for case in cases:
        results.append(measure(case, work, args.repeats, args.batch_size))
        r = results[-1]
        print(f"  {case.name}: {r['quantus_seconds']:.3f} s / {r['xaibench_seconds']:.3f} s = "
              f"{r['ratio']:.1f}x, "
              f"{r['agreement']}", flush=True)
    required = [r for r in results if r["required"]]
    report = {
        "benchmark": "metrics_vs_quantus", "n": N, "input_shape": [1, SIDE, SIDE], "threads": args.threads,
        "repeats": args.repeats, "batch_size": args.batch_size, "accuracy": work.accuracy,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "quantus": quantus.__version__, "xaibench": xaibench.__version__},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results, "totals": totals(results),
        "required_totals": totals(required) if required else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


if __name__ == "__main__":
    main()
