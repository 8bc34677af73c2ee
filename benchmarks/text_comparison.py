"""Text method comparison (issue 22): every text method on the shipped planted_text_transformer.

Scored through the installed entry point, as a user would run it:

    xaibench evaluate sample_models/planted_text_transformer.pt --methods <every text method>
        --metrics <METRICS> -n N --out RUN

Model: the 2-block transformer of sample_models/train.py (test accuracy 1.0) on the generated
``planted_text`` task, whose label is decided by one or two planted words per 12-word sentence: those
words are the evidence masks the localisation metrics read. Data: the first N test sentences. Every
method runs with its default parameters; perturbations and removal metrics replace tokens by the mask
token (``xaibench.models.text``). Left out: ``llm`` (it explains tabular data only).

    .venv/bin/python benchmarks/text_comparison.py [--n 128] [--resume]

Writes benchmarks/results/text_comparison.json and prints the markdown table for RESULTS.md (mean over
the samples with the 95% bootstrap interval of each metric, the method's seconds, its mean rank).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from md_table import table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "xaibench"
MODEL = ROOT / "sample_models" / "planted_text_transformer.pt"
METRICS = ("pointing_game", "attribution_localisation", "relevance_rank_accuracy", "comprehensiveness",
           "sufficiency", "deletion", "insertion", "faithfulness_correlation", "complexity",
           "substitution_sensitivity")


def text_methods() -> list[str]:
    """Every registered method that applies to text, but ``llm``."""
    out = subprocess.run([str(BIN), "methods", "--modality", "text", "--json"], capture_output=True, text=True,
                         check=True)
    return [row["name"] for row in json.loads(out.stdout) if row["name"] != "llm"]


def evaluate(methods: list[str], n: int, out: Path, resume: bool) -> dict:
    """The ``xaibench evaluate`` run's metrics.json, with its wall seconds (read back with ``resume``)."""
    if not (resume and (out / "metrics.json").exists()):
        start = time.perf_counter()
        subprocess.run([str(BIN), "evaluate", str(MODEL), "--methods", ",".join(methods), "--metrics",
                        ",".join(METRICS), "-n", str(n), "--out", str(out), "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)
        (out / "wall_seconds").write_text(f"{time.perf_counter() - start:.1f}\n")
    record = json.loads((out / "metrics.json").read_text())
    record["wall_seconds"] = float((out / "wall_seconds").read_text())
    return record


def mean_ranks(record: dict, methods: list[str]) -> dict[str, float]:
    """Each method's rank per metric (1 = best by the metric's direction; methods whose means tie at the
    three decimals shown share the average of their ranks), averaged over the metrics."""
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for metric, info in record["metrics"].items():
        sign = -1.0 if info["higher_is_better"] else 1.0
        means = {m: round(sign * record["results"][m][metric]["mean"], 3) for m in methods
                 if metric in record["results"][m]}
        for method, mean in means.items():
            better = sum(other < mean for other in means.values())
            tied = sum(other == mean for other in means.values())
            ranks[method].append(better + (tied + 1) / 2)
    return {m: sum(r) / len(r) for m, r in ranks.items() if r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--resume", action="store_true", help="read a finished run instead of running it again")
    args = parser.parse_args()
    runs = ROOT / "benchmarks" / "results" / "text_comparison"
    methods = text_methods()
    print(f"{len(methods)} methods x {len(METRICS)} metrics on {args.n} sentences ...", flush=True)
    record = evaluate(methods, args.n, runs / "run", args.resume)
    ranks = mean_ranks(record, methods)
    order = sorted(methods, key=lambda m: ranks[m])
    timings = json.loads((runs / "run" / "run.json").read_text())["timings"]
    header = ["method", *(f"{m} {'↑' if record['metrics'][m]['higher_is_better'] else '↓'}" for m in METRICS),
              "seconds", "mean rank"]
    lines = []
    for method in order:
        results = record["results"][method]
        cells = [f"{results[m]['mean']:.3f}" if m in results else "-" for m in METRICS]
        lines.append([method, *cells, f"{timings.get(f'attribute:{method}', 0.0):.1f}", f"{ranks[method]:.1f}"])
    print(f"\nplanted_text_transformer, {args.n} test sentences, evaluate took {record['wall_seconds']:.0f} s\n")
    table(header, lines)
    summary = {"n": args.n, "methods": order, "metrics": list(METRICS), "mean_rank": ranks,
               "wall_seconds": record["wall_seconds"],
               "results": {m: {k: record["results"][m][k] for k in METRICS if k in record["results"][m]}
                           for m in order}}
    (ROOT / "benchmarks" / "results" / "text_comparison.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
