"""BEE's design study and full-size comparison (issue 20): why and when adaptation pays, and what BEE buys.

One resumable command; each stage skips what its files under ``--work`` already hold:

  bank       per model, the score bank (benchmarks/bee_bank.py): on ``--test-n`` held-out test inputs
             and ``--train-n`` train inputs, ``--draws`` maps per stochastic arm (one for zero), each
             scored on every study metric (DEL, INS, ADP, PIC, POS, NEG and, on images, SIC, AIC)
  baselines  per model, IG (zero baseline), Blur IG, Guided IG, expected gradients and the CAM family
             on the held-out inputs, scored on the same metrics
  check      on one model and metric, real ``bee`` runs (pretrained policy, finetuned; and uniform) next
             to their replays: the replay must agree within the intervals
  analyse    everything below from the files alone (seconds), written to ``--out`` and printed:
    design     controlled experiments on the candidate causes (reward, posterior, context, arm
               similarity), BEE's rounds replayed on the bank (benchmarks/bee_replay.py)
    matched    BEE against uniform choice, the best single family (chosen on the held-out inputs, in
               hindsight) and the family chosen on the train split, at T in 1, 2, 4, 8, 16: paired
               per-input differences, 95% bootstrap intervals, Wilcoxon signed-rank tests with Holm's
               correction across the cells of each comparison
    study      T = 16: BEE against the baseline methods, its arms alone and uniform choice; per cell
               whether the metric separates the methods (informative) and whether BEE is best, tied
               or strictly best

Replays average ``--replicates`` runs per input (the policy's and uniform choice's own randomness), so
a per-input value is the expected score of the method on that input for its maps.

    .venv/bin/python benchmarks/bee_design.py [--models digits_cnn,mnist1d_cnn,shapes_cnn,shapes_resnet18,shapes_vit]
        [--work benchmarks/results/bee_design] [--sizes shapes_resnet18=32] [--stages bank,baselines,check,analyse]

shapes_resnet18 and shapes_vit are trained by ``sample_models/train.py`` into ``--trained`` when missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import bee_bank
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = "digits_cnn,mnist1d_cnn,shapes_cnn,shapes_resnet18,shapes_vit"
T_VALUES = (1, 2, 4, 8, 16)


def train_missing(models: list[str], trained: Path, started: float) -> None:
    for name in models:
        if not bee_bank.model_file(name, trained).exists():
            bee_bank.log(f"training {name} into {trained}", started)
            subprocess.run([sys.executable, str(ROOT / "sample_models" / "train.py"), "--only", name,
                            "--out", str(trained)], check=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "bee_design")
    parser.add_argument("--trained", type=Path, default=None, help="folder of the trained non-shipped models "
                        "(default: WORK/models)")
    parser.add_argument("--stages", default="bank,baselines,check,analyse")
    parser.add_argument("--test-n", type=int, default=128)
    parser.add_argument("--train-n", type=int, default=64)
    parser.add_argument("--sizes", default="", help="per-model held-out/train sizes, e.g. shapes_resnet18=32/16")
    parser.add_argument("--draws", type=int, default=16, help="banked maps per stochastic arm (the largest T)")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=16, help="inputs per bank file")
    parser.add_argument("--reverse", action="store_true", help="build bank chunks last first (a second "
                        "process on the same bank works from the other end)")
    parser.add_argument("--replicates", type=int, default=4, help="replays per input (their mean is its value)")
    parser.add_argument("--check-model", default="digits_cnn")
    parser.add_argument("--check-metric", default="deletion")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="analysis JSON (default: WORK/analysis.json)")
    return parser.parse_args(argv)


def sizes_of(args: argparse.Namespace, models: list[str]) -> dict[str, tuple[int, int]]:
    """(held-out, train) inputs per model: the defaults, or --sizes NAME=TEST/TRAIN."""
    sizes = {name: (args.test_n, args.train_n) for name in models}
    for item in filter(None, args.sizes.split(",")):
        name, value = item.split("=")
        test, _, train = value.partition("/")
        sizes[name.strip()] = (int(test), int(train) if train else args.train_n)
    return sizes


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    models = [m for m in args.models.split(",") if m]
    stages = set(args.stages.split(","))
    trained = args.trained or args.work / "models"
    sizes = sizes_of(args, models)
    if stages & {"bank", "baselines", "check"}:
        train_missing(models, trained, started)
    for name in models:
        if "bank" in stages:
            bee_bank.build_bank(name, "train", sizes[name][1], args.draws, args.n_steps, args.chunk, args.work,
                                trained, args.batch_size, args.seed, started)
            bee_bank.build_bank(name, "test", sizes[name][0], args.draws, args.n_steps, args.chunk, args.work,
                                trained, args.batch_size, args.seed, started, args.reverse)
        if "baselines" in stages:
            bee_bank.build_baselines(name, sizes[name][0], args.work, trained, args.batch_size, args.seed, started)
    if "check" in stages:
        import bee_check

        bee_check.run(args.check_model, args.check_metric, args, trained, started)
    if "analyse" in stages:
        import bee_analysis
        import bee_check

        report = bee_analysis.analyse(models, args)
        report["check"] = bee_check.compare(args.work, args.seed, args.replicates)
        report["versions"] = {"python": platform.python_version(), "torch": torch.__version__}
        report["command"] = " ".join(sys.argv)
        out = args.out or args.work / "analysis.json"
        out.write_text(json.dumps(report, indent=1) + "\n")
        bee_analysis.print_report(report)
    bee_bank.log("done", started)


if __name__ == "__main__":
    main()
