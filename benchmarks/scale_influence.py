"""Influence at ResNet scale: xaibench against kronfluence 1.0.1 on a ResNet-18, each side in its own process.

Workload (offline, seeded): xaibench's ResNet-18 (``xaibench.models.archs:resnet18``, torchvision's
layout, 11.2M parameters for 5 classes) on 3x32x32 images: xaibench's generated shapes (64x64, seed 0
for training, seed 1 for the queries) resized to 32x32 with antialiasing; the model trained from
``torch.manual_seed(0)`` for ``--epochs`` epochs (Adam, lr 1e-3, batches of 64, seeded order), then in
eval mode. At 32x32 the ImageNet stem leaves 2x2 maps in layer3 and 1x1 maps in layer4: their 3x3
convolutions have 2,304 and 4,608 input columns, of which zero padding fills all but 1,024 / 512 in
layer4, the case issue 18 names.

Settings, the same on both sides and those of benchmarks/influence_vs_kronfluence.py (whose functions
set and check kronfluence's arguments here): EK-FAC, every Conv2d and Linear tracked (21 modules),
empirical Fisher, absolute damping 1e-3, summed cross-entropy as training loss and measurement, 128
training examples per batch, all queries in one batch, float32 with float64 eigendecompositions, every
training example in the covariance and Lambda passes, no query low-rank. kronfluence's saved arguments
and processed-example counts are read back and checked after its run.

Each side runs in a child process of its own (this script with ``--child``), so that its peak resident
memory is its own: the child reads ``getrusage(RUSAGE_SELF).ru_maxrss`` after loading the model and the
data ("setup") and at its end ("peak"). Time: wall seconds of fit (covariance, eigendecomposition,
Lambda) and of pairwise scores (queries x training examples), in the child, after loading; kronfluence's
includes writing its factors and scores to a temporary folder and reading the scores back, as its API
requires. A third child times xaibench's self-influence (every training example) from the factors the
xaibench child saved, as ``influence self`` plans it under a 512 MiB budget (loading the factors
included; its peak above the model and data loaded is checked against the budget); kronfluence's child
times its own self-influence after its pairwise scores. Agreement: Spearman per query between the two
libraries' scores (target at least 0.99) and their relative Frobenius difference; time targets:
xaibench's fit + score, and fit + score + self, at most 0.5x kronfluence's.

    .venv/bin/python benchmarks/scale_influence.py [--threads 1] [--train 2000] [--queries 16] [--quick]
    .venv/bin/python benchmarks/scale_influence.py --xaibench-only --repeats 3 --out results/x.json

The self child measures memory twice: ``ru_maxrss`` (the peak since the process started, which loading
the model may set) and the kernel's VmHWM restarted after loading (``/proc/self/clear_refs``), so that
``added_mib`` is what self-influence itself added to the resident memory.

Writes benchmarks/results/scale_influence.json (``--out``) and prints a markdown table. kronfluence forms
every per-example gradient in full and rotates it (45 G multiply-adds per example in layer4), so its
side dominates the cost: about two hours for 2,000 examples on one thread (42 minutes to fit and score,
73 more for its self-influence).
``--quick`` (64 training examples, 4 queries, one epoch) is a smoke run of a few minutes. Use
``--threads 1`` when other jobs hold the cores (see influence_vs_kronfluence.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
IMAGE, CLASSES, SEED = 32, 5, 0
TARGET_SPEARMAN, TARGET_RATIO = 0.99, 0.5
BATCH, DAMPING = 128, 1e-3  # influence_vs_kronfluence's (checked in the kronfluence child)
SELF_BUDGET = "512M"  # the CPU's default budget at most (xaibench.core.memory)


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels (influence_vs_kronfluence's ``Split``)."""

    x: torch.Tensor
    y: torch.Tensor

    def dataset(self) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(self.x, self.y)


# ---------------------------------------------------------------------------------------------
# the workload, written once by the parent


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` of xaibench's generated shapes (3x64x64), resized to 3x32x32 with antialiasing, and labels."""
    from xaibench.data import shapes

    x, y, _masks = shapes.generate(n, seed)
    small = F.interpolate(torch.from_numpy(x), size=(IMAGE, IMAGE), mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0, 1)
    return small.contiguous(), torch.from_numpy(y)


def trained_resnet(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    """xaibench's ResNet-18 for 5 classes from seed 0, trained ``epochs`` epochs, in eval mode."""
    from xaibench.models.archs import resnet18

    torch.manual_seed(SEED)
    model = resnet18(num_classes=CLASSES)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=order).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()


def write_files(folder: Path, train_n: int, queries: int, epochs: int) -> dict[str, object]:
    """The model (an xaibench checkpoint) and the training / query data (.npz), as the CLI reads them."""
    from xaibench.data.shapes import CLASS_NAMES
    from xaibench.models import ModelMeta, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    x, y = images(train_n, 0)
    q, t = images(queries, 1)
    start = time.perf_counter()
    model = trained_resnet(x, y, epochs)
    seconds = time.perf_counter() - start
    meta = ModelMeta(modality="image", input_shape=(3, IMAGE, IMAGE), class_names=CLASS_NAMES,
                     value_range=(0.0, 1.0))
    save_checkpoint(folder / "resnet18.pt", model, arch="resnet18", arch_kwargs={"num_classes": CLASSES},
                    meta=meta)
    for name, (inputs, labels) in (("train", (x, y)), ("query", (q, t))):
        np.savez(folder / f"{name}.npz", x=inputs.numpy(), y=labels.numpy(), class_names=np.array(CLASS_NAMES))
    with torch.no_grad():
        accuracy = {name: float((model(a).argmax(1) == b).float().mean())
                    for name, (a, b) in (("train", (x, y)), ("query", (q, t)))}
    return {"train": train_n, "queries": queries, "epochs": epochs, "training_seconds": seconds,
            "accuracy": accuracy, "parameters": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# the children: one library each, timed and measured in their own process


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def status_mib(field: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: its peak) in MiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> float | None:
    """Restart the kernel's count of this process's peak resident memory (VmHWM) from what is resident
    now, and return that: ru_maxrss keeps the peak of loading, which later work may never reach."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return status_mib("VmRSS")


def load(folder: Path) -> tuple[torch.nn.Module, Split, Split]:
    """The model and the training and query splits."""
    from xaibench.models import load_model

    model = load_model(folder / "resnet18.pt").module.eval()
    splits = []
    for name in ("train", "query"):
        data = np.load(folder / f"{name}.npz")
        splits.append(Split(torch.from_numpy(data["x"]), torch.from_numpy(data["y"])))
    return model, splits[0], splits[1]


def xaibench_child(folder: Path) -> dict[str, object]:
    from xaibench.influence import (
        ClassificationTask,
        FitConfig,
        Influence,
        ScoreConfig,
        fit_factors,
    )
    from xaibench.influence.storage import save_factors

    model, train, queries = load(folder)
    setup, task = peak_mib(), ClassificationTask()
    start = time.perf_counter()
    factors = fit_factors(model, task, train.x, train.y,
                          FitConfig(strategy="ekfac", fisher="empirical", batch_size=BATCH))
    fitted = time.perf_counter()
    influence = Influence(model, task, factors, ScoreConfig(damping=DAMPING, batch_size=BATCH))
    scores = influence.pairwise(queries.x, queries.y, train.x, train.y).sum(0)
    done = time.perf_counter()
    torch.save(scores, folder / "scores_xaibench.pt")
    (folder / "factors").mkdir(exist_ok=True)
    save_factors(folder / "factors", factors, {})
    return {"fit_seconds": fitted - start, "score_seconds": done - fitted, "seconds": done - start,
            "setup_peak_mib": setup, "peak_mib": peak_mib()}


def self_child(folder: Path) -> dict[str, object]:
    """xaibench's self-influence as ``influence self`` plans it under the CPU's default budget of 512 MiB:
    the factors read from their file as groups of modules need them, rows per pass from the budget.
    Its time includes loading (and checking) the factors."""
    from xaibench.core.memory import RowPlan
    from xaibench.influence import ClassificationTask, Influence, ScoreConfig
    from xaibench.influence.plan import score_plan
    from xaibench.influence.storage import load_factors

    model, train, _ = load(folder)
    setup = peak_mib()
    resident = reset_peak()  # what self-influence adds from here, the factors' loading included, meets the budget
    start = time.perf_counter()
    factors = load_factors(folder / "factors", model)[0]
    memory = RowPlan.of(None, SELF_BUDGET)
    influence = Influence(model, ClassificationTask(), factors, ScoreConfig(damping=DAMPING))
    influence = Influence(model, influence.task, factors, score_plan(memory, influence, train.x[:1]))
    values = influence.self_influence(train.x, train.y).sum(0)
    seconds = time.perf_counter() - start
    torch.save(values, folder / "self_xaibench.pt")
    since = status_mib("VmHWM")
    return {"seconds": seconds, "setup_peak_mib": setup, "peak_mib": peak_mib(), "budget": SELF_BUDGET,
            "resident_at_start_mib": resident, "peak_since_start_mib": since,
            "added_mib": None if resident is None or since is None else since - resident,
            "rows_per_pass": influence.config.batch_size,
            "module_groups": len(influence.module_groups(train.x[:1])),
            "held_factor_mib": influence.held_bytes(train.x[:1]) / 2**20}


def kronfluence_child(folder: Path) -> dict[str, object]:
    import logging
    import warnings

    import influence_vs_kronfluence as reference
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import ScoreArguments

    if (reference.BATCH, reference.DAMPING) != (BATCH, DAMPING):
        raise RuntimeError("the batch size or damping differs from influence_vs_kronfluence's")
    warnings.filterwarnings("ignore", message=".*GradScaler.*", category=FutureWarning)
    retried = retry_failed_eigendecompositions()
    model, train, queries = load(folder)
    task = reference.KronfluenceClassification()
    prepared = prepare_model(copy.deepcopy(model), task)  # the original stays plain for the checks
    setup = peak_mib()
    with tempfile.TemporaryDirectory() as output:
        analyzer = Analyzer("scale", prepared, task, cpu=True, disable_tqdm=True, output_dir=output,
                            log_level=logging.WARNING)
        start = time.perf_counter()
        analyzer.fit_all_factors("ekfac", train.dataset(), per_device_batch_size=BATCH,
                                 factor_args=reference.factor_arguments("ekfac"), overwrite_output_dir=True)
        fitted = time.perf_counter()
        analyzer.compute_pairwise_scores("ekfac", "ekfac", queries.dataset(), train.dataset(),
                                         per_device_query_batch_size=len(queries.y),
                                         per_device_train_batch_size=BATCH,
                                         score_args=ScoreArguments(damping_factor=DAMPING),
                                         overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("ekfac")["all_modules"]
        done = time.perf_counter()
        analyzer.compute_self_scores("ekfac_self", "ekfac", train.dataset(), per_device_train_batch_size=BATCH,
                                     score_args=ScoreArguments(damping_factor=DAMPING), overwrite_output_dir=True)
        self_scores = analyzer.load_self_scores("ekfac_self")["all_modules"]
        selfed = time.perf_counter()
        settings = reference.checked_settings(analyzer, model, "ekfac", train)
    torch.save(scores, folder / "scores_kronfluence.pt")
    torch.save(self_scores, folder / "self_kronfluence.pt")
    return {"fit_seconds": fitted - start, "score_seconds": done - fitted, "seconds": done - start,
            "self_seconds": selfed - done, "setup_peak_mib": setup, "peak_mib": peak_mib(), "settings": settings,
            "eigendecompositions_retried": retried}


def retry_failed_eigendecompositions() -> list[dict[str, object]]:
    """Make ``torch.linalg.eigh`` retry a matrix it fails to converge on with scipy's MRRR driver (evr).

    kronfluence decomposes layer4's 4,608 x 4,608 activation covariances whole, 4,096 of their rows zero
    padding; on 2,000 examples torch's (MKL's) eigh stopped there with "failed to converge ... too many
    repeated eigenvalues". The retry is the same float64 eigendecomposition by another LAPACK routine,
    so kronfluence's settings stay as they are; its time includes the failed attempt. Returns the list
    that records each retry (matrix size and seconds).
    """
    from scipy.linalg import eigh as scipy_eigh

    original, retried = torch.linalg.eigh, []

    def eigh(matrix: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return original(matrix, *args, **kwargs)
        except torch.linalg.LinAlgError:
            start = time.perf_counter()
            values, vectors = scipy_eigh(matrix.detach().cpu().numpy(), driver="evr")
            retried.append({"size": int(matrix.shape[0]), "seconds": time.perf_counter() - start})
            return (torch.from_numpy(values).to(matrix.device, matrix.dtype),
                    torch.from_numpy(vectors).to(matrix.device, matrix.dtype))

    torch.linalg.eigh = eigh
    return retried


CHILDREN = {"xaibench": xaibench_child, "kronfluence": kronfluence_child, "self": self_child}


def run_child(side: str, folder: Path, threads: int) -> dict[str, object]:
    """This script as ``--child side`` in a fresh process; its JSON result."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", side, "--dir", str(folder),
                           "--threads", str(threads)], capture_output=True, text=True, env=environment,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {side} child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {side}: {result['seconds']:.1f} s, peak {result['peak_mib']:.0f} MiB", flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# the parent


def agreement(kron: torch.Tensor, ours: torch.Tensor) -> dict[str, object]:
    from scipy.stats import spearmanr

    per_query = [float(spearmanr(kron[q], ours[q])[0]) for q in range(kron.shape[0])]
    return {"spearman_per_query": per_query, "spearman_mean": float(np.mean(per_query)),
            "spearman_min": min(per_query),
            "relative_difference": float((kron.double() - ours.double()).norm() / ours.double().norm())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each child")
    parser.add_argument("--train", type=int, default=2000, help="training examples")
    parser.add_argument("--queries", type=int, default=16, help="query examples")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the ResNet")
    parser.add_argument("--quick", action="store_true", help="64 training examples, 4 queries: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale_influence.json")
    parser.add_argument("--xaibench-only", action="store_true",
                        help="only xaibench's children (fit and scores, then self-influence, --repeats times): "
                             "its side re-measured without the two-hour reference; no comparison")
    parser.add_argument("--repeats", type=int, default=1, help="self-influence runs (with --xaibench-only)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.dir)))
        return
    train_n, queries = (64, 4) if args.quick else (args.train, args.queries)
    load_before, start = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        workload = write_files(folder, train_n, queries, args.epochs)
        print(f"workload: {workload}", flush=True)
        if args.xaibench_only:
            ours = {"benchmark": "scale_influence", "xaibench_only": True, "threads": args.threads,
                    "workload": workload, "xaibench": run_child("xaibench", folder, args.threads),
                    "self_influence": [run_child("self", folder, args.threads) for _ in range(args.repeats)]}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(ours, indent=2) + "\n")
            return
        # kronfluence first: the long run; xaibench's children then run on the same files
        sides = {side: run_child(side, folder, args.threads) for side in ("kronfluence", "xaibench", "self")}
        scores = {side: torch.load(folder / f"scores_{side}.pt") for side in ("xaibench", "kronfluence")}
        selves = {side: torch.load(folder / f"self_{side}.pt").flatten() for side in ("xaibench", "kronfluence")}
    report = {
        "benchmark": "scale_influence", "threads": args.threads, "quick": args.quick, "workload": workload,
        "settings": {"strategy": "ekfac", "fisher": "empirical", "damping": 1e-3, "batch_size": 128,
                     "query_batch_size": queries},
        "targets": {"spearman_min": TARGET_SPEARMAN, "time_ratio": TARGET_RATIO},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "kronfluence": _version("kronfluence"), "xaibench": _version("xaibench")},
        "memory": "peak resident set of each child process: getrusage(RUSAGE_SELF).ru_maxrss at its end; "
                  "setup: the same after loading the model and the data",
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "total_seconds": time.perf_counter() - start,
        "xaibench": sides["xaibench"], "kronfluence": sides["kronfluence"], "self_influence": sides["self"],
        "time_ratio": sides["xaibench"]["seconds"] / sides["kronfluence"]["seconds"],
        "time_ratio_with_self": (sides["xaibench"]["seconds"] + sides["self"]["seconds"])
        / (sides["kronfluence"]["seconds"] + sides["kronfluence"]["self_seconds"]),
        "agreement": agreement(scores["kronfluence"], scores["xaibench"]),
        "self_agreement": agreement(selves["kronfluence"][None], selves["xaibench"][None]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def print_table(report: dict) -> None:
    """Markdown: one row per library, then the targets."""
    work, agree = report["workload"], report["agreement"]
    print(f"\nResNet-18 ({work['parameters']} parameters, 3x32x32), {work['train']} training examples, "
          f"{work['queries']} queries; threads {report['threads']}; load average "
          f"{report['load_average']['before'][0]:.1f} before, {report['load_average']['after'][0]:.1f} after")
    print("| | fit s | pairwise s | fit + pairwise s | peak RSS MiB (setup) | self-influence s | self peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    own = report["self_influence"]
    for side in ("kronfluence", "xaibench"):
        r = report[side]
        self_cells = (f"{own['seconds']:.1f} | {own['peak_mib']:.0f}" if side == "xaibench"
                      else f"{r['self_seconds']:.1f} | (in its child: {r['peak_mib']:.0f})")
        print(f"| {side} | {r['fit_seconds']:.1f} | {r['score_seconds']:.1f} | {r['seconds']:.1f} | "
              f"{r['peak_mib']:.0f} ({r['setup_peak_mib']:.0f}) | {self_cells} |")
    spearman_ok, ratio_ok = agree["spearman_min"] >= TARGET_SPEARMAN, report["time_ratio"] <= TARGET_RATIO
    print(f"\ntime ratio xaibench / kronfluence {report['time_ratio']:.3f} <= {TARGET_RATIO}: "
          f"{'yes' if ratio_ok else 'NO'}; per-query Spearman mean {agree['spearman_mean']:.6f}, "
          f"min {agree['spearman_min']:.6f} >= {TARGET_SPEARMAN}: {'yes' if spearman_ok else 'NO'}; "
          f"relative difference {agree['relative_difference']:.1e}")
    self_agree = report["self_agreement"]
    print(f"fit + pairwise + self ratio {report['time_ratio_with_self']:.3f}; self-influence Spearman "
          f"{self_agree['spearman_min']:.6f}, relative difference {self_agree['relative_difference']:.1e}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # influence_vs_kronfluence's settings
    main()
