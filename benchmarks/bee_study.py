"""BEE's reproduction study: metric-adapted BEE against baseline methods, its own arms and uniform choice.

Barkan, Elisha, Weill & Koenigstein (AAAI 2025) report that BEE, adapted to a metric, scores best on
that metric. This script checks the claim on xaibench's sample models (sample_models/: shapes_cnn,
digits_cnn, mnist1d_cnn) for the metrics deletion, insertion, average_drop, increase_in_confidence,
pos and neg (each at its default parameters, as BEE calls it). For every model:
  data      the first ``--train-n`` samples of the model's dataset's train split (policy pretraining)
            and the first ``--test-n`` of its test split (held out; every score is on these); targets
            are the model's predictions;
and for every metric m:
  bee           a Thompson policy pretrained for m on the train split (``bee.pretrain``, T rounds,
                saved and reloaded as ``xaibench bee pretrain`` does), then ``bee`` on the test inputs
                with that policy and finetune=true;
  bee_uniform   ``bee`` with adaptive=false (arms chosen uniformly at random), same T, no policy;
  arm_<family>  ``bee`` with arms=<family> alone (integrated gradients from baselines of that family,
                the best of T maps by m), for each of bee's default arms that fits the modality;
and once per model, not adapted to any metric, the baseline methods at their default parameters:
integrated_gradients (zero baseline), blur_ig, expected_gradients (100 training-split references, as
``xaibench explain`` draws them), gradcam (images and sequences only), saliency, smoothgrad.
Every map is scored with every one of the six metrics (xaibench.metrics.compute, one fixed generator per
metric), so the study also gives the cross-metric table (BEE adapted to one metric, scored on another).
Per cell: the mean over test inputs and its 95% percentile-bootstrap interval (2000 resamples, as
metrics.json). BEE is "best or tied" in a (model, metric) cell when it has the best mean or its interval
overlaps that of the method with the best mean. Adaptive against uniform: wins by mean, and wins or
losses where the 95% paired-bootstrap interval of the per-input difference excludes zero.

The effect of T (``--t-values``, default 1,4,16,64) is measured on one model and metric only
(``--t-model``, ``--t-metric``; default digits_cnn, deletion) to keep it affordable: bee (the policy
pretrained at ``--rounds`` for that cell, finetuned) and bee_uniform at each T on the same test inputs.

    .venv/bin/python benchmarks/bee_study.py [--models shapes_cnn,digits_cnn,mnist1d_cnn] [--threads 2]
    .venv/bin/python benchmarks/bee_study.py --quick --models digits_cnn --out /tmp/bee_study.json

Writes benchmarks/results/bee_study.json (every cell, with per-input values) and prints markdown tables;
progress goes to stderr. Cost (2-core VM, 2 threads): about 3 to 3.5 hours for the defaults, two thirds
of it shapes_cnn (estimated from timed path integrals and metric calls, not from a full run); --quick
on digits_cnn about 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from md_table import table
from xaibench.metrics import METRICS, compute
from xaibench.metrics.base import MetricResult
from xaibench.metrics.stats import bootstrap_interval
from xaibench.metrics.summary import summarise

import xaibench
from xaibench.attribution import METHODS, attribute
from xaibench.attribution.baselines import BASELINES
from xaibench.attribution.bee import DEFAULT_ARMS, BeeParams, pretrain
from xaibench.core.method_notes import collecting
from xaibench.data.prepare import Prepared, Selection, prepare
from xaibench.jobs.explain import reference_samples
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
STUDY_METRICS = ("deletion", "insertion", "average_drop", "increase_in_confidence", "pos", "neg")
BASELINE_METHODS = ("integrated_gradients", "blur_ig", "expected_gradients", "gradcam", "saliency",
                    "smoothgrad")
BASELINE_PARAMS: dict[str, dict[str, Any]] = {"integrated_gradients": {"baseline": "zero"}}
TARGET_SHARE = 0.9  # BEE best or tied in at least 90% of the (model, metric) cells
FULL = {"models": "shapes_cnn,digits_cnn,mnist1d_cnn", "train_n": 256, "test_n": 64, "rounds": 16,
        "t_values": "1,4,16,64", "n_steps": 16}
QUICK = {"models": "digits_cnn", "train_n": 16, "test_n": 8, "rounds": 2, "t_values": "1,2", "n_steps": 8}


@dataclasses.dataclass(frozen=True)
class Config:
    models: list[str]
    metrics: list[str]
    train_n: int
    test_n: int
    rounds: int
    t_values: list[int]
    t_model: str
    t_metric: str
    n_steps: int
    batch_size: int
    seed: int
    policy_dir: Path


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    model: torch.nn.Module
    train: Prepared
    test: Prepared
    references: torch.Tensor
    modality: str


# --- setup --------------------------------------------------------------------------------------


def derived_seed(seed: int, *parts: object) -> int:
    """A seed of its own for each (model, metric, method, ...): results do not depend on run order."""
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % 2**62


def generator(seed: int, *parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, *parts))


def load_workload(name: str, config: Config) -> Workload:
    """The sample model, its train and test selections (targets: predictions) and EG's references."""
    loaded = load_model(ROOT / "sample_models" / f"{name}.pt")
    dataset = loaded.meta.dataset
    train = prepare(loaded, Selection(data=f"{dataset}:train", n=config.train_n), config.batch_size)
    test = prepare(loaded, Selection(data=f"{dataset}:test", n=config.test_n), config.batch_size)
    refs = reference_samples(METHODS.get("expected_gradients")(), test, generator(config.seed, name, "refs"))
    return Workload(name, loaded.module.eval(), train, test, refs["references"], test.meta.modality)


def arms_for(modality: str) -> list[str]:
    """bee's default arms ("auto") that fit the modality."""
    return [arm for arm in DEFAULT_ARMS if modality in BASELINES.get(arm).modalities]


def baselines_for(modality: str) -> list[str]:
    return [name for name in BASELINE_METHODS if modality in METHODS.get(name).modalities]


# --- explaining ---------------------------------------------------------------------------------


def bee_params(metric: str, config: Config, **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "rounds": config.rounds, "n_steps": config.n_steps, **extra}


def pretrain_policy(work: Workload, metric: str, config: Config,
                    rounds: int) -> tuple[Path, dict[str, float]]:
    """Pretrain a policy for ``metric`` on the train split, save it; the path and its family shares."""
    params = BeeParams(**bee_params(metric, config, rounds=rounds))
    gen = generator(config.seed, work.name, metric, "pretrain")
    outcome = pretrain(work.model, work.train.inputs, work.train.targets, params, config.batch_size, gen)
    path = config.policy_dir / f"{work.name}-{metric}-T{rounds}.safetensors"
    outcome.policy.save(path, {"metric": metric})
    shares = outcome.policy.choice_probabilities(outcome.contexts, generator(config.seed, "shares")).mean(0)
    return path, {family: round(float(p), 4) for family, p in zip(outcome.families, shares)}


def explain(work: Workload, method: str, params: dict[str, Any], config: Config,
            *key: object) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Maps of the test inputs, seconds taken and what the method noted (BEE: the chosen families)."""
    start = time.perf_counter()
    with collecting() as notes:
        maps = attribute(method, work.model, work.test.inputs, target=work.test.targets,
                         batch_size=config.batch_size, generator=generator(config.seed, work.name, *key),
                         **params)
    return maps, time.perf_counter() - start, notes


def adapted_methods(work: Workload, metric: str, policy: Path, config: Config) -> dict[str, dict[str, Any]]:
    """The BEE variants adapted to ``metric``: name -> bee parameters."""
    variants = {"bee": bee_params(metric, config, policy=str(policy), finetune=True),
                "bee_uniform": bee_params(metric, config, adaptive=False)}
    for arm in arms_for(work.modality):
        variants[f"arm_{arm}"] = bee_params(metric, config, arms=arm)
    return variants


def baseline_params(work: Workload, method: str) -> dict[str, Any]:
    extra = {"references": work.references} if METHODS.get(method).needs_references else {}
    return {**BASELINE_PARAMS.get(method, {}), **extra}


# --- scoring ------------------------------------------------------------------------------------


def score_all(work: Workload, maps: torch.Tensor, config: Config) -> dict[str, torch.Tensor]:
    """Per-input scores of ``maps`` on every study metric (one fixed generator per metric)."""
    return {metric: compute(metric, work.model, work.test.inputs, maps, target=work.test.targets,
                            batch_size=config.batch_size,
                            generator=generator(config.seed, work.name, metric, "score")).scores
            for metric in config.metrics}


def cell(scores: torch.Tensor, seed: int) -> dict[str, Any]:
    """Mean, 95% bootstrap interval, counts and per-input values (null for NaN)."""
    summary = summarise(MetricResult(scores), torch.Generator().manual_seed(seed))
    return {key: summary[key] for key in ("mean", "ci95", "n", "nan", "values")}


def records(work: Workload, method: str, adapted: str | None, scores: dict[str, torch.Tensor],
            seconds: float, config: Config, **extra: Any) -> list[dict[str, Any]]:
    return [{"model": work.name, "method": method, "adapted": adapted, "scored": metric,
             "explain_seconds": round(seconds, 3), **extra,
             **cell(values, derived_seed(config.seed, work.name, method, adapted, metric))}
            for metric, values in scores.items()]


# --- the study ----------------------------------------------------------------------------------


def progress(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)


def run_model(work: Workload, config: Config, started: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every method on the test inputs of one model, scored on every metric; also the policies."""
    rows: list[dict[str, Any]] = []
    for method in baselines_for(work.modality):
        maps, seconds, _ = explain(work, method, baseline_params(work, method), config, method)
        rows += records(work, method, None, score_all(work, maps, config), seconds, config)
        progress(f"{work.name} {method}", started)
    policies: dict[str, Any] = {}
    for metric in config.metrics:
        begin = time.perf_counter()
        path, shares = pretrain_policy(work, metric, config, config.rounds)
        policies[metric] = {"path": path, "distribution": shares,
                            "pretrain_seconds": round(time.perf_counter() - begin, 3)}
        for method, params in adapted_methods(work, metric, path, config).items():
            maps, seconds, notes = explain(work, "bee", params, config, metric, method)
            chosen = notes.get("bee", {}).get("chosen") if method == "bee" else None
            rows += records(work, method, metric, score_all(work, maps, config), seconds, config,
                            **({"chosen": chosen} if chosen is not None else {}))
        progress(f"{work.name} {metric}: pretrained and explained", started)
    return rows, policies


def t_effect(work: Workload, policy: Path, config: Config, started: float) -> list[dict[str, Any]]:
    """bee (pretrained policy, finetuned) and bee_uniform at each T, scored on the T metric."""
    rows = []
    metric = config.t_metric
    for t in config.t_values:
        variants = (("bee", {"policy": str(policy), "finetune": True}), ("bee_uniform", {"adaptive": False}))
        for method, extra in variants:
            maps, seconds, _ = explain(work, "bee", bee_params(metric, config, rounds=t, **extra), config,
                                       metric, method, "T", t)
            scores = compute(metric, work.model, work.test.inputs, maps, target=work.test.targets,
                             batch_size=config.batch_size,
                             generator=generator(config.seed, work.name, metric, "score")).scores
            rows.append({"model": work.name, "metric": metric, "rounds": t, "method": method,
                         "explain_seconds": round(seconds, 3),
                         **cell(scores, derived_seed(config.seed, work.name, method, "T", t))})
        progress(f"{work.name} {metric} T={t}", started)
    return rows


def run_study(config: Config) -> dict[str, Any]:
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    policies: dict[str, Any] = {}
    for name in config.models:
        work = load_workload(name, config)
        model_rows, policies[name] = run_model(work, config, started)
        rows += model_rows
    work = load_workload(config.t_model, config)
    known = policies.get(config.t_model, {}).get(config.t_metric)
    policy = known["path"] if known else pretrain_policy(work, config.t_metric, config, config.rounds)[0]
    t_rows = t_effect(work, policy, config, started)
    for model in policies.values():
        for entry in model.values():
            entry["path"] = entry["path"].name
    return {"cells": rows, "t_effect": t_rows, "policies": policies,
            "seconds": round(time.perf_counter() - started, 1)}


# --- verdicts -----------------------------------------------------------------------------------


def higher(metric: str) -> bool:
    return METRICS.get(metric).higher_is_better


def lookup(report: dict[str, Any], model: str, method: str, adapted: str | None, scored: str) -> dict | None:
    for row in report["cells"]:
        if (row["model"], row["method"], row["adapted"], row["scored"]) == (model, method, adapted, scored):
            return row
    return None


def main_row(report: dict[str, Any], model: str, metric: str) -> dict[str, dict]:
    """Method -> cell on ``metric``, the BEE variants adapted to ``metric``, the baselines as they are."""
    out = {}
    for row in report["cells"]:
        mine = row["model"] == model and row["scored"] == metric and row["adapted"] in (None, metric)
        if mine and row["mean"] is not None:
            out[row["method"]] = row
    return out


def best_method(cells: dict[str, dict], metric: str) -> str:
    sign = 1 if higher(metric) else -1
    return max(cells, key=lambda method: sign * cells[method]["mean"])


def overlaps(a: dict, b: dict) -> bool:
    return a["ci95"][0] <= b["ci95"][1] and b["ci95"][0] <= a["ci95"][1]


def paired_difference(a: dict, b: dict, metric: str, seed: int) -> tuple[float, float, float]:
    """Mean and 95% bootstrap interval of a - b per input, signed so that positive favours a."""
    sign = 1.0 if higher(metric) else -1.0
    diff = sign * (as_tensor(a["values"]) - as_tensor(b["values"]))  # NaN where either is undefined
    low, high = bootstrap_interval(diff, torch.Generator().manual_seed(seed), resamples=2000)
    finite = diff[torch.isfinite(diff)]
    return (float(finite.mean()) if finite.numel() else float("nan")), low, high


def as_tensor(values: list[float | None]) -> torch.Tensor:
    return torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)


def verdicts(report: dict[str, Any], config: Config) -> dict[str, Any]:
    cells, adaptive = [], {"wins": 0, "losses": 0, "ties": 0, "significant_wins": 0, "significant_losses": 0}
    for model in config.models:
        for metric in config.metrics:
            row = main_row(report, model, metric)
            if not row:  # no method gave a finite score
                continue
            best = best_method(row, metric)
            bee = row.get("bee")
            ok = bee is not None and (best == "bee" or overlaps(bee, row[best]))
            cells.append({"model": model, "metric": metric, "best": best, "bee_best_or_tied": ok})
            if bee is None or "bee_uniform" not in row:
                continue
            mean, low, high = paired_difference(bee, row["bee_uniform"], metric, config.seed)
            adaptive["wins" if mean > 0 else "losses" if mean < 0 else "ties"] += 1
            adaptive["significant_wins"] += int(low > 0)
            adaptive["significant_losses"] += int(high < 0)
    share = sum(c["bee_best_or_tied"] for c in cells) / max(len(cells), 1)
    return {"cells": cells, "best_or_tied": sum(c["bee_best_or_tied"] for c in cells), "total": len(cells),
            "share": round(share, 4), "meets_target": share >= TARGET_SHARE, "adaptive_vs_uniform": adaptive}


# --- printing -----------------------------------------------------------------------------------


def fmt(row: dict | None) -> str:
    if row is None or row["mean"] is None:
        return "-"
    return f"{row['mean']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]"


def columns(report: dict[str, Any], model: str) -> list[str]:
    seen: list[str] = []
    for row in report["cells"]:
        if row["model"] == model and row["method"] not in seen:
            seen.append(row["method"])
    adapted = sorted((m for m in seen if is_adapted(m)), key=lambda m: (m != "bee", m != "bee_uniform"))
    return adapted + [m for m in seen if not is_adapted(m)]


def is_adapted(method: str) -> bool:
    """The BEE variants (bee, bee_uniform, arm_*), which are adapted to a metric."""
    return method == "bee" or method.startswith(("bee_", "arm_"))



def print_main(report: dict[str, Any], config: Config) -> None:
    print("Main table: mean [95% bootstrap interval] on held-out inputs; BEE variants adapted to the row's "
          "metric; ** = best mean, bee? = BEE best or tied (interval overlap)")
    print(f"lower is better: {', '.join(m for m in config.metrics if not higher(m))}\n")
    verdict = {(c["model"], c["metric"]): c for c in report["verdicts"]["cells"]}
    for model in config.models:
        methods = columns(report, model)
        lines = []
        for metric in config.metrics:
            row, v = main_row(report, model, metric), verdict.get((model, metric), {})
            cells = [("**" + fmt(row.get(m)) + "**") if m == v.get("best") else fmt(row.get(m)) for m in methods]
            lines.append([model, metric, *cells, "yes" if v.get("bee_best_or_tied") else "no"])
        table(["model", "metric", *methods, "bee?"], lines)


def print_verdicts(report: dict[str, Any]) -> None:
    v = report["verdicts"]
    a = v["adaptive_vs_uniform"]
    print(f"BEE best or tied: {v['best_or_tied']} / {v['total']} cells ({v['share']:.0%}; target "
          f"{TARGET_SHARE:.0%}: {'met' if v['meets_target'] else 'NOT met'})")
    print(f"adaptive vs uniform (by mean): {a['wins']} wins, {a['losses']} losses, {a['ties']} ties; "
          f"paired 95% interval excluding 0: {a['significant_wins']} wins, "
          f"{a['significant_losses']} losses\n")


def print_cross(report: dict[str, Any], config: Config) -> None:
    print("Cross-metric table: BEE adapted to the row's metric, scored on the column's; last row: the best "
          "baseline method on the column's metric\n")
    for model in config.models:
        baselines = [m for m in columns(report, model) if not is_adapted(m)]
        lines = [[model, f"bee[{a}]", *[fmt(lookup(report, model, "bee", a, s)) for s in config.metrics]]
                 for a in config.metrics]
        best = []
        for s in config.metrics:
            found = {m: lookup(report, model, m, None, s) for m in baselines}
            cells = {m: r for m, r in found.items() if r is not None and r["mean"] is not None}
            best.append(f"{fmt(cells[b])} {b}" if cells and (b := best_method(cells, s)) else "-")
        lines.append([model, "best baseline", *best])
        table(["model", "adapted to", *config.metrics], lines)


def print_t(report: dict[str, Any], config: Config) -> None:
    print(f"Effect of T: {config.t_model}, {config.t_metric} "
          f"({'higher' if higher(config.t_metric) else 'lower'} is better), "
          f"{config.test_n} held-out inputs\n")
    lines = []
    for t in config.t_values:
        rows = {r["method"]: r for r in report["t_effect"] if r["rounds"] == t}
        seconds = [f"{rows[m]['explain_seconds']:.1f}" if m in rows else "-" for m in ("bee", "bee_uniform")]
        lines.append([str(t), fmt(rows.get("bee")), fmt(rows.get("bee_uniform")), *seconds])
    table(["T", "bee", "bee_uniform", "bee s", "uniform s"], lines)


def print_report(report: dict[str, Any], config: Config) -> None:
    print_main(report, config)
    print_verdicts(report)
    print_cross(report, config)
    print_t(report, config)
    print(f"total {report['seconds']:.1f} s, {report['threads']} threads")


# --- command line -------------------------------------------------------------------------------


def parse_config(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated sample models (default {FULL['models']})")
    parser.add_argument("--metrics", default=",".join(STUDY_METRICS), help="comma-separated")
    parser.add_argument("--train-n", type=int, help="policy pretraining inputs (default 256)")
    parser.add_argument("--test-n", type=int, help="held-out inputs (default 64)")
    parser.add_argument("--rounds", type=int, help="T, BEE's maps per input (default 16)")
    parser.add_argument("--t-values", help="values of T for the T table (default 1,4,16,64)")
    parser.add_argument("--t-model", help="the T table's model (default digits_cnn, else the first model)")
    parser.add_argument("--t-metric", default="deletion", help="the T table's metric")
    parser.add_argument("--n-steps", type=int, help="quadrature points per BEE path (default 16)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke-run sizes for options not given: {QUICK}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bee_study.json")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    value = {key: default if getattr(args, key) is None else getattr(args, key)
             for key, default in sizes.items()}
    models = [m.strip() for m in value["models"].split(",") if m.strip()]
    config = Config(
        models=models, metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        train_n=value["train_n"], test_n=value["test_n"], rounds=value["rounds"],
        t_values=[int(t) for t in value["t_values"].split(",")],
        t_model=args.t_model or ("digits_cnn" if "digits_cnn" in models else models[0]),
        t_metric=args.t_metric, n_steps=value["n_steps"], batch_size=args.batch_size, seed=args.seed,
        policy_dir=Path("."))
    return config, args


def main(argv: list[str] | None = None) -> None:
    config, args = parse_config(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bee_study_") as policies:
        config = dataclasses.replace(config, policy_dir=Path(policies))
        results = run_study(config)
    report = {
        "benchmark": "bee_study", "threads": torch.get_num_threads(), "quick": args.quick,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()
                   if k != "policy_dir"},
        "baseline_params": {m: BASELINE_PARAMS.get(m, {}) for m in BASELINE_METHODS},  # else defaults
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__},
        **results,
    }
    report["verdicts"] = verdicts(report, config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print_report(report, config)


if __name__ == "__main__":
    main()
