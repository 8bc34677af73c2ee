"""What storing EK-FAC factors as float32 or bfloat16 costs in accuracy and saves in disk and time.

Workload: benchmarks/scale_influence.py's (xaibench's ResNet-18 on 3x32x32 shapes, 2,000 training
examples, 16 queries, trained ``--epochs`` epochs, EK-FAC on all 21 modules, empirical Fisher, damping
1e-3). The factors are fitted once in float64, then saved as ``influence fit --factor-dtype`` saves them
(float64, float32, bfloat16); each copy is loaded (every tensor read and checked) and scores the same
queries, pairwise and self-influence, with the same settings. Reported per dtype: the file's size, the
seconds to load and verify it, to score pairwise and self-influence, and the agreement with the float64
scores (per-query Spearman, relative Frobenius difference).

    .venv/bin/python benchmarks/factor_dtypes.py [--threads 1] [--epochs 8] [--quick]

Writes benchmarks/results/factor_dtypes.json (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_influence as workload

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float64", "float32", "bfloat16")


def main() -> None:
    from xaibench.influence import (
        ClassificationTask,
        FitConfig,
        Influence,
        ScoreConfig,
        fit_factors,
    )
    from xaibench.influence.storage import load_factors, save_factors

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the ResNet")
    parser.add_argument("--quick", action="store_true", help="256 training examples, 4 queries, 1 epoch")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "factor_dtypes.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_n, queries_n, epochs = (256, 4, 1) if args.quick else (2000, 16, args.epochs)
    task, rows = ClassificationTask(), {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        described = workload.write_files(folder, train_n, queries_n, epochs)
        model, train, queries = workload.load(folder)
        start = time.perf_counter()
        factors = fit_factors(model, task, train.x, train.y,
                              FitConfig(strategy="ekfac", fisher="empirical", batch_size=workload.BATCH))
        fit_seconds = time.perf_counter() - start
        print(f"workload: {described}; fit {fit_seconds:.1f} s", flush=True)
        config = ScoreConfig(damping=workload.DAMPING, batch_size=workload.BATCH)
        reference: dict[str, torch.Tensor] = {}
        for dtype in DTYPES:
            stored = folder / dtype
            stored.mkdir()
            save_factors(stored, factors, {}, dtype)
            start = time.perf_counter()
            loaded = load_factors(stored, model)[0]
            loaded_at = time.perf_counter()
            influence = Influence(model, task, loaded, config)
            pairwise = influence.pairwise(queries.x, queries.y, train.x, train.y).sum(0)
            scored_at = time.perf_counter()
            selves = influence.self_influence(train.x, train.y).sum(0)[None]
            done = time.perf_counter()
            reference = reference or {"pairwise": pairwise, "self": selves}
            rows[dtype] = {"megabytes": (stored / "factors.safetensors").stat().st_size / 1e6,
                           "load_seconds": loaded_at - start, "pairwise_seconds": scored_at - loaded_at,
                           "self_seconds": done - scored_at,
                           "pairwise_agreement": workload.agreement(reference["pairwise"], pairwise),
                           "self_agreement": workload.agreement(reference["self"], selves)}
            print(f"  {dtype}: {rows[dtype]['megabytes']:.0f} MB, pairwise {rows[dtype]['pairwise_seconds']:.1f} s",
                  flush=True)
    report = {"benchmark": "factor_dtypes", "threads": args.threads, "quick": args.quick, "workload": described,
              "fit_seconds": fit_seconds, "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "dtypes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| stored as | MB | load + verify s | pairwise s | self s | pairwise Spearman min | "
          "pairwise rel. diff | self Spearman | self rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype, r in rows.items():
        p, s = r["pairwise_agreement"], r["self_agreement"]
        print(f"| {dtype} | {r['megabytes']:.0f} | {r['load_seconds']:.1f} | {r['pairwise_seconds']:.1f} | "
              f"{r['self_seconds']:.1f} | {p['spearman_min']:.6f} | {p['relative_difference']:.1e} | "
              f"{s['spearman_min']:.6f} | {s['relative_difference']:.1e} |")


if __name__ == "__main__":
    main()
