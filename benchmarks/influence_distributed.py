"""Influence scoring on 1 and 2 processes (torchrun, gloo) on this machine: speed-up and memory.

Workload (offline, fixed seeds): 16,000 training examples made by tiling scikit-learn's 1,797 digits
(1x8x8 images / 16) and adding N(0, 0.01^2) noise, as benchmarks/influence_vs_kronfluence.py's scaling
runs; the CNN of that benchmark (Conv2d(1, 8, 3) - ReLU - Conv2d(8, 16, 3) - ReLU - flatten -
Linear(256, 10), every layer tracked) trained full-batch with Adam (lr 1e-2, 300 steps) on the first
1,000 digits; ekfac factors fitted once in this process (empirical Fisher, damping 1e-3); 50 queries
(the next 50 digits). Timed: ``Influence.pairwise`` (50 queries x 16,000 training examples) inside
``torchrun --standalone --nproc-per-node P``, between two barriers, the median of ``--repeats`` runs
after one warm-up, for P = 1 and 2; each process reports its peak resident memory (ru_maxrss) at the
end. The 2-process scores are checked equal to the 1-process scores (relative 1e-5). Target: speed-up
of at least 1.6x on 2 processes. Every process runs one torch thread (torchrun sets OMP_NUM_THREADS=1),
so 1 process uses one core and 2 processes two.

    .venv/bin/python benchmarks/influence_distributed.py [--repeats 3] [--train 16000]

Writes benchmarks/results/influence_distributed.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from xaibench.core import distributed
from xaibench.influence.factors import FitConfig, fit_factors
from xaibench.influence.scores import Influence, ScoreConfig
from xaibench.influence.storage import load_factors, save_factors
from xaibench.influence.task import ClassificationTask

ROOT = Path(__file__).resolve().parents[1]
DAMPING, BATCH, QUERIES = 1e-3, 128, 50


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 10))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16, torch.tensor(data.target)


def prepare(folder: Path, n_train: int) -> None:
    """Train the CNN, build the tiled training set and the queries, fit ekfac; save all in ``folder``."""
    x, y = digits()
    model = cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x[:1000]), y[:1000]).backward()
        optimiser.step()
    reps = -(-n_train // len(x))
    noise = torch.randn((reps * len(x), *x.shape[1:]), generator=torch.Generator().manual_seed(0)) * 0.01
    train_x, train_y = (x.repeat(reps, 1, 1, 1) + noise)[:n_train], y.repeat(reps)[:n_train]
    factors = fit_factors(model, ClassificationTask(), train_x, train_y,
                          FitConfig(strategy="ekfac", fisher="empirical", batch_size=BATCH))
    save_factors(folder, factors, {})
    torch.save({"model": model.state_dict(), "train_x": train_x, "train_y": train_y,
                "queries": x[1000:1000 + QUERIES], "query_y": y[1000:1000 + QUERIES]}, folder / "data.pt")


def worker(folder: Path, repeats: int) -> None:
    """One torchrun process: time the pairwise scores; rank 0 saves them; print one JSON line."""
    with distributed.session() as world:
        data = torch.load(folder / "data.pt")
        model = cnn()
        model.load_state_dict(data["model"])
        factors, _ = load_factors(folder)
        influence = Influence(model, ClassificationTask(), factors, ScoreConfig(damping=DAMPING, batch_size=BATCH))
        seconds = []
        for _ in range(repeats + 1):  # the first run warms up
            distributed.barrier()
            tic = time.perf_counter()
            scores = influence.pairwise(data["queries"], data["query_y"], data["train_x"], data["train_y"])
            distributed.barrier()
            seconds.append(time.perf_counter() - tic)
        if world.main:
            torch.save(scores, folder / f"scores-{world.size}.pt")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"rank": world.rank, "world": world.size, "seconds": statistics.median(seconds[1:]),
                          "max_rss_mb": round(rss_mb, 1)}), flush=True)


def launch(folder: Path, processes: int, repeats: int) -> list[dict]:
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", str(processes), __file__,
                           "--worker", str(folder), "--repeats", str(repeats)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return sorted((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")),
                  key=lambda r: r["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=16_000)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tic = time.perf_counter()
        prepare(folder, args.train)
        prepared = time.perf_counter() - tic
        runs = {p: launch(folder, p, args.repeats) for p in (1, 2)}
        one, two = (torch.load(folder / f"scores-{p}.pt") for p in (1, 2))
        relative = float((two - one).norm() / one.norm())
    base = runs[1][0]["seconds"]
    result = {"train": args.train, "queries": QUERIES, "repeats": args.repeats, "prepare_seconds": prepared,
              "runs": runs, "speedup": base / runs[2][0]["seconds"], "relative_difference": relative,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}}
    out = ROOT / "benchmarks" / "results" / "influence_distributed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| processes | pairwise scores (s) | speed-up | peak RSS per process (MB) |\n|---|---|---|---|")
    for p, rows in runs.items():
        rss = ", ".join(f"{r['max_rss_mb']:.0f}" for r in rows)
        print(f"| {p} | {rows[0]['seconds']:.3f} | {base / rows[0]['seconds']:.2f} | {rss} |")
    print(f"2-process scores vs 1-process: relative Frobenius difference {relative:.2e}")


if __name__ == "__main__":
    main()
