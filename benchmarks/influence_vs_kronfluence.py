"""xaibench's influence functions against kronfluence 1.0.1 on the same models and data, in one process.

Workloads (offline, fixed seeds), on scikit-learn's bundled digits (8x8 pixels / 16):
  mlp    a 64-32-10 tanh MLP on the first 1,000 digits flattened to 64 features (the anchor workload of
         REFERENCES.md section 3); queries: the next 50 digits with their true labels.
  cnn    Conv2d(1, 8, 3) - ReLU - Conv2d(8, 16, 3) - ReLU - flatten - Linear(256, 10) on the same digits
         as 1x8x8 images, all three layers tracked; the same queries.
Both are trained full-batch with Adam (lr 1e-2, 300 steps, ``torch.manual_seed(0)``) until the training
cross-entropy is below 0.01 (the printed table says what it reached).

Settings, the same on both sides: training loss and query measurement are the summed cross-entropy on the
true labels; empirical Fisher (dataset labels); absolute damping 1e-3; every Linear and Conv2d tracked;
128 training examples per batch and all queries in one batch; float32 with float64 eigendecompositions,
no AMP; every training example in the covariance and Lambda passes (kronfluence's
``covariance_max_examples`` and ``lambda_max_examples`` are None); no query low-rank. After each
kronfluence run its saved FactorArguments and ScoreArguments and its processed-example counts are read
back and checked, and its task raises if it is ever asked for sampled labels. The sign convention is
checked, not assumed: both libraries' identity scores must equal the dot product of autograd gradients
(no minus sign), and a small gradient step on a training example must lower the query's loss where that
dot product is positive.

For each strategy (identity, diagonal, kfac, ekfac): wall time of fit + pairwise scores (Q x N) on each
side, the median of ``--repeats`` interleaved rounds after one warm-up. kronfluence's time includes what
its pipeline does on the way: writing factors and scores (safetensors + JSON) to a temporary directory
and reading the scores back (about 20 ms of it by cProfile), and the ``gc.collect()`` it runs after every
phase, shown separately as "gc" (observed through ``gc.callbacks``; its cost grows with the live Python
objects of the process) with the ratio without it; its Analyzer and ``prepare_model`` are built once
per model, outside the timings. Agreement: Spearman per query between the two libraries' scores (target
for ekfac: at least 0.99), the relative Frobenius difference, and Pearson / Spearman of each library's
scores against xaibench's exact empirical-Fisher influence (the full D x D Fisher, same damping, float64
preconditioning) over all query x train pairs. Target: xaibench's ekfac fit + score at most 0.5 x
kronfluence's.

Scaling: the trained MLP, ekfac on both sides, the 50 queries, training sets of 1k, 4k and 16k examples
made by tiling all 1,797 digits and adding seeded Gaussian noise (std 0.01) to the features; median of
``--repeats`` rounds (no warm-up of its own: the first part warmed both libraries up).

    .venv/bin/python benchmarks/influence_vs_kronfluence.py [--threads 2] [--repeats 3] [--quick]

Writes benchmarks/results/influence_vs_kronfluence.json and prints markdown tables. Cost (2-core VM,
``--threads 1``, load average about 5 from other jobs): 2 min 20 s, of which the exact CNN reference 15 s;
``--quick`` 35 to 60 s (kronfluence's fixed cost per call does not shrink with the sizes). Use
``--threads 1`` when other jobs hold the cores: two threads per process on oversubscribed cores make
every small torch call wait for a descheduled partner (xaibench's 0.06 s calls took 0.4 to 2.8 s).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import kronfluence
import torch
import torch.nn.functional as F
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task as KronfluenceTask
from scipy.stats import pearsonr, spearmanr
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import xaibench
from xaibench.influence import ClassificationTask, FitConfig, Influence, ScoreConfig, fit_factors
from xaibench.influence.tracking import capture, select_modules

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("identity", "diagonal", "kfac", "ekfac")
DAMPING = 1e-3
BATCH = 128
TARGET_SPEARMAN = 0.99
TARGET_RATIO = 0.5


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels."""

    x: torch.Tensor
    y: torch.Tensor

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.x, self.y)


@dataclass(frozen=True)
class Sizes:
    """How big a run is: training examples, queries, scaling sizes, whether the CNN gets an exact run."""

    train: int
    queries: int
    scaling: tuple[int, ...]
    cnn_exact: bool


FULL = Sizes(train=1000, queries=50, scaling=(1000, 4000, 16000), cnn_exact=True)
QUICK = Sizes(train=200, queries=10, scaling=(200, 400, 800), cnn_exact=False)


# ---------------------------------------------------------------------------------------------
# the workloads


def digits(images: bool) -> Split:
    """All 1,797 digits in [0, 1]: (N, 64) or, for the CNN, (N, 1, 8, 8)."""
    bunch = load_digits()
    x = torch.from_numpy(bunch.data / 16.0).float()
    return Split(x.view(-1, 1, 8, 8) if images else x, torch.from_numpy(bunch.target).long())


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 10))


def trained(factory: Callable[[], nn.Module], train: Split, steps: int = 300) -> tuple[nn.Module, float]:
    """The model trained full-batch with Adam (lr 1e-2) from seed 0, and its final training loss."""
    torch.manual_seed(0)
    model = factory()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(train.x), train.y)
        loss.backward()
        optimiser.step()
    return model.eval(), loss.item()


def accuracy(model: nn.Module, split: Split) -> float:
    with torch.no_grad():
        return float((model(split.x).argmax(1) == split.y).float().mean())


def tiled(n: int) -> Split:
    """``n`` training examples for the scaling runs: the digits repeated, features plus N(0, 0.01^2) noise."""
    data = digits(images=False)
    rows = torch.arange(n) % len(data.y)
    noise = torch.randn(n, data.x.shape[1], generator=torch.Generator().manual_seed(0)) * 0.01
    return Split(data.x[rows] + noise, data.y[rows])


# ---------------------------------------------------------------------------------------------
# the two libraries


class KronfluenceClassification(KronfluenceTask):
    """kronfluence's task: summed cross-entropy on the batch's labels, for training and measurement.

    The benchmark uses the empirical Fisher, so sampled labels are never legitimately requested: asking
    for them means kronfluence's settings differ from xaibench's, and the run stops.
    """

    def compute_train_loss(self, batch: list[torch.Tensor], model: nn.Module,
                           sample: bool = False) -> torch.Tensor:
        if sample:
            raise RuntimeError("kronfluence asked for sampled labels: the empirical Fisher is not in use")
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels, reduction="sum")

    def compute_measurement(self, batch: list[torch.Tensor], model: nn.Module) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels, reduction="sum")


def factor_arguments(strategy: str) -> FactorArguments:
    return FactorArguments(strategy=strategy, use_empirical_fisher=True, amp_dtype=None,
                           covariance_max_examples=None, lambda_max_examples=None)


def kronfluence_scores(analyzer: Analyzer, strategy: str, train: Split, queries: Split) -> torch.Tensor:
    """kronfluence's fit + pairwise scores (Q, N), through its files on disk as its API requires."""
    analyzer.fit_all_factors(strategy, train.dataset(), per_device_batch_size=BATCH,
                             factor_args=factor_arguments(strategy), overwrite_output_dir=True)
    analyzer.compute_pairwise_scores(strategy, strategy, queries.dataset(), train.dataset(),
                                     per_device_query_batch_size=len(queries.y),
                                     per_device_train_batch_size=BATCH,
                                     score_args=ScoreArguments(damping_factor=DAMPING),
                                     overwrite_output_dir=True)
    return analyzer.load_pairwise_scores(strategy)["all_modules"]


def xaibench_scores(model: nn.Module, strategy: str, train: Split, queries: Split) -> torch.Tensor:
    """xaibench's fit + pairwise scores (Q, N), summed over modules."""
    task = ClassificationTask()
    factors = fit_factors(model, task, train.x, train.y,
                          FitConfig(strategy=strategy, fisher="empirical", batch_size=BATCH))
    influence = Influence(model, task, factors, ScoreConfig(damping=DAMPING, batch_size=BATCH))
    return influence.pairwise(queries.x, queries.y, train.x, train.y).sum(0)


def checked_settings(analyzer: Analyzer, model: nn.Module, strategy: str, train: Split) -> dict[str, object]:
    """kronfluence's saved arguments and example counts, checked against the settings xaibench uses.

    Raises:
        RuntimeError: a setting or a count differs.
    """
    saved = {"factor": analyzer.load_factor_args(strategy).to_str_dict(),
             "score": analyzer.load_score_args(strategy).to_str_dict()}  # dtypes come back as strings
    wanted = {"factor": {"strategy": strategy, "use_empirical_fisher": True, "amp_dtype": None,
                         "covariance_max_examples": None, "lambda_max_examples": None,
                         "activation_covariance_dtype": torch.float32,
                         "gradient_covariance_dtype": torch.float32,
                         "eigendecomposition_dtype": torch.float64,
                         "per_sample_gradient_dtype": torch.float32},
              "score": {"damping_factor": DAMPING, "amp_dtype": None, "query_gradient_low_rank": None,
                        "per_sample_gradient_dtype": torch.float32, "precondition_dtype": torch.float32,
                        "score_dtype": torch.float32}}
    wrong = {f"{side}/{key}": saved[side][key] for side, fields in wanted.items()
             for key, value in fields.items() if saved[side][key] != str(value)}
    counts = processed_counts(analyzer, strategy)
    expected = {f"{stage}/{name}": len(train.y) * (1 if stage == "lambda" else positions)
                for name, positions in module_positions(model, train).items()
                for stage in counts_stages(strategy)}
    if counts != expected:
        wrong["processed"] = {"kronfluence": counts, "expected": expected}
    if wrong:
        raise RuntimeError(f"kronfluence's settings differ from xaibench's: {wrong}")
    return {"factor_args": saved["factor"], "score_args": saved["score"], "processed": counts}


def counts_stages(strategy: str) -> tuple[str, ...]:
    return {"identity": (), "diagonal": ("lambda",), "kfac": ("covariance",),
            "ekfac": ("covariance", "lambda")}[strategy]


def processed_counts(analyzer: Analyzer, strategy: str) -> dict[str, int]:
    """How many examples (covariance: example positions) kronfluence's passes saw, per module."""
    counts = {}
    for stage in counts_stages(strategy):
        if stage == "covariance":
            seen = analyzer.load_covariance_matrices(strategy)["num_activation_covariance_processed"]
        else:
            seen = analyzer.load_lambda_matrices(strategy)["num_lambda_processed"]
        counts.update({f"{stage}/{name}": int(count) for name, count in seen.items()})
    return counts


def module_positions(model: nn.Module, train: Split) -> dict[str, int]:
    """Positions per example of each tracked module (1 for a Linear, output pixels for a Conv2d)."""
    modules = select_modules(model)
    seen = capture(model, modules, train.x[:1], lambda out: out.sum())[0]
    return {name: captured.activations.shape[1] for name, captured in seen.items()}


# ---------------------------------------------------------------------------------------------
# measurements


class CollectionTimer:
    """Seconds spent in Python's garbage collector while active, explicit ``gc.collect()`` calls included.

    Observes through ``gc.callbacks`` and changes nothing: kronfluence calls ``gc.collect()`` after every
    phase (``release_memory``), and in a process with many live objects that is most of its time here.
    """

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> Self:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def timed_pair(runs: dict[str, Callable[[], torch.Tensor]], repeats: int,
               warm_up: bool = True) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """Median wall and garbage-collection seconds of each run over ``repeats`` interleaved rounds, the
    ratio xaibench / kronfluence with and without the collections, every time, and each run's scores.

    With ``warm_up`` one untimed call of each comes first and gives the scores; otherwise the first
    timed call does.
    """
    scores = {name: run() for name, run in runs.items()} if warm_up else {}
    times: dict[str, list[float]] = {name: [] for name in runs}
    collecting: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            with CollectionTimer() as collector:
                start = time.perf_counter()
                result = run()
                times[name].append(time.perf_counter() - start)
            collecting[name].append(collector.seconds)
            scores.setdefault(name, result)
    summary = {f"{name}_{kind}": statistics.median(values[name])
               for name in runs for kind, values in (("seconds", times), ("gc_seconds", collecting))}
    summary["ratio"] = summary["xaibench_seconds"] / summary["kronfluence_seconds"]
    summary["ratio_without_gc"] = ((summary["xaibench_seconds"] - summary["xaibench_gc_seconds"])
                                   / (summary["kronfluence_seconds"] - summary["kronfluence_gc_seconds"]))
    return {**summary, "all_seconds": times, "all_gc_seconds": collecting}, scores


def agreement(kron: torch.Tensor, ours: torch.Tensor) -> dict[str, float]:
    """Spearman per query (mean, min) and the relative Frobenius difference of two (Q, N) score sets."""
    per_query = [float(spearmanr(kron[q], ours[q])[0]) for q in range(kron.shape[0])]
    return {"spearman_mean": statistics.fmean(per_query), "spearman_min": min(per_query),
            "relative_difference": float((kron - ours).norm() / ours.norm())}


def against(scores: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman over all query x train pairs."""
    a, b = scores.flatten().double().numpy(), reference.flatten().double().numpy()
    return {"pearson": float(pearsonr(a, b)[0]), "spearman": float(spearmanr(a, b)[0])}


def compare_strategies(model: nn.Module, train: Split, queries: Split, repeats: int, tmp: str,
                       exact: bool) -> dict[str, object]:
    """Every strategy on both sides: times, agreement, kronfluence's checked settings, exact correlations."""
    prepared = prepare_model(copy.deepcopy(model), KronfluenceClassification())
    analyzer = Analyzer("benchmark", prepared, KronfluenceClassification(), cpu=True, disable_tqdm=True,
                        output_dir=tmp, log_level=logging.WARNING)
    reference, exact_seconds = None, None
    if exact:
        start = time.perf_counter()
        reference = xaibench_scores(model, "exact", train, queries)
        exact_seconds = time.perf_counter() - start
    rows, identity = [], {}
    for strategy in STRATEGIES:
        timings, scores = timed_pair({
            "kronfluence": lambda s=strategy: kronfluence_scores(analyzer, s, train, queries),
            "xaibench": lambda s=strategy: xaibench_scores(model, s, train, queries)}, repeats)
        row = {"strategy": strategy, **timings, **agreement(scores["kronfluence"], scores["xaibench"]),
               "kronfluence_settings": checked_settings(analyzer, model, strategy, train)}
        if reference is not None:
            row["kronfluence_vs_exact"] = against(scores["kronfluence"], reference)
            row["xaibench_vs_exact"] = against(scores["xaibench"], reference)
        rows.append(row)
        if strategy == "identity":
            identity = scores
    return {"strategies": rows, "exact_seconds": exact_seconds,
            "sign_check": sign_check(model, train, queries, identity)}


def sign_check(model: nn.Module, train: Split, queries: Split, identity: dict[str, torch.Tensor],
               pairs: int = 5, step: float = 1e-6) -> dict[str, object]:
    """Identity scores against autograd: g_q . g_m for a few pairs, and what a step along -g_m does.

    Identity influence has no curvature, so equality with the plain dot product (not its negative) pins
    down the sign; a positive value must mean a small gradient step on training example m lowers the
    query's loss (checked by taking the step). The pairs are the ``pairs`` queries and training examples
    with the largest losses: on examples fitted to a loss near 0 every float32 gradient is rounding noise.
    The reference runs in float64 for the same reason.
    """
    double = copy.deepcopy(model).double()
    params = dict(double.named_parameters())

    def loss_at(values: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row losses (B,) under the parameter ``values``."""
        outputs = torch.func.functional_call(double, values, (x.double(),))
        return F.cross_entropy(outputs, y, reduction="none")

    def gradient(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad(loss_at(params, x[None], y[None]).sum(), list(params.values())))

    with torch.no_grad():
        q_rows, m_rows = [loss_at(params, split.x, split.y).topk(pairs).indices for split in (queries, train)]
    g_q = [gradient(queries.x[q], queries.y[q]) for q in q_rows]
    g_m = [gradient(train.x[m], train.y[m]) for m in m_rows]
    flat = [torch.stack([torch.cat([g.flatten() for g in grads]) for grads in side]) for side in (g_q, g_m)]
    direct = flat[0] @ flat[1].T  # (pairs queries, pairs training examples), float64
    agrees = 0
    with torch.no_grad():
        for j, gm in enumerate(g_m):
            stepped = {name: p - step * g for (name, p), g in zip(params.items(), gm, strict=True)}
            change = loss_at(stepped, queries.x[q_rows], queries.y[q_rows]) \
                - loss_at(params, queries.x[q_rows], queries.y[q_rows])
            agrees += int(((change < 0) == (direct[:, j] > 0)).sum())
    scale = float(direct.abs().max())
    return {"pairs": pairs * pairs, "step_lowers_loss_iff_positive": agrees,
            **{f"{name}_max_relative_error": float((s[q_rows][:, m_rows].double() - direct).abs().max())
               / scale for name, s in identity.items()}}


def scaling(model: nn.Module, queries: Split, sizes: tuple[int, ...], repeats: int, tmp: str) -> list[dict]:
    """ekfac fit + score on both sides for each training-set size."""
    prepared = prepare_model(copy.deepcopy(model), KronfluenceClassification())
    analyzer = Analyzer("scaling", prepared, KronfluenceClassification(), cpu=True, disable_tqdm=True,
                        output_dir=tmp, log_level=logging.WARNING)
    rows = []
    for n in sizes:
        train = tiled(n)
        timings, scores = timed_pair({
            "kronfluence": lambda t=train: kronfluence_scores(analyzer, "ekfac", t, queries),
            "xaibench": lambda t=train: xaibench_scores(model, "ekfac", t, queries)}, repeats, warm_up=False)
        row = {"n": n, **timings, **agreement(scores["kronfluence"], scores["xaibench"])}
        rows.append(row)
        print(f"  scaling n={n}: kronfluence {row['kronfluence_seconds']:.2f} s, "
              f"xaibench {row['xaibench_seconds']:.2f} s", flush=True)
    return rows


def measure_model(name: str, sizes: Sizes, repeats: int,
                  tmp: str) -> tuple[nn.Module, Split, dict[str, object]]:
    """Train the named model, compare the libraries on it; the model and queries come back for scaling."""
    data = digits(images=name == "cnn")
    train = Split(data.x[:sizes.train], data.y[:sizes.train])
    held_out = slice(sizes.train, sizes.train + sizes.queries)
    queries = Split(data.x[held_out], data.y[held_out])
    model, loss = trained(mlp if name == "mlp" else cnn, train)
    exact = name == "mlp" or sizes.cnn_exact
    result = {"train": len(train.y), "queries": len(queries.y), "training_loss": loss,
              "train_accuracy": accuracy(model, train), "query_accuracy": accuracy(model, queries),
              "parameters": sum(p.numel() for p in model.parameters()),
              **compare_strategies(model, train, queries, repeats, tmp, exact)}
    print(f"  {name}: trained to loss {loss:.4f}; compared", flush=True)
    return model, queries, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both libraries)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and no exact CNN run: a smoke run")
    default_out = ROOT / "benchmarks" / "results" / "influence_vs_kronfluence.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # kronfluence 1.0.1 builds (disabled) torch.cuda.amp.GradScaler objects, which newer torch deprecates.
    warnings.filterwarnings("ignore", message=".*GradScaler.*", category=FutureWarning)
    sizes = QUICK if args.quick else FULL
    load_before, start = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        mlp_model, queries, mlp_result = measure_model("mlp", sizes, args.repeats, tmp)
        cnn_result = measure_model("cnn", sizes, args.repeats, tmp)[2]
        scale = scaling(mlp_model, queries, sizes.scaling, args.repeats, tmp)
    report = {
        "benchmark": "influence_vs_kronfluence", "threads": args.threads, "repeats": args.repeats,
        "quick": args.quick, "damping": DAMPING, "batch_size": BATCH, "fisher": "empirical",
        "targets": {"ekfac_spearman_min": TARGET_SPEARMAN, "ekfac_time_ratio": TARGET_RATIO},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "kronfluence": kronfluence.__version__, "xaibench": xaibench.__version__},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "total_seconds": time.perf_counter() - start,
        "mlp": mlp_result, "cnn": cnn_result, "scaling": scale,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)


def print_tables(report: dict) -> None:
    """Markdown: one table per model with its targets and sign check, then the scaling table."""
    print(f"\nthreads {report['threads']}, median of {report['repeats']} rounds, "
          f"damping {report['damping']}, empirical Fisher; total {report['total_seconds']:.0f} s")
    for name in ("mlp", "cnn"):
        print_model(name, report[name])
    print("\nscaling (mlp, ekfac, fit + score):")
    print("| n | kronfluence s (gc) | xaibench s | xai / kron (without gc) | kron s per 1k | xai s per 1k "
          "| per-query Spearman min |")
    print("|---|---|---|---|---|---|---|")
    for r in report["scaling"]:
        print(f"| {r['n']} | {r['kronfluence_seconds']:.3f} ({r['kronfluence_gc_seconds']:.2f}) | "
              f"{r['xaibench_seconds']:.3f} | {r['ratio']:.3f} ({r['ratio_without_gc']:.2f}) | "
              f"{1000 * r['kronfluence_seconds'] / r['n']:.3f} | {1000 * r['xaibench_seconds'] / r['n']:.4f} "
              f"| {r['spearman_min']:.6f} |")


def print_model(name: str, result: dict) -> None:
    """One model's strategies table, the ekfac targets and the sign check."""
    exact_note = f", exact {result['exact_seconds']:.2f} s" if result["exact_seconds"] is not None else ""
    print(f"\n{name}: {result['parameters']} parameters, {result['train']} train, "
          f"{result['queries']} queries, training loss {result['training_loss']:.4f}, "
          f"accuracy train {result['train_accuracy']:.3f} / "
          f"queries {result['query_accuracy']:.3f}{exact_note}")
    print("| strategy | kronfluence s (gc) | xaibench s | xai / kron (without gc) "
          "| per-query Spearman mean / min | rel. diff | kron vs exact P / S | xai vs exact P / S |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["strategies"]:
        exact = [f"{r[k]['pearson']:.3f} / {r[k]['spearman']:.3f}" if k in r else "-"
                 for k in ("kronfluence_vs_exact", "xaibench_vs_exact")]
        print(f"| {r['strategy']} | {r['kronfluence_seconds']:.3f} ({r['kronfluence_gc_seconds']:.2f}) | "
              f"{r['xaibench_seconds']:.3f} | {r['ratio']:.3f} ({r['ratio_without_gc']:.2f}) | "
              f"{r['spearman_mean']:.6f} / {r['spearman_min']:.6f} | {r['relative_difference']:.1e} | "
              f"{exact[0]} | {exact[1]} |")
    ekfac = next(r for r in result["strategies"] if r["strategy"] == "ekfac")
    spearman_ok, ratio_ok = ekfac["spearman_min"] >= TARGET_SPEARMAN, ekfac["ratio"] <= TARGET_RATIO
    print(f"ekfac targets: per-query Spearman min {ekfac['spearman_min']:.6f} >= {TARGET_SPEARMAN}: "
          f"{'yes' if spearman_ok else 'NO'}; time ratio {ekfac['ratio']:.3f} <= {TARGET_RATIO}: "
          f"{'yes' if ratio_ok else 'NO'}")
    sign = result["sign_check"]
    print(f"sign check ({sign['pairs']} pairs): identity vs autograd g_q.g_m max rel. error "
          f"kronfluence {sign['kronfluence_max_relative_error']:.1e}, "
          f"xaibench {sign['xaibench_max_relative_error']:.1e}; "
          f"a step along -g_m lowers the query loss iff g_q.g_m > 0 in "
          f"{sign['step_lowers_loss_iff_positive']}/{sign['pairs']}")


if __name__ == "__main__":
    main()
