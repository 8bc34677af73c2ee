"""Run xaibench on a GPU and check it against the CPU: tests, every job end to end, the scale benchmarks.

For a machine with a GPU (cuda, or mps on a Mac); it has run only where one was lent, see RESULTS.md
"device_check". Three parts, each also runnable alone (``--only``):

  tests   the device tests with ``XAIBENCH_TEST_DEVICE`` set: tests/test_devices.py,
          tests/test_meta_device.py (tensors created on the device they meet) and
          tests/test_device_agreement.py (every method, metric, baseline family and concept
          extraction on the device, equal to the CPU's result within float tolerance).
  jobs    every job through the installed ``xaibench`` entry point, once with ``--device cpu`` and once
          with ``--device DEVICE``, same seed: explain (a gradient, a path, a noise, a perturbation
          and a layer method), evaluate (three metric families), bee pretrain, concepts, influence
          fit / score / self. Their written outputs are compared: the largest difference relative to the
          largest CPU value for attributions, scores and policies; the metrics' means; for influence,
          Spearman's rank correlation of each query's scores.
  scale   benchmarks/scale.py and benchmarks/scale_influence.py with ``--device DEVICE`` (and
          ``--quick`` when this script has it); their JSON is copied next to this script's, and the
          CPU figures of the same benchmarks (benchmarks/results/scale*.json, measured before) give the
          speedup.

    python benchmarks/device_check.py [--device cuda] [--quick] [--only tests,jobs,scale] [--record]

Writes benchmarks/results/device_check.json and prints markdown tables; ``--record`` also replaces the
"device_check" section of benchmarks/RESULTS.md with them and the command. ``--device cpu`` runs the
whole check on the CPU against itself: a smoke test of this script on a machine without a GPU.
Tolerances: a CPU and a GPU run the same float32 arithmetic in other orders (and cuDNN may use TF32 for
convolutions), so results agree to about 1e-3 relative, not bit for bit; draws are made on the CPU and
are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXE = Path(sys.executable).with_name("xaibench")
SAMPLES = ROOT / "sample_models"
TOLERANCE = 2e-3  # largest difference relative to the largest CPU value
RANK_AGREEMENT = 0.999  # Spearman of influence scores per query
TESTS = ("tests/test_devices.py", "tests/test_meta_device.py", "tests/test_device_agreement.py")


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, float, str]:
    """Exit code, seconds and the last line of stderr of ``args`` run in ``cwd``."""
    tic = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return proc.returncode, time.perf_counter() - tic, last[0]


def relative_difference(cpu: torch.Tensor, other: torch.Tensor) -> float:
    """max |cpu - other| / max |cpu| (0 when both are zero)."""
    cpu, other = cpu.double(), other.double()
    scale = float(cpu.abs().max()) if cpu.numel() else 0.0
    diff = float((cpu - other).abs().max()) if cpu.numel() else 0.0
    return diff / scale if scale else diff


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two vectors (average ranks are not needed: scores are continuous)."""
    ra, rb = a.double().argsort().argsort().double(), b.double().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


# ------------------------------------------------------------------------------------------------ tests

def check_tests(device: str) -> dict[str, Any]:
    """The device tests under ``XAIBENCH_TEST_DEVICE=device``: passed / failed / skipped counts."""
    present = [t for t in TESTS if (ROOT / t).exists()]
    code, seconds, _ = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *present],
                           ROOT, {"XAIBENCH_TEST_DEVICE": device})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co", *present],
                          cwd=ROOT, capture_output=True, text=True)
    collected = len([line for line in proc.stdout.splitlines() if "::" in line])
    return {"files": present, "exit_code": code, "seconds": round(seconds, 1), "collected": collected}


# ------------------------------------------------------------------------------------------------- jobs

def job_commands(quick: bool) -> dict[str, list[list[str]]]:
    """Per job: the xaibench command lines (without --device) whose outputs are compared."""
    shapes, digits, mlp = (str(SAMPLES / f"{name}.pt") for name in ("shapes_cnn", "digits_cnn", "breast_cancer_mlp"))
    n = "2" if quick else "4"
    explain = {name: [["explain", shapes, "-m", name, "-n", n, "--out", f"explain-{name}", *extra]]
               for name, extra in (("saliency", []), ("integrated_gradients", ["-p", "n_steps=16"]),
                                   ("smoothgrad", ["-p", "n_samples=8"]), ("occlusion", []),
                                   ("gradcam", ["--layer", "conv4"]))}
    return {
        **{f"explain {name}": lines for name, lines in explain.items()},
        "evaluate": [["evaluate", shapes, "--methods", "saliency,integrated_gradients", "-n", n,
                      "--metrics", "deletion,max_sensitivity,sparseness", "--out", "evaluate"]],
        "bee pretrain": [["bee", "pretrain", digits, "-n", "8", "-p", "rounds=2", "-p", "n_steps=8",
                          "--out", "policy.safetensors"]],
        "concepts": [["concepts", digits, "--class", "3", "-n", "16", "--out", "concepts"]],
        "influence": [["influence", "fit", mlp, "--train-n", "64", "--out", "factors"],
                      ["influence", "score", mlp, "--factors", "factors", "--train-n", "64", "-n", "3",
                       "--out", "scores"],
                      ["influence", "self", mlp, "--train-n", "64", "--out", "self"]],
    }


def job_outputs(job: str, folder: Path) -> dict[str, torch.Tensor]:
    """The tensors a job wrote that must agree across devices."""
    if job.startswith("explain"):
        name = job.split()[1]
        return {"attributions": load_file(str(folder / f"explain-{name}" / "attributions.safetensors"))["attributions"]}
    if job == "evaluate":
        summary = json.loads((folder / "evaluate" / "metrics.json").read_text())
        means = [entry["mean"] for per_metric in summary["results"].values() for entry in per_metric.values()]
        tensors = load_file(str(folder / "evaluate" / "attributions.safetensors"))
        return {"metric means": torch.tensor(means, dtype=torch.float64),
                **{k: v for k, v in tensors.items() if k.startswith("attributions/")}}
    if job == "bee pretrain":
        return load_file(str(folder / "policy.safetensors"))
    if job == "concepts":
        tensors = load_file(str(folder / "concepts" / "bank.safetensors"))
        return {"importance": tensors["importance"], "codes": tensors["codes"]}
    return {f"{part} scores": load_file(str(folder / part / "scores.safetensors"))["scores"]
            for part in ("scores", "self")}


def check_jobs(device: str, quick: bool) -> list[dict[str, Any]]:
    """Each job on the CPU and on ``device``: seconds on each and the agreement of their outputs."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for job, lines in job_commands(quick).items():
            row: dict[str, Any] = {"job": job}
            outputs = {}
            for side, where in (("reference", "cpu"), ("checked", device)):
                folder = Path(scratch) / job.replace(" ", "-") / side
                folder.mkdir(parents=True, exist_ok=True)
                total = 0.0
                for line in lines:
                    code, seconds, err = run([str(EXE), *line, "--device", where], folder)
                    total += seconds
                    if code != 0:
                        row[f"error {side}"] = err
                        break
                row[f"seconds {side}"] = round(total, 2)
                if f"error {side}" not in row:
                    outputs[side] = job_outputs(job, folder)
            if len(outputs) == 2:
                row.update(_agreement(job, outputs["reference"], outputs["checked"]))
            rows.append(row)
            print(f"  {job}: {row}", file=sys.stderr)
    return rows


def _agreement(job: str, cpu: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, Any]:
    worst = max(relative_difference(cpu[k], other[k]) for k in cpu)
    out: dict[str, Any] = {"max relative difference": worst, "agrees": worst <= TOLERANCE}
    if job == "influence":
        rhos = [spearman(a, b) for k in cpu for a, b in zip(cpu[k].reshape(-1, cpu[k].shape[-1]),
                                                            other[k].reshape(-1, other[k].shape[-1]), strict=True)]
        out["min Spearman"] = min(rhos)
        out["agrees"] = min(rhos) >= RANK_AGREEMENT
    return out


# ------------------------------------------------------------------------------------------------ scale

def check_scale(device: str, quick: bool) -> list[dict[str, Any]]:
    """The scale benchmarks on ``device``; speedups against their CPU results measured before."""
    rows = []
    for script in ("scale.py", "scale_influence.py"):
        path = ROOT / "benchmarks" / script
        if not path.exists():
            rows.append({"benchmark": script, "error": "missing"})
            continue
        written = RESULTS / f"{path.stem}.json"  # where the benchmark writes: the CPU record until now
        cpu = json.loads(written.read_text()) if written.exists() else None
        code, seconds, err = run([sys.executable, str(path), "--device", device, *(["--quick"] * quick)], ROOT)
        row: dict[str, Any] = {"benchmark": script, "exit_code": code, "seconds": round(seconds, 1)}
        if code != 0:
            row["error"] = err
        elif written.exists():
            measured = json.loads(written.read_text())
            (RESULTS / f"{path.stem}_{device.replace(':', '')}.json").write_text(json.dumps(measured, indent=2))
            row["speedups"] = speedups(cpu, measured) if cpu is not None else {}
        if cpu is not None and device != "cpu":
            written.write_text(json.dumps(cpu, indent=2))  # the CPU record stays the CPU's
        rows.append(row)
    return rows


def speedups(cpu: Any, other: Any, path: str = "") -> dict[str, float]:
    """CPU seconds / device seconds for every "seconds" entry found at the same place in both records."""
    out: dict[str, float] = {}
    if isinstance(cpu, dict) and isinstance(other, dict):
        for key in cpu.keys() & other.keys():
            where = f"{path}.{key}" if path else str(key)
            if re.fullmatch(r".*seconds", str(key)) and isinstance(cpu[key], (int, float)) \
                    and isinstance(other[key], (int, float)) and other[key] > 0:
                out[where] = round(cpu[key] / other[key], 2)
            else:
                out.update(speedups(cpu[key], other[key], where))
    elif isinstance(cpu, list) and isinstance(other, list) and len(cpu) == len(other):
        for i, (a, b) in enumerate(zip(cpu, other, strict=True)):
            out.update(speedups(a, b, f"{path}[{i}]"))
    return out


# ---------------------------------------------------------------------------------------------- report

def markdown(record: dict[str, Any]) -> str:
    lines = [f"Device: {record['device_name']} (torch {record['torch']}, {record['platform']}); "
             f"{record['seconds']:.0f} s in all.", ""]
    if "tests" in record:
        t = record["tests"]
        lines += [f"Tests ({', '.join(t['files'])}): {t['collected']} collected, exit code {t['exit_code']}, "
                  f"{t['seconds']} s.", ""]
    if "jobs" in record:
        lines += ["| job | cpu s | device s | max relative difference | min Spearman | agrees |",
                  "|---|---|---|---|---|---|"]
        for row in record["jobs"]:
            error = row.get("error checked") or row.get("error reference")
            if error is not None:
                lines.append(f"| {row['job']} | | | {error} | | False |")
                continue
            rho = row.get("min Spearman")
            lines.append(f"| {row['job']} | {row['seconds reference']} | {row['seconds checked']} | "
                         f"{row['max relative difference']:.2e} | {'' if rho is None else f'{rho:.5f}'} | "
                         f"{row['agrees']} |")
        lines.append("")
    for row in record.get("scale", []):
        lines.append(f"- {row['benchmark']}: exit {row.get('exit_code')}, {row.get('seconds')} s"
                     + (f", speedups {row['speedups']}" if row.get("speedups") else "")
                     + (f", {row['error']}" if row.get("error") else ""))
    return "\n".join(lines)


def record_results(text: str, command: str) -> None:
    """Replace (or add) the "device_check" section of RESULTS.md."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    body = path.read_text()
    section = f"## device_check: xaibench on a GPU against the CPU\n\n    {command}\n\n{text}\n"
    pattern = re.compile(r"## device_check:.*?(?=\n## |\Z)", re.S)
    body = pattern.sub(lambda _: section, body) if pattern.search(body) else body.rstrip() + "\n\n" + section
    path.write_text(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "mps"
                        if torch.backends.mps.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller jobs and benchmark sizes")
    parser.add_argument("--only", default="tests,jobs,scale", help="comma-separated parts to run")
    parser.add_argument("--record", action="store_true", help="write the tables into RESULTS.md")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",")}
    device = args.device
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device
    tic = time.perf_counter()
    record: dict[str, Any] = {"device": device, "device_name": name, "torch": torch.__version__,
                              "platform": platform.platform(), "quick": args.quick}
    if "tests" in parts:
        record["tests"] = check_tests(device)
    if "jobs" in parts:
        record["jobs"] = check_jobs(device, args.quick)
    if "scale" in parts:
        record["scale"] = check_scale(device, args.quick)
    record["seconds"] = time.perf_counter() - tic
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "device_check.json").write_text(json.dumps(record, indent=2))
    text = markdown(record)
    print(text)
    if args.record:
        record_results(text, "python benchmarks/device_check.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
