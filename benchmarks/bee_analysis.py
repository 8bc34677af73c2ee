"""The analyses of BEE's design study (benchmarks/bee_design.py), from the bank and baseline files alone.

All scores are oriented (higher is better) inside; tables print them in the metric's own direction.
A per-input value of a replayed method is its mean over replicates; paired differences are per input.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import bee_bank
import bee_replay
import numpy as np
import torch
from bee_replay import Variant
from md_table import table
from scipy.stats import wilcoxon
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from xaibench.metrics.stats import bootstrap_interval

FINAL = Variant(cover="cycle")  # the design ``bee`` runs (keep in step with xaibench.attribution.bee)
UNIFORM = Variant(choice="uniform")  # the paper's non-adaptive control: any arm, uniformly, every round
UNIFORM_CYCLE = Variant(choice="uniform", cover="cycle")  # the arms in cycles, each cycle in random order
DESIGN_VARIANTS = (  # the paper's design first, then one change at a time
    Variant(), Variant(reward="improvement"), Variant(reward="absolute"), Variant(reward="mixed"),
    Variant(posterior="tempered"), Variant(posterior="reset"), Variant(posterior="prior"), Variant(finetune=False),
    Variant(context="none"), Variant(state=True), Variant(cover="once"), FINAL,
    Variant(reward="improvement", cover="cycle"), Variant(choice="greedy", cover="cycle"), UNIFORM_CYCLE)
DESIGN_T = (1, 2, 4, 8, 16)
MATCHED_T = (1, 2, 4, 8, 16)
STUDY_T = 16
PRETRAIN_ROUNDS = 16
BASELINES = ("integrated_gradients", "blur_ig", "guided_ig", "expected_gradients", "gradcam", "best_cam")
TIED_SHARE = 0.8  # a metric where >= 80% of the other methods tie with the best one is not informative
CLUSTERS = 8
PERMUTATIONS = 200


@dataclasses.dataclass
class Cell:
    """One (model, metric): oriented banks (N, A, K), contexts, the metric's scale, its baselines."""

    model: str
    metric: str
    arms: tuple[str, ...]
    test: torch.Tensor
    train: torch.Tensor
    test_contexts: torch.Tensor
    train_contexts: torch.Tensor
    scale: tuple[float, float]
    baselines: dict[str, torch.Tensor]
    seed: int
    replicates: int
    policies: dict[str, Any] = dataclasses.field(default_factory=dict)
    replays: dict[tuple[str, int], torch.Tensor] = dataclasses.field(default_factory=dict)
    raw: torch.Tensor = None  # (N, A, K, M) the test bank's scores on every metric, as the metrics give them
    metrics: tuple[str, ...] = ()
    index: torch.Tensor = None  # (N,) each held-out row's position in the test split
    cross: dict[tuple[str, int], torch.Tensor] = dataclasses.field(default_factory=dict)  # kept maps, every metric

    @property
    def higher(self) -> bool:
        return bee_bank.higher(self.metric)


def cells_of(model: str, work, seed: int, replicates: int) -> list[Cell]:
    test, train = bee_bank.load_bank(model, "test", work), bee_bank.load_bank(model, "train", work)
    if test is None or train is None:
        return []
    found = bee_bank.load_baselines(model, work)
    out = []
    for m, metric in enumerate(test["metrics"]):
        sign = 1.0 if bee_bank.higher(metric) else -1.0
        s_train = sign * train["scores"][..., m]
        finite = s_train[torch.isfinite(s_train)]
        scale = (float(finite.quantile(0.01)), float(finite.quantile(0.99))) if finite.numel() else (0.0, 1.0)
        base = {}
        if found is not None:
            for method, scores in found["scores"].items():
                base[method] = sign * scores[test["index"], found["metrics"].index(metric)]
        out.append(Cell(model, metric, tuple(test["arms"]), sign * test["scores"][..., m], s_train,
                        test["contexts"], train["contexts"], scale, base, seed, replicates,
                        raw=test["scores"], metrics=tuple(test["metrics"]), index=test["index"]))
    return out


# --- replayed methods ---------------------------------------------------------------------------


def seed_of(cell: Cell, *parts: object) -> int:
    return bee_bank.derived_seed(cell.seed, cell.model, cell.metric, *parts)


def pretrained(cell: Cell, variant: Variant) -> Any:
    """The policy pretrained on the train bank with the variant's reward and context (cached)."""
    key = (variant.reward, variant.context, variant.state, variant.cover)
    if key not in cell.policies:
        gen = torch.Generator().manual_seed(seed_of(cell, "pretrain", *key))
        learner = Variant(reward=variant.reward, context=variant.context, state=variant.state, cover=variant.cover)
        cell.policies[key] = bee_replay.pretrain(cell.train, cell.train_contexts, PRETRAIN_ROUNDS, learner,
                                                 cell.arms, gen, cell.scale)
    return cell.policies[key]


def replayed(cell: Cell, variant: Variant, rounds: int) -> torch.Tensor:
    """(N,) per-input mean over replicates of the best oriented score after ``rounds`` rounds (cached)."""
    key = (variant.label(), rounds)
    if key not in cell.replays:
        cell.replays[key] = _replayed(cell, variant, rounds)
    return cell.replays[key]


def _replayed(cell: Cell, variant: Variant, rounds: int) -> torch.Tensor:
    start = None
    if variant.choice in ("thompson", "greedy"):
        start = bee_replay.starting_policy(pretrained(cell, variant), variant.posterior)
    runs, cross = [], []
    for r in range(cell.replicates):
        gen = torch.Generator().manual_seed(seed_of(cell, variant.label(), rounds, r))
        run = bee_replay.replay(cell.test, cell.test_contexts, rounds, variant, start, cell.arms, gen, cell.scale)
        runs.append(run.best)
        found = run.arm >= 0
        kept = torch.full((run.best.shape[0], cell.raw.shape[3]), float("nan"), dtype=torch.float64)
        kept[found] = cell.raw[found.nonzero()[:, 0], run.arm[found], run.draw[found]]
        cross.append(kept)
    cell.cross[(variant.label(), rounds)] = torch.stack(cross).nanmean(dim=0)
    return torch.stack(runs).nanmean(dim=0)


def family_values(bank: torch.Tensor, rounds: int) -> torch.Tensor:
    """(N, A) exact expected best of ``rounds`` draws of each arm alone."""
    return bee_replay.expected_best_of(bank, rounds)


def best_family(values: torch.Tensor) -> int:
    return int(values.nanmean(dim=0).nan_to_num(-math.inf).argmax())


# --- statistics ---------------------------------------------------------------------------------


def paired(a: torch.Tensor, b: torch.Tensor, seed: int) -> dict[str, Any]:
    """a - b per input (oriented: positive favours a): mean, 95% bootstrap interval, Wilcoxon p."""
    diff = (a - b).double()
    diff = diff[torch.isfinite(diff)]
    if diff.numel() == 0:
        return {"mean": None, "ci95": [None, None], "p": None, "n": 0}
    low, high = bootstrap_interval(diff, torch.Generator().manual_seed(seed), resamples=2000)
    nonzero = diff[diff != 0]
    p = float(wilcoxon(nonzero.numpy()).pvalue) if nonzero.numel() >= 1 else 1.0
    return {"mean": float(diff.mean()), "ci95": [float(low), float(high)], "p": p, "n": int(diff.numel())}


def holm(entries: list[dict[str, Any]]) -> None:
    """Add ``p_holm`` (Holm's step-down adjusted p) to each entry with a p-value, in place."""
    tested = sorted((e for e in entries if e.get("p") is not None), key=lambda e: e["p"])
    m, running = len(tested), 0.0
    for i, entry in enumerate(tested):
        running = max(running, min(1.0, (m - i) * entry["p"]))
        entry["p_holm"] = running


def verdict(entry: dict[str, Any], alpha: float = 0.05) -> str:
    """win / loss / tie by the Holm-adjusted Wilcoxon test, the direction by the mean difference."""
    if entry.get("mean") is None:
        return "n/a"
    if entry.get("p_holm", 1.0) < alpha:
        return "win" if entry["mean"] > 0 else "loss"
    return "tie"


# --- diagnostics (the candidate causes) ---------------------------------------------------------


def diagnostics(cell: Cell) -> dict[str, Any]:
    s = cell.test
    arm_means = s.nanmean(dim=2)  # (N, A)
    within = s.var(dim=2).nanmean(dim=1)  # mean within-arm variance per input
    between = arm_means.var(dim=1)
    share = between / (between + within)
    best_test = arm_means.nan_to_num(-math.inf).argmax(dim=1)
    best_train = cell.train.nanmean(dim=2).nan_to_num(-math.inf).argmax(dim=1)
    counts = torch.bincount(best_test, minlength=len(cell.arms)).double()
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log2()).sum())
    info = context_information(cell, best_train, best_test)
    gaps = {}
    for t in (1, 4, 16):
        values = family_values(s, t)
        oracle = values.nan_to_num(-math.inf).amax(dim=1)
        uniform = replayed(cell, UNIFORM, t)
        single = values[:, best_family(values)]
        gaps[t] = {"oracle_minus_uniform": float((oracle - uniform).nanmean()),
                   "single_minus_uniform": float((single - uniform).nanmean())}
    concentration = {}
    for label, variant in (("paper", Variant()), ("cycle", FINAL)):
        probabilities = pretrained(cell, variant).choice_probabilities(
            variant.contexts(cell.test_contexts), torch.Generator().manual_seed(seed_of(cell, "shares")))
        concentration[label] = float(probabilities.amax(dim=1).mean())
    return {"between_arm_share": float(share.nanmean()), "best_family_share": dict(zip(cell.arms, p.tolist())),
            "pretrained_top_choice": concentration,
            "best_family_entropy_bits": entropy, **info, "gaps": gaps}


def context_information(cell: Cell, best_train: torch.Tensor, best_test: torch.Tensor) -> dict[str, Any]:
    """Does the context tell which family is best? Plug-in mutual information between k-means clusters
    of the context (fit on the train split) and the best family on held-out inputs, less its mean under
    permuted labels (the plug-in estimate's bias), with a permutation p-value; and held-out accuracy of a
    logistic regression from context to best family against always predicting the train split's mode."""
    x_train, x_test = cell.train_contexts.numpy(), cell.test_contexts.numpy()
    y_train, y_test = best_train.numpy(), best_test.numpy()
    clusters = KMeans(CLUSTERS, n_init=4, random_state=0).fit(x_train).predict(x_test)
    observed = plug_in_mi(clusters, y_test)
    rng = np.random.default_rng(0)
    null = np.array([plug_in_mi(clusters, rng.permutation(y_test)) for _ in range(PERMUTATIONS)])
    mode = np.bincount(y_train).argmax()
    if len(set(y_train)) > 1:
        classifier = LogisticRegression(max_iter=2000).fit(x_train, y_train)
        accuracy = float((classifier.predict(x_test) == y_test).mean())
    else:
        accuracy = float((y_test == mode).mean())
    return {"mi_bits": float(observed - null.mean()), "mi_p": float((1 + (null >= observed).sum()) / (1 + PERMUTATIONS)),
            "context_accuracy": accuracy, "mode_accuracy": float((y_test == mode).mean())}


def plug_in_mi(a: np.ndarray, b: np.ndarray) -> float:
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / (pa @ pb)[nz])).sum())


# --- the three analyses -------------------------------------------------------------------------


def design(cell: Cell) -> dict[str, Any]:
    """Each design variant against uniform choice at each T (paired per input)."""
    out = {}
    for t in DESIGN_T:
        uniform = replayed(cell, UNIFORM, t)
        row = {}
        for variant in DESIGN_VARIANTS:
            value = replayed(cell, variant, t)
            row[variant.label()] = {"value": float(value.nanmean()),
                                    **paired(value, uniform, seed_of(cell, "design", variant.label(), t))}
        row["uniform"] = {"value": float(uniform.nanmean())}
        out[t] = row
    return out


def matched(cell: Cell) -> dict[str, Any]:
    """BEE (FINAL) against uniform, the hindsight-best family and the train-chosen family at each T."""
    out = {}
    for t in MATCHED_T:
        bee = replayed(cell, FINAL, t)
        values, train_values = family_values(cell.test, t), family_values(cell.train, t)
        single, chosen = best_family(values), best_family(train_values)
        others = {"uniform": replayed(cell, UNIFORM, t), "uniform_cycle": replayed(cell, UNIFORM_CYCLE, t),
                  "best_single": values[:, single],
                  "train_fixed": values[:, chosen]}
        out[t] = {"bee": float(bee.nanmean()), "best_single_family": cell.arms[single],
                  "train_fixed_family": cell.arms[chosen],
                  **{name: {"value": float(v.nanmean()), **paired(bee, v, seed_of(cell, "matched", name, t))}
                     for name, v in others.items()}}
    return out


def study(cell: Cell) -> dict[str, Any]:
    """T = 16: BEE against the baseline methods (and its parts); informativeness and the verdict."""
    methods: dict[str, torch.Tensor] = {"bee": replayed(cell, FINAL, STUDY_T),
                                        "bee_uniform": replayed(cell, UNIFORM, STUDY_T)}
    values = family_values(cell.test, STUDY_T)
    for a, arm in enumerate(cell.arms):
        methods[f"arm_{arm}"] = values[:, a]
    base = {m: v for m, v in cell.baselines.items() if m in BASELINES[:-1]}
    cams = {m: v for m, v in cell.baselines.items() if m in bee_bank.CAM_VARIANTS}
    best_cam = max(cams, key=lambda m: float(cams[m].nanmean())) if cams else None
    if best_cam is not None:
        base["best_cam"] = cams[best_cam]
    methods.update(base)
    means = {m: float(v.nanmean()) for m, v in methods.items()}
    kept = cell.cross[(FINAL.label(), STUDY_T)]
    out: dict[str, Any] = {"means": means, "best_cam": best_cam,
                           "bee_on_other_metrics": {m: float(kept[:, i].nanmean()) for i, m in enumerate(cell.metrics)},
                           "ci95": {m: interval(v, seed_of(cell, "ci", m)) for m, v in methods.items()}}
    if not base:
        return out
    top = max(base, key=lambda m: means[m])
    # does the metric separate the methods BEE is compared with (all but BEE: baselines, uniform, arms)?
    pool = {m: v for m, v in methods.items() if m != "bee"}
    leader, ties = tied_with_best(pool, cell.seed, cell.model, cell.metric)
    vs_best = paired(methods["bee"], base[top], seed_of(cell, "bee-vs-best"))
    out.update({"best_baseline": top, "best_other": leader, "tied_with_best_other": ties,
                "informative": len(ties) < TIED_SHARE * (len(pool) - 1), "bee_vs_best_baseline": vs_best,
                "bee_best_or_tied": vs_best["ci95"][1] >= 0, "bee_strictly_best": vs_best["ci95"][0] > 0})
    return out


def interval(values: torch.Tensor, seed: int) -> list[float]:
    finite = values[torch.isfinite(values)].double()
    low, high = bootstrap_interval(finite, torch.Generator().manual_seed(seed), resamples=2000)
    return [float(low), float(high)]


def tied_with_best(base: dict[str, torch.Tensor], seed: int, model: str, metric: str) -> tuple[str, list[str]]:
    """The baseline with the best mean (oriented) and those whose paired 95% interval against it
    reaches 0."""
    top = max(base, key=lambda m: float(base[m].nanmean()))
    ties = [m for m in base if m != top
            and paired(base[top], base[m], bee_bank.derived_seed(seed, model, metric, "tie", m))["ci95"][0] <= 0]
    return top, ties


def settings_check(model: str, work: Any, seed: int) -> list[dict[str, Any]]:
    """For every metric column of the baseline file (the study's settings and the replaced ones): how
    many of the other baseline methods tie with the best one, and so whether the setting is informative."""
    found = bee_bank.load_baselines(model, work)
    if found is None:
        return []
    rows = []
    for column in found["metrics"]:
        sign = 1.0 if bee_bank.higher(column) else -1.0
        values = {m: sign * s[:, found["metrics"].index(column)] for m, s in found["scores"].items()}
        cams = [m for m in values if m in bee_bank.CAM_VARIANTS]
        if cams:
            values["best_cam"] = values[max(cams, key=lambda m: float(values[m].nanmean()))]
        base = {m: v for m, v in values.items() if m in BASELINES}
        top, ties = tied_with_best(base, seed, model, column)
        rows.append({"model": model, "metric": column, "best": top, "tied": ties,
                     "informative": len(ties) < TIED_SHARE * (len(base) - 1),
                     "means": {m: float(v.nanmean()) * sign for m, v in base.items()}})
    return rows


def analyse(models: list[str], args: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"cells": [], "settings": [row for model in models
                                                         for row in settings_check(model, args.work, args.seed)]}
    for model in models:
        for cell in cells_of(model, args.work, args.seed, args.replicates):
            entry = {"model": model, "metric": cell.metric, "higher_is_better": cell.higher,
                     "n": int(cell.test.shape[0]), "arms": list(cell.arms),
                     "diagnostics": diagnostics(cell), "design": design(cell), "matched": matched(cell),
                     "study": study(cell)}
            report["cells"].append(entry)
            print(f"analysed {model} {cell.metric}", file=sys.stderr, flush=True)
    for t in MATCHED_T:
        for name in ("uniform", "uniform_cycle", "best_single", "train_fixed"):
            holm([c["matched"][t][name] for c in report["cells"]])
    for t in DESIGN_T:
        for variant in DESIGN_VARIANTS:
            holm([c["design"][t][variant.label()] for c in report["cells"]])
    report["summary"] = summary(report)
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    cells = [c for c in report["cells"] if "informative" in c["study"]]
    informative = [c for c in cells if c["study"]["informative"]]
    best_or_tied = sum(c["study"]["bee_best_or_tied"] for c in informative)
    strictly = sum(c["study"]["bee_strictly_best"] for c in informative)
    adaptive: dict[str, Any] = {}
    for control in ("uniform", "uniform_cycle"):
        adaptive[control] = {}
        for t in MATCHED_T:
            verdicts = [verdict(c["matched"][t][control]) for c in informative]
            adaptive[control][t] = {v: verdicts.count(v) for v in ("win", "tie", "loss")}
    return {"cells": len(cells), "informative": len(informative), "bee_best_or_tied": best_or_tied,
            "bee_strictly_best": strictly, "adaptive_vs_uniform": adaptive}


# --- printing -----------------------------------------------------------------------------------


def shown(value: float | None, higher: bool) -> str:
    return "-" if value is None else f"{value if higher else -value:.3f}"


def shown_ci(mean: float | None, ci: list, higher: bool) -> str:
    if mean is None:
        return "-"
    low, high = (ci[0], ci[1]) if higher else (-ci[1], -ci[0])
    return f"{mean if higher else -mean:.3f} [{low:.3f}, {high:.3f}]"


def diff_ci(entry: dict[str, Any]) -> str:
    """A paired difference in oriented units (positive favours BEE / the variant) and its verdict."""
    if entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:+.3f} [{entry['ci95'][0]:+.3f}, {entry['ci95'][1]:+.3f}] {verdict(entry)}"



def print_report(report: dict[str, Any]) -> None:
    cells = report["cells"]
    print("Diagnostics per cell (held-out inputs; scores oriented so higher is better)\n")
    lines = []
    for c in cells:
        d = c["diagnostics"]
        top = max(d["best_family_share"], key=d["best_family_share"].get)
        lines.append([c["model"], c["metric"], f"{d['between_arm_share']:.2f}",
                      f"{d['pretrained_top_choice']['paper']:.2f} / {d['pretrained_top_choice']['cycle']:.2f}",
                      f"{top} {d['best_family_share'][top]:.2f}", f"{d['best_family_entropy_bits']:.2f}",
                      f"{d['mi_bits']:+.3f} (p {d['mi_p']:.3f})",
                      f"{d['context_accuracy']:.2f} / {d['mode_accuracy']:.2f}",
                      *[f"{d['gaps'][t]['oracle_minus_uniform']:+.3f} / {d['gaps'][t]['single_minus_uniform']:+.3f}"
                        for t in (1, 4, 16)]])
    table(["model", "metric", "between-arm share", "policy's top choice (paper / cycle)", "most often best family", "H(best) bits",
           "MI(context; best) bits", "context acc / mode acc", "T=1 oracle/single - uniform",
           "T=4 oracle/single - uniform", "T=16 oracle/single - uniform"], lines)
    print("Design variants against uniform choice at matched compute: cells where the variant wins / ties / "
          "loses (paired per input, Wilcoxon, Holm across cells)\n")
    lines = []
    for variant in DESIGN_VARIANTS:
        row = [variant.label()]
        for t in DESIGN_T:
            entries = [c["design"][t][variant.label()] for c in cells]
            v = [verdict(e) for e in entries]
            row.append(f"{v.count('win')}/{v.count('tie')}/{v.count('loss')}")
        lines.append(row)
    table(["variant", *[f"T={t}" for t in DESIGN_T]], lines)
    for name, label in (("uniform", "uniform choice"), ("uniform_cycle", "uniform choice in cycles"),
                        ("best_single", "the best single family (hindsight)"),
                        ("train_fixed", "the family chosen on the train split")):
        print(f"Matched compute: BEE minus {label}, paired per input, oriented (positive favours BEE); "
              "mean [95% bootstrap interval] win/tie/loss by Wilcoxon with Holm\n")
        lines = [[c["model"], c["metric"], *[diff_ci(c["matched"][t][name]) for t in MATCHED_T]] for c in cells]
        table(["model", "metric", *[f"T={t}" for t in MATCHED_T]], lines)
    print_study(cells)
    print_cross(cells)
    print("Metric settings: baseline methods tied with the best one (paired 95% interval), per setting; "
          "name@setting marks a setting the study replaced\n")
    table(["model", "metric", "best baseline", "tied with it", "informative"],
          [[r["model"], r["metric"], r["best"], ", ".join(r["tied"]) or "none", "yes" if r["informative"] else "no"]
           for r in report.get("settings", [])])
    if report.get("check"):
        print("Replay check: real bee runs (T = 16) against their replays on the bank, mean [95% interval]\n")
        table(["model", "metric", "method", "real run", "replay", "real run seconds"],
              [[r["model"], r["metric"], r["method"], f"{r['real']:.3f} [{r['real_ci95'][0]:.3f}, {r['real_ci95'][1]:.3f}]",
                f"{r['replay']:.3f} [{r['replay_ci95'][0]:.3f}, {r['replay_ci95'][1]:.3f}]", f"{r['real_seconds']:.1f}"]
               for r in report["check"]])
    s = report["summary"]
    print(f"Informative cells: {s['informative']} of {s['cells']}; BEE best or tied in {s['bee_best_or_tied']}, "
          f"strictly best in {s['bee_strictly_best']}")
    for control, by_t in s["adaptive_vs_uniform"].items():
        for t, counts in by_t.items():
            print(f"  BEE vs {control} at T={t} (informative cells): {counts['win']} wins, {counts['tie']} ties, "
                  f"{counts['loss']} losses")


def print_cross(cells: list[dict[str, Any]]) -> None:
    """BEE adapted to the row's metric (T = 16), its kept maps scored on the column's; last row: the
    best baseline method on the column's metric."""
    print(f"Cross-metric: BEE adapted to the row's metric (T = {STUDY_T}), mean score of its kept maps on the "
          "column's metric; last row: the best baseline on the column's metric\n")
    for model in dict.fromkeys(c["model"] for c in cells):
        mine = [c for c in cells if c["model"] == model]
        metrics = [c["metric"] for c in mine]
        lines = [[model, f"bee[{c['metric']}]", *[f"{c['study']['bee_on_other_metrics'][m]:.3f}" for m in metrics]]
                 for c in mine]
        best = []
        for c in mine:
            top = c["study"].get("best_baseline")
            best.append("-" if top is None else f"{shown(c['study']['means'][top], c['higher_is_better'])} {top}")
        table(["model", "adapted to", *metrics], lines + [[model, "best baseline", *best]])


def print_study(cells: list[dict[str, Any]]) -> None:
    print(f"Study at T = {STUDY_T}: mean [95% bootstrap interval], in each metric's own direction; "
          "bee - best baseline: paired per input, oriented (positive favours BEE)\n")
    methods = ["bee", "bee_uniform", "integrated_gradients", "blur_ig", "guided_ig", "expected_gradients",
               "gradcam", "best_cam"]
    lines = []
    for c in cells:
        st = c["study"]
        row = [c["model"], c["metric"], "up" if c["higher_is_better"] else "down"]
        for m in methods:
            mean = st["means"].get(m)
            row.append("-" if mean is None or math.isnan(mean) else shown_ci(mean, st["ci95"][m], c["higher_is_better"]))
        if "informative" in st:
            row += [st["best_baseline"] + (f" ({st['best_cam']})" if st["best_baseline"] == "best_cam" else ""),
                    "yes" if st["informative"] else f"no ({len(st['tied_with_best_other'])} tied)",
                    diff_ci(st["bee_vs_best_baseline"]).rsplit(" ", 1)[0],
                    "strictly best" if st["bee_strictly_best"] else "best/tied" if st["bee_best_or_tied"] else "worse"]
        lines.append(row)
    table(["model", "metric", "dir", *methods, "best baseline", "informative", "bee - best baseline", "bee"], lines)
