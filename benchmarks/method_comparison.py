"""Method comparison (issue 19): every image method on the shapes CNN and on a ResNet-18 trained on shapes.

Each model is scored through the installed entry point, as a user would run it:

    xaibench evaluate MODEL --methods <all image methods> --metrics attribution_localisation,pointing_game,
        deletion,insertion -n N --out RUN
    xaibench evaluate MODEL --methods <the sanity set> --metrics mprt -n M --out RUN_MPRT

Models: ``sample_models/shapes_cnn.pt`` (shipped) and ``shapes_resnet18``, the project's ResNet-18
(``xaibench.models.resnet18``, torchvision's layout, 11.2M parameters) trained 8 epochs on shapes by
``sample_models/train.py --only shapes_resnet18`` into a temporary folder (deterministic: the same
weights on every run; 5-10 minutes on two shared cores; ``--resnet FILE`` takes one trained before).
Data: the shapes test split, the first N samples; their
object masks are the localisation ground truth. Every method runs with its default parameters and the
default target layer (CAMs: the last convolution's batch norm in the shapes CNN, the output of ResNet's
``layer4``). Left out: the attention methods (they need a transformer; tests/attribution/test_attention.py
checks them on the ViT) and ``coefficients`` (a linear model's ground truth).

The sanity check is MPRT (Adebayo et al. 2018, cascading randomisation from the output layer): a method
passes when the rank correlation between its maps and the maps of the fully randomised model (the last
point of MPRT's curve, every parameterised layer re-initialised) is below ``SANITY_THRESHOLD`` on average.
Adebayo et al. report that guided backpropagation keeps its maps under randomisation; the table says
which methods fail. MPRT re-explains once per parameterised layer (9 layers in the shapes CNN, 62 in the
ResNet-18), so the methods that make thousands of model passes per sample (the sampling perturbation
methods, BEE, RISE, Score-CAM, Ablation-CAM) are left out of it on the ResNet (``--mprt-methods`` adds
them back); the table marks them "not run".

    .venv/bin/python benchmarks/method_comparison.py [--n 32] [--mprt-n 8] [--models shapes_cnn,shapes_resnet18]
        [--quick] [--screenshot docs/method_comparison_report.png]

Writes benchmarks/results/method_comparison.json and prints one markdown table per model (mean of each
metric over the samples, the sanity verdict, seconds of each evaluate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "xaibench"
METRICS = ("attribution_localisation", "pointing_game", "deletion", "insertion")
SANITY_THRESHOLD = 0.5
#: thousands of model passes per sample: MPRT's 62 re-explanations on the ResNet would take hours
COSTLY = ("shapley_value_sampling", "kernel_shap", "lime", "occlusion", "feature_ablation", "bee", "rise",
          "scorecam", "ablationcam", "expected_gradients")


def image_methods() -> list[str]:
    """Every registered method that applies to images and to a CNN: not the attention methods (they need
    a transformer) nor ``coefficients`` (the ground truth of linear models)."""
    out = subprocess.run([str(BIN), "methods", "--modality", "image", "--json"], capture_output=True,
                         text=True, check=True)
    return [row["name"] for row in json.loads(out.stdout)
            if row["category"] != "attention" and row["name"] != "coefficients"]


def train_resnet(folder: Path) -> tuple[Path, str]:
    """sample_models/train.py's unshipped ResNet-18 recipe, into ``folder``; the file and the script's
    line with the test accuracy."""
    out = subprocess.run([sys.executable, str(ROOT / "sample_models" / "train.py"), "--only", "shapes_resnet18",
                          "--out", str(folder)], check=True, capture_output=True, text=True)
    print(out.stdout.strip(), flush=True)
    return folder / "shapes_resnet18.pt", out.stdout.strip()


def evaluate(model: Path, methods: list[str], metrics: list[str], n: int, out: Path,
             resume: bool = False) -> dict:
    """One ``xaibench evaluate`` run; its metrics.json, with the wall seconds. With ``resume``, a finished
    run already in ``out`` is read instead, its seconds the sum of the timings in its run.json."""
    if resume and (out / "metrics.json").exists():
        record = json.loads((out / "metrics.json").read_text())
        record["wall_seconds"] = sum(json.loads((out / "run.json").read_text())["timings"].values())
        return record
    start = time.perf_counter()
    subprocess.run([str(BIN), "evaluate", str(model), "--methods", ",".join(methods), "--metrics",
                    ",".join(metrics), "-n", str(n), "--out", str(out), "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)
    record = json.loads((out / "metrics.json").read_text())
    record["wall_seconds"] = time.perf_counter() - start
    return record


def sanity(record: dict, method: str) -> dict | None:
    """MPRT's curve end (every layer randomised) for ``method``, and the verdict; None if not run."""
    result = record["results"].get(method, {}).get("mprt")
    if result is None:
        return None
    last = result["curve"]["mean"][-1]  # null where every map is constant (no rank correlation)
    return {"mprt": result["mean"], "fully_randomised": last,
            "passes": None if last is None else last < SANITY_THRESHOLD}


def compare(name: str, model: Path, args: argparse.Namespace, runs: Path) -> dict:
    methods = image_methods()
    mprt_methods = [m for m in methods if name == "shapes_cnn" or m not in COSTLY or m in args.mprt_methods]
    print(f"{name}: {len(methods)} methods x {len(METRICS)} metrics on {args.n} samples ...", flush=True)
    scored = evaluate(model, methods, list(METRICS), args.n, runs / name, args.resume)
    print(f"  {scored['wall_seconds']:.0f} s; mprt on {len(mprt_methods)} methods, {args.mprt_n} samples ...",
          flush=True)
    randomised = evaluate(model, mprt_methods, ["mprt"], args.mprt_n, runs / f"{name}-mprt", args.resume)
    print(f"  {randomised['wall_seconds']:.0f} s", flush=True)
    rows = {}
    for method in methods:
        results = scored["results"].get(method, {})
        rows[method] = {metric: results[metric]["mean"] if metric in results else None for metric in METRICS}
        rows[method]["sanity"] = sanity(randomised, method)
    return {"model": name, "n": args.n, "mprt_n": args.mprt_n, "rows": rows, "skipped": scored["skipped"],
            "seconds": scored["wall_seconds"], "mprt_seconds": randomised["wall_seconds"],
            "report": runs / name / "report.html"}


def screenshot(report: Path, png: Path) -> None:
    """The report page as a PNG by headless Chromium (as the docs' other report screenshots)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("no chromium: screenshot skipped", file=sys.stderr)
        return
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png.resolve()}", "--window-size=1280,3600", report.resolve().as_uri()], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(result: dict) -> None:
    print(f"\n{result['model']}: {result['n']} samples ({result['seconds']:.0f} s), MPRT on {result['mprt_n']} "
          f"({result['mprt_seconds']:.0f} s); localisation and insertion: higher is better; deletion and "
          f"MPRT: lower is better\n")
    print("| method | " + " | ".join(METRICS) + " | MPRT | randomised corr. | sanity |")
    print("|---|" + "---|" * (len(METRICS) + 3))
    for method, row in result["rows"].items():
        check = row["sanity"]
        verdict = ("not run", "-", "-") if check is None else (
            {True: "passes", False: "FAILS", None: "undefined"}[check["passes"]], cell(check["mprt"]),
            cell(check["fully_randomised"]))
        print(f"| {method} | " + " | ".join(cell(row[m]) for m in METRICS)
              + f" | {verdict[1]} | {verdict[2]} | {verdict[0]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="samples scored per model")
    parser.add_argument("--mprt-n", type=int, default=8, help="samples of the MPRT runs")
    parser.add_argument("--models", default="shapes_cnn,shapes_resnet18")
    parser.add_argument("--mprt-methods", default="", help="costly methods to include in the ResNet's MPRT")
    parser.add_argument("--quick", action="store_true", help="4 samples, 2 for MPRT: a smoke run")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the ResNet's report")
    parser.add_argument("--runs", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--resume", action="store_true", help="with --runs: read finished runs found there")
    parser.add_argument("--resnet", type=Path, default=None,
                        help="a shapes_resnet18.pt trained before by train.py (default: train it now)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "method_comparison.json")
    args = parser.parse_args()
    args.mprt_methods = [m for m in args.mprt_methods.split(",") if m]
    if args.quick:
        args.n, args.mprt_n = 4, 2
    start, results = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp) / "runs"
        models, training = {"shapes_cnn": ROOT / "sample_models" / "shapes_cnn.pt"}, None
        if args.resnet is not None:
            models["shapes_resnet18"], training = args.resnet, f"given: {args.resnet}"
        elif "shapes_resnet18" in args.models:
            models["shapes_resnet18"], training = train_resnet(Path(tmp) / "models")
        for name in args.models.split(","):
            results.append(compare(name, models[name], args, runs))
            print_table(results[-1])
        if args.screenshot is not None:
            screenshot(results[-1]["report"], args.screenshot)
        for result in results:
            result["report"] = result["report"].relative_to(runs).as_posix()
    report = {"benchmark": "method_comparison", "quick": args.quick, "metrics": list(METRICS), "training": training,
              "sanity_threshold": SANITY_THRESHOLD, "load_average_end": os.getloadavg(),
              "wall_seconds": time.perf_counter() - start, "models": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
